//! The Falco plugin: event source `kive` (live traps or replayed alerts)
//! and extraction of the `kive.*` fields.
//!
//! - [`config`]: `init_config` and its JSON schema;
//! - [`payload`]: kive's versioned event payload;
//! - [`replay`]: KiveAlert JSON lines as a source;
//! - [`source`]: open / next_batch / close;
//! - [`fields`]: the field table.
//!
//! `Plugin::new` only parses and validates the config (Falco also
//! initialises plugins just to list them); `open()` starts the engine and
//! dropping the instance (`close()`) stops it.

pub mod config;
pub mod fields;
pub mod payload;
pub mod replay;
pub mod source;

use std::ffi::{CStr, CString};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Weak};

use falco_plugin::base::{Json, Metric, MetricLabel, MetricType, MetricValue, Plugin};
use falco_plugin::event::events::Event;
use falco_plugin::extract::{EventInput, ExtractFieldInfo, ExtractPlugin};
use falco_plugin::source::{serialize_open_params, OpenParam, PluginEvent, SourcePlugin};
use falco_plugin::tables::TablesInput;
use thiserror::Error;

use crate::runtime::Runtime;
use crate::trap::{Tier, TrapError};

pub use config::{KiveConfig, Mode};
pub use fields::fields_markdown;
pub use payload::{Decoded, KivePayload};
pub use source::KiveInstance;

/// The registry's development plugin id (until one is registered).
pub const PLUGIN_ID: u32 = 999;
/// The event source name.
pub const EVENT_SOURCE: &str = "kive";
/// The plugin name (`plugins[].name` and `load_plugins` in falco.yaml).
pub const PLUGIN_NAME: &str = "kive";

const VERSION: &CStr =
    match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
        Ok(v) => v,
        Err(_) => panic!("the crate version has no NUL"),
    };

/// A kive plugin event as the SDK parses it.
pub type KiveEvent<'a> = Event<PluginEvent<KivePayload<'a>>>;

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

/// Counters shared by the plugin and its open capture.
#[derive(Debug, Default)]
pub struct SourceStats {
    /// Events returned by `next_batch`.
    pub delivered: AtomicU64,
    /// Replayed lines that were not alerts.
    pub malformed: std::sync::Arc<AtomicU64>,
    /// The live runtime while a live capture is open.
    live: Mutex<Weak<Mutex<Runtime>>>,
}

/// The kive Falco plugin.
pub struct KivePlugin {
    config: KiveConfig,
    stats: std::sync::Arc<SourceStats>,
    open_params: CString,
}

impl KivePlugin {
    /// The validated configuration.
    pub fn config(&self) -> &KiveConfig {
        &self.config
    }
}

/// Numeric code of a tier in the `active_tier` metric: 0 none (replay or
/// closed), 1 lsm, 2 trampoline, 3 fentry, 4 tracepoint, 5
/// tracepoint-classic.
pub fn tier_code(tier: Option<Tier>) -> u64 {
    match tier {
        None => 0,
        Some(Tier::Lsm) => 1,
        Some(Tier::Trampoline) => 2,
        Some(Tier::Fentry) => 3,
        Some(Tier::Tracepoint) => 4,
        Some(Tier::TracepointClassic) => 5,
    }
}

impl Plugin for KivePlugin {
    const NAME: &'static CStr = c"kive";
    const PLUGIN_VERSION: &'static CStr = VERSION;
    const DESCRIPTION: &'static CStr =
        c"eBPF file tripwires: every access to a trapped file (on the node or in a Kubernetes pod) as a Falco event";
    const CONTACT: &'static CStr = c"the kive project (see its README)";
    type ConfigType = Json<KiveConfig>;

    fn new(
        _input: Option<&TablesInput>,
        Json(config): Json<KiveConfig>,
    ) -> Result<Self, anyhow::Error> {
        config.validate()?;
        Ok(Self {
            config,
            stats: Default::default(),
            open_params: CString::default(),
        })
    }

    fn set_config(&mut self, Json(config): Json<KiveConfig>) -> Result<(), anyhow::Error> {
        config.validate()?;
        self.config = config;
        Ok(())
    }

