//! Fuzzing of every decoder of outside input (stable Rust, see
//! `fuzz_harness`): each target runs its committed corpus
//! (`plugin/fuzz-corpus/<target>/`) and its seed files as they are, then
//! mutations of them for `KIVE_FUZZ_MS` ms (1000 by default: `make test`;
//! `make fuzz` runs long). Nothing may panic, and where a decoder has an
//! inverse, what decodes must round-trip.
//!
//! Adding a target is one line in [`TARGETS`] plus a corpus directory
//! (e.g. KubeArmor policy YAML).
//! kive parses no callback response body (only the status code), so
//! callbacks have no target.

mod fuzz_harness;

use fuzz_harness::{fuzz, Target};
use kive::falco::payload::{decode_alert, encode, Decoded, Slot};
use kive::falco::replay::{encode_line, parse_line};
use kive::falco::webhook::decode_body;
use kive::falco::KiveConfig;
use kive::trap::wire::{offsets, EVENT_SIZE, EVENT_VERSION};
use kive::trap::RawEvent;

const YAML: &[&[u8]] = &[
    b"apiVersion: kivebpf.san7o.github.io/v1\n",
    b"kind: KivePolicy\n",
    b"spec:\n  traps:\n  - path: /a\n",
    b"matchAny: [{host: true}]\n",
    b"matchAny:\n- pod: x\n  namespace: y\n  container: '*'\n",
    b"rateLimit: {alerts: 1, seconds: 1}\n",
    b"action: block\n",
    b"create: true\n",
    b"mode: 0o777\n",
    b"metadata: {name: p, namespace: n}\n",
    b"---\n",
    b"&a [*a, *a]",
    b"*a",
    b"<<: ",
    b"!!binary ",
    b"!!int ",
    b"- ",
    b": ",
    b"{",
    b"}",
    b"[",
    b"]",
    b"'",
    b"\"",
    b"\\u0000",
    b"\t",
    b"\n  ",
    b"~",
    b"null",
    b"99999999999999999999999",
    b"-1",
    b"\xff\xfe",
];

const JSON: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\"",
    b"\\u0000",
    b"\\ud800",
    b"null",
    b"true",
    b"-1",
    b"1e999",
    b"18446744073709551616",
    b"4294967295",
    b"\"process\":{}",
    b"\"accessor\":{\"host\":false}",
    b"\"pod\":{\"workload\":{\"kind\":\"x\",\"name\":\"y\"}}",
    b"\"custom-metadata\":{\"a\":\"b\",\"a\":\"c\"}",
    b"\"spec\":{\"traps\":[{\"path\":\"/a\"}]}",
    b"\"metadata\":{\"name\":\"p\",\"namespace\":\"n\"}",
];

const BINARY: &[&[u8]] = &[b"\0", b"\xff\xff\xff\xff", b"K\x01", b"\x03\x00"];

/// KivePolicy YAML streams (files, ConfigMaps, init config `policies`).
fn policy_yaml(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let c = kive::policy::load_str("fuzz.yaml", &text);
    for e in &c.errors {
        let msg = e.to_string();
        assert!(!msg.is_empty(), "an error says what is wrong");
    }
    for t in &c.traps {
        let _ = format!("{t:?}");
    }
}

/// KivePolicy objects as the API server serves them (JSON).
fn policy_json(data: &[u8]) {
    if let Ok(obj) = serde_json::from_slice::<kube::api::DynamicObject>(data) {
        let scope = kive::policy::scope::ScopeConfig::default();
        let entry = kive::k8s::convert::policy_entry(&obj, &scope);
        for e in &entry.errors {
            let _ = e.to_string();
        }
        // the same object read as each KubeArmor kind
        for kind in [
            kive::policy::kubearmor::Kind::Policy,
            kive::policy::kubearmor::Kind::ClusterPolicy,
            kive::policy::kubearmor::Kind::HostPolicy,
        ] {
            let entry = kive::k8s::convert::kubearmor_entry(&obj, kind, &scope);
            for e in &entry.errors {
                let _ = e.to_string();
            }
        }
    }
    policy_yaml(data);
}

