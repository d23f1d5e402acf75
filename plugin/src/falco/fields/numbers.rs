//! The number fields' values from the decoded header, one function each:
//! the same function serves the SDK's extractors ([`super::table`]) and
//! kive's direct extraction ([`super::direct`]).

use std::ffi::{CStr, CString};
use std::sync::OnceLock;

use crate::alert::access_names;
use crate::falco::payload::Numbers;

/// The MAY_* bits [`access_names`] reads (exec 1 … open 32): the names
/// of a mask depend on these bits only.
const ACCESS_BITS: u32 = 63;

/// A number of the header, `None` when the event has no value.
pub(super) type Getter = fn(&Numbers) -> Option<u64>;

pub(super) fn inode(n: &Numbers) -> Option<u64> {
    Some(n.inode)
}

pub(super) fn mask(n: &Numbers) -> Option<u64> {
    Some(n.mask as u32 as u64)
}

pub(super) fn open_flags(n: &Numbers) -> Option<u64> {
    n.open_flags.map(u64::from)
}

pub(super) fn cgroup_id(n: &Numbers) -> Option<u64> {
    n.cgroup_id
}

pub(super) fn pid(n: &Numbers) -> Option<u64> {
    n.pid.and_then(|p| u64::try_from(p).ok())
}

pub(super) fn tgid(n: &Numbers) -> Option<u64> {
    n.tgid.map(u64::from)
}

pub(super) fn ppid(n: &Numbers) -> Option<u64> {
    n.ppid.map(u64::from)
}

pub(super) fn suppressed(n: &Numbers) -> Option<u64> {
    n.suppressed
}

pub(super) fn vpid(n: &Numbers) -> Option<u64> {
    n.ns_pid.map(u64::from)
}

pub(super) fn loginuid(n: &Numbers) -> Option<u64> {
    n.loginuid.map(u64::from)
}

pub(super) fn uid(n: &Numbers) -> Option<u64> {
    n.uid.map(u64::from)
}

pub(super) fn gid(n: &Numbers) -> Option<u64> {
    n.gid.map(u64::from)
}

/// `kive.access`: the access names of the mask, comma separated (ASCII),
/// from a table made once (no allocation per call; the value lives for
/// the whole process).
pub(super) fn access(n: &Numbers) -> Option<&'static CStr> {
    static JOINED: OnceLock<Vec<Option<CString>>> = OnceLock::new();
    let table = JOINED.get_or_init(|| {
        (0..=ACCESS_BITS)
            .map(|m| {
                let names = access_names(m);
                // ASCII names and commas: never a NUL
                (!names.is_empty()).then(|| CString::new(names.join(",")).unwrap_or_default())
            })
            .collect()
    });
    table
        .get((n.mask as u32 & ACCESS_BITS) as usize)?
        .as_deref()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_access_table_gives_every_masks_names_joined() {
        let mut n = Numbers::default();
        for mask in (0u32..64).chain([64, 64 | 4, u32::MAX, 1 << 31]) {
            n.mask = mask as i32;
            let want = access_names(mask).join(",");
            let got = access(&n).map(|c| c.to_str().expect("ASCII").to_owned());
            assert_eq!(
                got,
                (!want.is_empty()).then_some(want),
                "kive.access of mask {mask:#x}"
            );
        }
    }
}
