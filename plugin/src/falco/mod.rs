//! The Falco plugin: event source `kive` (live traps or replayed alerts)
//! and extraction of the `kive.*` fields.
//!
//! - [`error`]: the error type (a leaf module);
//! - [`config`]: `init_config` and its JSON schema;
//! - [`deprecated`]: old `init_config` keys accepted with a warning;
//! - [`payload`]: kive's versioned event payload and the Falco events
//!   carrying it;
//! - [`async_events`]: alerts injected into the `syscall` source;
//! - [`replay`]: KiveAlert JSON lines as a source;
//! - [`webhook`]: KiveAlerts POSTed over HTTP(S) as a source;
//! - [`source`]: open / next_batch / close;
//! - [`fields`]: the field table.
//!
//! `Plugin::new` only parses and validates the config (Falco also
//! initialises plugins just to list them); `open()` starts the engine and
//! dropping the instance (`close()`) stops it.

pub mod async_events;
pub mod config;
pub mod deprecated;
pub mod error;
pub mod fields;
pub mod payload;
pub mod replay;
pub mod source;
pub mod webhook;

use std::ffi::{CStr, CString};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Weak};

use falco_plugin::base::{Json, Metric, MetricLabel, MetricType, MetricValue, Plugin};
use falco_plugin::event::events::Event;
use falco_plugin::extract::{EventInput, ExtractFieldInfo, ExtractPlugin};
use falco_plugin::source::{serialize_open_params, OpenParam, PluginEvent, SourcePlugin};
use falco_plugin::tables::TablesInput;

use crate::runtime::Runtime;
use crate::trap::Tier;

pub use config::{KiveConfig, Mode};
pub use error::FalcoError;
pub use fields::fields_markdown;
pub use payload::{Decoded, KiveAnyEvent, KivePayload};
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

/// Counters shared by the plugin and its open capture.
#[derive(Debug, Default)]
pub struct SourceStats {
    /// Events returned by `next_batch`.
    pub delivered: AtomicU64,
    /// Alerts Falco accepted as async events (counted once per listening
    /// async capture).
    pub async_injected: AtomicU64,
    /// Replayed lines that were not alerts.
    pub malformed: std::sync::Arc<AtomicU64>,
    /// The webhook source's counters.
    pub webhook: std::sync::Arc<webhook::WebhookStats>,
    /// The live runtime while a live capture is open.
    live: Mutex<Weak<Mutex<Runtime>>>,
}

/// The kive Falco plugin.
pub struct KivePlugin {
    config: KiveConfig,
    stats: std::sync::Arc<SourceStats>,
    open_params: CString,
    /// This object's handler in [`async_events`] while its async capture
    /// runs.
    async_sink: Option<u64>,
}

impl Drop for KivePlugin {
    fn drop(&mut self) {
        if let Some(id) = self.async_sink.take() {
            async_events::unregister(id);
        }
    }
}

impl KivePlugin {
    /// The validated configuration.
    pub fn config(&self) -> &KiveConfig {
        &self.config
    }
}

/// Numeric code of a tier in the `active_tier` metric: 0 none (replay or
/// closed), 1 lsm, 2 trampoline, 3 fentry, 4 tracepoint, 5
/// tracepoint-classic, 6 fanotify.
pub fn tier_code(tier: Option<Tier>) -> u64 {
    match tier {
        None => 0,
        Some(Tier::Lsm) => 1,
        Some(Tier::Trampoline) => 2,
        Some(Tier::Fentry) => 3,
        Some(Tier::Tracepoint) => 4,
        Some(Tier::TracepointClassic) => 5,
        Some(Tier::Fanotify) => 6,
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
            async_sink: None,
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
        let w = |c: &AtomicU64| u(c.load(Ordering::Relaxed));
        [
            (
                c"events_delivered",
                Monotonic,
                u(self.stats.delivered.load(Ordering::Relaxed)),
            ),
            (
                c"async_events_injected",
                Monotonic,
                u(self.stats.async_injected.load(Ordering::Relaxed)),
            ),
            (
                c"replay_malformed_lines",
                Monotonic,
                u(self.stats.malformed.load(Ordering::Relaxed)),
            ),
            (
                c"webhook_accepted",
                Monotonic,
                w(&self.stats.webhook.accepted),
            ),
            (
                c"webhook_rejected",
                Monotonic,
                w(&self.stats.webhook.rejected),
            ),
            (
                c"webhook_unauthorized",
                Monotonic,
                w(&self.stats.webhook.unauthorized),
            ),
            (
                c"webhook_queue_full",
                Monotonic,
                w(&self.stats.webhook.queue_full),
            ),
            (
                c"webhook_connections_refused",
                Monotonic,
                w(&self.stats.webhook.connections_refused),
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
            (
                c"callback_endpoints",
                NonMonotonic,
                u(m.callback_endpoints as u64),
            ),
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
            (c"rss_bytes", NonMonotonic, u(m.rss_bytes)),
            (c"stalled_traps", NonMonotonic, u(m.stalled as u64)),
            (c"resolve_stalls", Monotonic, u(m.stalls)),
            (c"trap_map_capacity", NonMonotonic, u(m.trap_map_capacity)),
            (c"trap_map_keys", NonMonotonic, u(m.trap_map_keys as u64)),
            (c"trap_map_full", Monotonic, u(m.trap_map_full)),
            (c"rescan_unchanged", Monotonic, u(m.rescan_unchanged)),
            (c"rescan_resolved", Monotonic, u(m.rescan_resolved)),
            (c"rescan_roots_found", Monotonic, u(m.rescan_roots_found)),
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
            // no entry for "" (the mode of init_config): Falco refuses
            // entries without a value (--plugin-info fails)
            OpenParam::Item {
                value: "live",
                desc: "arm the configured policies on this node (empty: the mode of init_config)",
            },
            OpenParam::Item {
                value: "/path/to/alerts.jsonl",
                desc: "replay a file of KiveAlert v1 JSON lines",
            },
            OpenParam::Item {
                value: "http://0.0.0.0:9766/kive",
                desc: "serve a webhook: each POSTed KiveAlert v1 JSON is an event (https:// with webhook.tlsCertFile/tlsKeyFile)",
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
    // kive's own events and the async events it injects into `syscall`
    type Event<'a> = Event<KiveAnyEvent<'a>>;
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
            Some(Tier::Fanotify),
        ]
        .into_iter()
        .map(tier_code)
        .collect();
        assert_eq!(codes.len(), 7);
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
