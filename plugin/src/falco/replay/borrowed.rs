//! The borrowed form of a KiveAlert JSON line: the same keys, types and
//! defaults as [`KiveAlert`](crate::alert::KiveAlert)'s serde mapping, with
//! strings borrowed from the line where JSON allows it (replay encodes
//! lines without building owned alerts). Absent process ids stay absent.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;

type S<'a> = Cow<'a, str>;

#[derive(Deserialize)]
pub(super) struct AlertRef<'a> {
    #[serde(rename = "kive-alert-version", borrow)]
    pub(super) alert_version: S<'a>,
    #[serde(rename = "kive-policy-name", borrow)]
    pub(super) policy_name: S<'a>,
    #[serde(borrow)]
    pub(super) timestamp: S<'a>,
    #[serde(borrow)]
    pub(super) metadata: MetadataRef<'a>,
    #[serde(rename = "custom-metadata", default, borrow)]
    pub(super) custom_metadata: Pairs<'a>,
    #[serde(default, borrow)]
    pub(super) pod: PodRef<'a>,
    #[serde(default, borrow)]
    pub(super) node: NodeRef<'a>,
    #[serde(default, borrow)]
    pub(super) process: ProcessRef<'a>,
    #[serde(rename = "kive-policy-namespace", default, borrow)]
    pub(super) policy_namespace: Option<S<'a>>,
    #[serde(default, borrow)]
    pub(super) accessor: Option<AccessorRef<'a>>,
}

#[derive(Deserialize)]
pub(super) struct AccessorRef<'a> {
    #[serde(default)]
    pub(super) host: bool,
    #[serde(rename = "container-id", default, borrow)]
    pub(super) container_id: S<'a>,
    #[serde(rename = "container-name", default, borrow)]
    pub(super) container_name: S<'a>,
    #[serde(rename = "pod-name", default, borrow)]
    pub(super) pod_name: S<'a>,
    #[serde(rename = "pod-namespace", default, borrow)]
    pub(super) pod_namespace: S<'a>,
    #[serde(default, borrow)]
    pub(super) cgroup: S<'a>,
}

#[derive(Deserialize)]
pub(super) struct WorkloadRef<'a> {
    #[serde(borrow)]
    pub(super) kind: S<'a>,
    #[serde(borrow)]
    pub(super) name: S<'a>,
}

#[derive(Deserialize)]
pub(super) struct MetadataRef<'a> {
    #[serde(borrow)]
    pub(super) path: S<'a>,
    pub(super) inode: u64,
    pub(super) mask: i32,
    #[serde(rename = "kernel-id", borrow)]
    pub(super) kernel_id: S<'a>,
    #[serde(default, borrow)]
    pub(super) callback: S<'a>,
    #[serde(default, borrow)]
    pub(super) dev: S<'a>,
    #[serde(rename = "trap-path", default, borrow)]
    pub(super) trap_path: S<'a>,
    #[serde(default, borrow)]
    pub(super) hook: S<'a>,
    #[serde(default, borrow)]
    pub(super) action: S<'a>,
    #[serde(rename = "open-flags", default)]
    pub(super) open_flags: Option<u32>,
    #[serde(default, borrow)]
    pub(super) owner: S<'a>,
    #[serde(rename = "cgroup-id", default)]
    pub(super) cgroup_id: Option<u64>,
    #[serde(default)]
    pub(super) suppressed: Option<u64>,
    #[serde(default)]
    pub(super) loss: Option<crate::alert::LossMetadata>,
    #[serde(default, borrow)]
    pub(super) tamper: Option<TamperRef<'a>>,
    #[serde(rename = "armed-as", default, borrow)]
    pub(super) armed_as: S<'a>,
}

#[derive(Deserialize)]
pub(super) struct TamperRef<'a> {
    #[serde(borrow)]
    pub(super) kind: S<'a>,
    #[serde(rename = "old-path", default, borrow)]
    pub(super) old_path: S<'a>,
    #[serde(rename = "new-path", default, borrow)]
    pub(super) new_path: S<'a>,
}

