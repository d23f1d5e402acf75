//! `init_config` of the plugin: a JSON object with a published JSON schema
//! (`falco --plugin-info kive` shows it). Parsing and validation only: no
//! file, eBPF, thread or network work happens here.

use std::path::PathBuf;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::deprecated;
use super::error::FalcoError;
use super::webhook::WebhookConfig;
use crate::callback::{DestinationConfig, Destinations};
use crate::k8s::ClusterConfig;
use crate::policy::scope::ScopeConfig;
use crate::runtime::RuntimeConfig;
use crate::trap::{EngineConfig, TierChoice};

/// Where events come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Arm the traps of the configured policies on this node's kernel
    /// (needs root or CAP_BPF + CAP_SYS_ADMIN).
    #[default]
    Live,
    /// Read KiveAlert v1 JSON lines from `replayFile` (no root, eBPF or
    /// cluster needed).
    Replay,
}

impl Mode {
    /// `live` or `replay`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Replay => "replay",
        }
    }
}

/// The plugin's `init_config`.
///
/// Policy sources are top-level keys (`policyFiles`, `policies`); the
/// Kubernetes API server will be one more (`kubernetes`) without changing
/// these. Deprecated keys ([`super::deprecated`]) are accepted with a
/// warning; unknown keys are errors.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(
    remote = "Self",
    deny_unknown_fields,
    rename_all = "camelCase",
    default
)]
#[schemars(rename = "KiveConfig", transform = deprecated::add_to_schema)]
pub struct KiveConfig {
    /// `live` (default): arm the policies' traps on this node; `replay`:
    /// emit the alerts recorded in `replayFile`. A non-empty `open_params`
    /// overrides it: `live`, or a file path to replay.
    pub mode: Mode,
    /// KiveAlert v1 JSON lines to replay (the output of `kive run`);
    /// required when `mode` is `replay`.
    pub replay_file: Option<String>,
    /// KivePolicy YAML files (each may hold several `---` documents),
    /// armed in live mode. Relative paths are relative to Falco's working
    /// directory.
    pub policy_files: Vec<String>,
    /// Inline KivePolicy YAML (one or more `---` documents), armed in live
    /// mode together with `policyFiles`.
    pub policies: Option<String>,
    /// Hook tier: `auto` (default: the best that loads) or one of `lsm`,
    /// `trampoline`, `fentry`, `tracepoint`, `tracepoint-classic`, `fanotify`.
    pub tier: TierChoice,
    /// Size of the kernel ring buffer in bytes: a power of two, at least
    /// 4096 (default 4 MiB).
    #[schemars(range(min = 4096))]
    pub ring_bytes: u32,
    /// Capacity of the kernel trap map: distinct files armed (default
    /// 262144; not preallocated, its memory follows the files armed).
    #[schemars(range(min = 1))]
    pub max_traps: u32,
    /// Capacity of the queue between the ring reader and `next_batch`
    /// (default 65536); overflow is counted in the `queue_drops` metric.
    #[schemars(range(min = 1))]
    pub queue_capacity: u32,
    /// How often armed paths are re-resolved to follow replaced files, in
    /// milliseconds (default 1000, at least 10).
    #[schemars(range(min = 10))]
    pub rescan_ms: u64,
    /// The rescan's safety net, in milliseconds (default 600000, at least
    /// 1000): how often every armed entry is looked at even when no change
    /// notification named it (between, a pass looks only at what changed).
    #[schemars(range(min = 1000))]
    pub rescan_full_ms: u64,
    /// The kernel's flood limit: events one process may report per trap
    /// and per `floodWindowMs` on average (default 64); the rest are counted, carried
    /// in its next alert (`suppressed`) and in a loss report. 0 turns it
    /// off (then one process can fill the ring buffer).
    pub flood_limit: u32,
    /// The flood limit's window in milliseconds (default 1000, at least 1).
    #[schemars(range(min = 1))]
    pub flood_window_ms: u64,
    /// Events of one process per trap that may come at once before the
    /// flood limit applies (default 16).
    pub flood_burst: u32,
    /// Node name written into alerts (default: `FALCO_K8S_NODE_NAME` (the
    /// Falco Helm chart), else the `NODE_NAME` environment
    /// variable, e.g. from the downward API, else the host name).
    pub node_name: Option<String>,
    /// The host's root as seen by Falco (default `/`; `/host` when Falco
    /// runs in a container with the host mounted there).
    pub host_root: String,
    /// The proc filesystem used for process details (default `/proc`).
    pub proc_root: String,
    /// Most events in one `next_batch` (default 512, 1 to 65536).
    #[schemars(range(min = 1, max = 65536))]
    pub batch_size: u32,
    /// Longest wait of `next_batch` for a first event before it reports a
    /// timeout, in milliseconds (default 50, 1 to 100).
    #[schemars(range(min = 1, max = 100))]
    pub batch_timeout_ms: u64,
    /// The Kubernetes policy source: KivePolicies of every namespace and the
    /// pods of this node, from the API server (off by default).
    pub kubernetes: KubernetesConfig,
    /// Extra CA certificates (a PEM file) trusted for HTTPS callbacks,
    /// besides the system roots.
    pub callback_ca_bundle: Option<String>,
    /// Let callbacks reach loopback addresses (127.0.0.0/8, ::1); refused
    /// by default.
    pub callback_allow_loopback: bool,
    /// Let callbacks reach link-local addresses (169.254.0.0/16,
    /// fe80::/10); refused by default.
    pub callback_allow_link_local: bool,
    /// Let callbacks reach cloud metadata services (169.254.169.254,
    /// fd00:ec2::254, 100.100.100.200, metadata.google.internal); refused
    /// by default.
    pub callback_allow_metadata: bool,
    /// When not empty, the only callback destinations: host names,
    /// addresses or CIDRs (each allowed even if loopback or link-local).
    pub callback_allowed_hosts: Vec<String>,
    /// Also inject every alert into Falco's `syscall` source as an async
    /// event (`evt.asynctype = kive_alert`, thread id = the accessing
    /// thread), so that `source: syscall` rules can use `kive.*` fields
    /// (off by default; needs the syscall source enabled, nodriver too).
    pub async_events: bool,
    /// The webhook source (an `http://` or `https://` open_params): body
    /// limit, TLS certificate, bearer token, queue.
    pub webhook: WebhookConfig,
}

