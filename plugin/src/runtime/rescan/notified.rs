//! What a notification-driven pass looks at (the rest of [`super`]): the
//! entries notifications named, entries watched before they are looked
//! at, and what is forgotten at a full pass.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::RescanState;
use crate::alert::text::escape;
use crate::node::watch::mounts::under;
use crate::runtime::table::{Entry, EntryState, TrapTable};
use crate::runtime::Shared;
use crate::sync::lock;

/// What change notification holds and did (into [`crate::runtime::Metrics`]).
pub(crate) struct NotifyFigures {
    pub marks: usize,
    pub mount_watches: usize,
    pub events: u64,
    pub overflows: u64,
    pub watched: usize,
    pub unwatched: usize,
    pub watch_us: u64,
}

impl RescanState {
    /// What change notification holds and did.
    pub(crate) fn notify_figures(&self) -> NotifyFigures {
        NotifyFigures {
            marks: self.watch.marks(),
            mount_watches: self.watch.mount_watches(),
            events: self.watch.events(),
            overflows: self.watch.overflows(),
            watched: lock(&self.watched).len(),
            unwatched: lock(&self.unwatched).len(),
            watch_us: self.watch.watch_us(),
        }
    }
}

/// Entries every pass looks at, watched or not: pending ones, path sets,
/// and those following inodes away from their path.
pub(super) fn always_looked(e: &Entry) -> bool {
    !matches!(e.state, EntryState::Armed(_)) || e.trap.path_set.is_some() || !e.followed.is_empty()
}

impl Shared {
    /// The entries named by notifications (files and directories, mounts
    /// of their roots, kernel tamper events), remembered to be watched
    /// again, and counted.
    pub(super) fn named_ids(
        &self,
        ids: &[u32],
        roots: &[(usize, Vec<String>)],
        keys: &[crate::trap::TrapKey],
    ) -> HashSet<u32> {
        let mut named: HashSet<u32> = ids.iter().copied().collect();
        {
            let table = self.table();
            for k in keys {
                named.extend(table.entries_for(*k).map(|e| e.id));
            }
            if !roots.is_empty() {
                // entries at or below a mount point that came or went
                let roots: HashMap<usize, &Vec<String>> =
                    roots.iter().map(|(r, points)| (*r, points)).collect();
                named.extend(
                    table
                        .entries()
                        .filter(|e| {
                            let points = e
                                .root
                                .as_ref()
                                .and_then(|r| roots.get(&(Arc::as_ptr(r) as usize)));
                            points.is_some_and(|p| p.iter().any(|mp| under(&e.trap.path, mp)))
                        })
                        .map(|e| e.id),
                );
            }
            named.retain(|id| table.get(*id).is_some());
        }
        self.counters
            .rescan_notified
            .fetch_add(named.len() as u64, Ordering::Relaxed);
        lock(&self.rescan.named).extend(named.iter().copied());
        named
    }

    /// At a full pass: what the rescan keeps for entries removed since
    /// goes (watches; marks when most are stale; an entry's stamp goes
    /// with it).
    pub(super) fn forget_removed(&self, table: &TrapTable) {
        let live: HashSet<u32> = table.entries().map(|e| e.id).collect();
        let roots: HashSet<usize> = table
            .entries()
            .filter_map(|e| e.root.as_ref().map(|r| Arc::as_ptr(r) as usize))
            .collect();
        lock(&self.rescan.unwatched).retain(|id| live.contains(id));
        let mut watched = lock(&self.rescan.watched);
        watched.retain(|id| live.contains(id));
        if self.rescan.watch.compact(|id| live.contains(&id), &roots) {
            watched.clear();
        }
    }

    /// Places the marks of an armed entry not watched yet or named by a
    /// notification, before it is looked at (a change after the marks is
    /// notified, one before is seen by the look).
    pub(super) fn watch_entry(&self, id: u32) {
        let fresh = lock(&self.rescan.named).remove(&id);
        if !fresh && lock(&self.rescan.watched).contains(&id) {
            return;
        }
        let target = {
            let table = self.table();
            table
                .get(id)
                .and_then(|e| match (&e.state, &e.root, &e.trap.path_set) {
                    (EntryState::Armed(_), Some(root), None) => {
                        Some((Arc::clone(root), Arc::clone(&e.trap)))
                    }
                    _ => None,
                })
        };
        let Some((root, trap)) = target else {
            lock(&self.rescan.watched).remove(&id);
            return;
        };
        match self.rescan.watch.watch(&root, &trap.path, id, fresh) {
            Ok(()) => {
                lock(&self.rescan.watched).insert(id);
                lock(&self.rescan.unwatched).remove(&id);
            }
            Err(e) => {
                lock(&self.rescan.watched).remove(&id);
                if lock(&self.rescan.unwatched).insert(id) {
                    tracing::debug!(
                        "{}: not watched, looked at every rescan: {}",
                        escape(&trap.origin.to_string()),
                        escape(&e.to_string())
                    );
                }
            }
        }
    }
}
