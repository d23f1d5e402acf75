//! A container that exits while its traps are resolved: its root stays
//! readable through the descriptor kive holds (its mounts detached), so a
//! resolution that started before the exit can arm a file of a container
//! that is gone. After an entry's file work armed something new (or
//! failed), the process the root was opened through is looked at: if it
//! exited, the entry goes back to pending (logged once at WARN), what it
//! armed is disarmed, and its root is dropped so that the next reconcile
//! looks for the container again. Entries whose work changed nothing are
//! not looked at (no cost on a steady node). A batch's entries are looked
//! at once per container root after the whole batch returned
//! ([`Shared::unless_exited_all`]): as late as a look after each entry, one
//! `/proc` read per container instead of one per entry.

use std::collections::HashMap;
use std::sync::Arc;

use super::table::Owner;
use super::Shared;
use crate::alert::text::escape;
use crate::node::Root;

/// Results of a batch's file work by entry id (`None`: not run).
pub(crate) type Results = Vec<(u32, Option<Result<bool, String>>)>;

impl Shared {
    /// `result` of entry `id`'s file work, or the pending reason when its
    /// container exited meanwhile.
    pub(crate) fn unless_exited(
        &self,
        id: u32,
        result: Result<bool, String>,
    ) -> Result<bool, String> {
        if result == Ok(false) {
            return result;
        }
        let mut table = self.table();
        let Some(entry) = table.get(id) else {
            return result;
        };
        let exited = matches!(entry.owner, Owner::Container(_))
            && entry.root.as_ref().is_some_and(|r| r.process_exited());
        if !exited {
            return result;
        }
        let msg = format!(
            "{}: container {} exited while its trap was resolved",
            entry.trap.origin,
            entry.owner.container_id()
        );
        let old = table.set_pending(id, msg.clone());
        let backing = table.set_backing(id, None);
        let mut first = false;
        if let Some(e) = table.get_mut(id) {
            e.root = None;
            if let super::EntryState::Pending { reported, .. } = &mut e.state {
                first = !*reported;
                *reported = true;
            }
        }
        for key in old.map(|p| p.key).into_iter().chain(backing) {
            let _ = self.sync_key(&table, key);
        }
        drop(table);
        if first {
            tracing::warn!("{} (kept pending, retried)", escape(&msg));
        }
        Err(msg)
    }

    /// [`Shared::unless_exited`] for each result of a batch, run after the
    /// batch: the process of each container root is looked at once, without
    /// the table lock, and only the entries of an exited one are settled.
    pub(crate) fn unless_exited_all(&self, mut results: Results) -> Results {
        let roots: Vec<(usize, Arc<Root>)> = {
            let table = self.table();
            results
                .iter()
                .enumerate()
                .filter_map(|(i, (id, r))| {
                    if r.as_ref().is_none_or(|r| *r == Ok(false)) {
                        return None;
                    }
                    let e = table.get(*id)?;
                    matches!(e.owner, Owner::Container(_))
                        .then(|| e.root.as_ref().map(|r| (i, Arc::clone(r))))
                        .flatten()
                })
                .collect()
        };
        let mut exited: HashMap<*const Root, bool> = HashMap::new();
        for (i, root) in roots {
            let gone = *exited
                .entry(Arc::as_ptr(&root))
                .or_insert_with(|| root.process_exited());
            if !gone {
                continue;
            }
            if let Some((id, slot)) = results.get_mut(i) {
                if let Some(r) = slot.take() {
                    *slot = Some(self.unless_exited(*id, r));
                }
            }
        }
        results
    }
}
