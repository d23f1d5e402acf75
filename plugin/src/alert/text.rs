//! The one-line human format of an alert (`kive run --format text`).

use super::kive_alert::{access_names, KiveAlert};

/// `timestamp policy=… path=… access=… pid=… uid=… comm=… binary=…`.
pub fn to_text(a: &KiveAlert) -> String {
    let mut s = format!(
        "{} policy={} path={} access={} action={} pid={} uid={} gid={} comm={} binary={}",
        a.timestamp,
        a.policy_name,
        a.metadata.path,
        access_names(a.metadata.mask as u32).join(","),
        if a.metadata.action.is_empty() {
            "audit"
        } else {
            &a.metadata.action
        },
        a.process.tgid,
        a.process.uid,
        a.process.gid,
        a.process.comm,
        a.process.binary,
    );
    if !a.pod.name.is_empty() {
        s.push_str(&format!(
            " pod={}/{} container={}",
            a.pod.namespace, a.pod.name, a.pod.container.name
        ));
    }
    if !a.metadata.owner.is_empty() {
        s.push_str(&format!(" owner={}", a.metadata.owner));
    }
    s
}
