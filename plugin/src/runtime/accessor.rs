//! Who opened a trapped file: the facts of the event's process (its cgroup
//! v2 directory, on hybrid and v1 nodes its v1 cgroups and whether it is in
//! the host's mount namespace), turned into an accessor by
//! [`accessor_metadata`].

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::enrich::{accessor_metadata, CgroupFacts};
use super::table::ContainerOwner;
use crate::alert::AccessorMetadata;
use crate::node::cgroup::{
    container_from_cgroup_path, process_v1_cgroups, CgroupIndex, CgroupMode,
};
use crate::node::pidcache::PidCache;
use crate::sync::lock;
use crate::trap::RawEvent;

/// The node facts accessor attribution needs.
#[derive(Debug)]
pub struct Accessors {
    cgroups: Mutex<CgroupIndex>,
    /// The host's mount namespace.
    host_mnt_ns: Option<u32>,
    proc_root: PathBuf,
    /// v1 cgroups by process (tgid, start time): read once a second per
    /// process, not at each of its events.
    v1: Mutex<PidCache<Arc<[PathBuf]>>>,
    /// The last host accessor resolved: a flood's next events from the
    /// same process reuse it (no path lookup or parse per event).
    last_host: Mutex<Option<LastHost>>,
}

/// A host accessor of one process (the cgroups alone decide it: no pod
/// looked up), reused for [`V1_TTL`] as the v1 cgroups are.
#[derive(Debug)]
struct LastHost {
    /// cgroup v2 id, tgid, start time, mount namespace.
    key: (u64, u32, u64, u32),
    /// When it was resolved (boot ns).
    at: u64,
    /// Shared with the events that reuse it (no copy of its strings).
    found: Arc<AccessorMetadata>,
}

/// How long a process's v1 cgroups are reused (a process moved to another
/// cgroup is seen within this).
const V1_TTL: Duration = Duration::from_secs(1);
/// Processes whose v1 cgroups are kept.
const V1_PROCESSES: usize = 4096;

/// The v1 cgroups of a process that decide its accessor (see
/// [`accessor_metadata`]): the first that names a container, else the first
/// of all (a host process's). Kept instead of all of them (one per v1
/// controller), so a cached process's event parses one path, not each.
fn decisive_v1(paths: Vec<PathBuf>) -> Arc<[PathBuf]> {
    let first = paths
        .iter()
        .position(|p| container_from_cgroup_path(p).is_some())
        .unwrap_or(0);
    paths.into_iter().skip(first).take(1).collect()
}

impl Accessors {
    /// This node's cgroups and host mount namespace, read under `proc_root`.
    pub fn for_this_node(proc_root: PathBuf) -> Self {
        Self {
            cgroups: Mutex::new(CgroupIndex::for_this_node()),
            host_mnt_ns: crate::node::host::host_mnt_ns(&proc_root),
            proc_root,
            v1: Mutex::new(PidCache::new(V1_TTL, V1_PROCESSES)),
            last_host: Mutex::new(None),
        }
    }

    /// The accessor of an event; `owner_of` names the pod of a container
    /// kive knows (by bare id).
    pub fn resolve(
        &self,
        raw: &RawEvent,
        owner_of: impl FnOnce(&str) -> Option<ContainerOwner>,
    ) -> Option<Arc<AccessorMetadata>> {
        // a process is known by (tgid, start time) only with its start time
        let key = (raw.cgroup_id, raw.tgid, raw.start_ns, raw.mnt_ns);
        let ttl = V1_TTL.as_nanos() as u64;
        if raw.start_ns != 0 {
            let last = lock(&self.last_host);
            if let Some(l) = last.as_ref() {
                if l.key == key
                    && raw.ts_boot_ns.saturating_sub(l.at) < ttl
                    && raw.ts_boot_ns >= l.at
                {
                    return Some(Arc::clone(&l.found));
                }
            }
        }
        let (found, as_of) = self.resolve_as_of(raw, owner_of);
        let found = found.map(Arc::new);
        if let Some(a) = found.as_ref().filter(|a| a.host && raw.start_ns != 0) {
            // reused for as long as the facts it was made of are fresh
            *lock(&self.last_host) = Some(LastHost {
                key,
                at: as_of,
                found: Arc::clone(a),
            });
        }
        found
    }

    /// [`Accessors::resolve`] without the reuse.
    #[cfg(test)]
    fn resolve_now(
        &self,
        raw: &RawEvent,
        owner_of: impl FnOnce(&str) -> Option<ContainerOwner>,
    ) -> Option<AccessorMetadata> {
        self.resolve_as_of(raw, owner_of).0
    }

