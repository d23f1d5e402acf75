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
mod event;

pub use event::{KiveAnyEvent, KivePayload, SyscallPayload};

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
const FIXED: usize = HEADER + NUMBERS;

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
        }
    }};
}
pub(crate) use alert_parts;

/// Encodes an alert into `out` (cleared first).
pub fn encode(a: &KiveAlert, out: &mut Vec<u8>) -> Result<(), FalcoError> {
    let parts = alert_parts!(a);
    fn str_pair<'a>((k, v): (&'a String, &'a String)) -> (&'a str, &'a str) {
        (k, v)
    }
    encode_parts(
        &parts,
        [
            &mut a.custom_metadata.iter().map(str_pair),
            &mut a.pod.labels.iter().map(str_pair),
            &mut a.pod.namespace_labels.iter().map(str_pair),
        ],
        out,
    )
}

/// The map slots' entries, in slot order, each in key order.
pub type Maps<'m, 'a> = [&'m mut dyn Iterator<Item = (&'a str, &'a str)>; MAP_SLOTS];

/// Number of map slots.
pub const MAP_SLOTS: usize = MIN_SLOTS - STRING_SLOTS;

/// Encodes borrowed parts and the maps into `out` (cleared first).
pub fn encode_parts<'a>(
    p: &Parts<'_>,
    maps: Maps<'_, 'a>,
    out: &mut Vec<u8>,
) -> Result<(), FalcoError> {
    out.clear();
    let n = &p.numbers;
    let mut flags = 0;
    if n.cgroup_id.is_some() {
        flags |= HAS_CGROUP;
    }
    if n.ppid.is_some() {
        flags |= HAS_PPID;
    }
    if n.open_flags.is_some() {
        flags |= HAS_OPEN_FLAGS;
    }
    if n.suppressed.is_some() {
        flags |= HAS_SUPPRESSED;
    }
    if n.ns_pid.is_some() {
        flags |= HAS_NS_PID;
    }
    if n.loginuid.is_some() {
        flags |= HAS_LOGINUID;
    }
    if n.process_flags.is_some() {
        flags |= HAS_PROCESS_FLAGS;
    }
    if p.loss.is_some() {
        flags |= HAS_LOSS;
    }
    for (absent, bit) in [
        (n.pid.is_none(), NO_PID),
        (n.tgid.is_none(), NO_TGID),
        (n.uid.is_none(), NO_UID),
        (n.gid.is_none(), NO_GID),
    ] {
        if absent {
            flags |= bit;
        }
    }
    if p.has_policy_namespace {
        flags |= HAS_POLICY_NAMESPACE;
    }
    if p.has_workload {
        flags |= HAS_WORKLOAD;
    }
    match p.accessor_host {
        Some(true) => flags |= HAS_ACCESSOR | ACCESSOR_HOST,
        Some(false) => flags |= HAS_ACCESSOR,
        None => {}
    }
    out.extend_from_slice(&[MAGIC, PAYLOAD_VERSION]);
    out.extend_from_slice(&(SLOTS as u16).to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&n.inode.to_le_bytes());
    out.extend_from_slice(&n.cgroup_id.unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&n.suppressed.unwrap_or(0).to_le_bytes());
    for v in [
        n.pid.unwrap_or(0) as u32,
        n.tgid.unwrap_or(0),
        n.uid.unwrap_or(0),
        n.gid.unwrap_or(0),
        n.ppid.unwrap_or(0),
        n.mask as u32,
        n.open_flags.unwrap_or(0),
        n.ns_pid.unwrap_or(0),
        n.loginuid.unwrap_or(0),
        n.process_flags.unwrap_or(0),
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    let table = out.len();
    out.resize(table + 4 * SLOTS, 0);
    let area = out.len();
    let end = |out: &mut Vec<u8>, slot: usize| -> Result<(), FalcoError> {
        let rel =
            u32::try_from(out.len() - area).map_err(|_| FalcoError::PayloadTooLarge(out.len()))?;
        out[table + 4 * slot..table + 4 * slot + 4].copy_from_slice(&rel.to_le_bytes());
        Ok(())
    };
    for (slot, s) in p.strings.iter().enumerate() {
        out.extend_from_slice(s.as_bytes());
        end(out, slot)?;
    }
    let write_map = |out: &mut Vec<u8>,
                     slot: usize,
                     map: &mut dyn Iterator<Item = (&'a str, &'a str)>|
     -> Result<(), FalcoError> {
        for (k, v) in map {
            for part in [k, v] {
                let len = u32::try_from(part.len())
                    .map_err(|_| FalcoError::PayloadTooLarge(part.len()))?;
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(part.as_bytes());
            }
        }
        end(out, slot)
    };
    for (i, map) in maps.into_iter().enumerate() {
        write_map(out, STRING_SLOTS + i, map)?;
    }
    for v in p.loss.iter().flatten() {
        out.extend_from_slice(&v.to_le_bytes());
    }
    end(out, Slot::Loss as usize)?;
    for (i, s) in p.tail.iter().enumerate() {
        out.extend_from_slice(s.as_bytes());
        end(out, Slot::TamperKind as usize + i)?;
    }
    Ok(())
}

// never panic: bytes past the end read as zero (lengths are checked first)
fn bytes_at<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    b.get(at..at.saturating_add(N))
        .and_then(|s| s.try_into().ok())
        .unwrap_or([0; N])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes_at(b, at))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes_at(b, at))
}

