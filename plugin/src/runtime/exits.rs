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
        // each root once; many (a cold start's thousands) looked at side
        // by side on the cores
        let mut distinct: HashMap<*const Root, usize> = HashMap::new();
        let mut unique: Vec<Arc<Root>> = Vec::new();
        for (_, root) in &roots {
            distinct.entry(Arc::as_ptr(root)).or_insert_with(|| {
                unique.push(Arc::clone(root));
                unique.len() - 1
            });
        }
        let gone = exited(&unique, self.stalls.parallel());
        for (i, root) in roots {
            let at = distinct.get(&Arc::as_ptr(&root)).copied();
            if !at.is_some_and(|at| gone.get(at).copied().unwrap_or(false)) {
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

/// At least this many roots before their exit is looked at on several
/// threads (a pod's change has one).
const SIDE_BY_SIDE: usize = 256;

/// Whether the process of each root exited, in order; `width` threads
/// when there are many roots (one `/proc` read each).
fn exited(roots: &[Arc<Root>], width: usize) -> Vec<bool> {
    let check = |part: &[Arc<Root>]| part.iter().map(|r| r.process_exited()).collect::<Vec<_>>();
    if roots.len() < SIDE_BY_SIDE || width < 2 {
        return check(roots);
    }
    let size = roots.len().div_ceil(width);
    std::thread::scope(|s| {
        let parts: Vec<_> = roots
            .chunks(size)
            .map(|part| {
                let spawned = std::thread::Builder::new()
                    .name("kive-exits".into())
                    .spawn_scoped(s, move || check(part));
                (part, spawned)
            })
            .collect();
        parts
            .into_iter()
            .flat_map(|(part, spawned)| {
                // no thread to be had (or it failed): looked at here
                spawned
                    .ok()
                    .and_then(|h| h.join().ok())
                    .unwrap_or_else(|| check(part))
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A root opened through this test's own `/proc/self` (its process
    /// runs), or through a process named by a start time it never had (an
    /// exited one, its pid reused).
    fn root(running: bool) -> Arc<Root> {
        let dir = tempfile::tempdir().expect("tmp");
        let proc_dir = if running {
            let fd = rustix::fs::open(
                "/proc/self",
                rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY,
                rustix::fs::Mode::empty(),
            )
            .expect("/proc/self");
            crate::node::procref::ProcDir::from(fd)
        } else {
            crate::node::procref::ProcDir::Named {
                dir: format!("/proc/{}", std::process::id()).into(),
                start_boot_ns: 1,
            }
        };
        Arc::new(
            Root::open(dir.path())
                .expect("root")
                .with_proc_dir(proc_dir),
        )
    }

    #[test]
    fn many_roots_are_looked_at_side_by_side_each_in_its_place() {
        let roots: Vec<Arc<Root>> = (0..SIDE_BY_SIDE * 2 + 3)
            .map(|i| root(i % 7 != 3))
            .collect();
        let want: Vec<bool> = (0..roots.len()).map(|i| i % 7 == 3).collect();
        assert_eq!(exited(&roots, 2), want, "two threads");
        assert_eq!(exited(&roots, 4), want, "four threads");
        assert_eq!(exited(&roots[..5], 2), want[..5], "a few: on this thread");
    }
}
