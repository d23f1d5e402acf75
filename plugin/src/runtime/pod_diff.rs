//! What a reconcile must change in the table (pure): the entries of its
//! scope that are no longer wanted, and for each wanted entry the one that
//! already exists. The scope is every cluster entry (a full resync) or the
//! entries of some pods (a pod's change touches that pod only).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::policy::CompiledTrap;

use super::table::{ContainerOwner, Owner, TrapTable};

/// One trap wanted on one container.
#[derive(Debug, Clone)]
pub struct DesiredEntry {
    /// The trap.
    pub trap: Arc<CompiledTrap>,
    /// The container whose copy of the file is trapped (empty for `host`),
    /// one shared copy per container: the 20 traps of a pod point at one.
    pub owner: Arc<ContainerOwner>,
    /// The node's own file instead (a cluster host trap the operator allows).
    pub host: bool,
}

impl DesiredEntry {
    /// (trap fingerprint, container id or "" for a host entry), borrowed.
    pub(crate) fn ident(&self) -> (&str, &str) {
        let owner = if self.host {
            ""
        } else {
            self.owner.container_id.as_str()
        };
        (self.trap.fingerprint.as_str(), owner)
    }

    /// Whether `owner` (an entry's) is already what this entry wants.
    pub(crate) fn owner_is(&self, owner: &Owner) -> bool {
        match owner {
            Owner::Host => self.host,
            Owner::Container(c) => {
                !self.host && (Arc::ptr_eq(c, &self.owner) || **c == *self.owner)
            }
        }
    }

    /// The owner an entry of this gets (the shared copy).
    pub(crate) fn owner(&self) -> Owner {
        if self.host {
            Owner::Host
        } else {
            Owner::Container(Arc::clone(&self.owner))
        }
    }
}

/// The wanted entries of one pod (`namespace/name`): empty when the pod is
/// gone or none of its containers is selected.
#[derive(Debug, Clone, Default)]
pub struct PodDesired {
    /// `namespace/name`.
    pub pod: String,
    /// Its wanted entries (never host entries).
    pub entries: Vec<DesiredEntry>,
}

/// Which entries a reconcile owns.
pub(crate) enum Scope<'a> {
    /// Every cluster entry: pods' and the cluster's host traps.
    All,
    /// The entries of these pods (`namespace/name`).
    Pods(&'a [PodDesired]),
}

/// The changes to make.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Diff {
    /// Entries of the scope no longer wanted.
    pub gone: Vec<u32>,
    /// For each wanted entry (in order), the existing entry, if any.
    pub existing: Vec<Option<u32>>,
    /// Entries looked at (those of the scope, and the wanted ones).
    pub touched: usize,
}

