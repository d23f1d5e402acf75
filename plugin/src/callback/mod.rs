//! Callbacks: each alert of a trap with a `callback` URL is POSTed there as
//! KiveAlert JSON, from a bounded queue per endpoint drained by its own
//! task. A dead, slow or hanging endpoint only ever fills its own queue:
//! enqueueing never blocks, and what overflows is counted and logged.
//! Destinations are restricted ([`destination`]): no redirects, no proxy,
//! and loopback, link-local and cloud metadata addresses refused unless
//! the operator allows them, checked on the resolved address.

mod client;
pub mod destination;
mod stats;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::sync::mpsc;

use crate::sync::lock;
use client::refusal_in;

pub use destination::{DestinationConfig, Destinations, Refusal};
pub use stats::{EndpointCounts, EndpointStats};

/// How callbacks are sent.
#[derive(Debug, Clone)]
pub struct CallbackConfig {
    /// Queue capacity per endpoint.
    pub queue_capacity: usize,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout.
    pub request_timeout: Duration,
    /// Attempts per alert (connection errors and 5xx are retried; 4xx never).
    pub max_attempts: u32,
    /// First retry delay; doubled each attempt, capped at `max_backoff`.
    pub initial_backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
    /// Extra CA certificates (PEM) trusted besides the system roots.
    pub ca_bundle: Option<PathBuf>,
    /// Which destinations a callback may reach.
    pub destinations: DestinationConfig,
    /// Most endpoints kept at once (each has a queue and a task): a policy
    /// author naming ever new URLs cannot grow kive without bound.
    pub max_endpoints: usize,
    /// An endpoint with an empty queue unused this long is dropped when
    /// room is needed (its counters stay in the totals).
    pub endpoint_idle: Duration,
}

impl Default for CallbackConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 1024,
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            ca_bundle: None,
            destinations: DestinationConfig::default(),
            max_endpoints: 256,
            endpoint_idle: Duration::from_secs(600),
        }
    }
}

/// Callback errors (at start only: sending errors are counted, not returned).
#[derive(Debug, Error)]
pub enum CallbackError {
    /// The CA bundle could not be read.
    #[error("reading the callback CA bundle {path}")]
    CaBundle {
        /// Its path.
        path: PathBuf,
        /// The reason.
        source: std::io::Error,
    },
    /// TLS or client setup failed.
    #[error("setting up the callback HTTP client: {0}")]
    Client(String),
    /// The tokio runtime could not start.
    #[error("starting the callback runtime")]
    Runtime(#[source] std::io::Error),
    /// An allowlist entry is not a host, an address or a CIDR.
    #[error("callback destinations")]
    Destinations(#[source] destination::BadAllowEntry),
}

struct Endpoint {
    /// `None`: the URL itself is refused.
    tx: Option<mpsc::Sender<Arc<str>>>,
    stats: Arc<EndpointStats>,
    last_used: Instant,
}

impl Endpoint {
    /// Nothing queued: dropping the sender loses no alert (the task ends
    /// once it has sent what it holds).
    fn drained(&self) -> bool {
        self.tx
            .as_ref()
            .is_none_or(|tx| tx.capacity() == tx.max_capacity())
    }
}

/// The endpoints with their counters, bounded.
#[derive(Default)]
struct EndpointTable {
    live: HashMap<String, Endpoint>,
    /// Counters of endpoints dropped for room, and of alerts refused for
    /// lack of room, so totals never go backwards.
    retired: EndpointCounts,
}

/// Sends alerts to callback URLs in the background.
pub struct Callbacks {
    cfg: CallbackConfig,
    destinations: Arc<Destinations>,
    client: reqwest::Client,
    runtime: Option<tokio::runtime::Runtime>,
    endpoints: Mutex<EndpointTable>,
}

/// Whether a status is worth retrying.
pub fn retryable(status: u16) -> bool {
    status >= 500
}

/// The delay before retry number `attempt` (1-based).
pub fn backoff(cfg: &CallbackConfig, attempt: u32) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(16);
    cfg.initial_backoff
        .saturating_mul(factor)
        .min(cfg.max_backoff)
}

impl Callbacks {
    /// Builds the client and a small runtime; no endpoint task runs until the
    /// first alert for it.
    pub fn start(cfg: CallbackConfig) -> Result<Self, CallbackError> {
        let destinations = Arc::new(
            Destinations::new(cfg.destinations.clone()).map_err(CallbackError::Destinations)?,
        );
        let client = client::build(&cfg, &destinations)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("kive-callback")
            .enable_all()
            .build()
            .map_err(CallbackError::Runtime)?;
        Ok(Self {
            cfg,
            destinations,
            client,
            runtime: Some(runtime),
            endpoints: Mutex::new(EndpointTable::default()),
        })
    }

