//! The number fields' values from the decoded header, one function each:
//! the same function serves the SDK's extractors ([`super::table`]) and
//! kive's direct extraction ([`super::direct`]).

use crate::alert::access_names;
use crate::falco::payload::Numbers;

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

/// `kive.access`: the access names of the mask, comma separated (ASCII).
pub(super) fn access(n: &Numbers) -> Option<String> {
    let names = access_names(n.mask as u32);
    (!names.is_empty()).then(|| names.join(","))
}
