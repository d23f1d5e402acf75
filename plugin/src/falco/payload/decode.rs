//! A payload → its numbers and slots (copying nothing), and back to the
//! alert.

use super::*;

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
    pub(super) area: usize,
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

    pub(super) fn end_of(&self, data: &[u8], i: usize) -> usize {
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