    fn get_metrics(&mut self) -> impl IntoIterator<Item = Metric> {
        use MetricType::{Monotonic, NonMonotonic};
        let live = self
            .stats
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .upgrade();
        let (m, tier) = match live {
            Some(rt) => {
                let rt = rt.lock().unwrap_or_else(|p| p.into_inner());
                (rt.metrics(), Some(rt.tier()))
            }
            None => (Default::default(), None),
        };
        let m: crate::runtime::Metrics = m;
        let u = |v: u64| MetricValue::U64(v);
        [
            (
                c"events_delivered",
                Monotonic,
                u(self.stats.delivered.load(Ordering::Relaxed)),
            ),
            (
                c"replay_malformed_lines",
                Monotonic,
                u(self.stats.malformed.load(Ordering::Relaxed)),
            ),
            (c"kernel_hits", Monotonic, u(m.kernel.hits)),
            (c"kernel_ring_drops", Monotonic, u(m.kernel.drops)),
            (c"kernel_blocked", Monotonic, u(m.kernel.blocked)),
            (c"kernel_flood_limited", Monotonic, u(m.kernel.limited)),
            (c"queue_drops", Monotonic, u(m.queue_drops)),
            (c"decode_errors", Monotonic, u(m.decode_errors)),
            (c"stale_events", Monotonic, u(m.stale_events)),
            (c"rearms", Monotonic, u(m.rearms)),
            (c"rate_limit_suppressed", Monotonic, u(m.suppressed)),
            (c"callbacks_delivered", Monotonic, u(m.callbacks.delivered)),
            (c"callbacks_failed", Monotonic, u(m.callbacks.failed)),
            (c"callbacks_retries", Monotonic, u(m.callbacks.retries)),
            (c"callbacks_dropped", Monotonic, u(m.callbacks.dropped)),
            (c"callbacks_refused", Monotonic, u(m.callbacks.refused)),
            (c"armed_traps", NonMonotonic, u(m.armed as u64)),
            (c"pending_traps", NonMonotonic, u(m.pending as u64)),
            (c"active_tier", NonMonotonic, u(tier_code(tier))),
            (
                c"rate_limit_windows",
                NonMonotonic,
                u(m.rate_limit_windows as u64),
            ),
            (c"rate_limit_evicted", Monotonic, u(m.rate_limit_evicted)),
            (
                c"cgroup_index_entries",
                NonMonotonic,
                u(m.cgroup_index as u64),
            ),
            (c"fd_limit", NonMonotonic, u(m.fd_limit)),
            (c"open_fds", NonMonotonic, u(m.open_fds)),
        ]
        .map(|(name, ty, v)| Metric::new(MetricLabel::new(name, ty), v))
    }
}

impl SourcePlugin for KivePlugin {
    type Instance = KiveInstance;
    const EVENT_SOURCE: &'static CStr = c"kive";
    const PLUGIN_ID: u32 = PLUGIN_ID;
    type Event<'a> = KiveEvent<'a>;

    fn list_open_params(&mut self) -> Result<&CStr, anyhow::Error> {
        let params = [
            OpenParam::Item {
                value: "",
                desc: "the mode of init_config (live by default)",
            },
            OpenParam::Item {
                value: "live",
                desc: "arm the configured policies on this node",
            },
            OpenParam::Item {
                value: "/path/to/alerts.jsonl",
                desc: "replay a file of KiveAlert v1 JSON lines",
            },
        ];
        serialize_open_params(&params, &mut self.open_params)
    }

    fn open(&mut self, params: Option<&str>) -> Result<KiveInstance, anyhow::Error> {
        Ok(KiveInstance::open(
            &self.config,
            params,
            std::sync::Arc::clone(&self.stats),
        )?)
    }

    fn close(&mut self, _instance: &mut KiveInstance) {
        *self.stats.live.lock().unwrap_or_else(|p| p.into_inner()) = Weak::new();
    }

    fn event_to_string(
        &mut self,
        event: &EventInput<KiveEvent<'_>>,
    ) -> Result<CString, anyhow::Error> {
        let event = event.event()?;
        let alert = payload::decode_alert(event.params.event_data.0)?;
        Ok(CString::new(
            crate::alert::text::to_text(&alert).replace('\0', " "),
        )?)
    }
}

impl ExtractPlugin for KivePlugin {
    type Event<'a> = KiveEvent<'a>;
    type ExtractContext = fields::Context;
    const EXTRACT_FIELDS: &'static [ExtractFieldInfo<Self>] = fields::FIELDS;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_is_the_crate_version() {
        assert_eq!(VERSION.to_str().expect("utf8"), env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn tier_codes_are_distinct() {
        let codes: std::collections::BTreeSet<u64> = [
            None,
            Some(Tier::Lsm),
            Some(Tier::Trampoline),
            Some(Tier::Fentry),
            Some(Tier::Tracepoint),
            Some(Tier::TracepointClassic),
        ]
        .into_iter()
        .map(tier_code)
        .collect();
        assert_eq!(codes.len(), 6);
    }

    #[test]
    fn the_fields_table_lists_every_field_once() {
        let t = fields_markdown();
        for name in [
            "kive.alert.version",
            "kive.policy.name",
            "kive.trap.path",
            "kive.path",
            "kive.inode",
            "kive.dev",
            "kive.mask",
            "kive.access",
            "kive.action",
            "kive.hook",
            "kive.kernel.id",
            "kive.callback",
            "kive.metadata",
            "kive.pod.name",
            "kive.pod.namespace",
            "kive.pod.ip",
            "kive.pod.label",
            "kive.pod.labels",
            "kive.container.id",
            "kive.container.name",
            "kive.node.name",
            "kive.process.pid",
            "kive.process.tgid",
            "kive.process.uid",
            "kive.process.gid",
            "kive.process.binary",
            "kive.process.cwd",
            "kive.process.args",
            "kive.process.comm",
            "kive.cgroup.id",
        ] {
            assert_eq!(
                t.matches(&format!("| `{name}` |")).count(),
                1,
                "{name} in\n{t}"
            );
        }
        assert!(
            t.contains("| `kive.pod.label` | `string` | Key, Required |"),
            "{t}"
        );
        assert!(
            t.contains("| `kive.metadata` | `string` | Key, Optional |"),
            "{t}"
        );
        assert!(
            t.contains("| `kive.pod.labels` | `string` (list) | None |"),
            "{t}"
        );
        assert!(t.contains("| `kive.inode` | `uint64` | None |"), "{t}");
    }
}
