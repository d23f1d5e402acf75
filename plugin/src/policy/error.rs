//! Policy errors: each names where it comes from (document, policy, trap
//! and field), so that one broken trap is reported and the others arm.

use std::fmt;

use thiserror::Error;

/// Where a trap lives: the policy and its index in `spec.traps`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TrapRef {
    /// `namespace/name` of the policy.
    pub policy: String,
    /// Index in `spec.traps`.
    pub index: usize,
    /// The trap's path as written (may be empty when it is the error).
    pub path: String,
    /// The rule it comes from in a KubeArmor policy, e.g.
    /// `file.matchPaths[2]` (shown instead of the trap index).
    pub rule: Option<Box<str>>,
}

impl fmt::Display for TrapRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.rule {
            Some(rule) => write!(f, "policy {} rule {rule}", self.policy)?,
            None => write!(f, "policy {} trap {}", self.policy, self.index)?,
        }
        if !self.path.is_empty() {
            write!(f, " ({})", self.path)?;
        }
        Ok(())
    }
}

/// A policy that could not be read or a trap that is not valid.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum PolicyError {
    /// The YAML of a document does not parse.
    #[error("{document}: yaml: {message}")]
    Yaml {
        /// `file#index`.
        document: String,
        /// Parser message (with line and column).
        message: String,
    },
    /// The document is not a KivePolicy, or its metadata/spec is unusable.
    #[error("{document}: field {field}: {message}")]
    Document {
        /// `file#index`.
        document: String,
        /// Field path.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// One trap is invalid; the other traps of the policy are unaffected.
    #[error("{trap}: field {field}: {message}")]
    Trap {
        /// The trap.
        trap: TrapRef,
        /// Field path inside the trap, e.g. `matchAny[0].containerName`.
        field: String,
        /// What is wrong.
        message: String,
    },
}
