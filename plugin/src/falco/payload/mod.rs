//! kive's event payload: a versioned binary encoding of one [`KiveAlert`],
//! carried as the data of a Falco plugin event (type 322).
//!
//! Layout of version 1 (all integers little-endian):
//!
//! | offset | size | content |
//! |---|---|---|
//! | 0 | 1 | magic `0x4b` (`K`) |
//! | 1 | 1 | version (`1`) |
//! | 2 | 2 | number of slots `n` (42: 34 strings, 3 maps, the loss slot, then 4 tail strings (tamper kind, old path, new path, armed-as); readers ignore extra slots, and read missing slots after the maps as empty) |
//! | 4 | 4 | presence flags of optional values (bits 12-15 mark pid, tgid, uid, gid absent: a replayed line without them) |
//! | 8 | 64 | numbers: inode u64, cgroup id u64, suppressed u64, pid i32, tgid u32, uid u32, gid u32, ppid u32, mask i32, open flags u32, ns pid u32, loginuid u32, process flags u32 |
//! | 72 | 4·n | end offset of each slot, relative to the slot area |
//! | 72+4·n | … | slot area: the slots' bytes back to back |
//!
//! A string slot holds UTF-8 bytes (empty = absent); a map slot holds
//! `(u32 key length, key, u32 value length, value)` repeated; the loss
//! slot holds `metadata.loss` as ring u64, queue u64, limited u64 (empty
//! = not a loss report). Decoding
//! copies nothing: [`Decoded`] keeps the numbers and the slot offsets, and
//! every string is sliced out of the event buffer on demand.

use std::collections::BTreeMap;
mod decode;
mod encode;
mod event;
mod stamp;
#[cfg(test)]
pub(crate) mod tests;
mod view;
#[cfg(test)]
mod view_tests;

pub use decode::{decode_alert, Decoded, MapIter};
pub use encode::{encode, encode_parts, Maps, MAP_SLOTS};
pub use event::{KiveAnyEvent, KivePayload, SyscallPayload};
pub use view::encode_view;

use super::error::FalcoError;
use crate::alert::kive_alert::{META_MESSAGE, META_SEVERITY, META_TAGS};
use crate::alert::{
    AccessorMetadata, AlertMetadata, ContainerMetadata, KiveAlert, LossMetadata, NodeMetadata,
    PodMetadata, ProcessFlags, ProcessMetadata, TamperMetadata, WorkloadMetadata,
};

/// First byte of every payload.
pub const MAGIC: u8 = 0x4b;
/// The version this build writes (and the newest it reads).
pub const PAYLOAD_VERSION: u8 = 1;

const HEADER: usize = 8;
const NUMBERS: usize = 64;
/// The payload's fixed part: header and numbers (then the slot table).
pub(crate) const FIXED: usize = HEADER + NUMBERS;

const HAS_CGROUP: u32 = 1;
const HAS_PPID: u32 = 1 << 1;
const HAS_OPEN_FLAGS: u32 = 1 << 2;
const HAS_POLICY_NAMESPACE: u32 = 1 << 3;
const HAS_WORKLOAD: u32 = 1 << 4;
const HAS_ACCESSOR: u32 = 1 << 5;
const ACCESSOR_HOST: u32 = 1 << 6;
const HAS_SUPPRESSED: u32 = 1 << 7;
const HAS_NS_PID: u32 = 1 << 8;
const HAS_LOGINUID: u32 = 1 << 9;
const HAS_PROCESS_FLAGS: u32 = 1 << 10;
const HAS_LOSS: u32 = 1 << 11;
// absence bits (a payload written before them has every id present)
const NO_PID: u32 = 1 << 12;
const NO_TGID: u32 = 1 << 13;
const NO_UID: u32 = 1 << 14;
const NO_GID: u32 = 1 << 15;

