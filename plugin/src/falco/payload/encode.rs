//! An alert (or its borrowed parts) → a payload.

use super::*;

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
        let start = out.len();
        out.extend_from_slice(s.as_bytes());
        if slot == Slot::Arguments as usize && p.arguments_nul_separated {
            // argv joined with spaces where it lies
            for b in &mut out[start..] {
                if *b == 0 {
                    *b = b' ';
                }
            }
        }
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
