//! The plugin driven in-process by `falco_plugin_runner`, the way Falco
//! drives it: register (init) → start capture (open) → next_event →
//! extract fields by name → metrics. Replay mode, so no root is needed.

mod falco_common;

use std::io::Write;

use falco_plugin_runner::{CapturingPluginRunner, ExtractedField, ScapStatus};

use falco_common::runner::{field_names, is_status, list, metrics, next, register, replay, s};
use falco_common::test_file;

/// The expected value of every field for the second line of
/// test_files/kive_alerts.jsonl (a pod alert with every kive key).
fn expected_full() -> Vec<(&'static str, ExtractedField)> {
    use ExtractedField::U64;
    vec![
        ("kive.alert.version", s("v1")),
        ("kive.policy.name", s("decoy-aws-credentials")),
        ("kive.policy.namespace", s("shop")),
        // a KivePolicy trap: no rule severity, tags or message
        ("kive.policy.severity", ExtractedField::None),
        ("kive.policy.tags", ExtractedField::None),
        ("kive.policy.message", ExtractedField::None),
        ("kive.trap.path", s("/root/.aws/credentials")),
        ("kive.path", s("/root/.aws/credentials")),
        ("kive.inode", U64(1311015)),
        ("kive.dev", s("0:91")),
        ("kive.mask", U64(36)),
        ("kive.access", s("read")),
        ("kive.action", s("audit")),
        ("kive.hook", s("lsm/file_open")),
        ("kive.owner", s("pod")),
        ("kive.open.flags", U64(32768)),
        ("kive.suppressed", U64(2)),
        // an access, not a loss report
        ("kive.loss.total", ExtractedField::None),
        ("kive.loss.ring", ExtractedField::None),
        ("kive.loss.queue", ExtractedField::None),
        ("kive.loss.limited", ExtractedField::None),
        // an access, not a tamper, at the trap's path: see
        // replay_extracts_the_tamper_fields
        ("kive.tamper", ExtractedField::None),
        ("kive.tamper.old_path", ExtractedField::None),
        ("kive.tamper.new_path", ExtractedField::None),
        ("kive.armed_as", ExtractedField::None),
        ("kive.kernel.id", s("2c147a95-23e5-4f99-a2de-67d5e9fdb502")),
        (
            "kive.callback",
            s("http://kive-callback.kive.svc:8080/alerts"),
        ),
        (
            "kive.metadata",
            s("description=decoy AWS credentials,severity=critical"),
        ),
        (
            "kive.metadata.pairs",
            list(&["description=decoy AWS credentials", "severity=critical"]),
        ),
        ("kive.pod.name", s("payments-7d9f8b6c5d-x2x4q")),
        ("kive.pod.namespace", s("shop")),
        ("kive.pod.ip", s("10.244.1.17")),
        ("kive.pod.label", s("payments")),
        ("kive.pod.labels", list(&["app=payments", "tier=backend"])),
        ("kive.pod.uid", s("5f0c2b1e-8d3a-4c7e-9b61-2a4f7d9e0c13")),
        ("kive.pod.serviceaccount", s("payments")),
        ("kive.pod.workload.kind", s("Deployment")),
        ("kive.pod.workload.name", s("payments")),
        ("kive.namespace.label", s("payments")),
        (
            "kive.namespace.labels",
            list(&["kubernetes.io/metadata.name=shop", "team=payments"]),
        ),
        (
            "kive.container.id",
            s("containerd://9b1f3c0a5e7d4c2b8a6f1e0d9c8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b"),
        ),
        ("kive.container.shortid", s("9b1f3c0a5e7d")),
        ("kive.container.name", s("api")),
        ("kive.container.image", s("ghcr.io/shop/payments-api:2.4.1")),
        ("kive.node.name", s("kive-worker")),
        ("kive.process.pid", U64(48213)),
        ("kive.process.tgid", U64(48211)),
        ("kive.process.ppid", U64(48190)),
        ("kive.process.parent.comm", s("bash")),
        ("kive.process.parent.binary", s("/usr/bin/bash")),
        ("kive.process.vpid", U64(31)),
        ("kive.process.loginuid", U64(1000)),
        ("kive.process.uid", U64(1000)),
        ("kive.process.gid", U64(1000)),
        ("kive.process.binary", s("/usr/bin/python3.11")),
        ("kive.process.binary.truncated", ExtractedField::Bool(false)),
        ("kive.process.binary.memfd", ExtractedField::Bool(false)),
        ("kive.process.binary.deleted", ExtractedField::Bool(false)),
        ("kive.process.flags", ExtractedField::None),
        ("kive.process.cwd", s("/app")),
        ("kive.process.args", s("python3 /app/exfil.py --target s3")),
        ("kive.process.comm", s("python3")),
        ("kive.cgroup.id", U64(8795)),
        ("kive.accessor.host", ExtractedField::Bool(false)),
        (
            "kive.accessor.container.id",
            s("containerd://77aa00bb11cc22dd33ee44ff5566778899aabbccddeeff00112233445566aabb"),
        ),
        ("kive.accessor.container.name", s("debug")),
        ("kive.accessor.pod.name", s("toolbox-5c8d7f9b4-qq7lm")),
        ("kive.accessor.pod.namespace", s("shop")),
        (
            "kive.accessor.cgroup",
            s("/kubepods.slice/kubepods-besteffort.slice/cri-containerd-77aa00bb.scope"),
        ),
        ("kive.accessor.foreign", ExtractedField::Bool(true)),
        ("kive.alert", ExtractedField::None), // checked separately: JSON
    ]
}

