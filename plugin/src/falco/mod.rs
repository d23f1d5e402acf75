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
pub mod kept;
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
use crate::sync::lock;
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
        let live = lock(&self.stats.live).upgrade();
        let (m, tier) = match live {
            Some(rt) => {
                let rt = lock(&rt);
                (rt.metrics(), Some(rt.tier()))
            }
            None => (Default::default(), None),
        };
        let m: crate::runtime::Metrics = m;
        let s = &self.stats;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let counter = |name, v| Metric::new(MetricLabel::new(name, Monotonic), MetricValue::U64(v));
        let gauge =
            |name, v| Metric::new(MetricLabel::new(name, NonMonotonic), MetricValue::U64(v));
        [
            counter(c"events_delivered", load(&s.delivered)),
            counter(c"async_events_injected", load(&s.async_injected)),
            counter(c"replay_malformed_lines", load(&s.malformed)),
            counter(c"webhook_accepted", load(&s.webhook.accepted)),
            counter(c"webhook_rejected", load(&s.webhook.rejected)),
            counter(c"webhook_unauthorized", load(&s.webhook.unauthorized)),
            counter(c"webhook_queue_full", load(&s.webhook.queue_full)),
            counter(
                c"webhook_connections_refused",
                load(&s.webhook.connections_refused),
            ),
            counter(c"kernel_hits", m.kernel.hits),
            counter(c"kernel_ring_drops", m.kernel.drops),
            counter(c"kernel_blocked", m.kernel.blocked),
            counter(c"kernel_flood_limited", m.kernel.limited),
            counter(c"queue_drops", m.queue_drops),
            gauge(c"queued_events", m.queued as u64),
            counter(c"ring_records_read_by_next_batch", m.caller_read_records),
            counter(c"ring_records_read_by_spare", m.spare_read_records),
            counter(c"decode_errors", m.decode_errors),
            counter(c"stale_events", m.stale_events),
            counter(c"rearms", m.rearms),
            counter(c"rate_limit_suppressed", m.suppressed),
            counter(c"callbacks_delivered", m.callbacks.delivered),
            counter(c"callbacks_failed", m.callbacks.failed),
            counter(c"callbacks_retries", m.callbacks.retries),
            counter(c"callbacks_dropped", m.callbacks.dropped),
            counter(c"callbacks_refused", m.callbacks.refused),
            gauge(c"callback_endpoints", m.callback_endpoints as u64),
            gauge(c"armed_traps", m.armed as u64),
            gauge(c"pending_traps", m.pending as u64),
            gauge(c"active_tier", tier_code(tier)),
            gauge(c"rate_limit_windows", m.rate_limit_windows as u64),
            counter(c"rate_limit_evicted", m.rate_limit_evicted),
            gauge(c"cgroup_index_entries", m.cgroup_index as u64),
            gauge(c"fd_limit", m.fd_limit),
            gauge(c"open_fds", m.open_fds),
            gauge(c"rss_bytes", m.rss_bytes),
            gauge(c"stalled_traps", m.stalled as u64),
            counter(c"resolve_stalls", m.stalls),
            gauge(c"trap_map_capacity", m.trap_map_capacity),
            gauge(c"trap_map_keys", m.trap_map_keys as u64),
            counter(c"trap_map_full", m.trap_map_full),
            counter(c"rescan_unchanged", m.rescan_unchanged),
            counter(c"rescan_resolved", m.rescan_resolved),
            counter(c"rescan_roots_found", m.rescan_roots_found),
            counter(c"rescan_notified", m.rescan_notified),
            counter(c"rescan_full_passes", m.rescan_full_passes),
            counter(c"notify_events", m.notify_events),
            counter(c"notify_overflows", m.notify_overflows),
            gauge(c"notify_marks", m.notify_marks as u64),
            gauge(c"notify_mount_watches", m.notify_mount_watches as u64),
            gauge(c"notify_watched", m.notify_watched as u64),
            gauge(c"notify_unwatched", m.notify_unwatched as u64),
        ]
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
        *lock(&self.stats.live) = Weak::new();
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
