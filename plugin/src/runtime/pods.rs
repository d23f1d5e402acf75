//! Applying the cluster's wanted pod traps: arm exactly the difference
//! between what is wanted and what is in the table, never touching host
//! traps. The wanted set comes from the Kubernetes source.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::node::cgroup::CgroupIndex;
use crate::node::containers::{open_container_root, ContainerLocator};
use crate::node::Root;
use crate::policy::CompiledTrap;

use super::table::{ContainerOwner, EntryState, Owner};
use super::Shared;

/// One trap wanted on one container.
#[derive(Debug, Clone)]
pub struct DesiredEntry {
    /// The trap.
    pub trap: Arc<CompiledTrap>,
    /// The container whose copy of the file is trapped (empty for `host`).
    pub owner: ContainerOwner,
    /// The node's own file instead (a cluster host trap the operator allows).
    pub host: bool,
}

impl DesiredEntry {
    /// (trap fingerprint, container id or "" for a host entry), borrowed.
    fn ident(&self) -> (&str, &str) {
        let owner = if self.host {
            ""
        } else {
            self.owner.container_id.as_str()
        };
        (self.trap.fingerprint.as_str(), owner)
    }

    /// Whether `owner` (an entry's) is already what this entry wants.
    fn owner_is(&self, owner: &Owner) -> bool {
        match owner {
            Owner::Host => self.host,
            Owner::Container(c) => !self.host && **c == self.owner,
        }
    }
}

/// The entries' owners, one shared copy per container: the 20 traps of a
/// pod point at one `ContainerOwner` (labels, names, IP) instead of 20.
#[derive(Default)]
struct Owners<'a>(HashMap<&'a str, Arc<ContainerOwner>>);

impl<'a> Owners<'a> {
    fn of(&mut self, d: &'a DesiredEntry) -> Owner {
        if d.host {
            return Owner::Host;
        }
        let shared = self
            .0
            .entry(d.owner.container_id.as_str())
            .or_insert_with(|| Arc::new(d.owner.clone()));
        if **shared != d.owner {
            // two different descriptions of one container in one plan: keep each
            return Owner::Container(Arc::new(d.owner.clone()));
        }
        Owner::Container(Arc::clone(shared))
    }
}

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
}

/// Applies wanted pod traps to a running runtime.
#[derive(Clone)]
pub struct PodController {
    shared: Arc<Shared>,
    proc_root: PathBuf,
    host_root: PathBuf,
    locator: Arc<Mutex<ContainerLocator>>,
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
            locator: Arc::new(Mutex::new(locator)),
        }
    }

    /// Makes the table's pod entries exactly `desired`: adds the new ones
    /// (finding each container's root through a process of its cgroup,
    /// [`ContainerLocator`]: no `/proc` scan),
    /// retries pending ones, removes the rest.
    pub fn reconcile(&self, desired: &[DesiredEntry]) -> PodReconcileReport {
        let mut roots: HashMap<String, Option<Arc<Root>>> = HashMap::new();
        let mut root_of = |owner: &ContainerOwner| -> Option<Arc<Root>> {
            roots
                .entry(owner.container_id.clone())
                .or_insert_with(|| {
                    let bare = owner.container_id.rsplit("://").next().unwrap_or_default();
                    let pid = self
                        .locator
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .pid_of(bare, &owner.pod_uid)?;
                    match open_container_root(&self.proc_root, pid, bare) {
                        Ok(root) => Some(Arc::new(root)),
                        Err(e) => {
                            tracing::debug!("container {bare}: {e}");
                            None
                        }
                    }
                })
                .clone()
        };
        let mut report = PodReconcileReport::default();
        // 1. under the table lock, table work only: drop what is no longer
        //    wanted, add what is new (pending), refresh pod metadata
        let mut to_arm: Vec<(u32, &DesiredEntry, bool)> = Vec::new();
        {
            let mut table = self.shared.table();
            // what exists and what is wanted, by borrowed ident (no string
            // copies: at 100,000 entries those dominated a reconcile)
            let (gone, ids): (Vec<u32>, Vec<Option<u32>>) = {
                let mut existing: HashMap<(&str, &str), u32> = HashMap::new();
                for e in table.entries() {
                    if e.trap.set_parent.is_some() {
                        // a file of a path set: kept and dropped with its set
                        continue;
                    }
                    match &e.owner {
                        Owner::Container(c) => {
                            existing.insert(
                                (e.trap.fingerprint.as_str(), c.container_id.as_str()),
                                e.id,
                            );
                        }
                        // host traps of the cluster (never those of policy files)
                        Owner::Host if e.trap.from_cluster => {
                            existing.insert((e.trap.fingerprint.as_str(), ""), e.id);
                        }
                        Owner::Host => {}
                    }
                }
                let wanted: HashSet<(&str, &str)> =
                    desired.iter().map(DesiredEntry::ident).collect();
                let gone = existing
                    .iter()
                    .filter(|(ident, _)| !wanted.contains(*ident))
                    .map(|(_, id)| *id)
                    .collect();
                let ids = desired
                    .iter()
                    .map(|d| existing.get(&d.ident()).copied())
                    .collect();
                (gone, ids)
            };
            let mut gone_sets = Vec::new();
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
            let mut owners = Owners::default();
            for (d, existing) in desired.iter().zip(ids) {
                let id = match existing {
                    Some(id) => {
                        // pod metadata (labels, IP, namespace labels) may have changed
                        if let Some(e) = table.get_mut(id) {
                            if !d.owner_is(&e.owner) {
                                e.owner = owners.of(d);
                            }
                        }
                        id
                    }
                    None => {
                        report.added += 1;
                        table.insert(Arc::clone(&d.trap), owners.of(d), None)
                    }
                };
                if let Some(e) = table.get(id) {
                    if matches!(e.state, EntryState::Pending { .. }) {
                        to_arm.push((id, d, e.root.is_none()));
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
        // 2. without it: find container roots (cgroup.procs), resolve and arm
        for (id, d, needs_root) in to_arm {
            if needs_root {
                let root = if d.host {
                    match Root::open(&self.host_root) {
                        Ok(r) => Some(Arc::new(r)),
                        Err(e) => {
                            tracing::debug!("host root: {e}");
                            None
                        }
                    }
                } else {
                    root_of(&d.owner)
                };
                if let Some(root) = root {
                    if let Some(e) = self.shared.table().get_mut(id) {
                        e.root.get_or_insert(root);
                    }
                }
            }
            // on a worker with a deadline: a container on a hung filesystem
            // stalls only its entries (logged and counted there)
            let msg = match self.shared.isolated(&[id], Shared::arm_entry).pop() {
                Some((_, Some(Err(msg)))) => msg,
                Some((_, None)) if !self.shared.closing() => format!(
                    "{}: its file work did not return in time (stalled, retried when it does)",
                    d.trap.origin
                ),
                _ => continue,
            };
            report.pending.push(if d.host {
                format!("{msg} (host)")
            } else {
                format!(
                    "{msg} (pod {}/{}, container {})",
                    d.owner.namespace, d.owner.pod, d.owner.container
                )
            });
        }
        let table = self.shared.table();
        report.armed = table
            .entries()
            .filter(|e| {
                (matches!(e.owner, Owner::Container(_)) || e.trap.from_cluster) && e.key().is_some()
            })
            .count();
        report
    }
}
