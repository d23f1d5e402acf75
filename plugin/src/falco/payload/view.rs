//! An alert's borrowed view → its payload, without building the alert:
//! the live source's path (one event, a handful of computed strings
//! instead of the alert's ~30 owned ones), byte for byte what encoding
//! [`AlertView::alert`] gives.

use std::borrow::Cow;

use super::*;
use crate::alert::flags::marked;
use crate::alert::rfc3339_nanos;
use crate::runtime::{AlertView, ContainerOwner, Owner};
use crate::trap::dev::kernel_dev_display;

/// The strings of an alert that are computed from the event, not
/// borrowed from it (the rest are).
struct Computed<'a> {
    timestamp: String,
    dev: String,
    binary: Cow<'a, str>,
    cwd: Cow<'a, str>,
    arguments: Cow<'a, str>,
    parent_binary: Cow<'a, str>,
}

impl<'a> Computed<'a> {
    fn of(v: &AlertView<'a>, wall_ns: u64) -> Self {
        let (raw, details) = (v.raw, v.details);
        let flags = ProcessFlags(raw.process_flags);
        // captured in the kernel at the access; /proc only as a fallback
        let kernel_or_proc = |kernel: &'a str, proc: &'a str, bit: u32| {
            if kernel.is_empty() {
                marked(proc, false)
            } else {
                marked(kernel, flags.has(bit))
            }
        };
        Self {
            timestamp: rfc3339_nanos(wall_ns),
            dev: kernel_dev_display(raw.key.dev),
            binary: kernel_or_proc(&raw.exe, &details.binary, ProcessFlags::BINARY_TRUNCATED),
            cwd: kernel_or_proc(&raw.cwd, &details.cwd, ProcessFlags::CWD_TRUNCATED),
            arguments: match raw.args.as_slice() {
                [] => Cow::Borrowed(&details.arguments),
                [one] => Cow::Borrowed(one),
                many => Cow::Owned(many.join(" ")),
            },
            parent_binary: marked(
                &raw.parent_exe,
                flags.has(ProcessFlags::PARENT_BINARY_TRUNCATED),
            ),
        }
    }
}

/// What [`crate::alert::KiveAlert::timestamp_ns`] reads back from the
/// alert's RFC 3339 timestamp: the wall clock in ns, 0 past what an i64
/// of ns holds (year 2262).
fn timestamp_ns(wall_ns: u64) -> u64 {
    if i64::try_from(wall_ns).is_ok() {
        wall_ns
    } else {
        0
    }
}

/// Encodes the payload of `v`'s alert into `out` (cleared first); returns
/// the alert's timestamp in ns (what `timestamp_ns` of the alert gives).
pub fn encode_view<'a>(v: &AlertView<'a>, out: &mut Vec<u8>) -> Result<u64, FalcoError> {
    let (raw, trap) = (v.raw, v.trap);
    let wall_ns = v.node.clock.wall_ns(raw.ts_boot_ns);
    let c = Computed::of(v, wall_ns);
    let pod = match v.owner {
        Owner::Host => None,
        Owner::Container(c) => Some(&**c),
    };
    let pod_str = |f: fn(&ContainerOwner) -> &str| pod.map_or("", f);
    let workload = pod.and_then(|p| p.workload.as_ref());
    let accessor = v.accessor;
    let tamper = raw.tamper.as_ref();
    let known = ProcessFlags(raw.process_flags).known().0;
    let parts = Parts {
        strings: [
            &trap.alert_version,
            &trap.policy_name,
            trap.policy_namespace.as_deref().unwrap_or(""),
            &c.timestamp,
            &trap.path,
            &v.node.kernel_id,
            trap.callback.as_deref().unwrap_or(""),
            &c.dev,
            &trap.path,
            raw.hook.as_str(),
            raw.action.as_str(),
            v.owner.kind(),
            pod_str(|p| &p.pod),
            pod_str(|p| &p.namespace),
            pod_str(|p| &p.ip),
            pod_str(|p| &p.container_id),
            pod_str(|p| &p.container),
            &v.node.node_name,
            &c.binary,
            &c.cwd,
            &c.arguments,
            &raw.comm,
            pod_str(|p| &p.image),
            pod_str(|p| &p.pod_uid),
            pod_str(|p| &p.service_account),
            workload.map_or("", |w| &w.0),
            workload.map_or("", |w| &w.1),
            accessor.map_or("", |x| &x.container_id),
            accessor.map_or("", |x| &x.container_name),
            accessor.map_or("", |x| &x.pod_name),
            accessor.map_or("", |x| &x.pod_namespace),
            accessor.map_or("", |x| &x.cgroup),
            &raw.parent_comm,
            &c.parent_binary,
        ],
        numbers: Numbers {
            inode: raw.key.ino,
            cgroup_id: Some(raw.cgroup_id),
            pid: Some(raw.pid as i32),
            tgid: Some(raw.tgid),
            uid: Some(raw.uid),
            gid: Some(raw.gid),
            ppid: Some(raw.ppid),
            mask: raw.mask as i32,
            open_flags: Some(raw.flags),
            suppressed: v.suppressed(),
            ns_pid: Some(raw.ns_pid),
            loginuid: raw.loginuid,
            process_flags: (known != 0).then_some(known),
        },
        has_policy_namespace: trap.policy_namespace.is_some(),
        has_workload: workload.is_some(),
        accessor_host: accessor.map(|x| x.host),
        loss: None,
        tail: [
            tamper.map_or("", |t| t.kind.as_str()),
            // the kernel's tamper hooks capture the new name only
            tamper.map_or("", |t| {
                if t.old_path.is_empty() {
                    &trap.path
                } else {
                    &t.old_path
                }
            }),
            tamper.map_or("", |t| &t.new_path),
            v.armed_as(),
        ],
    };
    let pair = |(k, v): (&'a String, &'a String)| -> (&'a str, &'a str) { (k, v) };
    encode_parts(
        &parts,
        [
            &mut trap.metadata.iter().map(pair),
            &mut pod.into_iter().flat_map(|p| p.labels.iter()).map(pair),
            &mut pod
                .into_iter()
                .flat_map(|p| p.namespace_labels.iter())
                .map(pair),
        ],
        out,
    )?;
    Ok(timestamp_ns(wall_ns))
}