    /// Queues `json` for `url`; never blocks. Returns false when the
    /// endpoint's queue is full (the alert is dropped and counted) or the
    /// destination is refused.
    pub fn send(&self, url: &str, json: &str) -> bool {
        self.send_from("callback", url, json)
    }

    /// [`Callbacks::send`] for an alert of `origin` (policy and trap),
    /// named in the log when the destination is refused.
    pub fn send_from(&self, origin: &str, url: &str, json: &str) -> bool {
        let Some(rt) = &self.runtime else {
            return false;
        };
        let mut table = lock(&self.endpoints);
        let now = Instant::now();
        if !table.live.contains_key(url) && !self.make_room(&mut table, now) {
            table.retired.refused += 1;
            let n = table.retired.refused;
            if n.is_power_of_two() {
                tracing::warn!(
                    "{origin}: callback {url}: already {} endpoints in use, alert not sent ({n} so far)",
                    table.live.len()
                );
            }
            return false;
        }
        let ep = table.live.entry(url.to_string()).or_insert_with(|| {
            let stats = Arc::new(EndpointStats::default());
            if let Err(r) = self.destinations.check_url(url) {
                tracing::error!("{origin}: field callback: {url}: {r}; alerts not sent there");
                return Endpoint {
                    tx: None,
                    stats,
                    last_used: now,
                };
            }
            let (tx, rx) = mpsc::channel(self.cfg.queue_capacity.max(1));
            rt.spawn(deliver(
                self.client.clone(),
                self.cfg.clone(),
                Target {
                    url: url.to_string(),
                    origin: origin.to_string(),
                },
                rx,
                Arc::clone(&stats),
            ));
            Endpoint {
                tx: Some(tx),
                stats,
                last_used: now,
            }
        });
        ep.last_used = now;
        let Some(tx) = &ep.tx else {
            ep.stats.refused.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        match tx.try_send(Arc::from(json)) {
            Ok(()) => true,
            Err(_) => {
                let n = ep.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!("callback {url}: queue full, {n} alert(s) dropped so far");
                }
                false
            }
        }
    }

    /// Whether one more endpoint fits, after dropping the idle drained ones
    /// if the table is full.
    fn make_room(&self, table: &mut EndpointTable, now: Instant) -> bool {
        let cap = self.cfg.max_endpoints.max(1);
        if table.live.len() < cap {
            return true;
        }
        let idle = self.cfg.endpoint_idle;
        let EndpointTable { live, retired } = table;
        live.retain(|_, ep| {
            let keep = now.duration_since(ep.last_used) < idle || !ep.drained();
            if !keep {
                retired.add(&EndpointCounts::of(&ep.stats));
            }
            keep
        });
        live.len() < cap
    }

    /// Counters of an endpoint (zero if it never got an alert or was
    /// dropped for room).
    pub fn counts(&self, url: &str) -> EndpointCounts {
        let table = lock(&self.endpoints);
        table
            .live
            .get(url)
            .map(|e| EndpointCounts::of(&e.stats))
            .unwrap_or_default()
    }

    /// Counters summed over every endpoint, past ones included.
    pub fn totals(&self) -> EndpointCounts {
        let table = lock(&self.endpoints);
        let mut t = table.retired;
        for e in table.live.values() {
            t.add(&EndpointCounts::of(&e.stats));
        }
        t
    }

