//! The live source's payload (encoded from the alert's borrowed view) is
//! byte for byte the payload of the full alert, on hostile inputs too.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::node::host::BootClock;
use crate::node::procfs::ProcessDetails;
use crate::policy::{load_str, CompiledTrap};
use crate::runtime::{AlertView, ContainerOwner, NodeContext, Owner};
use crate::trap::{
    Action, Args, ArgsRef, EventText, Hook, RawEvent, Tamper, TamperKind, Texts, TrapKey,
};

fn traps() -> Vec<Arc<CompiledTrap>> {
    let plain = load_str(
        "a.yaml",
        "apiVersion: kivebpf.san7o.github.io/v1\nkind: KivePolicy\nmetadata: {name: plain}\nspec:\n  traps:\n  - path: /etc/secret\n    matchAny: [{host: true}]\n",
    );
    let rich = load_str(
        "b.yaml",
        "apiVersion: kivebpf.san7o.github.io/v1\nkind: KivePolicy\nmetadata: {name: \"p\\u202e\\n\", namespace: n}\nspec:\n  traps:\n  - path: \"/var/\\u00e9t\\u00e9 x/\\tkey\"\n    callback: http://127.0.0.1:9/x\n    metadata: {severity: high, \"k\\u0001\": \"v\\u0085\"}\n    matchAny: [{host: true}]\n",
    );
    plain.traps.into_iter().chain(rich.traps).collect()
}

fn raw() -> RawEvent {
    // what the wire decoder makes of invalid UTF-8: U+FFFD
    let bad = String::from_utf8_lossy(b"c\xffat\x1b[0m").into_owned();
    RawEvent {
        ts_boot_ns: 1_000,
        key: TrapKey {
            dev: 0x0fe0_0001,
            ino: 42,
        },
        cgroup_id: 7,
        pid: u32::MAX,
        tgid: 99,
        ppid: 1,
        ns_pid: 99,
        uid: 65534,
        gid: 0,
        mask: 36,
        flags: 0o100000,
        mnt_ns: 1,
        trap_id: 1,
        hook: Hook::TpSysExit,
        action: Action::Audit,
        text: EventText::new(Texts {
            comm: &bad,
            parent_exe: &format!("/{}/bash", "p".repeat(4000)),
            exe: &format!("/{}\u{fffd}/cat\n", "x".repeat(4090)),
            cwd: "/tmp/\u{2028}",
            args: Args::from_parts(&[bad.as_str(), "a b", "", "--x=\"y\""]).borrowed(),
            ..Texts::default()
        }),
        loginuid: None,
        process_flags: 0,
        limited: 0,
        tamper: None,
        start_ns: 0,
    }
}

fn pod() -> Owner {
    Owner::Container(Arc::new(ContainerOwner {
        pod: "web-0".into(),
        namespace: String::new(),
        ip: "10.0.0.7".into(),
        labels: Arc::new(BTreeMap::from([
            ("app".to_string(), "nginx".to_string()),
            ("x\u{fffd}".to_string(), String::new()),
        ])),
        container: "c\n".into(),
        container_id: "containerd://abc".into(),
        workload: Some(("StatefulSet".into(), "web".into())),
        namespace_labels: Arc::new(BTreeMap::from([("team".to_string(), "a".to_string())])),
        ..Default::default()
    }))
}

fn accessors() -> [Option<AccessorMetadata>; 3] {
    [
        None,
        Some(AccessorMetadata {
            host: true,
            cgroup: "/sys/fs/cgroup/system.slice/\u{fffd}.service".into(),
            ..Default::default()
        }),
        Some(AccessorMetadata {
            host: false,
            container_id: "containerd://def".into(),
            container_name: String::new(),
            pod_name: "other".into(),
            pod_namespace: "ns".into(),
            cgroup: "/kubepods/x".into(),
        }),
    ]
}