/// The string and map slots of version 1, in wire order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Slot {
    /// `kive-alert-version`.
    AlertVersion,
    /// `kive-policy-name`.
    PolicyName,
    /// `kive-policy-namespace`.
    PolicyNamespace,
    /// `timestamp`.
    Timestamp,
    /// `metadata.path`.
    Path,
    /// `metadata.kernel-id`.
    KernelId,
    /// `metadata.callback`.
    Callback,
    /// `metadata.dev`.
    Dev,
    /// `metadata.trap-path`.
    TrapPath,
    /// `metadata.hook`.
    Hook,
    /// `metadata.action`.
    Action,
    /// `metadata.owner`.
    Owner,
    /// `pod.name`.
    PodName,
    /// `pod.namespace`.
    PodNamespace,
    /// `pod.ip`.
    PodIp,
    /// `pod.container.id`.
    ContainerId,
    /// `pod.container.name`.
    ContainerName,
    /// `node.name`.
    NodeName,
    /// `process.binary`.
    Binary,
    /// `process.cwd`.
    Cwd,
    /// `process.arguments`.
    Arguments,
    /// `process.comm`.
    Comm,
    /// `pod.container.image`.
    ContainerImage,
    /// `pod.uid`.
    PodUid,
    /// `pod.service-account`.
    ServiceAccount,
    /// `pod.workload.kind`.
    WorkloadKind,
    /// `pod.workload.name`.
    WorkloadName,
    /// `accessor.container-id`.
    AccessorContainerId,
    /// `accessor.container-name`.
    AccessorContainerName,
    /// `accessor.pod-name`.
    AccessorPodName,
    /// `accessor.pod-namespace`.
    AccessorPodNamespace,
    /// `accessor.cgroup`.
    AccessorCgroup,
    /// `process.parent-comm`.
    ParentComm,
    /// `process.parent-binary`.
    ParentBinary,
    /// `custom-metadata` (map).
    CustomMetadata,
    /// `pod.labels` (map).
    PodLabels,
    /// `pod.namespace-labels` (map).
    NamespaceLabels,
    /// `metadata.loss` (three u64; empty when not a loss report).
    Loss,
    /// `metadata.tamper.kind` (tail string).
    TamperKind,
    /// `metadata.tamper.old-path` (tail string).
    TamperOldPath,
    /// `metadata.tamper.new-path` (tail string).
    TamperNewPath,
    /// `metadata.armed-as` (tail string).
    ArmedAs,
}

/// Number of slots this build writes.
pub const SLOTS: usize = Slot::ArmedAs as usize + 1;
/// Number of slots of the first payloads (before the loss slot): the
/// fewest a reader accepts.
pub const MIN_SLOTS: usize = Slot::NamespaceLabels as usize + 1;
/// Number of string slots after the loss slot.
pub const TAIL_SLOTS: usize = SLOTS - Slot::TamperKind as usize;

impl Slot {
    /// Every slot, in wire order (`Slot::ALL[i] as usize == i`).
    pub const ALL: [Slot; SLOTS] = [
        Slot::AlertVersion,
        Slot::PolicyName,
        Slot::PolicyNamespace,
        Slot::Timestamp,
        Slot::Path,
        Slot::KernelId,
        Slot::Callback,
        Slot::Dev,
        Slot::TrapPath,
        Slot::Hook,
        Slot::Action,
        Slot::Owner,
        Slot::PodName,
        Slot::PodNamespace,
        Slot::PodIp,
        Slot::ContainerId,
        Slot::ContainerName,
        Slot::NodeName,
        Slot::Binary,
        Slot::Cwd,
        Slot::Arguments,
        Slot::Comm,
        Slot::ContainerImage,
        Slot::PodUid,
        Slot::ServiceAccount,
        Slot::WorkloadKind,
        Slot::WorkloadName,
        Slot::AccessorContainerId,
        Slot::AccessorContainerName,
        Slot::AccessorPodName,
        Slot::AccessorPodNamespace,
        Slot::AccessorCgroup,
        Slot::ParentComm,
        Slot::ParentBinary,
        Slot::CustomMetadata,
        Slot::PodLabels,
        Slot::NamespaceLabels,
        Slot::Loss,
        Slot::TamperKind,
        Slot::TamperOldPath,
        Slot::TamperNewPath,
        Slot::ArmedAs,
    ];
}

/// The numbers of an alert.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Numbers {
    /// `metadata.inode`.
    pub inode: u64,
    /// `metadata.cgroup-id`.
    pub cgroup_id: Option<u64>,
    /// `process.pid` (`None`: a replayed alert without it).
    pub pid: Option<i32>,
    /// `process.tgid` (`None`: a replayed alert without it).
    pub tgid: Option<u32>,
    /// `process.uid` (`None`: a replayed alert without it).
    pub uid: Option<u32>,
    /// `process.gid` (`None`: a replayed alert without it).
    pub gid: Option<u32>,
    /// `process.ppid`.
    pub ppid: Option<u32>,
    /// `metadata.mask`.
    pub mask: i32,
    /// `metadata.open-flags`.
    pub open_flags: Option<u32>,
    /// `metadata.suppressed`.
    pub suppressed: Option<u64>,
    /// `process.ns-pid`.
    pub ns_pid: Option<u32>,
    /// `process.loginuid`.
    pub loginuid: Option<u32>,
    /// `process.flags` as [`crate::alert::ProcessFlags`] bits.
    pub process_flags: Option<u32>,
}

