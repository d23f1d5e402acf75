//! Applying the cluster's wanted pod traps: arm exactly the difference
//! between what is wanted and what is in the table, never touching host
//! traps. The wanted set comes from the Kubernetes source.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::node::cgroup::CgroupIndex;
use crate::node::containers::ContainerLocator;
use crate::node::Root;

use super::by_id::ById;
use super::pod_diff::{diff, Scope};
pub use super::pod_diff::{DesiredEntry, PodDesired};
use super::pod_roots::RootFinder;
use super::table::{ContainerOwner, EntryState, Owner};
use super::Shared;
use crate::policy::CompiledTrap;
use crate::sync::lock;

/// An entry to arm: its trap, its owner, whether its root is to be found.
type ToArm = (Arc<CompiledTrap>, Owner, bool);

/// What one reconcile did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PodReconcileReport {
    /// Entries added.
    pub added: usize,
    /// Entries removed (their keys disarmed unless shared).
    pub removed: usize,
    /// Pod entries armed after the reconcile.
    pub armed: usize,
    /// Pod entries pending, each with its reason (policy, trap, container).
    pub pending: Vec<String>,
    /// Entries this reconcile looked at (its scope's and the wanted ones):
    /// a pod's change touches that pod's entries only.
    pub touched: usize,
    /// Pending entries whose container was not found yet (no process in
    /// its cgroup): the cluster source retries them soon.
    pub unlocated: usize,
}

/// Applies wanted pod traps to a running runtime.
#[derive(Clone)]
pub struct PodController {
    shared: Arc<Shared>,
    proc_root: PathBuf,
    host_root: PathBuf,
    locator: Arc<ContainerLocator>,
    /// The last arming failure of each pending entry (a pod's change
    /// retries that pod's; a full reconcile every one).
    pending: Arc<Mutex<HashMap<u32, String>>>,
}

impl PodController {
    pub(crate) fn new(shared: Arc<Shared>, proc_root: PathBuf, host_root: PathBuf) -> Self {
        // containers are found through this node's cgroup tree, unless the
        // processes are looked for under another proc root
        let cgroup_root = (proc_root == Path::new("/proc"))
            .then(|| CgroupIndex::for_this_node().root().map(Path::to_path_buf))
            .flatten();
        let locator = ContainerLocator::new(cgroup_root, proc_root.clone());
        Self {
            shared,
            proc_root,
            host_root,
            locator: Arc::new(locator),
            pending: Arc::default(),
        }
    }

    /// Makes the table's entries of `pods` exactly what each wants (a pod
    /// added, changed or deleted: its entries only, the others untouched).
    pub fn reconcile_pods(&self, pods: &[PodDesired]) -> PodReconcileReport {
        let report = self.apply(
            &Scope::Pods(pods),
            pods.iter().flat_map(|p| p.entries.iter()),
        );
        crate::allocator::give_back(true);
        report
    }

    /// Makes the table's pod entries exactly `desired`: adds the new ones
    /// (finding each container's root through a process of its cgroup,
    /// [`ContainerLocator`]: no `/proc` scan),
    /// retries pending ones, removes the rest.
    pub fn reconcile(&self, desired: &[DesiredEntry]) -> PodReconcileReport {
        let report = self.apply(&Scope::All, desired.iter());
        crate::allocator::give_back(true);
        report
    }

