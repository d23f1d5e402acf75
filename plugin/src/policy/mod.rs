//! Policies: the KivePolicy API, reading it from YAML, and compiling each
//! trap into a plan (pure code, no I/O).

pub mod compile;
pub mod error;
pub mod matcher;
pub mod model;
pub mod parse;
pub mod pods;
pub mod scope;

pub use compile::{compile, Compiled, CompiledTrap, PodSelector, Target};
pub use error::{PolicyError, TrapRef};
pub use model::{
    KivePolicy, KivePolicyResource, KivePolicySpec, KiveTrap, KiveTrapMatch, TrapAction,
};
pub use parse::{parse_document, parse_policies, ParsedPolicy};

/// Reads and compiles policy YAML from a named source.
pub fn load_str(source: &str, text: &str) -> Compiled {
    compile(parse_policies(source, text))
}

#[cfg(test)]
mod tests;
