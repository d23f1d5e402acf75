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
}

/// How long a process's v1 cgroups are reused (a process moved to another
/// cgroup is seen within this).
const V1_TTL: Duration = Duration::from_secs(1);
/// Processes whose v1 cgroups are kept.
const V1_PROCESSES: usize = 4096;

impl Accessors {
    /// This node's cgroups and host mount namespace, read under `proc_root`.
    pub fn for_this_node(proc_root: PathBuf) -> Self {
        Self {
            cgroups: Mutex::new(CgroupIndex::for_this_node()),
            host_mnt_ns: crate::node::host::host_mnt_ns(&proc_root),
            proc_root,
            v1: Mutex::new(PidCache::new(V1_TTL, V1_PROCESSES)),
        }
    }

    /// The accessor of an event; `owner_of` names the pod of a container
    /// kive knows (by bare id).
    pub fn resolve(
        &self,
        raw: &RawEvent,
        owner_of: impl FnOnce(&str) -> Option<ContainerOwner>,
    ) -> Option<AccessorMetadata> {
        let (path, mode) = {
            let mut idx = self.cgroups.lock().unwrap_or_else(|p| p.into_inner());
            (idx.lookup(raw.cgroup_id), idx.mode())
        };
        let named = path
            .as_deref()
            .and_then(container_from_cgroup_path)
            .is_some();
        // /proc only where the v2 cgroup can hide a container
        let cached: Arc<[PathBuf]>;
        let v1: &[PathBuf] = if mode == CgroupMode::Unified || named {
            &[]
        } else {
            let mut cache = self.v1.lock().unwrap_or_else(|p| p.into_inner());
            cached = cache.get_or_read(raw.tgid, raw.start_ns, raw.ts_boot_ns, || {
                process_v1_cgroups(&self.proc_root, raw.tgid).into()
            });
            &cached
        };
        let facts = CgroupFacts {
            v2: path.as_deref(),
            mode,
            v1,
            host_mnt_ns: self.host_mnt_ns.map(|h| h == raw.mnt_ns),
        };
        accessor_metadata(facts, owner_of)
    }

    /// cgroup directories indexed.
    pub fn indexed(&self) -> usize {
        self.cgroups.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}