#[test]
fn replay_extracts_the_tamper_fields() {
    let path = test_file("kive_tamper.jsonl");
    let mut r = replay(path.to_str().expect("utf8"));
    let tamper = next(&mut r).expect("the rename");
    let access = next(&mut r).expect("the access of the moved decoy");
    let mut get = |ev, f: &str| {
        r.extract_field(ev, f)
            .unwrap_or_else(|| panic!("{f} known"))
            .unwrap_or_else(|rc| panic!("{f}: rc {rc}"))
    };
    assert_eq!(get(&tamper, "kive.tamper"), s("rename"));
    assert_eq!(get(&tamper, "kive.tamper.old_path"), s("/tmp/d/secret.txt"));
    assert_eq!(get(&tamper, "kive.tamper.new_path"), s("/tmp/d/moved.txt"));
    assert_eq!(get(&tamper, "kive.hook"), s("rescan"));
    assert_eq!(get(&tamper, "kive.armed_as"), ExtractedField::None);
    assert_eq!(get(&access, "kive.tamper"), ExtractedField::None);
    assert_eq!(get(&access, "kive.armed_as"), s("/tmp/d/secret.txt"));
}

/// How a field is asked for by name (required-key fields get a key).
fn request(name: &str) -> String {
    match name {
        "kive.pod.label" => "kive.pod.label[app]".into(),
        "kive.namespace.label" => "kive.namespace.label[team]".into(),
        n => n.into(),
    }
}