/// What decoding a payload keeps: the numbers and where the slot area
/// is. Holds no reference to the event, so it can live in Falco's
/// per-extraction context while fields slice the event buffer.
///
/// [`Decoded::decode`] checks the header only (O(1): Falco extracts one
/// field per call); each slot access checks its own two offsets, and a
/// slot whose offsets are inconsistent reads as empty.
/// [`Decoded::validate`] checks the whole table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    numbers: Numbers,
    flags: u32,
    nslots: usize,
    area: usize,
    len: usize,
}

impl Decoded {
    /// Checks the header of a payload and reads its numbers.
    pub fn decode(data: &[u8]) -> Result<Self, FalcoError> {
        if data.len() < FIXED {
            return Err(FalcoError::PayloadShort { len: data.len() });
        }
        let [magic, version, n0, n1] = bytes_at(data, 0);
        if magic != MAGIC {
            return Err(FalcoError::PayloadMagic(magic));
        }
        if version != PAYLOAD_VERSION {
            return Err(FalcoError::PayloadVersion(version));
        }
        let nslots = u16::from_le_bytes([n0, n1]) as usize;
        if nslots < MIN_SLOTS {
            return Err(FalcoError::PayloadCorrupt("fewer slots than version 1 has"));
        }
        let area = FIXED + 4 * nslots;
        if data.len() < area {
            return Err(FalcoError::PayloadCorrupt("slot table runs past the end"));
        }
        let flags = u32_at(data, 4);
        let n = HEADER;
        let opt32 = |bit: u32, v: u32| (flags & bit != 0).then_some(v);
        let numbers = Numbers {
            inode: u64_at(data, n),
            cgroup_id: (flags & HAS_CGROUP != 0).then_some(u64_at(data, n + 8)),
            suppressed: (flags & HAS_SUPPRESSED != 0).then_some(u64_at(data, n + 16)),
            pid: (flags & NO_PID == 0).then_some(u32_at(data, n + 24) as i32),
            tgid: (flags & NO_TGID == 0).then_some(u32_at(data, n + 28)),
            uid: (flags & NO_UID == 0).then_some(u32_at(data, n + 32)),
            gid: (flags & NO_GID == 0).then_some(u32_at(data, n + 36)),
            ppid: opt32(HAS_PPID, u32_at(data, n + 40)),
            mask: u32_at(data, n + 44) as i32,
            open_flags: opt32(HAS_OPEN_FLAGS, u32_at(data, n + 48)),
            ns_pid: opt32(HAS_NS_PID, u32_at(data, n + 52)),
            loginuid: opt32(HAS_LOGINUID, u32_at(data, n + 56)),
            process_flags: opt32(HAS_PROCESS_FLAGS, u32_at(data, n + 60)),
        };
        Ok(Self {
            numbers,
            flags,
            nslots,
            area,
            len: data.len(),
        })
    }

