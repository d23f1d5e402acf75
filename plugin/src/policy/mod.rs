//! Policies: the KivePolicy API, reading it from YAML, and compiling each
//! trap into a plan (pure code, no I/O).

pub mod compile;
pub mod error;
pub mod kubearmor;
pub mod matcher;
pub mod model;
pub mod parse;
pub mod pods;
pub mod scope;

pub use compile::{
    compile, Compiled, CompiledTrap, Conditions, PathSet, PodSelector, RuleInfo, Target,
};
pub use error::{PolicyError, TrapRef};
pub use model::{
    KivePolicy, KivePolicyResource, KivePolicySpec, KiveTrap, KiveTrapMatch, TrapAction,
};
pub use parse::{parse_document, parse_policies, ParsedPolicy};

/// Reads and compiles policy YAML from a named source: KivePolicies and
/// KubeArmor policies, each document dispatched by its `apiVersion`.
pub fn load_str(source: &str, text: &str) -> Compiled {
    use serde::Deserialize;
    let mut out = Compiled::default();
    for (index, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let document = format!("{source}#{index}");
        let value = match serde_yaml::Value::deserialize(de) {
            Ok(v) => v,
            Err(e) => {
                out.errors.push(PolicyError::Yaml {
                    document,
                    message: e.to_string(),
                });
                // a syntax error ends the stream: later documents cannot be located
                break;
            }
        };
        if value.is_null() {
            continue;
        }
        out.extend(load_value(document, value));
    }
    out
}

/// Compiles one policy document given as a value.
pub fn load_value(document: String, value: serde_yaml::Value) -> Compiled {
    let api_version = value
        .get("apiVersion")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    if kubearmor::is_kubearmor(api_version) {
        kubearmor::compile_value(&document, value)
    } else {
        compile(vec![parse_document(document, value)])
    }
}

#[cfg(test)]
mod tests;
