//! From a kernel event and the entry it hit to a KiveAlert (pure).

use std::path::{Path, PathBuf};

use crate::alert::ProcessFlags;
use crate::alert::{
    rfc3339_nanos, AccessorMetadata, AlertMetadata, ContainerMetadata, KiveAlert, NodeMetadata,
    PodMetadata, ProcessMetadata, TamperMetadata, WorkloadMetadata,
};
use crate::node::cgroup::{container_from_cgroup_path, CgroupMode};
use crate::node::host::BootClock;
use crate::node::procfs::ProcessDetails;
use crate::policy::CompiledTrap;
use crate::trap::dev::kernel_dev_display;
use crate::trap::RawEvent;

use super::alert_view::ProcessStrings;
use super::table::{ContainerOwner, Owner};

/// What every alert of this node shares.
#[derive(Debug, Clone)]
pub struct NodeContext {
    /// Boot id.
    pub kernel_id: String,
    /// Node name.
    pub node_name: String,
    /// Boottime → wall clock.
    pub clock: BootClock,
}

/// What is known of the cgroups of the process behind an event.
#[derive(Debug, Clone, Copy)]
pub struct CgroupFacts<'a> {
    /// The directory of the event's cgroup v2 id, when known.
    pub v2: Option<&'a Path>,
    /// The node's cgroup mode.
    pub mode: CgroupMode,
    /// The process's cgroup v1 paths, when read (hybrid and v1 nodes).
    pub v1: &'a [PathBuf],
    /// Whether the process is in the host's mount namespace (`None`:
    /// unknown).
    pub host_mnt_ns: Option<bool>,
}

/// The accessor of an access, from its cgroups:
/// - a container when a cgroup path (v2, else v1) names one, with its pod
///   when `owner_of` (by bare container id) knows it, even when kive arms
///   nothing in it;
/// - the host for a known cgroup outside containers, but on a hybrid or
///   cgroup v1 node (where a container may sit in the v2 root) only when
///   the process is also in the host's mount namespace;
/// - `None` otherwise: unknown, never guessed as the host.
pub fn accessor_metadata(
    facts: CgroupFacts<'_>,
    owner_of: impl FnOnce(&str) -> Option<ContainerOwner>,
) -> Option<AccessorMetadata> {
    let found = facts
        .v2
        .into_iter()
        .chain(facts.v1.iter().map(PathBuf::as_path))
        .find_map(|p| Some((p, container_from_cgroup_path(p)?)));
    let Some((path, c)) = found else {
        let path = match facts.mode {
            CgroupMode::Unified => facts.v2?,
            // the v2 cgroup of a v1 container is the host's: ask the mount namespace
            CgroupMode::Hybrid | CgroupMode::Legacy if facts.host_mnt_ns == Some(true) => {
                facts.v2.or(facts.v1.first().map(PathBuf::as_path))?
            }
            CgroupMode::Hybrid | CgroupMode::Legacy => return None,
        };
        return Some(AccessorMetadata {
            host: true,
            cgroup: path.display().to_string(),
            ..Default::default()
        });
    };
    let cgroup = path.display().to_string();
    Some(match owner_of(&c.id) {
        Some(o) => AccessorMetadata {
            host: false,
            container_id: o.container_id,
            container_name: o.container,
            pod_name: o.pod,
            pod_namespace: o.namespace,
            cgroup,
        },
        None => AccessorMetadata {
            host: false,
            container_id: c.uri(),
            cgroup,
            ..Default::default()
        },
    })
}