/// Replay JSON lines: both decoders agree, and what encodes decodes back.
fn replay_line(data: &[u8]) {
    let parsed = parse_line(data);
    let mut out = Vec::new();
    let encoded = encode_line(data, &mut out);
    match (&parsed, &encoded) {
        (Ok(a), Ok(_)) => {
            let back = decode_alert(&out).expect("an encoded line decodes");
            let mut direct = Vec::new();
            encode(a, &mut direct).expect("a parsed alert encodes");
            assert_eq!(
                back,
                decode_alert(&direct).expect("decodes"),
                "the borrowed and the owned encoders agree"
            );
        }
        (Err(_), Err(_)) => {}
        _ => panic!(
            "parse_line and encode_line disagree: {:?} vs {:?}",
            parsed.as_ref().err(),
            encoded.as_ref().err()
        ),
    }
}

/// Bodies POSTed to the webhook source: what is accepted is a v1 alert
/// and its payload is that alert's (as replay encodes it).
fn webhook_body(data: &[u8]) {
    let mut out = Vec::new();
    if decode_body(data, &mut out).is_ok() {
        let alert = parse_line(data).expect("an accepted body is an alert");
        assert_eq!(alert.alert_version, "v1", "only v1 is accepted");
        let mut direct = Vec::new();
        encode(&alert, &mut direct).expect("a parsed alert encodes");
        assert_eq!(
            decode_alert(&out).expect("an accepted body's payload decodes"),
            decode_alert(&direct).expect("decodes"),
        );
    }
}

/// kive payloads as Falco hands them to the extractor (from a capture
/// file, a peer plugin or another kive version): every field read.
fn payload(data: &[u8]) {
    let Ok(d) = Decoded::decode(data) else {
        return;
    };
    for slot in Slot::ALL {
        let _ = d.text(data, slot);
        let _ = d.map(data, slot).count();
        let _ = d.map_get(data, slot, b"severity");
    }
    let _ = kive::falco::fields::foreign(data, &d);
    let _ = d.accessor_host();
    let _ = d.to_alert(data).to_json();
    // what validates decodes back to itself
    if let Ok(a) = decode_alert(data) {
        let mut again = Vec::new();
        encode(&a, &mut again).expect("a decoded alert encodes");
        assert_eq!(decode_alert(&again).expect("re-decodes"), a);
    }
}

/// Payloads derived from the replay corpus.
fn payload_seeds() -> Vec<Vec<u8>> {
    let t = TARGETS
        .iter()
        .find(|t| t.name == "replay_line")
        .expect("replay target");
    let mut out = Vec::new();
    for input in fuzz_harness::corpus(t) {
        for line in input.split(|&b| b == b'\n') {
            let mut buf = Vec::new();
            if encode_line(line, &mut buf).is_ok() {
                out.push(buf);
            }
        }
    }
    out
}

/// Kernel ring records (a build with a different `struct kive_event`,
/// a corrupt ring).
fn ring_record(data: &[u8]) {
    if let Ok(e) = RawEvent::decode(data) {
        assert!(e.comm().len() <= 3 * 16, "comm bounded by its field");
        assert!(e.args().iter().map(str::len).sum::<usize>() <= 3 * 256);
        if let Some(t) = e.tamper {
            assert!(t.new_name.len() <= 3 * 256, "new name bounded by its field");
        }
    }
}

/// A plausible record: the version right, a path, arguments.
fn ring_seeds() -> Vec<Vec<u8>> {
    let mut r = vec![0u8; EVENT_SIZE];
    r[offsets::VERSION..offsets::VERSION + 2].copy_from_slice(&EVENT_VERSION.to_le_bytes());
    r[offsets::COMM..offsets::COMM + 3].copy_from_slice(b"cat");
    r[offsets::EXE..offsets::EXE + 12].copy_from_slice(b"/usr/bin/cat");
    r[offsets::EXE_LEN] = 12;
    r[offsets::ARGS..offsets::ARGS + 8].copy_from_slice(b"cat\0/x\0\0");
    r[offsets::ARGS_LEN] = 7;
    // a rename seen by the kernel, with the new name and its directory
    let mut t = r.clone();
    t[offsets::HOOK] = 7;
    t[offsets::NEW_DIR_INO] = 42;
    t[offsets::NEW_NAME..offsets::NEW_NAME + 10].copy_from_slice(b"moved.txt\0");
    t[offsets::NEW_NAME_LEN] = 10;
    vec![r, t]
}