#[test]
fn replay_extracts_every_field_by_name() {
    let path = test_file("kive_alerts.jsonl");
    let mut r = replay(path.to_str().expect("utf8"));
    let _seed = next(&mut r).expect("first line");
    let ev = next(&mut r).expect("second line");

    let expected = expected_full();
    let names: Vec<&str> = expected.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        field_names(),
        "every field of the plugin has an expected value here (same order)"
    );
    for (name, want) in &expected {
        let got = r
            .extract_field(&ev, &request(name))
            .unwrap_or_else(|| panic!("{name} is a known field"))
            .unwrap_or_else(|rc| panic!("{name}: extraction failed, rc {rc}"));
        if *name == "kive.alert" {
            let ExtractedField::String(json) = got else {
                panic!("kive.alert is a string: {got:?}");
            };
            let v: serde_json::Value = serde_json::from_slice(json.as_bytes()).expect("JSON");
            let line = std::fs::read_to_string(&path).expect("read");
            let want: serde_json::Value =
                serde_json::from_str(line.lines().nth(1).expect("line 2")).expect("json");
            assert_eq!(v, want, "kive.alert is the replayed alert");
            continue;
        }
        assert_eq!(&got, want, "{name}");
    }
    // keyed lookups
    let get = |r: &mut CapturingPluginRunner, f: &str| {
        r.extract_field(&ev, f)
            .unwrap_or_else(|| panic!("{f} known"))
            .unwrap_or_else(|rc| panic!("{f}: rc {rc}"))
    };
    assert_eq!(get(&mut r, "kive.metadata[severity]"), s("critical"));
    assert_eq!(get(&mut r, "kive.metadata[nope]"), ExtractedField::None);
    assert_eq!(get(&mut r, "kive.pod.label[tier]"), s("backend"));
    assert_eq!(get(&mut r, "kive.pod.label[nope]"), ExtractedField::None);
    let info = get(&mut r, "evt.plugininfo").to_string();
    for part in [
        "policy=decoy-aws-credentials",
        "path=/root/.aws/credentials",
        "access=read",
        "pod=shop/payments-7d9f8b6c5d-x2x4q",
    ] {
        assert!(info.contains(part), "evt.plugininfo {info:?} lacks {part}");
    }
}

#[test]
fn the_seed_sample_replays_with_absent_values_as_no_value() {
    let path = test_file("kive_alerts.jsonl");
    let mut r = replay(path.to_str().expect("utf8"));
    let ev = next(&mut r).expect("seed line");
    // SAFETY: the runner's event points at a complete event from next_batch.
    let ts = unsafe { std::ptr::read_unaligned(std::ptr::addr_of!((*ev.buf).ts)) };
    assert_eq!(
        ts, 1_754_153_479_000_000_000,
        "timestamp 2025-08-02T16:51:19Z in ns"
    );
    let mut get = |f: &str| {
        r.extract_field(&ev, f)
            .unwrap_or_else(|| panic!("{f} known"))
            .unwrap_or_else(|rc| panic!("{f}: rc {rc}"))
    };
    assert_eq!(get("kive.policy.name"), s("kive-sample-policy"));
    assert_eq!(get("kive.path"), s("/secret.txt"));
    assert_eq!(get("kive.mask"), ExtractedField::U64(36));
    assert_eq!(get("kive.access"), s("read"));
    assert_eq!(get("kive.pod.name"), s("nginx-pod"));
    assert_eq!(get("kive.container.name"), s("nginx"));
    assert_eq!(get("kive.process.pid"), ExtractedField::U64(176928));
    assert_eq!(
        get("kive.process.uid"),
        ExtractedField::U64(0),
        "0 is a value"
    );
    assert_eq!(get("kive.process.binary"), s("cat"));
    for absent in [
        "kive.callback",
        "kive.pod.ip",
        "kive.process.cwd",
        "kive.process.args",
        "kive.process.comm",
        "kive.process.ppid",
        "kive.cgroup.id",
        "kive.open.flags",
        "kive.policy.namespace",
        "kive.metadata",
        "kive.metadata[severity]",
        "kive.dev",
        "kive.hook",
        "kive.action",
        "kive.container.image",
        "kive.pod.uid",
        "kive.pod.workload.kind",
        "kive.accessor.host",
        "kive.accessor.foreign",
        "kive.accessor.pod.name",
        "kive.namespace.label[team]",
        "kive.suppressed",
        "kive.process.parent.comm",
        "kive.process.parent.binary",
        "kive.process.vpid",
        "kive.process.loginuid",
    ] {
        assert_eq!(get(absent), ExtractedField::None, "{absent} has no value");
    }
    assert_eq!(
        get("kive.pod.labels"),
        ExtractedField::None,
        "an empty list"
    );
}