/// The diff of `scope` against `desired` (borrowed idents: no string
/// copies, which dominated a reconcile at 100,000 entries).
pub(crate) fn diff<'t, 'd>(
    table: &'t TrapTable,
    scope: &Scope<'_>,
    desired: impl Iterator<Item = &'d DesiredEntry> + Clone,
) -> Diff {
    let mut existing: HashMap<(&str, &str), u32> = HashMap::new();
    let mut add = |e: &'t super::table::Entry| {
        if e.trap.set_parent.is_some() {
            // a file of a path set: kept and dropped with its set
            return;
        }
        match &e.owner {
            Owner::Container(c) => {
                existing.insert((e.trap.fingerprint.as_str(), c.container_id.as_str()), e.id);
            }
            // host traps of the cluster (never those of policy files)
            Owner::Host if e.trap.from_cluster => {
                existing.insert((e.trap.fingerprint.as_str(), ""), e.id);
            }
            Owner::Host => {}
        }
    };
    match scope {
        Scope::All => table.entries().for_each(&mut add),
        Scope::Pods(pods) => {
            for p in pods.iter() {
                for id in table.pod_entries(&p.pod) {
                    if let Some(e) = table.get(*id) {
                        add(e);
                    }
                }
            }
        }
    }
    let ids: Vec<Option<u32>> = desired.map(|d| existing.get(&d.ident()).copied()).collect();
    // what no desired entry matched is gone (ids, not idents, hashed: and
    // nothing at all at a cold start, when the table holds none)
    let kept: HashSet<u32> = if existing.is_empty() {
        HashSet::new()
    } else {
        ids.iter().flatten().copied().collect()
    };
    let mut gone: Vec<u32> = existing
        .values()
        .filter(|id| !kept.contains(*id))
        .copied()
        .collect();
    gone.sort_unstable();
    Diff {
        touched: existing.len() + ids.len(),
        gone,
        existing: ids,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::load_str;

    fn traps(n: usize) -> Vec<Arc<CompiledTrap>> {
        let list: String = (0..n)
            .map(|i| format!("  - path: /f{i}\n    matchAny: [{{namespace: default}}]\n"))
            .collect();
        let c = load_str(
            "t.yaml",
            &format!("apiVersion: kivebpf.san7o.github.io/v1\nkind: KivePolicy\nmetadata: {{name: p, namespace: default}}\nspec:\n  traps:\n{list}"),
        );
        assert!(c.errors.is_empty(), "{:?}", c.errors);
        c.traps
    }

    fn owner(pod: &str, cid: &str) -> Arc<ContainerOwner> {
        Arc::new(ContainerOwner {
            pod: pod.into(),
            namespace: "default".into(),
            container_id: format!("containerd://{cid}"),
            ..Default::default()
        })
    }

    fn wanted(traps: &[Arc<CompiledTrap>], owner: &Arc<ContainerOwner>) -> Vec<DesiredEntry> {
        traps
            .iter()
            .map(|t| DesiredEntry {
                trap: Arc::clone(t),
                owner: Arc::clone(owner),
                host: false,
            })
            .collect()
    }

    /// A table holding `pods` pods × `traps` entries.
    fn table(traps: &[Arc<CompiledTrap>], pods: usize) -> TrapTable {
        let mut t = TrapTable::default();
        for p in 0..pods {
            let o = owner(&format!("web-{p}"), &format!("c{p}"));
            for d in wanted(traps, &o) {
                t.insert(d.trap, Owner::Container(d.owner), None);
            }
        }
        t
    }

    #[test]
    fn a_container_restart_diffs_only_its_pod() {
        let traps = traps(3);
        let t = table(&traps, 50);
        // web-7's container restarts: a new id, same pod
        let pods = [PodDesired {
            pod: "default/web-7".into(),
            entries: wanted(&traps, &owner("web-7", "c7-new")),
        }];
        let d = diff(&t, &Scope::Pods(&pods), pods[0].entries.iter());
        assert_eq!(
            d.gone,
            t.pod_entries("default/web-7").to_vec(),
            "its 3 old entries go"
        );
        assert_eq!(d.existing, [None, None, None], "3 new entries");
        assert_eq!(
            d.touched, 6,
            "only the pod's 3 old and 3 new entries are looked at"
        );
        for p in (0..50).filter(|&p| p != 7) {
            let ids = t.pod_entries(&format!("default/web-{p}"));
            assert_eq!(ids.len(), 3, "web-{p}");
            assert!(
                ids.iter().all(|id| !d.gone.contains(id)),
                "web-{p} untouched"
            );
        }
    }

    #[test]
    fn a_deleted_pod_removes_its_entries_and_nothing_else() {
        let traps = traps(2);
        let t = table(&traps, 5);
        let pods = [PodDesired {
            pod: "default/web-3".into(),
            entries: Vec::new(),
        }];
        let d = diff(&t, &Scope::Pods(&pods), pods[0].entries.iter());
        let mut want = t.pod_entries("default/web-3").to_vec();
        want.sort_unstable();
        assert_eq!(d.gone, want);
        assert_eq!(d.touched, 2);
    }

    #[test]
    fn an_unchanged_pod_keeps_every_entry() {
        let traps = traps(4);
        let t = table(&traps, 3);
        let pods = [PodDesired {
            pod: "default/web-1".into(),
            entries: wanted(&traps, &owner("web-1", "c1")),
        }];
        let d = diff(&t, &Scope::Pods(&pods), pods[0].entries.iter());
        assert!(d.gone.is_empty(), "{:?}", d.gone);
        let existing: Vec<u32> = d.existing.iter().map(|e| e.expect("kept")).collect();
        let mut have = t.pod_entries("default/web-1").to_vec();
        have.sort_unstable();
        let mut got = existing.clone();
        got.sort_unstable();
        assert_eq!(
            got, have,
            "each wanted entry is matched to its existing one"
        );
    }

    #[test]
    fn a_full_diff_sees_every_pod_and_the_clusters_host_traps_only() {
        let traps = traps(2);
        let mut t = table(&traps, 3);
        // a host trap of a policy file: never the controller's
        t.insert(Arc::clone(&traps[0]), Owner::Host, None);
        let mut cluster = (*traps[1]).clone();
        cluster.from_cluster = true;
        let cluster_host = t.insert(Arc::new(cluster), Owner::Host, None);
        let d = diff(&t, &Scope::All, [].iter());
        assert_eq!(d.gone.len(), 7, "6 pod entries and the cluster's host trap");
        assert!(d.gone.contains(&cluster_host));
    }

    #[test]
    fn the_pod_index_follows_inserts_removals_and_owner_changes() {
        let traps = traps(2);
        let mut t = table(&traps, 2);
        let ids = t.pod_entries("default/web-0").to_vec();
        assert_eq!(ids.len(), 2);
        t.remove(ids[0]);
        assert_eq!(t.pod_entries("default/web-0"), &ids[1..]);
        // a pod recreated under another name keeps no stale index
        t.set_owner(ids[1], Owner::Container(owner("web-9", "c0")));
        assert!(t.pod_entries("default/web-0").is_empty());
        assert_eq!(t.pod_entries("default/web-9"), &ids[1..]);
        t.remove(ids[1]);
        assert!(t.pod_entries("default/web-9").is_empty());
    }
}
