//! KiveAlert v1: kivebpf's alert JSON, with the seed's names and nesting
//! exactly; what kive adds lives in new keys only.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The alert version this build writes.
pub const ALERT_VERSION: &str = "v1";

/// One access to a trapped file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KiveAlert {
    /// `kive-alert-version` (`v1`).
    #[serde(rename = "kive-alert-version")]
    pub alert_version: String,
    /// `kive-policy-name`: `metadata.name` of the policy.
    #[serde(rename = "kive-policy-name")]
    pub policy_name: String,
    /// RFC 3339 with nanoseconds, from the kernel's time of the access.
    pub timestamp: String,
    /// The file and the access.
    pub metadata: AlertMetadata,
    /// The trap's `metadata`.
    #[serde(rename = "custom-metadata", default)]
    pub custom_metadata: BTreeMap<String, String>,
    /// The pod whose file it is (empty for a host trap).
    #[serde(default)]
    pub pod: PodMetadata,
    /// The node.
    #[serde(default)]
    pub node: NodeMetadata,
    /// The process that accessed the file.
    #[serde(default)]
    pub process: ProcessMetadata,
    /// kive: namespace of the policy.
    #[serde(
        rename = "kive-policy-namespace",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub policy_namespace: Option<String>,
    /// kive: who opened the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accessor: Option<AccessorMetadata>,
    /// kive: severity (1-10) of the policy rule (KubeArmor `severity`).
    #[serde(
        rename = "kive-policy-severity",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub policy_severity: Option<u8>,
    /// kive: tags of the policy rule (KubeArmor `tags`).
    #[serde(
        rename = "kive-policy-tags",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub policy_tags: Vec<String>,
    /// kive: message of the policy rule (KubeArmor `message`).
    #[serde(
        rename = "kive-policy-message",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub policy_message: String,
}

/// custom-metadata key carrying a rule's severity (and so kive.policy.severity).
pub const META_SEVERITY: &str = "policy-severity";
/// custom-metadata key carrying a rule's tags, comma-separated.
pub const META_TAGS: &str = "policy-tags";
/// custom-metadata key carrying a rule's message.
pub const META_MESSAGE: &str = "policy-message";

/// `metadata` of a KiveAlert.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertMetadata {
    /// Path of the file (inside its owner's root).
    pub path: String,
    /// Inode number.
    pub inode: u64,
    /// MAY_* bits of the access.
    pub mask: i32,
    /// Boot id of the node's kernel.
    #[serde(rename = "kernel-id")]
    pub kernel_id: String,
    /// The trap's callback URL (empty when none).
    #[serde(default)]
    pub callback: String,
    /// kive: device as `major:minor` (kernel numbering).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub dev: String,
    /// kive: the trap's path as written in the policy.
    #[serde(
        rename = "trap-path",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub trap_path: String,
    /// kive: program that saw the access.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hook: String,
    /// kive: `audit` or `block`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub action: String,
    /// kive: open flags.
    #[serde(
        rename = "open-flags",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub open_flags: Option<u32>,
    /// kive: `host` (the node's own file) or `pod`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner: String,
    /// kive: cgroup v2 id of the accessing process.
    #[serde(rename = "cgroup-id", default, skip_serializing_if = "Option::is_none")]
    pub cgroup_id: Option<u64>,
    /// kive: alerts of this trap and process held back since the previous
    /// alert, by the trap's rate limit and by the kernel's flood limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppressed: Option<u64>,
    /// kive: set on a loss report only (no file was accessed; `path` is
    /// empty): events lost since the previous report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<LossMetadata>,
    /// kive: the trapped file's names were changed (not an access).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tamper: Option<TamperMetadata>,
    /// kive: the accessed inode was armed as this path and has since left
    /// it (renamed, linked elsewhere): the trap followed the inode.
    #[serde(rename = "armed-as", default, skip_serializing_if = "String::is_empty")]
    pub armed_as: String,
}

/// kive: `metadata.loss` of a loss report: trap hits that did not become
/// alerts since the previous report, by cause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LossMetadata {
    /// The kernel's ring buffer was full.
    #[serde(default)]
    pub ring: u64,
    /// The queue between the ring reader and the consumer was full.
    #[serde(default)]
    pub queue: u64,
    /// Held back by the kernel's per-(trap, process) flood limit.
    #[serde(default)]
    pub limited: u64,
}

impl LossMetadata {
    /// Every loss counted.
    pub fn total(&self) -> u64 {
        self.ring
            .saturating_add(self.queue)
            .saturating_add(self.limited)
    }
}

/// kive: `metadata.tamper` of a KiveAlert.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TamperMetadata {
    /// `rename`, `link`, `unlink` or `replace`.
    pub kind: String,
    /// The name the file had (empty if unknown).
    #[serde(rename = "old-path", default, skip_serializing_if = "String::is_empty")]
    pub old_path: String,
    /// Its new name (empty if unknown or none).
    #[serde(rename = "new-path", default, skip_serializing_if = "String::is_empty")]
    pub new_path: String,
}