#[derive(Deserialize, Default)]
pub(super) struct PodRef<'a> {
    #[serde(default, borrow)]
    pub(super) name: S<'a>,
    #[serde(default, borrow)]
    pub(super) namespace: S<'a>,
    #[serde(default, borrow)]
    pub(super) ip: S<'a>,
    #[serde(default, borrow)]
    pub(super) container: ContainerRef<'a>,
    #[serde(default, borrow)]
    pub(super) labels: Pairs<'a>,
    #[serde(default, borrow)]
    pub(super) uid: S<'a>,
    #[serde(rename = "namespace-labels", default, borrow)]
    pub(super) namespace_labels: Pairs<'a>,
    #[serde(rename = "service-account", default, borrow)]
    pub(super) service_account: S<'a>,
    #[serde(default, borrow)]
    pub(super) workload: Option<WorkloadRef<'a>>,
}

#[derive(Deserialize, Default)]
pub(super) struct ContainerRef<'a> {
    #[serde(default, borrow)]
    pub(super) id: S<'a>,
    #[serde(default, borrow)]
    pub(super) name: S<'a>,
    #[serde(default, borrow)]
    pub(super) image: S<'a>,
}

#[derive(Deserialize, Default)]
pub(super) struct NodeRef<'a> {
    #[serde(default, borrow)]
    pub(super) name: S<'a>,
}

#[derive(Deserialize, Default)]
pub(super) struct ProcessRef<'a> {
    // absent numbers stay absent: no value in Falco, never 0 (root)
    #[serde(default)]
    pub(super) pid: Option<i32>,
    #[serde(default)]
    pub(super) tgid: Option<u32>,
    #[serde(default)]
    pub(super) uid: Option<u32>,
    #[serde(default)]
    pub(super) gid: Option<u32>,
    #[serde(default, borrow)]
    pub(super) binary: S<'a>,
    #[serde(default, borrow)]
    pub(super) cwd: S<'a>,
    #[serde(default, borrow)]
    pub(super) arguments: S<'a>,
    #[serde(default, borrow)]
    pub(super) comm: S<'a>,
    #[serde(default)]
    pub(super) ppid: Option<u32>,
    #[serde(rename = "parent-comm", default, borrow)]
    pub(super) parent_comm: S<'a>,
    #[serde(rename = "parent-binary", default, borrow)]
    pub(super) parent_binary: S<'a>,
    #[serde(rename = "ns-pid", default)]
    pub(super) ns_pid: Option<u32>,
    #[serde(default)]
    pub(super) loginuid: Option<u32>,
    #[serde(default, borrow)]
    pub(super) flags: Vec<S<'a>>,
}

/// A JSON object of strings as pairs sorted by key, later duplicates
/// winning (what a `BTreeMap<String, String>` holds).
#[derive(Default)]
pub(super) struct Pairs<'a>(Vec<(S<'a>, S<'a>)>);

impl<'a> Pairs<'a> {
    pub(super) fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_ref(), v.as_ref()))
    }
}

#[derive(Deserialize)]
pub(super) struct Str<'a>(#[serde(borrow)] S<'a>);

impl<'de: 'a, 'a> Deserialize<'de> for Pairs<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Pairs<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut m: M) -> Result<Pairs<'a>, M::Error> {
                let mut v: Vec<(S<'a>, S<'a>)> = Vec::with_capacity(m.size_hint().unwrap_or(4));
                while let Some((k, val)) = m.next_entry::<Str<'de>, Str<'de>>()? {
                    v.push((k.0, val.0));
                }
                // stable: among equal keys the later entry stays last
                v.sort_by(|a, b| a.0.cmp(&b.0));
                v.dedup_by(|later, earlier| {
                    if later.0 == earlier.0 {
                        std::mem::swap(&mut later.1, &mut earlier.1);
                        true
                    } else {
                        false
                    }
                });
                Ok(Pairs(v))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}
