//! The webhook source: with an `http://host:port/path` or
//! `https://host:port/path` open_params, the `kive` source arms nothing
//! and serves that address instead; each POSTed KiveAlert v1 JSON (what
//! kivebpf's trap `callback` sends) becomes a `kive` event, so the same
//! `kive.*` fields and rules apply to alerts of clusters running kivebpf.
//!
//! - [`config`]: the listen URL and the `webhook` init_config keys;
//! - [`decode`]: a body → a kive payload (pure);
//! - [`server`]: the HTTP(S) server (its own thread and tokio runtime) and
//!   the bounded queue toward `next_batch`.

pub mod config;
pub mod decode;
mod server;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

pub use config::{is_listen_url, parse_listen, Listen, WebhookConfig};
pub use decode::decode_body;

use super::error::FalcoError;

/// Errors of the webhook source.
#[derive(Debug, Error)]
pub enum WebhookError {
    /// open_params is not a usable listen URL.
    #[error("webhook listen address {url:?}: {message}")]
    Listen {
        /// The URL.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// The address could not be bound.
    #[error("webhook: binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
    /// A settings file could not be read.
    #[error("webhook: {key} {path}: {source}")]
    File {
        /// The init_config key naming it.
        key: &'static str,
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The certificate or key is not usable.
    #[error("webhook: TLS: {0}")]
    Tls(String),
    /// `https://` without `webhook.tlsCertFile`/`tlsKeyFile`, or the
    /// reverse.
    #[error("webhook: {0}")]
    Setup(String),
    /// The server's thread or runtime could not start.
    #[error("webhook: starting the server: {0}")]
    Start(std::io::Error),
    /// A body that is not a KiveAlert v1 JSON object.
    #[error("not a KiveAlert v1 JSON object: at {path}: {source}")]
    NotAnAlert {
        /// JSON path of the offending value (`.` for the document).
        path: String,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// A KiveAlert of another version.
    #[error("kive-alert-version {0:?} is not supported (this plugin reads v1)")]
    Version(String),
    /// The alert could not be encoded as a kive event.
    #[error("encoding the alert: {0}")]
    Encode(Box<FalcoError>),
}

/// Counters of the webhook source (plugin metrics `webhook_*`).
#[derive(Debug, Default)]
pub struct WebhookStats {
    /// Alerts queued toward Falco (answered 200).
    pub accepted: AtomicU64,
    /// Requests refused with 4xx: wrong path or method, a body that is not
    /// an alert, too large, or without the bearer token.
    pub rejected: AtomicU64,
    /// Of `rejected`: no or a wrong bearer token (401).
    pub unauthorized: AtomicU64,
    /// Alerts refused with 503 because the queue was full.
    pub queue_full: AtomicU64,
    /// Connections closed at once (over `maxConnections`) or whose TLS
    /// handshake failed.
    pub connections_refused: AtomicU64,
}

impl WebhookStats {
    pub(crate) fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// One received alert: its kive payload and wall-clock ns (0: none).
pub type Received = (Vec<u8>, u64);

/// A running webhook server; stopped (its thread joined) on drop.
pub struct Webhook {
    rx: Receiver<Received>,
    server: server::Server,
}

impl Webhook {
    /// Binds `listen` and starts serving it.
    pub fn start(
        listen: &Listen,
        cfg: &WebhookConfig,
        stats: Arc<WebhookStats>,
    ) -> Result<Self, WebhookError> {
        let (server, rx) = server::Server::start(listen, cfg, stats)?;
        Ok(Self { rx, server })
    }

    /// The bound address (its port when open_params named port 0).
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.server.local_addr()
    }

    /// The next received alert, waiting up to `wait`.
    pub fn next(&self, wait: Duration) -> Option<Received> {
        if wait.is_zero() {
            return self.rx.try_recv().ok();
        }
        self.rx.recv_timeout(wait).ok()
    }
}