    /// [`Decoded::decode`] plus a check of every slot offset. Map slots
    /// are not walked: a malformed map only ends its iteration early.
    pub fn validate(data: &[u8]) -> Result<Self, FalcoError> {
        let d = Self::decode(data)?;
        let mut prev = 0;
        for i in 0..d.nslots.min(SLOTS) {
            let end = d.end_of(data, i);
            if end < prev {
                return Err(FalcoError::PayloadCorrupt("slot offsets go backwards"));
            }
            prev = end;
        }
        if d.area + prev > data.len() {
            return Err(FalcoError::PayloadCorrupt("a slot runs past the end"));
        }
        Ok(d)
    }

    fn end_of(&self, data: &[u8], i: usize) -> usize {
        u32_at(data, FIXED + 4 * i) as usize
    }

    /// The numbers.
    pub fn numbers(&self) -> &Numbers {
        &self.numbers
    }

    /// Whether the alert names its policy's namespace.
    pub fn has_policy_namespace(&self) -> bool {
        self.flags & HAS_POLICY_NAMESPACE != 0
    }

    /// Whether the alert names the pod's workload.
    pub fn has_workload(&self) -> bool {
        self.flags & HAS_WORKLOAD != 0
    }

    /// `accessor.host`, when the alert has an accessor.
    pub fn accessor_host(&self) -> Option<bool> {
        (self.flags & HAS_ACCESSOR != 0).then_some(self.flags & ACCESSOR_HOST != 0)
    }