/// Every variant of the event that changes what a computed slot holds.
fn events() -> Vec<RawEvent> {
    let base = raw();
    let all_flags = ProcessFlags::NAMES.iter().fold(0, |a, (b, _)| a | b);
    vec![
        base.clone(),
        // cut captures are marked; unknown flag bits are left out
        RawEvent {
            process_flags: all_flags | 0x8000_0000,
            limited: 5,
            loginuid: Some(1000),
            ..base.clone()
        },
        // only unknown bits: no flags at all
        RawEvent {
            process_flags: 0x4000_0000,
            ..base.clone()
        },
        // nothing captured: /proc fills in, never marked
        RawEvent {
            text: EventText::new(Texts {
                exe: "",
                cwd: "",
                args: ArgsRef::default(),
                ..base.text.texts()
            }),
            process_flags: all_flags,
            ..base.clone()
        },
        // one argument; a tamper event with and without the old name
        RawEvent {
            text: EventText::new(Texts {
                args: Args::from_parts(&["only"]).borrowed(),
                ..base.text.texts()
            }),
            tamper: Some(Tamper {
                kind: TamperKind::Rename,
                old_path: String::new(),
                new_path: "/tmp/moved\r".into(),
                new_name: "moved\r".into(),
                new_dir_ino: 3,
            }),
            hook: Hook::TpSysExit,
            action: Action::Block,
            ..base.clone()
        },
        RawEvent {
            tamper: Some(Tamper {
                kind: TamperKind::Replace,
                old_path: "/old".into(),
                new_path: String::new(),
                new_name: String::new(),
                new_dir_ino: 0,
            }),
            ts_boot_ns: u64::MAX,
            ..base
        },
    ]
}

#[test]
fn the_view_encodes_the_same_bytes_and_timestamp_as_the_full_alert() {
    let traps = traps();
    let owners = [Owner::Host, pod(), Owner::Container(Arc::default())];
    let details = [
        ProcessDetails::default(),
        ProcessDetails {
            binary: "/usr/bin/\u{fffd}cat".into(),
            cwd: "/".into(),
            arguments: "cat /etc/secret\n".into(),
        },
        // /proc's arguments are written as they are: a NUL in them is no
        // argv separator (only the kernel's argv is joined in place)
        ProcessDetails {
            binary: String::new(),
            cwd: String::new(),
            arguments: "a\0b".into(),
        },
    ];
    let nodes = [0, 1_754_153_479_000_000_000, -2_000].map(|offset| NodeContext {
        kernel_id: "boot".into(),
        node_name: String::new(),
        clock: BootClock::with_offset(offset),
    });
    let (mut from_view, mut from_alert) = (Vec::new(), Vec::new());
    let mut cases = 0;
    for raw in &events() {
        for trap in &traps {
            for owner in &owners {
                for d in &details {
                    for accessor in &accessors() {
                        for node in &nodes {
                            for (rate_limited, away) in [(None, false), (Some(9), true)] {
                                let view = AlertView {
                                    raw,
                                    trap,
                                    owner,
                                    node,
                                    details: d,
                                    accessor: accessor.as_ref(),
                                    rate_limited,
                                    away,
                                };
                                let ts = encode_view(&view, &mut from_view).expect("view encodes");
                                let alert = view.alert();
                                encode(&alert, &mut from_alert).expect("alert encodes");
                                assert!(
                                    from_view == from_alert,
                                    "payload differs from the full alert's for {alert:?}"
                                );
                                assert_eq!(
                                    ts,
                                    alert.timestamp_ns(),
                                    "timestamp differs for {alert:?}"
                                );
                                cases += 1;
                            }
                        }
                    }
                }
            }
        }
    }
    assert_eq!(
        cases,
        6 * 2 * 3 * 3 * 3 * 3 * 2,
        "every combination compared"
    );
}

#[test]
fn the_views_payload_decodes_back_to_the_alert() {
    let traps = traps();
    let raw = raw();
    let node = NodeContext {
        kernel_id: "boot".into(),
        node_name: "node-a".into(),
        clock: BootClock::with_offset(1_754_153_479_000_000_000),
    };
    let view = AlertView {
        raw: &raw,
        trap: &traps[1],
        owner: &pod(),
        node: &node,
        details: &ProcessDetails::default(),
        accessor: None,
        rate_limited: Some(2),
        away: true,
    };
    let mut buf = Vec::new();
    encode_view(&view, &mut buf).expect("view encodes");
    let back = decode_alert(&buf).expect("decodes");
    assert_eq!(back, view.alert(), "the payload carries the whole alert");
    assert_eq!(back.metadata.suppressed, Some(2));
    assert_eq!(back.metadata.armed_as, "/var/été x/\tkey");
}