/// Number of string slots (the map slots follow them).
pub const STRING_SLOTS: usize = Slot::CustomMetadata as usize;

/// An alert as borrowed parts, in wire order: what [`encode_parts`]
/// writes. Both a parsed [`KiveAlert`] and a replayed JSON line (parsed
/// without copying) become this.
#[derive(Debug, Clone, Copy)]
pub struct Parts<'a> {
    /// The string slots, in [`Slot`] order.
    pub strings: [&'a str; STRING_SLOTS],
    /// The numbers.
    pub numbers: Numbers,
    /// Whether `kive-policy-namespace` is present.
    pub has_policy_namespace: bool,
    /// Whether `pod.workload` is present.
    pub has_workload: bool,
    /// `accessor.host`, when `accessor` is present.
    pub accessor_host: Option<bool>,
    /// `metadata.loss` as (ring, queue, limited), on a loss report.
    pub loss: Option<[u64; 3]>,
    /// The string slots after the loss slot, in [`Slot`] order.
    pub tail: [&'a str; TAIL_SLOTS],
    /// Whether `process.arguments` is given NUL-separated (the kernel's
    /// argv): written joined with spaces, with no copy of its own.
    pub arguments_nul_separated: bool,
}

/// The payload parts of an alert: one mapping for [`KiveAlert`] and for the
/// borrowed alert that replay parses (same field names, same types up to
/// borrowing), so the two encoders cannot drift apart.
macro_rules! alert_parts {
    ($a:expr) => {{
        let accessor = $a.accessor.as_ref();
        Parts {
            strings: [
                &$a.alert_version,
                &$a.policy_name,
                $a.policy_namespace.as_deref().unwrap_or(""),
                &$a.timestamp,
                &$a.metadata.path,
                &$a.metadata.kernel_id,
                &$a.metadata.callback,
                &$a.metadata.dev,
                &$a.metadata.trap_path,
                &$a.metadata.hook,
                &$a.metadata.action,
                &$a.metadata.owner,
                &$a.pod.name,
                &$a.pod.namespace,
                &$a.pod.ip,
                &$a.pod.container.id,
                &$a.pod.container.name,
                &$a.node.name,
                &$a.process.binary,
                &$a.process.cwd,
                &$a.process.arguments,
                &$a.process.comm,
                &$a.pod.container.image,
                &$a.pod.uid,
                &$a.pod.service_account,
                $a.pod.workload.as_ref().map_or("", |w| &w.kind),
                $a.pod.workload.as_ref().map_or("", |w| &w.name),
                accessor.map_or("", |x| &x.container_id),
                accessor.map_or("", |x| &x.container_name),
                accessor.map_or("", |x| &x.pod_name),
                accessor.map_or("", |x| &x.pod_namespace),
                accessor.map_or("", |x| &x.cgroup),
                &$a.process.parent_comm,
                &$a.process.parent_binary,
            ],
            numbers: Numbers {
                inode: $a.metadata.inode,
                cgroup_id: $a.metadata.cgroup_id,
                // a KiveAlert always has them; a replayed line may not
                pid: $a.process.pid.into(),
                tgid: $a.process.tgid.into(),
                uid: $a.process.uid.into(),
                gid: $a.process.gid.into(),
                ppid: $a.process.ppid,
                mask: $a.metadata.mask,
                open_flags: $a.metadata.open_flags,
                suppressed: $a.metadata.suppressed,
                ns_pid: $a.process.ns_pid,
                loginuid: $a.process.loginuid,
                process_flags: (!$a.process.flags.is_empty())
                    .then(|| $crate::alert::ProcessFlags::from_names(&$a.process.flags).0),
            },
            has_policy_namespace: $a.policy_namespace.is_some(),
            has_workload: $a.pod.workload.is_some(),
            accessor_host: accessor.map(|x| x.host),
            loss: $a.metadata.loss.map(|l| [l.ring, l.queue, l.limited]),
            tail: [
                $a.metadata.tamper.as_ref().map_or("", |t| &t.kind),
                $a.metadata.tamper.as_ref().map_or("", |t| &t.old_path),
                $a.metadata.tamper.as_ref().map_or("", |t| &t.new_path),
                &$a.metadata.armed_as,
            ],
            arguments_nul_separated: false,
        }
    }};
}
pub(crate) use alert_parts;