    /// The bytes of a slot of `data` (the buffer this was decoded from).
    pub fn raw<'a>(&self, data: &'a [u8], slot: Slot) -> &'a [u8] {
        if data.len() != self.len {
            return &[];
        }
        let i = slot as usize;
        if i >= self.nslots {
            return &[];
        }
        let start = if i == 0 { 0 } else { self.end_of(data, i - 1) };
        let end = self.end_of(data, i);
        if start > end {
            return &[];
        }
        data.get(self.area + start..self.area + end).unwrap_or(&[])
    }

    /// `metadata.loss`, on a loss report.
    pub fn loss(&self, data: &[u8]) -> Option<[u64; 3]> {
        if self.flags & HAS_LOSS == 0 {
            return None;
        }
        let b = self.raw(data, Slot::Loss);
        let at = |i: usize| -> Option<u64> {
            Some(u64::from_le_bytes(
                b.get(8 * i..8 * i + 8)?.try_into().ok()?,
            ))
        };
        Some([at(0)?, at(1)?, at(2)?])
    }

    /// A string slot, `None` when empty.
    pub fn text<'a>(&self, data: &'a [u8], slot: Slot) -> Option<&'a [u8]> {
        let b = self.raw(data, slot);
        (!b.is_empty()).then_some(b)
    }

    /// The entries of a map slot, in key order.
    pub fn map<'a>(&self, data: &'a [u8], slot: Slot) -> MapIter<'a> {
        MapIter {
            rest: self.raw(data, slot),
            broken: false,
        }
    }

    /// One value of a map slot.
    pub fn map_get<'a>(&self, data: &'a [u8], slot: Slot, key: &[u8]) -> Option<&'a [u8]> {
        self.map(data, slot)
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }

    /// Rebuilds the whole alert (copies every string).
    pub fn to_alert(&self, data: &[u8]) -> KiveAlert {
        let s = |slot| String::from_utf8_lossy(self.raw(data, slot)).into_owned();
        let m = |slot| -> BTreeMap<String, String> {
            self.map(data, slot)
                .map(|(k, v)| {
                    (
                        String::from_utf8_lossy(k).into_owned(),
                        String::from_utf8_lossy(v).into_owned(),
                    )
                })
                .collect()
        };
        let n = &self.numbers;
        let custom = |key: &str| {
            self.map_get(data, Slot::CustomMetadata, key.as_bytes())
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        KiveAlert {
            alert_version: s(Slot::AlertVersion),
            policy_name: s(Slot::PolicyName),
            timestamp: s(Slot::Timestamp),
            metadata: AlertMetadata {
                path: s(Slot::Path),
                inode: n.inode,
                mask: n.mask,
                kernel_id: s(Slot::KernelId),
                callback: s(Slot::Callback),
                dev: s(Slot::Dev),
                trap_path: s(Slot::TrapPath),
                hook: s(Slot::Hook),
                action: s(Slot::Action),
                open_flags: n.open_flags,
                owner: s(Slot::Owner),
                cgroup_id: n.cgroup_id,
                suppressed: n.suppressed,
                loss: self.loss(data).map(|[ring, queue, limited]| LossMetadata {
                    ring,
                    queue,
                    limited,
                }),
                tamper: self.text(data, Slot::TamperKind).map(|_| TamperMetadata {
                    kind: s(Slot::TamperKind),
                    old_path: s(Slot::TamperOldPath),
                    new_path: s(Slot::TamperNewPath),
                }),
                armed_as: s(Slot::ArmedAs),
            },
            custom_metadata: m(Slot::CustomMetadata),
            pod: PodMetadata {
                name: s(Slot::PodName),
                namespace: s(Slot::PodNamespace),
                ip: s(Slot::PodIp),
                container: ContainerMetadata {
                    id: s(Slot::ContainerId),
                    name: s(Slot::ContainerName),
                    image: s(Slot::ContainerImage),
                },
                labels: m(Slot::PodLabels),
                uid: s(Slot::PodUid),
                namespace_labels: m(Slot::NamespaceLabels),
                service_account: s(Slot::ServiceAccount),
                workload: self.has_workload().then(|| WorkloadMetadata {
                    kind: s(Slot::WorkloadKind),
                    name: s(Slot::WorkloadName),
                }),
            },
            node: NodeMetadata {
                name: s(Slot::NodeName),
            },
            process: ProcessMetadata {
                pid: n.pid.unwrap_or(0),
                tgid: n.tgid.unwrap_or(0),
                uid: n.uid.unwrap_or(0),
                gid: n.gid.unwrap_or(0),
                binary: s(Slot::Binary),
                cwd: s(Slot::Cwd),
                arguments: s(Slot::Arguments),
                comm: s(Slot::Comm),
                ppid: n.ppid,
                parent_comm: s(Slot::ParentComm),
                parent_binary: s(Slot::ParentBinary),
                ns_pid: n.ns_pid,
                loginuid: n.loginuid,
                flags: n
                    .process_flags
                    .map(|f| ProcessFlags(f).names())
                    .unwrap_or_default(),
            },
            policy_namespace: self
                .has_policy_namespace()
                .then(|| s(Slot::PolicyNamespace)),
            accessor: self.accessor_host().map(|host| AccessorMetadata {
                host,
                container_id: s(Slot::AccessorContainerId),
                container_name: s(Slot::AccessorContainerName),
                pod_name: s(Slot::AccessorPodName),
                pod_namespace: s(Slot::AccessorPodNamespace),
                cgroup: s(Slot::AccessorCgroup),
            }),
            // a rule's severity, tags and message travel in custom-metadata
            policy_severity: custom(META_SEVERITY).and_then(|v| v.parse().ok()),
            policy_tags: custom(META_TAGS)
                .map(|t| t.split(',').map(str::to_string).collect())
                .unwrap_or_default(),
            policy_message: custom(META_MESSAGE).unwrap_or_default(),
        }
    }
}

/// Decodes a payload back into the alert it was encoded from.
pub fn decode_alert(data: &[u8]) -> Result<KiveAlert, FalcoError> {
    Ok(Decoded::validate(data)?.to_alert(data))
}

/// Iterator over `(key, value)` of a map slot.
#[derive(Debug)]
pub struct MapIter<'a> {
    rest: &'a [u8],
    broken: bool,
}