/// Builds the alert for one entry hit by one event.
pub fn build_alert(
    raw: &RawEvent,
    trap: &CompiledTrap,
    owner: &Owner,
    node: &NodeContext,
    details: &ProcessDetails,
    accessor: Option<&AccessorMetadata>,
) -> KiveAlert {
    let flags = ProcessFlags(raw.process_flags);
    let strings = ProcessStrings::of(raw, details);
    KiveAlert {
        alert_version: trap.alert_version.clone(),
        policy_name: trap.policy_name.clone(),
        policy_namespace: trap.policy_namespace.clone(),
        timestamp: rfc3339_nanos(node.clock.wall_ns(raw.ts_boot_ns)),
        metadata: AlertMetadata {
            path: trap.path.clone(),
            inode: raw.key.ino,
            mask: raw.mask as i32,
            kernel_id: node.kernel_id.clone(),
            callback: trap.callback.clone().unwrap_or_default(),
            dev: kernel_dev_display(raw.key.dev),
            trap_path: trap.path.clone(),
            hook: raw.hook.as_str().to_string(),
            action: raw.action.as_str().to_string(),
            open_flags: Some(raw.flags),
            owner: owner.kind().to_string(),
            cgroup_id: Some(raw.cgroup_id),
            suppressed: (raw.limited > 0).then_some(u64::from(raw.limited)),
            loss: None,
            tamper: raw.tamper.as_ref().map(|t| TamperMetadata {
                kind: t.kind.as_str().to_string(),
                // the kernel's tamper hooks capture the new name only
                old_path: if t.old_path.is_empty() {
                    trap.path.clone()
                } else {
                    t.old_path.clone()
                },
                new_path: t.new_path.clone(),
            }),
            armed_as: String::new(),
        },
        custom_metadata: trap.metadata.clone(),
        accessor: accessor.cloned(),
        policy_severity: trap.info.severity,
        policy_tags: trap.info.tags.clone(),
        policy_message: trap.info.message.clone(),
        pod: match owner {
            Owner::Host => Default::default(),
            Owner::Container(c) => PodMetadata {
                name: c.pod.clone(),
                namespace: c.namespace.clone(),
                ip: c.ip.clone(),
                container: ContainerMetadata {
                    id: c.container_id.clone(),
                    name: c.container.clone(),
                    image: c.image.clone(),
                },
                labels: c.labels.as_ref().clone(),
                uid: c.pod_uid.clone(),
                namespace_labels: c.namespace_labels.as_ref().clone(),
                service_account: c.service_account.clone(),
                workload: c
                    .workload
                    .clone()
                    .map(|(kind, name)| WorkloadMetadata { kind, name }),
            },
        },
        node: NodeMetadata {
            name: node.node_name.clone(),
        },
        process: ProcessMetadata {
            pid: raw.pid as i32,
            tgid: raw.tgid,
            uid: raw.uid,
            gid: raw.gid,
            binary: strings.binary.into_owned(),
            cwd: strings.cwd.into_owned(),
            arguments: strings.arguments.joined().into_owned(),
            comm: raw.comm().to_owned(),
            ppid: Some(raw.ppid),
            parent_comm: raw.parent_comm().to_owned(),
            parent_binary: strings.parent_binary.into_owned(),
            ns_pid: Some(raw.ns_pid),
            loginuid: raw.loginuid,
            flags: flags.names(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::load_str;
    use crate::trap::{Action, Args, EventText, Hook, Texts, TrapKey};

    const CID: &str = "0c37512624823392d71e99a12011148db30ba7ea2a74fc7ff8bd5f85bc7b499c";

    fn scope() -> String {
        format!("/sys/fs/cgroup/kubepods.slice/kubepods-pod1.slice/cri-containerd-{CID}.scope")
    }

    fn v2(path: &Path) -> CgroupFacts<'_> {
        CgroupFacts {
            v2: Some(path),
            mode: CgroupMode::Unified,
            v1: &[],
            host_mnt_ns: None,
        }
    }

    #[test]
    fn an_unknown_cgroup_gives_no_accessor_never_the_host() {
        let mut f = v2(Path::new("/"));
        f.v2 = None;
        let a = accessor_metadata(f, |_| panic!("no container to look up"));
        assert_eq!(a, None);
    }

    #[test]
    fn a_known_cgroup_outside_containers_is_the_host() {
        let p = Path::new("/sys/fs/cgroup/system.slice/sshd.service");
        let a = accessor_metadata(v2(p), |_| panic!("not a container")).expect("known");
        assert!(a.host);
        assert_eq!(a.cgroup, "/sys/fs/cgroup/system.slice/sshd.service");
        assert_eq!(a.container_id, "");
    }

    #[test]
    fn on_hybrid_and_v1_nodes_the_host_is_never_guessed_from_the_v2_root() {
        // a container of a v1 node runs in the v2 root cgroup: not the host
        let v1 = [PathBuf::from("/kubepods/burstable/pod1/other")];
        for mode in [CgroupMode::Hybrid, CgroupMode::Legacy] {
            for host_mnt_ns in [None, Some(false)] {
                let f = CgroupFacts {
                    v2: Some(Path::new("/sys/fs/cgroup/unified")),
                    mode,
                    v1: &v1,
                    host_mnt_ns,
                };
                assert_eq!(
                    accessor_metadata(f, |_| panic!("not a container")),
                    None,
                    "{mode:?} {host_mnt_ns:?}: no value, not host"
                );
            }
            // the host's mount namespace proves the host
            let f = CgroupFacts {
                v2: None,
                mode,
                v1: &[PathBuf::from("/user.slice/session-1.scope")],
                host_mnt_ns: Some(true),
            };
            let a = accessor_metadata(f, |_| panic!("not a container")).expect("host");
            assert!(a.host, "{mode:?}");
            assert_eq!(a.cgroup, "/user.slice/session-1.scope");
        }
    }

    #[test]
    fn on_hybrid_nodes_a_v1_container_cgroup_names_the_container() {
        let v1 = [
            PathBuf::from("/"),
            PathBuf::from(format!(
                "/kubepods/besteffort/pod5a3f2b1c-1111-2222-3333-444455556666/{CID}"
            )),
        ];
        let f = CgroupFacts {
            v2: Some(Path::new("/")),
            mode: CgroupMode::Hybrid,
            v1: &v1,
            host_mnt_ns: Some(false),
        };
        let a = accessor_metadata(f, |id| {
            assert_eq!(id, CID);
            None
        })
        .expect("a container accessor");
        assert!(!a.host, "never the host: the v1 cgroup is a container's");
        assert_eq!(a.container_id, CID, "cgroupfs layout: no runtime prefix");
        assert_eq!(a.cgroup, v1[1].display().to_string());
    }

    #[test]
    fn a_container_cgroup_names_the_container_and_its_pod_when_known() {
        let path = scope();
        let a = accessor_metadata(v2(Path::new(&path)), |_| None).expect("known");
        assert!(!a.host);
        assert_eq!(a.container_id, format!("containerd://{CID}"));
        assert_eq!(a.pod_name, "", "a container kive has no pod for");
        let a = accessor_metadata(v2(Path::new(&path)), |id| {
            assert_eq!(id, CID, "looked up by bare id");
            Some(ContainerOwner {
                pod: "web-0".into(),
                namespace: "default".into(),
                container: "app".into(),
                container_id: format!("containerd://{CID}"),
                ..Default::default()
            })
        })
        .expect("known");
        assert_eq!(
            (
                a.pod_name.as_str(),
                a.pod_namespace.as_str(),
                a.container_name.as_str()
            ),
            ("web-0", "default", "app")
        );
        assert_eq!(a.cgroup, path);
    }

    #[test]
    fn an_event_on_a_host_trap_becomes_a_v1_alert() {
        let c = load_str(
            "t.yaml",
            "apiVersion: kivebpf.san7o.github.io/v1\nkind: KivePolicy\nmetadata: {name: p, namespace: n}\nspec:\n  traps:\n  - path: /etc/secret\n    callback: http://127.0.0.1:9/x\n    metadata: {severity: high}\n    matchAny: [{host: true}]\n",
        );
        let trap = &c.traps[0];
        let raw = RawEvent {
            ts_boot_ns: 1_000,
            key: TrapKey {
                dev: 0x0fe0_0000,
                ino: 42,
            },
            cgroup_id: 7,
            pid: 100,
            tgid: 99,
            ppid: 1,
            ns_pid: 99,
            uid: 65534,
            gid: 65534,
            mask: 36,
            flags: 0,
            mnt_ns: 1,
            trap_id: 1,
            hook: Hook::TpSysExit,
            action: Action::Audit,
            text: EventText::new(Texts {
                comm: "cat",
                parent_comm: "bash",
                parent_exe: "/usr/bin/bash",
                exe: "/usr/bin/cat",
                args: Args::from_parts(&["cat", "/etc/secret"]).borrowed(),
                ..Texts::default()
            }),
            loginuid: Some(1000),
            process_flags: 0,
            limited: 0,
            tamper: None,
            start_ns: 0,
        };
        let node = NodeContext {
            kernel_id: "boot".into(),
            node_name: "node-a".into(),
            clock: BootClock::with_offset(1_754_153_479_000_000_000),
        };
        // /proc read after the fact, of this same process (the runtime
        // checks its identity: node::procfs::process_details_of); the
        // kernel's capture wins where it has one
        let details = ProcessDetails {
            binary: "/usr/bin/cat".into(),
            cwd: "/".into(),
            arguments: "cat /etc/secret".into(),
        };
        let accessor = AccessorMetadata {
            host: true,
            ..Default::default()
        };
        let a = build_alert(&raw, trap, &Owner::Host, &node, &details, Some(&accessor));
        assert_eq!(a.accessor, Some(accessor));
        assert_eq!(a.alert_version, "v1");
        assert_eq!(a.policy_name, "p");
        assert_eq!(a.timestamp, "2025-08-02T16:51:19.000001000Z");
        assert_eq!(a.metadata.path, "/etc/secret");
        assert_eq!(a.metadata.inode, 42);
        assert_eq!(a.metadata.mask, 36);
        assert_eq!(a.metadata.dev, "254:0");
        assert_eq!(a.metadata.kernel_id, "boot");
        assert_eq!(a.metadata.callback, "http://127.0.0.1:9/x");
        assert_eq!(a.metadata.owner, "host");
        assert_eq!(
            a.custom_metadata.get("severity").map(String::as_str),
            Some("high")
        );
        assert_eq!(
            (a.process.pid, a.process.tgid, a.process.uid),
            (100, 99, 65534)
        );
        assert_eq!(
            a.process.binary, "/usr/bin/cat",
            "the kernel's capture wins"
        );
        assert_eq!(a.process.arguments, "cat /etc/secret");
        assert_eq!(a.process.cwd, "/", "not captured: /proc fills in");
        assert!(a.process.flags.is_empty());
        assert_eq!(a.metadata.suppressed, None);
        // a cut capture is marked, a /proc fallback is not; the kernel's
        // held-back count rides in suppressed
        let raw = RawEvent {
            process_flags: ProcessFlags::BINARY_TRUNCATED
                | ProcessFlags::CWD_TRUNCATED
                | ProcessFlags::BINARY_DELETED,
            limited: 7,
            ..raw
        };
        let a = build_alert(&raw, trap, &Owner::Host, &node, &details, None);
        assert_eq!(a.process.binary, ".../usr/bin/cat");
        assert_eq!(a.process.cwd, "/", "the /proc value is whole");
        assert_eq!(
            a.process.flags,
            ["binary-truncated", "cwd-truncated", "binary-deleted"]
        );
        assert_eq!(a.metadata.suppressed, Some(7));
        assert_eq!(a.process.parent_comm, "bash");
        assert_eq!(a.process.parent_binary, "/usr/bin/bash");
        assert_eq!(a.process.loginuid, Some(1000));
        assert_eq!(a.process.comm, "cat");
        assert_eq!(a.node.name, "node-a");
    }
}