/// `kubernetes` in the init config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct KubernetesConfig {
    /// Watch KivePolicies and this node's pods, and arm pod traps.
    pub enabled: bool,
    /// A kubeconfig file; absent: the in-cluster service account (a
    /// DaemonSet), then the usual kubeconfig lookup.
    pub kubeconfig: Option<String>,
    /// Namespaces whose KivePolicies may select pods of any namespace
    /// (default `[kivebpf-system]`); a policy of any other namespace acts
    /// only on pods of its own namespace.
    pub cluster_wide_namespaces: Option<Vec<String>>,
    /// Arm `host: true` traps of KivePolicies in cluster-wide namespaces
    /// (default off: they are rejected with an error naming the policy).
    pub allow_host_traps: bool,
}

impl KubernetesConfig {
    /// The tenant scope settings.
    pub fn scope(&self) -> ScopeConfig {
        let mut scope = ScopeConfig {
            allow_host_traps: self.allow_host_traps,
            ..ScopeConfig::default()
        };
        if let Some(ns) = &self.cluster_wide_namespaces {
            scope.cluster_wide_namespaces = ns.clone();
        }
        scope
    }
}

impl<'de> Deserialize<'de> for KiveConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut map = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        for w in deprecated::migrate(&mut map) {
            log::warn!("kive: {w}");
        }
        // the derived (remote = "Self") deserializer, on the migrated keys
        KiveConfig::deserialize(serde_json::Value::Object(map)).map_err(D::Error::custom)
    }
}

impl Default for KiveConfig {
    fn default() -> Self {
        let engine = EngineConfig::default();
        Self {
            mode: Mode::Live,
            replay_file: None,
            policy_files: Vec::new(),
            policies: None,
            tier: TierChoice::Auto,
            ring_bytes: engine.ring_bytes,
            max_traps: engine.max_traps,
            queue_capacity: 65536,
            rescan_ms: 1000,
            rescan_full_ms: 600_000,
            flood_limit: engine.flood_limit.events,
            flood_window_ms: engine.flood_limit.window.as_millis() as u64,
            flood_burst: engine.flood_limit.burst,
            node_name: None,
            host_root: "/".into(),
            proc_root: "/proc".into(),
            batch_size: 512,
            batch_timeout_ms: 50,
            kubernetes: KubernetesConfig::default(),
            callback_ca_bundle: None,
            callback_allow_loopback: false,
            callback_allow_link_local: false,
            callback_allow_metadata: false,
            callback_allowed_hosts: Vec::new(),
            async_events: false,
            webhook: WebhookConfig::default(),
        }
    }
}

