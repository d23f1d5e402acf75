//! A container that exits while its traps are resolved: its root stays
//! readable through the descriptor kive holds (its mounts detached), so a
//! resolution that started before the exit can arm a file of a container
//! that is gone. After an entry's file work armed something new (or
//! failed), the process the root was opened through is looked at: if it
//! exited, the entry goes back to pending (logged once at WARN), what it
//! armed is disarmed, and its root is dropped so that the next reconcile
//! looks for the container again. Entries whose work changed nothing are
//! not looked at (no cost on a steady node).

use super::table::Owner;
use super::Shared;
use crate::alert::text::escape;

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
}