    /// How many endpoints are kept now (at most `max_endpoints`).
    pub fn endpoints(&self) -> usize {
        let table = lock(&self.endpoints);
        table.live.len()
    }
}

/// An endpoint and the trap that first sent to it.
struct Target {
    url: String,
    origin: String,
}

async fn deliver(
    client: reqwest::Client,
    cfg: CallbackConfig,
    target: Target,
    mut rx: mpsc::Receiver<Arc<str>>,
    stats: Arc<EndpointStats>,
) {
    let Target { url, origin } = target;
    while let Some(body) = rx.recv().await {
        let mut attempt = 1;
        loop {
            let res = client
                .post(&url)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await;
            let retry = match res {
                Ok(r) if r.status().is_success() => {
                    stats.delivered.fetch_add(1, Ordering::Relaxed);
                    false
                }
                Ok(r) if retryable(r.status().as_u16()) => {
                    tracing::debug!("callback {url}: {} (attempt {attempt})", r.status());
                    true
                }
                Ok(r) if r.status().is_redirection() => {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        "{origin}: callback {url}: {} redirect not followed (callbacks never follow redirects)",
                        r.status()
                    );
                    false
                }
                Ok(r) => {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("callback {url}: {} (not retried)", r.status());
                    false
                }
                Err(e) if refusal_in(&e).is_some() => {
                    let n = stats.refused.fetch_add(1, Ordering::Relaxed) + 1;
                    if n.is_power_of_two() {
                        let r = refusal_in(&e).map(ToString::to_string).unwrap_or_default();
                        tracing::error!(
                            "{origin}: field callback: {url}: {r}; alert not sent ({n} so far)"
                        );
                    }
                    false
                }
                Err(e) => {
                    tracing::debug!("callback {url}: {e} (attempt {attempt})");
                    true
                }
            };
            if !retry {
                break;
            }
            if attempt >= cfg.max_attempts {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("callback {url}: giving up after {attempt} attempts");
                break;
            }
            stats.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(backoff(&cfg, attempt)).await;
            attempt += 1;
        }
    }
}

impl Drop for Callbacks {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_server_errors_are_retried() {
        assert!(retryable(500) && retryable(503));
        assert!(!retryable(400) && !retryable(404) && !retryable(200));
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let cfg = CallbackConfig::default();
        let got: Vec<u128> = (1..=7).map(|a| backoff(&cfg, a).as_millis()).collect();
        assert_eq!(got, [100, 200, 400, 800, 1600, 2000, 2000]);
    }

    /// Loopback is refused by default, so these endpoints never connect.
    fn refused_urls(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("http://127.0.0.1:9/{i}")).collect()
    }

    #[test]
    fn endpoints_are_bounded_and_a_full_table_refuses_new_urls() {
        let cb = Callbacks::start(CallbackConfig {
            max_endpoints: 2,
            ..Default::default()
        })
        .expect("callbacks");
        let urls = refused_urls(3);
        for u in &urls {
            assert!(!cb.send(u, "{}"), "a loopback callback is refused: {u}");
        }
        assert_eq!(
            cb.endpoints(),
            2,
            "the table never grows past max_endpoints"
        );
        assert_eq!(
            cb.totals().refused,
            3,
            "the URL without room is counted too"
        );
        assert_eq!(cb.counts(&urls[2]), EndpointCounts::default());
    }

    #[test]
    fn idle_endpoints_make_room_and_keep_their_counts() {
        let cb = Callbacks::start(CallbackConfig {
            max_endpoints: 2,
            endpoint_idle: Duration::ZERO,
            ..Default::default()
        })
        .expect("callbacks");
        for u in refused_urls(5) {
            cb.send(&u, "{}");
        }
        assert!(cb.endpoints() <= 2, "idle endpoints were dropped for room");
        assert_eq!(
            cb.totals().refused,
            5,
            "totals keep dropped endpoints' counts"
        );
        assert_eq!(
            cb.counts("http://127.0.0.1:9/4").refused,
            1,
            "the newest URL got room"
        );
    }

    #[test]
    fn a_missing_ca_bundle_is_a_clear_error() {
        let cfg = CallbackConfig {
            ca_bundle: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        };
        let err = Callbacks::start(cfg).err().expect("missing bundle");
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn a_bundle_without_a_certificate_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").expect("write");
        let cfg = CallbackConfig {
            ca_bundle: Some(path.clone()),
            ..Default::default()
        };
        let err = Callbacks::start(cfg).err().expect("empty bundle");
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("no PEM certificate"), "{msg}");
    }
}