impl KiveConfig {
    /// Parses a JSON `init_config` (an empty string is `{}`) and validates it.
    pub fn from_json(text: &str) -> Result<Self, FalcoError> {
        let text = if text.trim().is_empty() { "{}" } else { text };
        let cfg: Self = serde_json::from_str(text).map_err(|e| FalcoError::Config {
            key: "(json)".into(),
            message: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values that the schema cannot express.
    pub fn validate(&self) -> Result<(), FalcoError> {
        let bad = |key: &str, message: String| {
            Err(FalcoError::Config {
                key: key.into(),
                message,
            })
        };
        // mode replay without replayFile is valid here: open_params may
        // name the file; open() says so if neither does
        if !self.ring_bytes.is_power_of_two() || self.ring_bytes < 4096 {
            return bad(
                "ringBytes",
                format!("{} is not a power of two of at least 4096", self.ring_bytes),
            );
        }
        if self.max_traps == 0 {
            return bad("maxTraps", "must be at least 1".into());
        }
        if self.queue_capacity == 0 {
            return bad("queueCapacity", "must be at least 1".into());
        }
        if self.flood_window_ms == 0 {
            return bad("floodWindowMs", "must be at least 1".into());
        }
        if self.rescan_ms < 10 {
            return bad("rescanMs", format!("{} is below 10", self.rescan_ms));
        }
        if self.rescan_full_ms < 1000 {
            return bad(
                "rescanFullMs",
                format!("{} is below 1000", self.rescan_full_ms),
            );
        }
        if !(1..=65536).contains(&self.batch_size) {
            return bad(
                "batchSize",
                format!("{} is not between 1 and 65536", self.batch_size),
            );
        }
        if !(1..=100).contains(&self.batch_timeout_ms) {
            return bad(
                "batchTimeoutMs",
                format!("{} is not between 1 and 100", self.batch_timeout_ms),
            );
        }
        if let Err(e) = Destinations::new(self.callback_destinations()) {
            return bad(
                &format!("callbackAllowedHosts[{}]", e.index),
                format!("{:?} is not a host name, an address or a CIDR", e.entry),
            );
        }
        if let Err((key, message)) = self.webhook.validate() {
            return bad(key, message);
        }
        for (i, f) in self.policy_files.iter().enumerate() {
            if f.is_empty() {
                return bad(&format!("policyFiles[{i}]"), "empty path".into());
            }
        }
        Ok(())
    }

    /// The runtime settings of live mode.
    pub fn runtime_config(&self) -> RuntimeConfig {
        let mut rc = RuntimeConfig {
            queue_capacity: self.queue_capacity as usize,
            rescan: Duration::from_millis(self.rescan_ms),
            rescan_full: Duration::from_millis(self.rescan_full_ms),
            host_root: PathBuf::from(&self.host_root),
            proc_root: PathBuf::from(&self.proc_root),
            ..RuntimeConfig::default()
        };
        rc.engine.tier = self.tier;
        rc.engine.ring_bytes = self.ring_bytes;
        rc.engine.max_traps = self.max_traps;
        rc.engine.flood_limit = crate::trap::FloodLimit {
            events: self.flood_limit,
            window: Duration::from_millis(self.flood_window_ms),
            burst: self.flood_burst,
        };
        if let Some(n) = self.node_name.as_deref().filter(|n| !n.is_empty()) {
            rc.node_name = n.to_string();
        }
        if let Some(cb) = rc.callbacks.as_mut() {
            cb.ca_bundle = self.callback_ca_bundle.as_ref().map(PathBuf::from);
            cb.destinations = self.callback_destinations();
        }
        // Falco's source thread waits in next_batch: it reads the ring
        // where the settings allow
        rc.read_in_caller = rc.caller_read_fits();
        rc
    }

    /// Where callbacks may go.
    pub fn callback_destinations(&self) -> DestinationConfig {
        DestinationConfig {
            allow_loopback: self.callback_allow_loopback,
            allow_link_local: self.callback_allow_link_local,
            allow_metadata: self.callback_allow_metadata,
            allowed: self.callback_allowed_hosts.clone(),
        }
    }

    /// The cluster source's settings, when it is enabled.
    pub fn cluster_config(&self, node_name: &str) -> Option<ClusterConfig> {
        self.kubernetes.enabled.then(|| ClusterConfig {
            kubeconfig: self.kubernetes.kubeconfig.as_ref().map(PathBuf::from),
            node_name: node_name.to_string(),
            resync: Duration::from_millis(self.rescan_ms),
            scope: ScopeConfig {
                callback_destinations: Some(self.callback_destinations()),
                ..self.kubernetes.scope()
            },
        })
    }

    /// The JSON schema published to Falco (pretty JSON).
    pub fn schema_json() -> String {
        serde_json::to_string_pretty(&schemars::schema_for!(KiveConfig))
            .expect("a schema always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_is_live_with_defaults() {
        let c = KiveConfig::from_json("").expect("empty is {}");
        assert_eq!(c, KiveConfig::default());
        assert_eq!(c.mode, Mode::Live);
        assert_eq!(c.batch_timeout_ms, 50);
        assert_eq!(KiveConfig::from_json("{}").expect("{}"), c);
    }

    #[test]
    fn keys_are_camel_case_and_unknown_keys_are_rejected() {
        let c = KiveConfig::from_json(
            r#"{"mode":"replay","replayFile":"a.jsonl","ringBytes":8192,"tier":"tracepoint","policyFiles":["p.yaml"]}"#,
        )
        .expect("valid");
        assert_eq!(c.mode, Mode::Replay);
        assert_eq!(c.replay_file.as_deref(), Some("a.jsonl"));
        assert_eq!(c.tier, TierChoice::Tracepoint);
        let e = KiveConfig::from_json(r#"{"replay_file":"a"}"#).expect_err("snake case");
        assert!(e.to_string().contains("unknown field `replay_file`"), "{e}");
    }

    #[test]
    fn invalid_values_name_their_key() {
        for (json, key) in [
            (r#"{"ringBytes":5000}"#, "ringBytes"),
            (r#"{"ringBytes":2048}"#, "ringBytes"),
            (r#"{"batchSize":0}"#, "batchSize"),
            (r#"{"batchTimeoutMs":1000}"#, "batchTimeoutMs"),
            (r#"{"rescanMs":1}"#, "rescanMs"),
            (r#"{"rescanFullMs":999}"#, "rescanFullMs"),
            (r#"{"policyFiles":[""]}"#, "policyFiles[0]"),
        ] {
            let e = KiveConfig::from_json(json).expect_err(json);
            assert!(e.to_string().contains(key), "{json}: {e}");
        }
        let e = KiveConfig::from_json(r#"{"mode":"bogus"}"#).expect_err("bad mode");
        assert!(e.to_string().contains("unknown variant `bogus`"), "{e}");
        // open_params may name the file: checked at open, not here
        let c = KiveConfig::from_json(r#"{"mode":"replay"}"#).expect("replay without a file");
        assert_eq!(c.mode, Mode::Replay);
    }

    #[test]
    fn schema_documents_every_key_and_forbids_others() {
        let s: serde_json::Value = serde_json::from_str(&KiveConfig::schema_json()).expect("json");
        assert_eq!(s["additionalProperties"], serde_json::json!(false), "{s:#}");
        assert_eq!(s["title"], serde_json::json!("KiveConfig"), "{s:#}");
        let props = s["properties"].as_object().expect("properties");
        for key in [
            "mode",
            "replayFile",
            "policyFiles",
            "policies",
            "tier",
            "ringBytes",
            "maxTraps",
            "queueCapacity",
            "rescanMs",
            "rescanFullMs",
            "nodeName",
            "hostRoot",
            "procRoot",
            "batchSize",
            "batchTimeoutMs",
        ] {
            let p = props.get(key).unwrap_or_else(|| panic!("{key} in schema"));
            assert!(
                p.get("description").is_some(),
                "{key} has a description: {p}"
            );
        }
        assert_eq!(
            props["ringBytes"]["default"],
            serde_json::json!(4 * 1024 * 1024)
        );
    }

    #[test]
    fn a_deprecated_key_is_accepted_for_its_replacement_and_unknown_keys_still_fail() {
        let c = KiveConfig::from_json(r#"{"queueSize":128}"#).expect("deprecated key accepted");
        assert_eq!(c.queue_capacity, 128, "its value goes to queueCapacity");
        let c = KiveConfig::from_json(r#"{"queueSize":128,"queueCapacity":256}"#).expect("both");
        assert_eq!(c.queue_capacity, 256, "the current key wins");
        let e = KiveConfig::from_json(r#"{"queueSize":0}"#).expect_err("validated as the new key");
        assert!(e.to_string().contains("queueCapacity"), "{e}");
        let e = KiveConfig::from_json(r#"{"queueSize":1,"noSuchKey":1}"#).expect_err("unknown");
        assert!(e.to_string().contains("unknown field `noSuchKey`"), "{e}");
        let e = KiveConfig::from_json("[]").expect_err("not an object");
        assert!(e.to_string().contains("init_config"), "{e}");
    }

    #[test]
    fn node_name_overrides_the_environment_default() {
        let c = KiveConfig::from_json(r#"{"nodeName":"node-7","hostRoot":"/host"}"#).expect("ok");
        let rc = c.runtime_config();
        assert_eq!(rc.node_name, "node-7");
        assert_eq!(rc.host_root, PathBuf::from("/host"));
    }

    #[test]
    fn next_batch_reads_the_ring_itself_only_with_a_ring_and_queue_that_fit() {
        let rc = |json: &str| {
            KiveConfig::from_json(json)
                .unwrap_or_else(|e| panic!("{json}: {e}"))
                .runtime_config()
                .read_in_caller
        };
        assert!(rc("{}"), "the defaults (4 MiB ring, 65,536 places) fit");
        assert!(
            rc(r#"{"ringBytes":1048576,"queueCapacity":4096}"#),
            "the least that fits"
        );
        assert!(!rc(r#"{"ringBytes":524288}"#), "a ring under 1 MiB");
        assert!(
            !rc(r#"{"queueCapacity":4095}"#),
            "a queue under a whole read"
        );
    }
}