    /// The accessor of an event read afresh, and when the facts it was made
    /// of were read (the event's time, or earlier for cached v1 cgroups).
    fn resolve_as_of(
        &self,
        raw: &RawEvent,
        owner_of: impl FnOnce(&str) -> Option<ContainerOwner>,
    ) -> (Option<AccessorMetadata>, u64) {
        let (path, mode) = {
            let mut idx = lock(&self.cgroups);
            (idx.lookup(raw.cgroup_id), idx.mode())
        };
        // /proc only where the v2 cgroup can hide a container
        let named = || {
            path.as_deref()
                .and_then(container_from_cgroup_path)
                .is_some()
        };
        let cached: Arc<[PathBuf]>;
        let mut as_of = raw.ts_boot_ns;
        let v1: &[PathBuf] = if mode == CgroupMode::Unified || named() {
            &[]
        } else {
            let mut cache = lock(&self.v1);
            (cached, as_of) = cache.get_or_read_at(raw.tgid, raw.start_ns, raw.ts_boot_ns, || {
                decisive_v1(process_v1_cgroups(&self.proc_root, raw.tgid))
            });
            &cached
        };
        let facts = CgroupFacts {
            v2: path.as_deref(),
            mode,
            v1,
            host_mnt_ns: self.host_mnt_ns.map(|h| h == raw.mnt_ns),
        };
        (accessor_metadata(facts, owner_of), as_of)
    }

    /// cgroup directories indexed.
    pub fn indexed(&self) -> usize {
        lock(&self.cgroups).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trap::{EventText, Texts};
    use std::path::Path;

    const CID: &str = "0c37512624823392d71e99a12011148db30ba7ea2a74fc7ff8bd5f85bc7b499c";

    #[test]
    fn the_decisive_v1_cgroups_give_the_accessor_all_of_them_give() {
        let container =
            format!("/kubepods/besteffort/pod5a3f2b1c-1111-2222-3333-444455556666/{CID}");
        let lists: [Vec<&str>; 5] = [
            vec![],
            vec!["/"],
            vec!["/", "/user.slice", "/process_api/x"],
            vec!["/", "/user.slice", &container, "/"],
            vec![&container, "/"],
        ];
        for list in lists {
            let all: &'static [PathBuf] = list.iter().map(PathBuf::from).collect::<Vec<_>>().leak();
            let kept: &'static [PathBuf] = Vec::from(&*decisive_v1(all.to_vec())).leak();
            assert!(kept.len() <= 1, "{list:?}: one path kept");
            for mode in [CgroupMode::Hybrid, CgroupMode::Legacy] {
                for host_mnt_ns in [None, Some(false), Some(true)] {
                    for v2 in [None, Some(Path::new("/sys/fs/cgroup/unified"))] {
                        let facts = |v1: &'static [PathBuf]| CgroupFacts {
                            v2,
                            mode,
                            v1,
                            host_mnt_ns,
                        };
                        let owner = |id: &str| {
                            assert_eq!(id, CID, "looked up by bare id");
                            Some(ContainerOwner {
                                pod: "web-0".into(),
                                ..Default::default()
                            })
                        };
                        assert_eq!(
                            accessor_metadata(facts(kept), owner),
                            accessor_metadata(facts(all), owner),
                            "{list:?} {mode:?} {host_mnt_ns:?} {v2:?}"
                        );
                    }
                }
            }
        }
    }

    fn event(cgroup_id: u64, tgid: u32, start_ns: u64, ts_boot_ns: u64) -> RawEvent {
        use crate::trap::{Action, Hook, TrapKey};
        RawEvent {
            ts_boot_ns,
            key: TrapKey { dev: 1, ino: 2 },
            cgroup_id,
            pid: tgid,
            tgid,
            ppid: 1,
            ns_pid: tgid,
            uid: 0,
            gid: 0,
            mask: 4,
            flags: 0,
            mnt_ns: 9,
            trap_id: 1,
            hook: Hook::TpSysExit,
            action: Action::Audit,
            text: EventText::new(Texts {
                comm: "cat",
                ..Texts::default()
            }),
            loginuid: None,
            process_flags: 0,
            limited: 0,
            tamper: None,
            start_ns,
        }
    }

