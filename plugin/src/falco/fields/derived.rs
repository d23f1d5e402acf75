//! Field values computed from several slots.

use super::Decoded;
use crate::falco::payload::Slot;
use crate::node::cgroup::pod_uid_from_cgroup_path;

/// Whether the process that opened the file is outside the trap's owner:
/// a container process for a host trap; a host process or another pod's
/// process for a pod trap. No value when either side is unknown.
pub fn foreign(data: &[u8], d: &Decoded) -> Option<bool> {
    let host = d.accessor_host()?;
    match d.raw(data, Slot::Owner) {
        b"host" => Some(!host),
        b"pod" if host => Some(true),
        b"pod" => {
            let pod = d.text(data, Slot::AccessorPodName);
            let ns = d.text(data, Slot::AccessorPodNamespace);
            if pod.is_some() {
                Some(pod != d.text(data, Slot::PodName) || ns != d.text(data, Slot::PodNamespace))
            } else {
                unknown_pod_foreign(data, d)
            }
        }
        _ => None,
    }
}

/// For a pod trap, an accessor container kive knows no pod of (it arms
/// nothing in it): the same container is not foreign; otherwise its pod
/// uid, read from its cgroup path, against the trap owner's.
fn unknown_pod_foreign(data: &[u8], d: &Decoded) -> Option<bool> {
    let bare = |b: &'_ [u8]| -> Vec<u8> {
        let s = String::from_utf8_lossy(b);
        s.rsplit("://")
            .next()
            .unwrap_or_default()
            .as_bytes()
            .to_vec()
    };
    let theirs = d.text(data, Slot::AccessorContainerId).map(bare);
    if theirs.is_some() && theirs == d.text(data, Slot::ContainerId).map(bare) {
        return Some(false);
    }
    let cgroup = String::from_utf8_lossy(d.raw(data, Slot::AccessorCgroup));
    let their_pod = pod_uid_from_cgroup_path(&cgroup)?;
    let our_pod = d.text(data, Slot::PodUid)?;
    Some(their_pod.as_bytes() != our_pod)
}

/// Falco's `container.id` of a `runtime://id` container id: the id
/// without the runtime prefix, cut to 12 characters.
pub fn short_container_id(id: &[u8]) -> Option<&[u8]> {
    let bare = match id.windows(3).position(|w| w == b"://") {
        Some(i) => id.get(i + 3..)?,
        None => id,
    };
    let short = bare.get(..12).unwrap_or(bare);
    (!short.is_empty()).then_some(short)
}

#[cfg(test)]
mod short_id_tests {
    use super::short_container_id;

    #[test]
    fn short_container_ids_match_falco_container_id() {
        let id = b"containerd://77aa00bbccddeeff00112233445566778899aabbccddeeff0011223344556677";
        assert_eq!(short_container_id(id), Some(&b"77aa00bbccdd"[..]));
        assert_eq!(short_container_id(b"docker://abc"), Some(&b"abc"[..]));
        assert_eq!(
            short_container_id(b"0123456789abcdef"),
            Some(&b"0123456789ab"[..])
        );
        assert_eq!(short_container_id(b"cri-o://"), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{AccessorMetadata, KiveAlert};
    use crate::falco::payload::encode;

    const UID_A: &str = "5a3f2b1c-1111-2222-3333-444455556666";
    const UID_B: &str = "9b8c7d6e-aaaa-bbbb-cccc-ddddeeeeffff";
    const CID: &str = "0c37512624823392d71e99a12011148db30ba7ea2a74fc7ff8bd5f85bc7b499c";

    fn pod_trap_hit(accessor: AccessorMetadata) -> Option<bool> {
        let mut a: KiveAlert = serde_json::from_str(include_str!(
            "../../../../test_files/seed_sample_alert.json"
        ))
        .expect("seed sample");
        a.metadata.owner = "pod".into();
        a.pod.uid = UID_A.into();
        a.pod.container.id = "containerd://1111".into();
        a.accessor = Some(accessor);
        let mut buf = Vec::new();
        encode(&a, &mut buf).expect("encodes");
        let d = Decoded::decode(&buf).expect("decodes");
        foreign(&buf, &d)
    }

    fn container_of_pod(uid: &str) -> AccessorMetadata {
        AccessorMetadata {
            host: false,
            container_id: format!("containerd://{CID}"),
            cgroup: format!(
                "/sys/fs/cgroup/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{CID}.scope",
                uid.replace('-', "_")
            ),
            ..Default::default()
        }
    }

    #[test]
    fn a_reader_from_another_pod_kive_arms_nothing_in_is_foreign() {
        assert_eq!(
            pod_trap_hit(container_of_pod(UID_B)),
            Some(true),
            "another pod's container, no pod name known: foreign by its cgroup's pod uid"
        );
        assert_eq!(
            pod_trap_hit(container_of_pod(UID_A)),
            Some(false),
            "a sidecar of the owner's own pod"
        );
        let mut same = container_of_pod(UID_B);
        same.container_id = "containerd://1111".into();
        same.cgroup = "/".into();
        assert_eq!(pod_trap_hit(same), Some(false), "the owner's container");
        let mut unknown = container_of_pod(UID_B);
        unknown.cgroup = format!("/docker/{CID}");
        assert_eq!(pod_trap_hit(unknown), None, "no pod to compare: no value");
    }
}
