//! The error type of the Falco plugin layer (a leaf: every submodule of
//! `falco` takes it from here).

use thiserror::Error;

use crate::trap::TrapError;

/// Errors of the Falco plugin layer.
#[derive(Debug, Error)]
pub enum FalcoError {
    /// An `init_config` key has a value the plugin cannot use.
    #[error("init_config: {key}: {message}")]
    Config {
        /// The key (camelCase, as in falco.yaml).
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A replayed line is not a KiveAlert v1 JSON object.
    #[error("{path}: line {line}: {message}")]
    Malformed {
        /// The replay file.
        path: String,
        /// 1-based line number.
        line: u64,
        /// The JSON error (with its column).
        message: String,
    },
    /// Text that is not a KiveAlert v1 JSON object.
    #[error("not a KiveAlert v1 JSON object: {0}")]
    Json(serde_json::Error),
    /// Live mode without any policy.
    #[error(
        "live mode needs policies: set policyFiles, policies and/or kubernetes.enabled in init_config"
    )]
    NoPolicySource,
    /// Every configured trap was rejected.
    #[error("no valid trap in the configured policies: {0}")]
    NoTraps(String),
    /// The trap engine did not start.
    #[error("starting the trap engine: {0}")]
    Engine(TrapError),
    /// The Kubernetes source did not start.
    #[error("starting the kubernetes source: {0}")]
    Cluster(crate::k8s::K8sError),
    /// The webhook source did not start.
    #[error("{0}")]
    Webhook(super::webhook::WebhookError),
    /// A payload shorter than the fixed header.
    #[error("event payload of {len} bytes is shorter than kive's header")]
    PayloadShort {
        /// Its length.
        len: usize,
    },
    /// A payload that is not kive's.
    #[error("event payload starts with 0x{0:02x}, not kive's magic byte 0x4b")]
    PayloadMagic(u8),
    /// A payload version this build cannot read.
    #[error("event payload version {0} is not supported (this plugin reads version 1)")]
    PayloadVersion(u8),
    /// A payload whose tables are inconsistent.
    #[error("corrupt event payload: {0}")]
    PayloadCorrupt(&'static str),
    /// An alert too large to encode.
    #[error("alert too large to encode ({0} bytes)")]
    PayloadTooLarge(usize),
}