    #[test]
    fn a_reused_host_accessor_never_answers_for_another_process_cgroup_or_time() {
        use std::os::unix::fs::MetadataExt;
        let root = tempfile::tempdir().expect("tempdir");
        let host = root.path().join("system.slice/sshd.service");
        let pod = root.path().join(format!(
            "kubepods.slice/kubepods-pod1.slice/cri-containerd-{CID}.scope"
        ));
        for d in [&host, &pod] {
            std::fs::create_dir_all(d).expect("cgroup dir");
        }
        let ino = |p: &Path| std::fs::metadata(p).expect("cgroup dir").ino();
        let (host_id, pod_id) = (ino(&host), ino(&pod));
        let a = Accessors {
            cgroups: Mutex::new(CgroupIndex::new(Some(root.path().to_path_buf()))),
            host_mnt_ns: None,
            proc_root: root.path().to_path_buf(),
            v1: Mutex::new(PidCache::new(V1_TTL, V1_PROCESSES)),
            last_host: Mutex::new(None),
        };
        let asked = std::cell::Cell::new(0);
        let owner = |id: &str| {
            assert_eq!(id, CID, "looked up by bare id");
            asked.set(asked.get() + 1);
            Some(ContainerOwner {
                pod: "web-0".into(),
                ..Default::default()
            })
        };
        let first = a
            .resolve(&event(host_id, 10, 5, 1_000), owner)
            .expect("host");
        assert!(first.host, "{first:?}");
        assert_eq!(first.cgroup, host.display().to_string());
        let again = a.resolve(&event(host_id, 10, 5, 2_000), owner);
        assert_eq!(
            again.as_deref(),
            Some(&*first),
            "the same process: the same accessor"
        );
        // another cgroup, another process, the same pid restarted, another
        // mount namespace, past the reuse time: each resolved afresh
        let pod_ev = event(pod_id, 10, 5, 3_000);
        let p = a.resolve(&pod_ev, owner).expect("container");
        assert!(
            !p.host,
            "another cgroup of the same process is not the host's"
        );
        assert_eq!(p.pod_name, "web-0");
        let p = a
            .resolve(&event(pod_id, 11, 5, 3_000), owner)
            .expect("container");
        assert!(!p.host, "another process");
        assert_eq!(
            asked.get(),
            2,
            "a container's pod is looked up at each event"
        );
        let ttl = V1_TTL.as_nanos() as u64;
        for ev in [
            event(host_id, 10, 6, 4_000),
            RawEvent {
                mnt_ns: 1,
                ..event(host_id, 10, 5, 4_000)
            },
            event(host_id, 10, 5, 1_000 + ttl),
            event(host_id, 10, 0, 4_000),
        ] {
            assert_eq!(
                a.resolve(&ev, owner).as_deref(),
                a.resolve_now(&ev, owner).as_ref(),
                "{ev:?}: as resolved afresh"
            );
        }
        // the reuse itself, with an answer only the reuse can give: only the
        // same (cgroup, tgid, start time, mount namespace) within the time
        // of the facts it was made of gets it
        let stale = AccessorMetadata {
            host: true,
            cgroup: "stale".into(),
            ..Default::default()
        };
        let at = 10_000;
        *a.last_host.lock().expect("lock") = Some(LastHost {
            key: (host_id, 10, 5, 9),
            at,
            found: Arc::new(stale.clone()),
        });
        assert_eq!(
            a.resolve(&event(host_id, 10, 5, at + ttl - 1), owner)
                .as_deref(),
            Some(&stale),
            "the same process within the time: reused"
        );
        for ev in [
            event(pod_id, 10, 5, at),
            event(host_id, 11, 5, at),
            event(host_id, 10, 6, at),
            RawEvent {
                mnt_ns: 1,
                ..event(host_id, 10, 5, at)
            },
            event(host_id, 10, 5, at + ttl),
            event(host_id, 10, 5, at - 1),
            event(host_id, 10, 0, at),
        ] {
            let got = a.resolve(&ev, owner);
            assert_ne!(
                got.as_deref(),
                Some(&stale),
                "{ev:?}: never the reused answer"
            );
            // put it back for the next case (a fresh answer replaced it)
            *a.last_host.lock().expect("lock") = Some(LastHost {
                key: (host_id, 10, 5, 9),
                at,
                found: Arc::new(stale.clone()),
            });
        }
        std::fs::remove_dir(&host).expect("cgroup removed");
        let gone = a.resolve(&event(host_id + 1_000_000, 12, 7, 5_000), owner);
        assert_eq!(
            gone, None,
            "an unknown cgroup is no host, whatever was reused"
        );
    }
}
