//! An alert's borrowed view → its payload, without building the alert:
//! the live source's path (one event, a handful of computed strings
//! instead of the alert's ~30 owned ones), byte for byte what encoding
//! [`AlertView::alert`] gives.

use super::stamp;
use super::*;
use crate::runtime::{AlertView, ContainerOwner, Owner, ProcessStrings};
use crate::trap::dev::kernel_dev_display;

/// The strings of an alert that are computed from the event, not
/// borrowed from it (the rest are).
struct Computed<'a> {
    timestamp: String,
    dev: String,
    process: ProcessStrings<'a>,
}

impl<'a> Computed<'a> {
    fn of(v: &AlertView<'a>, wall_ns: u64) -> Self {
        Self {
            timestamp: stamp::timestamp(wall_ns),
            dev: kernel_dev_display(v.raw.key.dev),
            process: ProcessStrings::of(v.raw, v.details),
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
    let (arguments, arguments_nul_separated) = c.process.arguments.as_kept();
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
            &c.process.binary,
            &c.process.cwd,
            arguments,
            raw.comm(),
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
            raw.parent_comm(),
            &c.process.parent_binary,
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
        arguments_nul_separated,
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