    fn apply<'a>(
        &self,
        scope: &Scope<'_>,
        desired: impl Iterator<Item = &'a DesiredEntry> + Clone,
    ) -> PodReconcileReport {
        let mut report = PodReconcileReport::default();
        // 1. under the table lock, table work only: drop what is no longer
        //    wanted, add what is new (pending), refresh pod metadata
        let mut to_arm: Vec<(u32, ToArm)> = Vec::new();
        {
            let mut table = self.shared.table();
            let d = diff(&table, scope, desired.clone());
            report.touched = d.touched;
            let (gone, ids) = (d.gone, d.existing);
            let mut gone_sets = Vec::new();
            let mut pending = lock(&self.pending);
            for &id in &gone {
                pending.remove(&id);
            }
            drop(pending);
            for id in gone {
                if let Some(e) = table.get(id) {
                    gone_sets.push((Arc::clone(&e.trap), e.owner.clone()));
                }
                for old in table.remove(id) {
                    let _ = self.shared.sync_key(&table, old);
                }
                report.removed += 1;
            }
            drop(table);
            for (trap, owner) in &gone_sets {
                self.shared.remove_children(trap, owner);
            }
            let mut table = self.shared.table();
            let new = ids.iter().filter(|id| id.is_none()).count();
            table.reserve(new);
            // every new entry is pending: room for them at once (a cold
            // start's 100,000 without a doubling's copies)
            to_arm.reserve(new);
            for (d, existing) in desired.zip(ids) {
                let id = match existing {
                    Some(id) => {
                        // pod metadata (labels, IP, namespace labels) may have changed
                        if table.get(id).is_some_and(|e| !d.owner_is(&e.owner)) {
                            table.set_owner(id, d.owner());
                        }
                        id
                    }
                    None => {
                        report.added += 1;
                        table.insert(Arc::clone(&d.trap), d.owner(), None)
                    }
                };
                if let Some(e) = table.get(id) {
                    if matches!(e.state, EntryState::Pending { .. }) {
                        to_arm.push((id, (Arc::clone(&e.trap), e.owner.clone(), e.root.is_none())));
                    }
                }
            }
            if let Scope::Pods(_) = scope {
                // other pods' entries whose container was not found yet:
                // retried too (a file missing is retried by the rescan)
                let pending = lock(&self.pending);
                let queued: std::collections::HashSet<u32> =
                    to_arm.iter().map(|(id, ..)| *id).collect();
                for id in pending.keys() {
                    if let Some(e) = table.get(*id).filter(|e| {
                        e.root.is_none()
                            && e.key().is_none()
                            && e.trap.path_set.is_none()
                            && !queued.contains(id)
                    }) {
                        to_arm.push((e.id, (Arc::clone(&e.trap), e.owner.clone(), true)));
                        report.touched += 1;
                    }
                }
            }
        }
        // one pin per entry and a root per container: grow the fd limit with
        // the plan where the process may (CAP_SYS_RESOURCE)
        if !to_arm.is_empty() {
            let entries = self.shared.table().counts();
            let want = (entries.0 + entries.1) as u64 * 2 + 1024;
            crate::node::limits::ensure_nofile(want);
        }
        // 2. without it: the host root here (one), container roots on the
        //    workers, each container's found while its entries are armed
        //    (cgroup.procs, then its root), side by side with the others
        let mut host_root: Option<Option<Arc<Root>>> = None;
        // by id: the containers and results below are found by binary
        // search (no two maps of every id built for one reconcile)
        let to_arm = ById::new(to_arm);
        let mut unrooted: Vec<(u32, Arc<ContainerOwner>)> = Vec::with_capacity(
            to_arm
                .iter()
                .filter(|(_, (_, o, needs_root))| *needs_root && matches!(o, Owner::Container(_)))
                .count(),
        );
        for (id, (_, owner, needs_root)) in to_arm.iter() {
            if !needs_root {
                continue;
            }
            let root = match owner {
                // the runtime's own (with kive's mounts when it is kive's
                // `/`: watched by change notification, as the host traps
                // of policy files), else opened once per reconcile
                Owner::Host => host_root
                    .get_or_insert_with(|| {
                        self.shared.host_root.clone().or_else(|| {
                            match Root::open(&self.host_root) {
                                Ok(r) => Some(Arc::new(super::host_mounts(
                                    r,
                                    &self.host_root,
                                    &self.proc_root,
                                ))),
                                Err(e) => {
                                    tracing::debug!("host root: {e}");
                                    None
                                }
                            }
                        })
                    })
                    .clone(),
                Owner::Container(c) => {
                    unrooted.push((*id, Arc::clone(c)));
                    None
                }
            };
            if let Some(root) = root {
                if let Some(e) = self.shared.table().get_mut(*id) {
                    e.root.get_or_insert(root);
                }
            }
        }
        // waiting for another worker's lookup of the same container: at
        // most half an entry's deadline (a hung lookup holds its worker only)
        let finder = Arc::new(RootFinder::new(
            Arc::clone(&self.locator),
            self.proc_root.clone(),
            self.shared.stalls.deadline() / 2,
        ));
        let found = Arc::clone(&finder);
        let unrooted = ById::new(unrooted);
        let locate_and_arm = move |shared: &Shared, id: u32| {
            let root = unrooted.get(id).and_then(|c| finder.root_of(c));
            shared.arm_entry_in(id, root)
        };
        // one batch for the workers (one hand-off, not one per entry); on a
        // worker with a deadline: a container on a hung filesystem stalls
        // only its entries (logged and counted there)
        let ids: Vec<u32> = to_arm.iter().map(|(id, ..)| *id).collect();
        let results = self.shared.isolated(&ids, locate_and_arm);
        drop(ids);
        // a worker that never returns keeps no container's root open
        found.clear();
        let mut pending = lock(&self.pending);
        for (id, result) in results {
            let Some((trap, owner, _)) = to_arm.get(id) else {
                continue;
            };
            let msg = match result {
                Some(Err(msg)) => msg,
                None if !self.shared.closing() => format!(
                    "{}: its file work did not return in time (stalled, retried when it does)",
                    trap.origin
                ),
                _ => {
                    pending.remove(&id);
                    continue;
                }
            };
            pending.insert(
                id,
                match owner {
                    Owner::Host => format!("{msg} (host)"),
                    Owner::Container(c) => format!(
                        "{msg} (pod {}/{}, container {})",
                        c.namespace, c.pod, c.container
                    ),
                },
            );
        }
        // entries armed since (a rescan) or removed are no longer pending
        // (the table's lock taken before the pending map's, as above)
        drop(pending);
        let table = self.shared.table();
        let mut pending = lock(&self.pending);
        pending.retain(|id, _| table.get(*id).is_some_and(|e| e.key().is_none()));
        report.unlocated = pending
            .keys()
            .filter(|id| table.get(**id).is_some_and(|e| e.root.is_none()))
            .count();
        let mut list: Vec<(u32, String)> = pending.iter().map(|(id, m)| (*id, m.clone())).collect();
        list.sort_unstable_by_key(|(id, _)| *id);
        report.pending = list.into_iter().map(|(_, m)| m).collect();
        report.armed = table.cluster_armed();
        report
    }
}
