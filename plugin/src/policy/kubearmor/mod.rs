//! KubeArmor policies (`security.kubearmor.com/v1`: KubeArmorPolicy,
//! KubeArmorClusterPolicy, KubeArmorHostPolicy) mapped onto kive's trap
//! model, enforced by inode.

pub mod compile;
mod rule;
mod selector;
pub mod types;

pub use compile::compile_kubearmor;
pub use types::{Kind, GROUP, VERSION};

use super::compile::Compiled;
use super::error::PolicyError;
use super::model::PolicyMeta;

/// Most files a directory or pattern rule arms (per rule, per owner).
pub const DEFAULT_SET_CAP: usize = 1024;

/// Whether a document's `apiVersion` is KubeArmor's group.
pub fn is_kubearmor(api_version: &str) -> bool {
    api_version.split_once('/').map(|(g, _)| g) == Some(GROUP)
}

/// Compiles a KubeArmor document given as a value (YAML or the API
/// server's JSON): checks the envelope, then maps the spec.
pub fn compile_value(document: &str, value: serde_yaml::Value) -> Compiled {
    let mut out = Compiled::default();
    let err = |field: &str, message: String| PolicyError::Document {
        document: document.to_string(),
        field: field.to_string(),
        message,
    };
    let api_version = value
        .get("apiVersion")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    if api_version != format!("{GROUP}/{VERSION}") {
        out.errors.push(err(
            "apiVersion",
            format!("{api_version:?} is not served: expected {GROUP}/{VERSION}"),
        ));
        return out;
    }
    let kind_str = value
        .get("kind")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    let Some(kind) = Kind::from_kind(kind_str) else {
        out.errors.push(err(
            "kind",
            format!(
                "{kind_str:?}, expected KubeArmorPolicy, KubeArmorClusterPolicy or KubeArmorHostPolicy"
            ),
        ));
        return out;
    };
    let meta: PolicyMeta = match value.get("metadata").cloned() {
        Some(m) => match serde_yaml::from_value(m) {
            Ok(m) => m,
            Err(e) => {
                out.errors.push(err("metadata", e.to_string()));
                return out;
            }
        },
        None => PolicyMeta::default(),
    };
    if meta.name.is_empty() {
        out.errors
            .push(err("metadata.name", "a policy needs a name".into()));
        return out;
    }
    let spec = value.get("spec").cloned().unwrap_or_default();
    compile_kubearmor(document, kind, meta, spec, DEFAULT_SET_CAP)
}

#[cfg(test)]
mod tests;