/// `pod` of a KiveAlert.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PodMetadata {
    /// Pod name.
    #[serde(default)]
    pub name: String,
    /// Pod namespace.
    #[serde(default)]
    pub namespace: String,
    /// Pod IP.
    #[serde(default)]
    pub ip: String,
    /// The container.
    #[serde(default)]
    pub container: ContainerMetadata,
    /// kive: pod labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// kive: pod uid.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// kive: labels of the pod's namespace.
    #[serde(
        rename = "namespace-labels",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub namespace_labels: BTreeMap<String, String>,
    /// kive: the pod's service account.
    #[serde(
        rename = "service-account",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub service_account: String,
    /// kive: the owning workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<WorkloadMetadata>,
}

/// kive: `pod.workload` of a KiveAlert.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkloadMetadata {
    /// Deployment, StatefulSet, DaemonSet, Job, CronJob, ReplicaSet, ...
    pub kind: String,
    /// Its name.
    pub name: String,
}

/// kive: `accessor` of a KiveAlert: who opened the file, which may differ
/// from the owner (shared volumes, hostPath, `kubectl cp`, node processes).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AccessorMetadata {
    /// The opener was not in a container.
    #[serde(default)]
    pub host: bool,
    /// The opener's container (`runtime://id`), when it is in one.
    #[serde(
        rename = "container-id",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub container_id: String,
    /// Its container name, when kive knows the container.
    #[serde(
        rename = "container-name",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub container_name: String,
    /// Its pod name, when kive knows the container.
    #[serde(rename = "pod-name", default, skip_serializing_if = "String::is_empty")]
    pub pod_name: String,
    /// Its pod namespace, when kive knows the container.
    #[serde(
        rename = "pod-namespace",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub pod_namespace: String,
    /// Its cgroup v2 path.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cgroup: String,
}

/// `pod.container` of a KiveAlert.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerMetadata {
    /// `runtime://id`.
    #[serde(default)]
    pub id: String,
    /// Container name.
    #[serde(default)]
    pub name: String,
    /// kive: container image.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image: String,
}

/// `node` of a KiveAlert.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeMetadata {
    /// Node name.
    #[serde(default)]
    pub name: String,
}

/// `process` of a KiveAlert.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessMetadata {
    /// Host thread id.
    #[serde(default)]
    pub pid: i32,
    /// Host process id.
    #[serde(default)]
    pub tgid: u32,
    /// Real uid.
    #[serde(default)]
    pub uid: u32,
    /// Real gid.
    #[serde(default)]
    pub gid: u32,
    /// Executable path.
    #[serde(default)]
    pub binary: String,
    /// Working directory.
    #[serde(default)]
    pub cwd: String,
    /// Command line, space separated.
    #[serde(default)]
    pub arguments: String,
    /// kive: task command name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub comm: String,
    /// kive: parent's host process id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ppid: Option<u32>,
    /// kive: the parent's command name.
    #[serde(
        rename = "parent-comm",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub parent_comm: String,
    /// kive: the parent's executable path, as the parent sees it.
    #[serde(
        rename = "parent-binary",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub parent_binary: String,
    /// kive: process id inside the process's own pid namespace.
    #[serde(rename = "ns-pid", default, skip_serializing_if = "Option::is_none")]
    pub ns_pid: Option<u32>,
    /// kive: login uid (absent when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loginuid: Option<u32>,
    /// kive: what the capture is worth (`binary-truncated`, `binary-memfd`,
    /// `binary-deleted`, ...: see [`super::flags::ProcessFlags`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
}

impl KiveAlert {
    /// One JSON line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a KiveAlert always serializes")
    }

    /// Wall-clock nanoseconds of `timestamp` (0 if it does not parse).
    pub fn timestamp_ns(&self) -> u64 {
        chrono::DateTime::parse_from_rfc3339(&self.timestamp)
            .ok()
            .and_then(|t| t.timestamp_nanos_opt())
            .map(|n| n.max(0) as u64)
            .unwrap_or(0)
    }
}

/// RFC 3339 with nanoseconds, UTC.
pub fn rfc3339_nanos(wall_ns: u64) -> String {
    let secs = (wall_ns / 1_000_000_000) as i64;
    let nanos = (wall_ns % 1_000_000_000) as u32;
    chrono::DateTime::from_timestamp(secs, nanos)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// Names of the MAY_* bits of a mask (`open` only when nothing else is set).
pub fn access_names(mask: u32) -> Vec<&'static str> {
    let names: Vec<_> = [
        (1, "exec"),
        (4, "read"),
        (2, "write"),
        (8, "append"),
        (16, "access"),
    ]
    .into_iter()
    .filter(|(bit, _)| mask & bit != 0)
    .map(|(_, n)| n)
    .collect();
    if names.is_empty() && mask & 32 != 0 {
        vec!["open"]
    } else {
        names
    }
}