/// The plugin's init config (JSON from falco.yaml) and open params.
fn init_config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(c) = KiveConfig::from_json(&text) {
        let _ = c.validate();
        let _ = c.runtime_config();
        let _ = c.cluster_config("node");
        let _ = kive::falco::source::open_target(&c, Some(&text));
        let _ = kive::falco::source::open_target(&c, None);
    }
}

/// Pods as the API server serves them (JSON), as kive views them.
fn pod_json(data: &[u8]) {
    if let Ok(pod) = serde_json::from_slice::<k8s_openapi::api::core::v1::Pod>(data) {
        let v = kive::k8s::convert::pod_view(&pod);
        let _ = v.ip();
        for c in &v.containers {
            let _ = c.bare_id();
        }
        let _ = kive::k8s::convert::workload(&pod);
        static TRAPS: std::sync::OnceLock<kive::policy::Compiled> = std::sync::OnceLock::new();
        let traps = TRAPS.get_or_init(|| {
            kive::policy::load_str(
                "fuzz-corpus/policy_yaml/multi-document.yaml",
                include_str!("../fuzz-corpus/policy_yaml/multi-document.yaml"),
            )
        });
        for t in &traps.traps {
            let _ = kive::policy::pods::matching_containers(t, &v);
        }
    }
}

/// /proc and cgroup texts a container can shape (mount points, cgroup
/// names, command lines).
fn proc_text(data: &[u8]) {
    use kive::node::cgroup::*;
    let text = String::from_utf8_lossy(data);
    let _ = cgroup2_mount_point(&text);
    let _ = cgroup_mode(&text);
    for p in v1_cgroup_paths(&text) {
        let _ = container_from_cgroup_path(&p);
    }
    for line in text.lines() {
        let _ = pod_uid_from_cgroup_path(line);
        let _ = container_from_cgroup_name(line);
    }
    let _ = kive::node::procfs::cmdline_to_string(data);
}

/// Every target. One line each.
const TARGETS: &[Target] = &[
    Target::new("policy_yaml", YAML, policy_yaml).seeds(&["examples"]),
    Target::new("policy_json", JSON, policy_json),
    Target::new("replay_line", JSON, replay_line).seeds(&["test_files"]),
    Target::new("webhook_body", JSON, webhook_body).seeds(&["test_files"]),
    Target::new("payload", BINARY, payload).derived(payload_seeds),
    Target::new("ring_record", BINARY, ring_record).derived(ring_seeds),
    Target::new("init_config", JSON, init_config),
    Target::new("pod_json", JSON, pod_json),
    Target::new("proc_text", YAML, proc_text),
];

/// Every target, side by side (one thread each, `KIVE_FUZZ_MS` each).
#[test]
fn fuzz_every_target() {
    let runs: Vec<(&str, u64)> = std::thread::scope(|s| {
        let handles: Vec<_> = TARGETS
            .iter()
            .map(|t| (t.name, s.spawn(move || fuzz(t))))
            .collect();
        handles
            .into_iter()
            .map(|(name, h)| match h.join() {
                Ok(n) => (name, n),
                Err(p) => std::panic::resume_unwind(p),
            })
            .collect()
    });
    for (name, n) in &runs {
        eprintln!("fuzz {name}: {n} inputs");
        assert!(*n > 0, "{name}: nothing ran");
    }
}

#[test]
fn every_target_has_a_corpus() {
    for t in TARGETS {
        assert!(
            fuzz_harness::corpus_dir(t.name).is_dir(),
            "{}: commit a corpus in {}",
            t.name,
            fuzz_harness::corpus_dir(t.name).display()
        );
    }
}

#[test]
fn the_harness_reports_a_panicking_decoder() {
    fn fragile(data: &[u8]) {
        // the kind of bug the targets look for: indexing outside data
        if data.first() == Some(&b'{') {
            let _ = data[data.len() + usize::from(data[0])];
        }
    }
    let t = Target::new("self_test", JSON, fragile);
    let caught = std::panic::catch_unwind(|| fuzz_harness::run_one(&t, b"{}"));
    let saved = fuzz_harness::crash_dir();
    for e in std::fs::read_dir(&saved)
        .expect("the input was saved")
        .flatten()
    {
        if e.file_name().to_string_lossy().starts_with("self_test-") {
            std::fs::remove_file(e.path()).expect("removes the saved input");
        }
    }
    assert!(caught.is_err(), "a panicking input fails the run");
}
