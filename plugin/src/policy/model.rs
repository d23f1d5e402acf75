//! KivePolicy (`kivebpf.san7o.github.io/v1`) as Rust types: exactly
//! kivebpf's APIv1 schema, plus additive optional fields (`host` on a
//! match entry; `action`, `rateLimit`, `allowSharedFile` and the rule
//! conditions `readOnly`, `ownerOnly`, `fromSource`, `allowFrom`,
//! `directory`, `recursive` on a trap).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

/// The API group of KivePolicy.
pub const GROUP: &str = "kivebpf.san7o.github.io";
/// The API versions served (identical schemas).
pub const VERSIONS: [&str; 2] = ["v1", "v2alpha1"];
/// The kind.
pub const KIND: &str = "KivePolicy";

// The CustomResource derive also generates the Kubernetes resource type
// `KivePolicyResource` and its CRD (see k8s::crd).
/// The traps of a KivePolicy.
#[derive(
    Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema, kube::CustomResource,
)]
#[kube(
    group = "kivebpf.san7o.github.io",
    version = "v1",
    kind = "KivePolicy",
    root = "KivePolicyResource",
    plural = "kivepolicies",
    shortname = "kp",
    namespaced,
    doc = "A set of file traps and the pods (or the node) they apply to."
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KivePolicySpec {
    /// Version of the KiveAlert output (`v1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_version: Option<String>,
    /// List of traps.
    #[serde(default)]
    pub traps: Vec<KiveTrap>,
}

/// What the kernel does on an access to a trapped file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TrapAction {
    /// Report the access (kivebpf's behaviour).
    #[default]
    Audit,
    /// Deny the open with EPERM (LSM and trampoline tiers) and report it.
    Block,
}

/// One trapped path and the workloads it applies to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KiveTrap {
    /// Absolute path of the file to monitor, inside each matching container.
    #[serde(default)]
    pub path: String,
    /// Create the file if it does not exist (never truncates an existing one).
    #[serde(default)]
    pub create: bool,
    /// Permission bits of a created file (Kubernetes style: YAML `0444` is octal).
    #[serde(
        default,
        deserialize_with = "mode_k8s",
        skip_serializing_if = "Option::is_none"
    )]
    pub mode: Option<u32>,
    /// Send each alert of this trap by HTTP POST to this URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<String>,
    /// Additional information copied into every alert (`custom-metadata`).
    #[serde(
        default,
        deserialize_with = "metadata_map_or_string",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub metadata: BTreeMap<String, String>,
    /// Match any of these entries (logical OR); an empty list matches nothing.
    #[serde(default)]
    pub match_any: Vec<KiveTrapMatch>,
    /// kive extension: `audit` (default) or `block`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<TrapAction>,
    /// kive extension: at most `alerts` alerts per process per `seconds`
    /// for this trap (off when absent); the next alert counts the rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// kive extension: a pod's trap may arm a file on a node-shared mount
    /// (a hostPath, a shared volume); never created there. Off: such a trap
    /// stays pending.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_shared_file: bool,
    /// kive extension: reads pass silently; opens for writing or appending
    /// are reported (and blocked with `action: block`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// kive extension: the file owner's accesses pass silently.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub owner_only: bool,
    /// kive extension: the trap applies only to accesses by these
    /// executables (absolute paths, matched by inode).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_source: Vec<String>,
    /// kive extension: these executables (absolute paths, matched by inode)
    /// pass silently; every other one is reported (and blocked with
    /// `action: block`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_from: Vec<String>,
    /// kive extension: `path` is a directory; every regular file in it is
    /// trapped (files created later within the rescan period).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub directory: bool,
    /// kive extension: with `directory`, the files below it too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recursive: bool,
}

/// A per-trap, per-process alert limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimit {
    /// Alerts allowed per window.
    pub alerts: u32,
    /// Window length in seconds.
    pub seconds: u32,
}

/// One match entry: all the fields given must match (logical AND); an
/// absent or empty field matches anything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KiveTrapMatch {
    /// Pod name, exact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Container name: `regex:<RE2>` (unanchored), `glob:<pattern>`, or exact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
    /// Pod namespace, exact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Pod IP (any of the pod's IPs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Pod labels that must all be present with these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// kive extension: the node's own filesystem instead of a pod's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host: bool,
}

impl KiveTrapMatch {
    /// Whether any pod-selecting field is set.
    pub fn has_pod_fields(&self) -> bool {
        let set = |o: &Option<String>| o.as_deref().is_some_and(|s| !s.is_empty());
        set(&self.pod)
            || set(&self.container_name)
            || set(&self.namespace)
            || set(&self.ip)
            || !self.match_labels.is_empty()
    }
}

/// kivebpf's APIv1 doc shows `metadata` as a string, its code and samples
/// as a map: accept both (a string becomes `{metadata: <string>}`).
fn metadata_map_or_string<'de, D>(d: D) -> Result<BTreeMap<String, String>, D::Error>
where
    D: Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Map(BTreeMap<String, String>),
        Text(String),
        Null(()),
    }
    Ok(match Either::deserialize(d)? {
        Either::Map(m) => m,
        Either::Text(s) if s.is_empty() => BTreeMap::new(),
        Either::Text(s) => BTreeMap::from([("metadata".to_string(), s)]),
        Either::Null(()) => BTreeMap::new(),
    })
}

/// `mode` as Kubernetes reads YAML (1.1): `0444` and `0o444` are octal,
/// `444` is decimal.
fn mode_k8s<'de, D>(d: D) -> Result<Option<u32>, D::Error>
where
    D: Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Num(u32),
        Text(String),
        Null(()),
    }
    match Raw::deserialize(d)? {
        Raw::Num(n) => Ok(Some(n)),
        Raw::Null(()) => Ok(None),
        Raw::Text(t) => {
            let digits = t
                .strip_prefix("0o")
                .or_else(|| t.strip_prefix('0'))
                .ok_or_else(|| serde::de::Error::custom(format!("{t:?} is not a file mode")))?;
            u32::from_str_radix(if digits.is_empty() { "0" } else { digits }, 8)
                .map(Some)
                .map_err(|_| serde::de::Error::custom(format!("{t:?} is not an octal file mode")))
        }
    }
}

/// The object metadata kive reads from a policy document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyMeta {
    /// Policy name.
    #[serde(default)]
    pub name: String,
    /// Policy namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// A whole KivePolicy document as read from a file.
#[derive(Debug, Clone, PartialEq)]
pub struct KivePolicy {
    /// apiVersion as written.
    pub api_version: String,
    /// metadata.name / namespace.
    pub meta: PolicyMeta,
    /// spec.
    pub spec: KivePolicySpec,
}

impl KivePolicy {
    /// `namespace/name`, or `name` for a policy without a namespace.
    pub fn qualified_name(&self) -> String {
        match &self.meta.namespace {
            Some(ns) if !ns.is_empty() => format!("{ns}/{}", self.meta.name),
            _ => self.meta.name.clone(),
        }
    }
}