#[test]
fn replayed_process_ids_absent_from_the_line_have_no_value_not_zero() {
    let head = r#""kive-alert-version":"v1","kive-policy-name":"p","timestamp":"2025-08-02T16:51:19Z","metadata":{"path":"/s","inode":1,"mask":4,"kernel-id":"k"}"#;
    let mut f = tempfile::NamedTempFile::new().expect("temp");
    writeln!(f, "{{{head}}}").expect("write");
    writeln!(f, r#"{{{head},"process":{{"uid":0,"tgid":7}}}}"#).expect("write");
    let mut r = replay(f.path().to_str().expect("utf8"));
    let ev = next(&mut r).expect("the line without process");
    let mut get = |ev: &_, f: &str| {
        r.extract_field(ev, f)
            .unwrap_or_else(|| panic!("{f} known"))
            .unwrap_or_else(|rc| panic!("{f}: rc {rc}"))
    };
    for f in [
        "kive.process.uid",
        "kive.process.gid",
        "kive.process.pid",
        "kive.process.tgid",
    ] {
        assert_eq!(
            get(&ev, f),
            ExtractedField::None,
            "{f}: no process, no value"
        );
    }
    let ev = next(&mut r).expect("the line with uid 0");
    let mut get = |f: &str| {
        r.extract_field(&ev, f)
            .unwrap_or_else(|| panic!("{f} known"))
            .unwrap_or_else(|rc| panic!("{f}: rc {rc}"))
    };
    assert_eq!(
        get("kive.process.uid"),
        ExtractedField::U64(0),
        "0 given is 0"
    );
    assert_eq!(get("kive.process.tgid"), ExtractedField::U64(7));
    assert_eq!(get("kive.process.gid"), ExtractedField::None, "not given");
}

#[test]
fn recorded_engine_alerts_replay_with_their_values() {
    let path = test_file("kive_run_host.jsonl");
    let mut r = replay(path.to_str().expect("utf8"));
    let mut rows = Vec::new();
    loop {
        match next(&mut r) {
            Ok(ev) => {
                let mut get = |f: &str| {
                    r.extract_field(&ev, f)
                        .expect("known")
                        .unwrap_or_else(|rc| panic!("{f}: rc {rc}"))
                        .to_string()
                };
                rows.push([
                    get("kive.process.comm"),
                    get("kive.access"),
                    get("kive.owner"),
                    get("kive.metadata[severity]"),
                    get("kive.pod.name"),
                    get("kive.accessor.host"),
                    get("kive.accessor.foreign"),
                    get("kive.process.binary"),
                    get("kive.process.parent.comm"),
                    get("kive.process.parent.binary"),
                ]);
            }
            Err(e) if is_status(&e, ScapStatus::Eof) => break,
            Err(e) => panic!("replay: {e:#}"),
        }
    }
    let comms: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(comms, ["cat", "head", "sh", "bash", "bash", "python3"]);
    assert_eq!(rows[4][1], "write,append", "the `>>` line");
    let binaries: Vec<&str> = rows.iter().map(|r| r[7].as_str()).collect();
    assert_eq!(
        &binaries[..4],
        [
            "/usr/bin/cat",
            "/usr/bin/head",
            "/usr/bin/dash",
            "/usr/bin/bash"
        ]
    );
    assert!(
        rows.iter()
            .all(|r| r[8] == "bash" && r[9] == "/usr/bin/bash"),
        "all run from a bash script: {rows:?}"
    );
    assert!(
        rows.iter()
            .all(|r| r[2] == "host" && r[3] == "high" && r[4] == "<NA>"),
        "{rows:?}"
    );
    assert!(
        rows.iter().all(|r| r[5] == "true" && r[6] == "false"),
        "host processes on a host trap: {rows:?}"
    );
    let m = metrics(&mut r);
    assert_eq!(m["kive.events_delivered"], 6);
}

#[test]
fn malformed_lines_are_skipped_counted_and_the_rest_replays() {
    let line = std::fs::read_to_string(test_file("kive_alerts.jsonl")).expect("read");
    let first = line.lines().next().expect("line");
    let mut f = tempfile::NamedTempFile::new().expect("temp");
    writeln!(
        f,
        "{first}\nnot json at all\n{first}\n{{\"kive-alert-version\":\"v1\"}}\n\n{first}"
    )
    .expect("write");
    let mut r = replay(f.path().to_str().expect("utf8"));
    let mut n = 0;
    loop {
        match next(&mut r) {
            Ok(_) => n += 1,
            Err(e) if is_status(&e, ScapStatus::Eof) => break,
            Err(e) => panic!("replay continues past malformed lines: {e:#}"),
        }
    }
    assert_eq!(n, 3);
    let m = metrics(&mut r);
    assert_eq!(m["kive.events_delivered"], 3);
    assert_eq!(m["kive.replay_malformed_lines"], 2);
    assert_eq!(m["kive.active_tier"], 0, "no tier in replay");
    assert_eq!(m["kive.armed_traps"], 0);
    for name in [
        "kive.kernel_ring_drops",
        "kive.queue_drops",
        "kive.kernel_hits",
        "kive.pending_traps",
    ] {
        assert!(m.contains_key(name), "{name} in {m:?}");
    }
}

#[test]
fn unknown_fields_and_missing_keys_are_refused() {
    let path = test_file("kive_alerts.jsonl");
    let mut r = replay(path.to_str().expect("utf8"));
    let ev = next(&mut r).expect("event");
    assert!(r.extract_field(&ev, "kive.nope").is_none(), "unknown field");
    assert!(
        r.extract_field(&ev, "kive.process.name").is_none(),
        "unknown field"
    );
    let rc = r
        .extract_field(&ev, "kive.pod.label")
        .expect("known field")
        .expect_err("kive.pod.label needs a key");
    assert_eq!(rc, falco_plugin::api::ss_plugin_rc_SS_PLUGIN_FAILURE);
    assert!(
        r.extract_field(&ev, "kive.path[x]")
            .expect("known")
            .is_err(),
        "kive.path takes no key"
    );
}

#[test]
fn bad_configs_are_rejected_with_a_clear_message() {
    for (cfg, want) in [
        (r#"{"mode":"bogus"}"#, "unknown variant `bogus`"),
        (r#"{"replay_file":"x"}"#, "unknown field `replay_file`"),
        (r#"{"ringBytes":1000}"#, "ringBytes"),
        (r#"{"batchTimeoutMs":500}"#, "batchTimeoutMs"),
        (r#"{"policyFiles":"one.yaml"}"#, "expected a sequence"),
        ("not json", "Failed to parse config"),
    ] {
        let e = match register(cfg) {
            Ok(_) => panic!("{cfg} must be rejected"),
            Err(e) => format!("{e:#}"),
        };
        assert!(e.contains(want), "{cfg}: {e:?} lacks {want:?}");
    }
}

#[test]
fn new_has_no_side_effects_and_open_reports_config_problems() {
    // live mode without policies is accepted by init (Falco initialises
    // plugins just to list their fields) and refused by open
    let r = register("{}").expect("empty config registers");
    let Err(e) = r.start_capture() else {
        panic!("live without policies must not open");
    };
    assert!(
        format!("{e:#}").contains("live mode needs policies"),
        "{e:#}"
    );

    let r = register(r#"{"mode":"replay","replayFile":"/nonexistent/alerts.jsonl"}"#)
        .expect("init does not touch the file");
    let Err(e) = r.start_capture() else {
        panic!("a missing replay file must not open");
    };
    assert!(
        format!("{e:#}").contains("/nonexistent/alerts.jsonl"),
        "{e:#}"
    );

    let r = register(r#"{"policyFiles":["/nonexistent/policy.yaml"]}"#).expect("init");
    let Err(e) = r.start_capture() else {
        panic!("a missing policy file must not open");
    };
    assert!(
        format!("{e:#}").contains("/nonexistent/policy.yaml"),
        "{e:#}"
    );

    let bad = r#"{"policies":"apiVersion: kivebpf.san7o.github.io/v1\nkind: KivePolicy\nmetadata: {name: p}\nspec:\n  traps:\n  - path: relative/path\n    matchAny: [{host: true}]\n"}"#;
    let r = register(bad).expect("init");
    let Err(e) = r.start_capture() else {
        panic!("no valid trap must not open");
    };
    assert!(format!("{e:#}").contains("no valid trap"), "{e:#}");
}
