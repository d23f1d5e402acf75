//! Path sets (KubeArmor `matchDirectories` / `matchPatterns`, globbed
//! `matchPaths`): a set's entry is never armed itself; each of its files
//! becomes an entry of its own (a child trap), listed again on every
//! rescan so that files created later are armed within the rescan period,
//! and dropped when their file is gone. At most the set's cap of files;
//! reaching it is logged once, naming the policy and rule.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::node::listing::list_files;
use crate::node::Root;
use crate::policy::CompiledTrap;

use super::table::{EntryState, Owner};
use super::Shared;

/// The trap of one file of a set.
fn child_trap(parent: &CompiledTrap, path: &str) -> CompiledTrap {
    let mut t = parent.clone();
    t.path = path.to_string();
    t.path_set = None;
    t.origin.path = path.to_string();
    t.set_parent = Some(parent.fingerprint.clone());
    t.fingerprint = format!("{}|file|{path}", parent.fingerprint);
    t.warnings.clear();
    t
}

fn same_owner(a: &Owner, b: &Owner) -> bool {
    a.kind() == b.kind() && a.container_id() == b.container_id()
}

impl Shared {
    /// Lists the executables of a trap's `fromSource`, resolved in the
    /// entry's root (their inodes, whatever their names later).
    pub(crate) fn list_sources(&self, id: u32, trap: &CompiledTrap, root: &Root) {
        for src in &trap.conditions.sources {
            match root.resolve(src) {
                Ok(p) => {
                    if let Err(e) = self.engine.set_source(id, p.key, true) {
                        tracing::warn!("{}: fromSource {src}: {e}", trap.origin);
                    }
                }
                Err(e) => tracing::debug!("{}: fromSource {src}: {e}", trap.origin),
            }
        }
    }

    /// Lists a set entry's files and makes its children exactly them.
    /// Returns whether children were added.
    pub(crate) fn expand_set(&self, id: u32) -> Result<bool, String> {
        let (trap, root, owner) = {
            let table = self.table();
            let Some(e) = table.get(id) else {
                return Ok(false);
            };
            let Some(root) = e.root.clone() else {
                return Err(format!(
                    "{}: container {} is not running on this node yet",
                    e.trap.origin,
                    e.owner.container_id()
                ));
            };
            (Arc::clone(&e.trap), root, e.owner.clone())
        };
        let Some((set, cap)) = &trap.path_set else {
            return Ok(false);
        };
        // the directory walk runs without the table lock
        let listing = match list_files(&root, set, *cap) {
            Ok(l) => l,
            Err(e) => {
                let msg = format!("{}: {e}", trap.origin);
                self.note_set(id, msg.clone(), false);
                self.drop_children(&trap, &owner, &HashSet::new());
                return Err(msg);
            }
        };
        let wanted: HashSet<&str> = listing.files.iter().map(String::as_str).collect();
        let existing = self.drop_children(&trap, &owner, &wanted);
        let mut added = Vec::new();
        {
            let mut table = self.table();
            if table.get(id).is_none() {
                return Ok(false);
            }
            for f in &listing.files {
                if !existing.contains(f.as_str()) {
                    added.push(table.insert(
                        Arc::new(child_trap(&trap, f)),
                        owner.clone(),
                        Some(Arc::clone(&root)),
                    ));
                }
            }
        }
        let note = if listing.truncated {
            format!(
                "{}: the set reached its cap of {cap} files: the other files are not armed",
                trap.origin
            )
        } else {
            format!("path set of {} file(s)", listing.files.len())
        };
        self.note_set(id, note, listing.truncated);
        for cid in &added {
            if let Err(msg) = self.arm_entry(*cid) {
                tracing::debug!("{msg}");
            }
        }
        Ok(!added.is_empty())
    }

    /// Removes the children of `trap` (for `owner`) whose file is not in
    /// `keep`; returns the paths of those kept.
    fn drop_children(
        &self,
        trap: &CompiledTrap,
        owner: &Owner,
        keep: &HashSet<&str>,
    ) -> HashSet<String> {
        let mut table = self.table();
        let children: HashMap<String, u32> = table
            .entries()
            .filter(|e| {
                e.trap.set_parent.as_deref() == Some(trap.fingerprint.as_str())
                    && same_owner(&e.owner, owner)
            })
            .map(|e| (e.trap.path.clone(), e.id))
            .collect();
        let mut kept = HashSet::new();
        for (path, cid) in children {
            if keep.contains(path.as_str()) {
                kept.insert(path);
            } else {
                for old in table.remove(cid) {
                    let _ = self.sync_key(&table, old);
                }
            }
        }
        kept
    }

    /// Removes every child of the set entry `id` (the set is going away).
    pub(crate) fn remove_children(&self, trap: &CompiledTrap, owner: &Owner) {
        if trap.path_set.is_some() {
            self.drop_children(trap, owner, &HashSet::new());
        }
    }

    /// Records the set's state; a cap reached (`warn`) is logged once.
    fn note_set(&self, id: u32, reason: String, warn: bool) {
        let mut table = self.table();
        let Some(e) = table.get(id) else { return };
        let same = matches!(&e.state, EntryState::Pending { reason: r, .. } if *r == reason);
        if same {
            return;
        }
        table.set_pending(id, reason.clone());
        if warn {
            tracing::warn!("{reason}");
        }
    }
}
