//! Round trips and attacks on the payload encoding.

use super::*;
use falco_plugin::event::fields::{FromBytes, ToBytes};

pub(crate) fn full_alert() -> KiveAlert {
    let mut a: KiveAlert = serde_json::from_str(include_str!(
        "../../../../test_files/seed_sample_alert.json"
    ))
    .expect("seed sample");
    a.policy_namespace = Some("default".into());
    a.custom_metadata.insert("severity".into(), "high".into());
    a.custom_metadata.insert("owner".into(), "team-a".into());
    a.pod.labels.insert("app".into(), "nginx".into());
    a.pod.ip = "10.0.0.7".into();
    a.metadata.cgroup_id = Some(1234);
    a.metadata.open_flags = Some(0o100000);
    a.metadata.dev = "254:1".into();
    a.process.ppid = Some(1);
    a.process.comm = "cat".into();
    a.process.pid = -1;
    a.process.parent_comm = "bash".into();
    a.process.parent_binary = "/usr/bin/bash".into();
    a.process.ns_pid = Some(7);
    a.process.loginuid = Some(1000);
    a.metadata.suppressed = Some(3);
    a.metadata.tamper = Some(TamperMetadata {
        kind: "rename".into(),
        old_path: "/secret.txt".into(),
        new_path: "/moved.txt".into(),
    });
    a.metadata.armed_as = "/secret.txt".into();
    a.pod.container.image = "nginx:1.27".into();
    a.pod.uid = "0b9c1d2e-1111-2222-3333-444455556666".into();
    a.pod.service_account = "default".into();
    a.pod.namespace_labels.insert("team".into(), "web".into());
    a.pod.workload = Some(WorkloadMetadata {
        kind: "Deployment".into(),
        name: "nginx".into(),
    });
    a.accessor = Some(AccessorMetadata {
        host: false,
        container_id: "containerd://abc".into(),
        container_name: "sidecar".into(),
        pod_name: "other".into(),
        pod_namespace: "default".into(),
        cgroup: "/kubepods/x".into(),
    });
    a
}

#[test]
fn slot_list_is_in_wire_order() {
    for (i, s) in Slot::ALL.iter().enumerate() {
        assert_eq!(*s as usize, i, "{s:?}");
    }
    assert_eq!(STRING_SLOTS + MAP_SLOTS, MIN_SLOTS);
    assert_eq!(MIN_SLOTS + 1 + TAIL_SLOTS, SLOTS);
}

#[test]
fn alerts_round_trip_through_the_payload() {
    let mut buf = Vec::new();
    let mut host_accessor = full_alert();
    host_accessor.accessor = Some(AccessorMetadata {
        host: true,
        ..Default::default()
    });
    host_accessor.pod.workload = None;
    for a in [full_alert(), KiveAlert::default(), host_accessor] {
        encode(&a, &mut buf).expect("encodes");
        assert_eq!(buf[0], MAGIC);
        assert_eq!(buf[1], PAYLOAD_VERSION);
        assert_eq!(decode_alert(&buf).expect("decodes"), a);
    }
}

#[test]
fn strings_are_sliced_in_place_and_empty_means_absent() {
    let mut buf = Vec::new();
    encode(&full_alert(), &mut buf).expect("encodes");
    let d = Decoded::decode(&buf).expect("decodes");
    let path = d.text(&buf, Slot::Path).expect("path");
    assert_eq!(path, b"/secret.txt");
    let base = buf.as_ptr() as usize;
    let at = path.as_ptr() as usize;
    assert!(at > base && at < base + buf.len(), "a slice of the buffer");
    assert_eq!(d.text(&buf, Slot::Callback), None);
    assert_eq!(
        d.map_get(&buf, Slot::CustomMetadata, b"severity"),
        Some(&b"high"[..])
    );
    assert_eq!(d.map_get(&buf, Slot::CustomMetadata, b"nope"), None);
    assert_eq!(d.map(&buf, Slot::PodLabels).count(), 1);
    assert_eq!(d.numbers().inode, 16256084);
    assert_eq!(d.numbers().cgroup_id, Some(1234));
}

#[test]
fn bad_payloads_are_rejected_with_a_reason() {
    let mut buf = Vec::new();
    encode(&full_alert(), &mut buf).expect("encodes");
    let e = Decoded::decode(&buf[..10]).expect_err("short");
    assert!(e.to_string().contains("shorter"), "{e}");
    let mut v = buf.clone();
    v[1] = 9;
    let e = Decoded::decode(&v).expect_err("version");
    assert!(e.to_string().contains("version 9"), "{e}");
    let mut v = buf.clone();
    v[0] = b'{';
    assert!(Decoded::decode(&v).is_err());
    let e = Decoded::validate(&buf[..buf.len() - 1]).expect_err("truncated");
    assert!(e.to_string().contains("past the end"), "{e}");
    // decode checks the header only; the truncated slot reads as empty
    let short = &buf[..buf.len() - 1];
    let d = Decoded::decode(short).expect("header intact");
    assert_eq!(d.text(short, Slot::ArmedAs), None, "the last slot is cut");
    assert_eq!(d.map(short, Slot::NamespaceLabels).count(), 1);
    assert_eq!(d.map(short, Slot::PodLabels).count(), 1);
    assert_eq!(d.text(short, Slot::Path), Some(&b"/secret.txt"[..]));
    let e = decode_alert(short).expect_err("validated");
    assert!(e.to_string().contains("past the end"), "{e}");
    // a map entry longer than its slot ends the iteration, no panic
    let d = Decoded::decode(&buf).expect("decodes");
    let at = d.raw(&buf, Slot::PodLabels).as_ptr() as usize - buf.as_ptr() as usize;
    let mut v = buf.clone();
    v[at..at + 4].copy_from_slice(&1000u32.to_le_bytes());
    let d = Decoded::decode(&v).expect("the header is intact");
    assert_eq!(d.map(&v, Slot::PodLabels).count(), 0);
    assert_eq!(d.map_get(&v, Slot::PodLabels, b"app"), None);
    assert_eq!(
        d.map(&v, Slot::CustomMetadata).count(),
        2,
        "the other map is intact"
    );
}

#[test]
fn a_payload_without_the_tail_slots_reads_them_as_empty() {
    let mut buf = Vec::new();
    let a = full_alert();
    encode(&a, &mut buf).expect("encodes");
    // rebuild it as a writer of the first layout (37 slots) would have
    let d = Decoded::decode(&buf).expect("decodes");
    let old_area = FIXED + 4 * MIN_SLOTS;
    let end = d.end_of(&buf, MIN_SLOTS - 1);
    let mut old = buf[..FIXED].to_vec();
    old[2..4].copy_from_slice(&(MIN_SLOTS as u16).to_le_bytes());
    old.extend_from_slice(&buf[FIXED..old_area]);
    old.extend_from_slice(&buf[d.area..d.area + end]);
    let back = decode_alert(&old).expect("an older payload decodes");
    assert_eq!(back.metadata.tamper, None);
    assert_eq!(back.metadata.armed_as, "");
    assert_eq!(back.metadata.path, a.metadata.path);
    assert_eq!(back.pod.namespace_labels, a.pod.namespace_labels);
}

#[test]
fn payload_bytes_pass_through_falco_event_parsing() {
    let mut buf = Vec::new();
    encode(&full_alert(), &mut buf).expect("encodes");
    let mut slice: &[u8] = &buf;
    let p = KivePayload::from_bytes(&mut slice).expect("takes all");
    assert!(slice.is_empty(), "nothing left behind");
    assert_eq!(p.binary_size(), buf.len());
}