impl<'a> MapIter<'a> {
    fn part(&mut self) -> Option<&'a [u8]> {
        let len = self.rest.get(..4)?;
        let len = u32::from_le_bytes(len.try_into().ok()?) as usize;
        let end = len.checked_add(4)?;
        let part = self.rest.get(4..end)?;
        self.rest = self.rest.get(end..)?;
        Some(part)
    }
}

impl<'a> Iterator for MapIter<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() || self.broken {
            return None;
        }
        match (self.part(), self.part()) {
            (Some(k), Some(v)) => Some((k, v)),
            _ => {
                self.broken = true;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use falco_plugin::event::fields::{FromBytes, ToBytes};

    pub(crate) fn full_alert() -> KiveAlert {
        let mut a: KiveAlert = serde_json::from_str(include_str!(
            "../../../../test_files/seed_sample_alert.json"
        ))
        .expect("seed sample");
        a.policy_namespace = Some("default".into());
        a.custom_metadata.insert("severity".into(), "high".into());
        a.custom_metadata.insert("owner".into(), "team-a".into());
        a.pod.labels.insert("app".into(), "nginx".into());
        a.pod.ip = "10.0.0.7".into();
        a.metadata.cgroup_id = Some(1234);
        a.metadata.open_flags = Some(0o100000);
        a.metadata.dev = "254:1".into();
        a.process.ppid = Some(1);
        a.process.comm = "cat".into();
        a.process.pid = -1;
        a.process.parent_comm = "bash".into();
        a.process.parent_binary = "/usr/bin/bash".into();
        a.process.ns_pid = Some(7);
        a.process.loginuid = Some(1000);
        a.metadata.suppressed = Some(3);
        a.metadata.tamper = Some(TamperMetadata {
            kind: "rename".into(),
            old_path: "/secret.txt".into(),
            new_path: "/moved.txt".into(),
        });
        a.metadata.armed_as = "/secret.txt".into();
        a.pod.container.image = "nginx:1.27".into();
        a.pod.uid = "0b9c1d2e-1111-2222-3333-444455556666".into();
        a.pod.service_account = "default".into();
        a.pod.namespace_labels.insert("team".into(), "web".into());
        a.pod.workload = Some(WorkloadMetadata {
            kind: "Deployment".into(),
            name: "nginx".into(),
        });
        a.accessor = Some(AccessorMetadata {
            host: false,
            container_id: "containerd://abc".into(),
            container_name: "sidecar".into(),
            pod_name: "other".into(),
            pod_namespace: "default".into(),
            cgroup: "/kubepods/x".into(),
        });
        a
    }

    #[test]
    fn slot_list_is_in_wire_order() {
        for (i, s) in Slot::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i, "{s:?}");
        }
        assert_eq!(STRING_SLOTS + MAP_SLOTS, MIN_SLOTS);
        assert_eq!(MIN_SLOTS + 1 + TAIL_SLOTS, SLOTS);
    }

    #[test]
    fn alerts_round_trip_through_the_payload() {
        let mut buf = Vec::new();
        let mut host_accessor = full_alert();
        host_accessor.accessor = Some(AccessorMetadata {
            host: true,
            ..Default::default()
        });
        host_accessor.pod.workload = None;
        for a in [full_alert(), KiveAlert::default(), host_accessor] {
            encode(&a, &mut buf).expect("encodes");
            assert_eq!(buf[0], MAGIC);
            assert_eq!(buf[1], PAYLOAD_VERSION);
            assert_eq!(decode_alert(&buf).expect("decodes"), a);
        }
    }

    #[test]
    fn strings_are_sliced_in_place_and_empty_means_absent() {
        let mut buf = Vec::new();
        encode(&full_alert(), &mut buf).expect("encodes");
        let d = Decoded::decode(&buf).expect("decodes");
        let path = d.text(&buf, Slot::Path).expect("path");
        assert_eq!(path, b"/secret.txt");
        let base = buf.as_ptr() as usize;
        let at = path.as_ptr() as usize;
        assert!(at > base && at < base + buf.len(), "a slice of the buffer");
        assert_eq!(d.text(&buf, Slot::Callback), None);
        assert_eq!(
            d.map_get(&buf, Slot::CustomMetadata, b"severity"),
            Some(&b"high"[..])
        );
        assert_eq!(d.map_get(&buf, Slot::CustomMetadata, b"nope"), None);
        assert_eq!(d.map(&buf, Slot::PodLabels).count(), 1);
        assert_eq!(d.numbers().inode, 16256084);
        assert_eq!(d.numbers().cgroup_id, Some(1234));
    }

    #[test]
    fn bad_payloads_are_rejected_with_a_reason() {
        let mut buf = Vec::new();
        encode(&full_alert(), &mut buf).expect("encodes");
        let e = Decoded::decode(&buf[..10]).expect_err("short");
        assert!(e.to_string().contains("shorter"), "{e}");
        let mut v = buf.clone();
        v[1] = 9;
        let e = Decoded::decode(&v).expect_err("version");
        assert!(e.to_string().contains("version 9"), "{e}");
        let mut v = buf.clone();
        v[0] = b'{';
        assert!(Decoded::decode(&v).is_err());
        let e = Decoded::validate(&buf[..buf.len() - 1]).expect_err("truncated");
        assert!(e.to_string().contains("past the end"), "{e}");
        // decode checks the header only; the truncated slot reads as empty
        let short = &buf[..buf.len() - 1];
        let d = Decoded::decode(short).expect("header intact");
        assert_eq!(d.text(short, Slot::ArmedAs), None, "the last slot is cut");
        assert_eq!(d.map(short, Slot::NamespaceLabels).count(), 1);
        assert_eq!(d.map(short, Slot::PodLabels).count(), 1);
        assert_eq!(d.text(short, Slot::Path), Some(&b"/secret.txt"[..]));
        let e = decode_alert(short).expect_err("validated");
        assert!(e.to_string().contains("past the end"), "{e}");
        // a map entry longer than its slot ends the iteration, no panic
        let d = Decoded::decode(&buf).expect("decodes");
        let at = d.raw(&buf, Slot::PodLabels).as_ptr() as usize - buf.as_ptr() as usize;
        let mut v = buf.clone();
        v[at..at + 4].copy_from_slice(&1000u32.to_le_bytes());
        let d = Decoded::decode(&v).expect("the header is intact");
        assert_eq!(d.map(&v, Slot::PodLabels).count(), 0);
        assert_eq!(d.map_get(&v, Slot::PodLabels, b"app"), None);
        assert_eq!(
            d.map(&v, Slot::CustomMetadata).count(),
            2,
            "the other map is intact"
        );
    }

    #[test]
    fn a_payload_without_the_tail_slots_reads_them_as_empty() {
        let mut buf = Vec::new();
        let a = full_alert();
        encode(&a, &mut buf).expect("encodes");
        // rebuild it as a writer of the first layout (37 slots) would have
        let d = Decoded::decode(&buf).expect("decodes");
        let old_area = FIXED + 4 * MIN_SLOTS;
        let end = d.end_of(&buf, MIN_SLOTS - 1);
        let mut old = buf[..FIXED].to_vec();
        old[2..4].copy_from_slice(&(MIN_SLOTS as u16).to_le_bytes());
        old.extend_from_slice(&buf[FIXED..old_area]);
        old.extend_from_slice(&buf[d.area..d.area + end]);
        let back = decode_alert(&old).expect("an older payload decodes");
        assert_eq!(back.metadata.tamper, None);
        assert_eq!(back.metadata.armed_as, "");
        assert_eq!(back.metadata.path, a.metadata.path);
        assert_eq!(back.pod.namespace_labels, a.pod.namespace_labels);
    }

    #[test]
    fn payload_bytes_pass_through_falco_event_parsing() {
        let mut buf = Vec::new();
        encode(&full_alert(), &mut buf).expect("encodes");
        let mut slice: &[u8] = &buf;
        let p = KivePayload::from_bytes(&mut slice).expect("takes all");
        assert!(slice.is_empty(), "nothing left behind");
        assert_eq!(p.binary_size(), buf.len());
    }
}
