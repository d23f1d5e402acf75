//! Arming an entry and the rescan: resolve the trap's path (creating the
//! decoy), arm the inode found there, keep inodes that left the path armed
//! while they have a link ([`super::follow`]), and report what was done to
//! their names as tamper events.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::follow::{judge_followed, judge_primary, AtPath, Verdict};
use super::table::{Entry, EntryState, Followed, Owner, TrapTable};
use super::Shared;
use crate::alert::text::escape;
use crate::node::{PinnedFile, ResolveError, Root};
use crate::policy::CompiledTrap;
use crate::sync::lock;
use crate::trap::{Action, EventText, Hook, RawEvent, Tamper, TrapKey};

impl Shared {
    /// Resolves (and creates) an entry's file and arms its key. Returns
    /// whether the key at the path changed.
    ///
    /// The file work (openat2 inside the entry's root, creating a decoy)
    /// runs without the table lock, so a slow or hung filesystem never
    /// holds up the event path (`alerts_for`) or the metrics: the lock is
    /// taken once to read the entry and once to commit. If the entry changed
    /// in between (removed, re-armed by another thread), nothing is
    /// committed; the next rescan looks again.
    pub(crate) fn arm_entry(&self, id: u32) -> Result<bool, String> {
        self.arm_entry_in(id, None)
    }

    /// [`Shared::arm_entry`], giving an entry without a root `found` (its
    /// container's, just found) under the same lock.
    pub(crate) fn arm_entry_in(&self, id: u32, found: Option<Arc<Root>>) -> Result<bool, String> {
        let (trap, root, planned, pod_uid) = {
            let mut table = self.table();
            let Some(entry) = table.get_mut(id) else {
                return Ok(false);
            };
            if let Some(found) = found {
                entry.root.get_or_insert(found);
            }
            let Some(root) = entry.root.clone() else {
                return Err(format!(
                    "{}: container {} is not running on this node yet",
                    entry.trap.origin,
                    entry.owner.container_id()
                ));
            };
            let pod_uid = match &entry.owner {
                Owner::Container(c) => Some(c.pod_uid.clone()),
                Owner::Host => None,
            };
            (Arc::clone(&entry.trap), root, entry.key(), pod_uid)
        };
        if trap.path_set.is_some() {
            // the set's files are entries of their own
            return self.expand_set(id);
        }
        let mut created = false;
        let resolved = (|| -> Result<_, ResolveError> {
            let Some(uid) = &pod_uid else {
                if trap.create {
                    created = root.create_if_missing(&trap.path, trap.mode)?;
                }
                return root.resolve(&trap.path);
            };
            self.resolve_in_pod(&trap, &root, uid, planned, &mut created)
        })();
        // a container's overlay: the layer file behind it (copy-up moves it
        // to upper); host traps name the files they mean
        let backing = match (&resolved, &self.host_root, &pod_uid) {
            (Ok(p), Some(host), Some(_)) => root.backing(p, &trap.path, host),
            _ => None,
        };
        // fromSource executables are pinned by inode when the trap is
        // armed: a binary renamed over a source's name later is not one
        if resolved.as_ref().is_ok_and(|p| Some(p.key) != planned) {
            self.list_sources(id, &trap, &root);
        }
        let mut table = self.table();
        let unchanged = table.get(id).is_some_and(|e| {
            Arc::ptr_eq(&e.trap, &trap)
                && e.root.as_ref().is_some_and(|r| Arc::ptr_eq(r, &root))
                && e.key() == planned
        });
        if !unchanged {
            return Ok(false);
        }
        match resolved {
            // the pinned inode cannot be reused: the same key is the same file
            Ok(pinned) if Some(pinned.key) == planned => {
                self.check_in_place(&mut table, id, &trap.path);
                self.update_backing(&mut table, id, backing);
                Ok(false)
            }
            Ok(pinned) => {
                let new = pinned.key;
                let at_path = if created {
                    AtPath::Missing
                } else {
                    AtPath::Other
                };
                // the key's value from the entries already on it (the
                // kernel holds it unless its last write failed)
                let before = table.kernel_value(new);
                if let Some(old) = table.set_armed(id, pinned) {
                    self.left_path(&mut table, id, &trap.path, old, at_path);
                }
                // one more entry on a file other entries armed (a node-shared
                // file in every pod) seldom changes its value: no update then
                let same = before.is_some()
                    && table.kernel_value(new) == before
                    && self.unsynced.holds_listed(new);
                if let Err(e) = if same {
                    Ok(())
                } else {
                    self.sync_key(&table, new)
                } {
                    // not in the kernel (e.g. the map is full): pending, retried
                    let cause = std::error::Error::source(&e)
                        .map(|c| format!(": {c}"))
                        .unwrap_or_default();
                    let msg = format!("{}: {e}{cause}", trap.origin);
                    if e.is_map_full() {
                        self.map_full(&table, id, &msg);
                    }
                    table.set_pending(id, msg.clone());
                    let _ = self.sync_key(&table, new);
                    self.update_backing(&mut table, id, None);
                    return Err(msg);
                }
                self.update_backing(&mut table, id, backing);
                Ok(true)
            }
            // out of fds or memory says nothing about the file: keep it armed
            Err(e) if planned.is_some() && e.is_transient() => {
                // debug: a rescan retries it every period, for every entry
                tracing::debug!(
                    "{} (kept armed, retried)",
                    escape(&format!("{}: {e}", trap.origin))
                );
                Ok(false)
            }
            Err(e) => {
                // the OS's reason (e.g. too many open files) is the message
                let cause = std::error::Error::source(&e)
                    .map(|c| format!(": {c}"))
                    .unwrap_or_default();
                let msg = format!("{}: {e}{cause}", trap.origin);
                if let Some(old) = table.set_pending(id, msg.clone()) {
                    self.left_path(&mut table, id, &trap.path, old, AtPath::Missing);
                }
                self.update_backing(&mut table, id, None);
                Err(msg)
            }
        }
    }

    /// Resolves a pod's trap: a decoy is created only on the pod's own
    /// filesystems, and a file on a node-shared mount is armed only when
    /// the trap says `allowSharedFile` (checked when the file at the path
    /// is new: a mount over it would change its key).
    fn resolve_in_pod(
        &self,
        trap: &CompiledTrap,
        root: &Root,
        pod_uid: &str,
        planned: Option<TrapKey>,
        created: &mut bool,
    ) -> Result<PinnedFile, ResolveError> {
        let Some(node) = &self.node_mounts else {
            return Err(ResolveError::Shared {
                path: trap.path.clone(),
                root: root.path().to_path_buf(),
                what: "the node's mounts are unknown (no <procRoot>/1), not armed",
            });
        };
        let shared = |what| ResolveError::Shared {
            path: trap.path.clone(),
            root: root.path().to_path_buf(),
            what,
        };
        if trap.create {
            if root.on_pod_mount(&trap.path, true, node, pod_uid)? {
                *created = root.create_if_missing(&trap.path, trap.mode)?;
            } else if !trap.allow_shared_file {
                return Err(shared(
                    "a decoy is never created there, not armed without allowSharedFile",
                ));
            }
        }
        let pinned = root.resolve(&trap.path)?;
        if Some(pinned.key) != planned
            && !trap.allow_shared_file
            && !root.pinned_on_pod_mount(&pinned, &trap.path, node, pod_uid)?
        {
            return Err(shared("not armed without allowSharedFile"));
        }
        Ok(pinned)
    }

    /// Arms the entry's backing file (if it changed) and disarms the one it
    /// replaces.
    fn update_backing(&self, table: &mut TrapTable, id: u32, backing: Option<PinnedFile>) {
        let current = table
            .get(id)
            .and_then(|e| e.backing.as_ref().map(|b| b.key));
        let new = backing.as_ref().map(|b| b.key);
        if current == new {
            return;
        }
        let old = table.set_backing(id, backing);
        for key in old.into_iter().chain(new) {
            let _ = self.sync_key(table, key);
        }
    }

    /// The file at the path is the armed one: were names added or removed?
    fn check_in_place(&self, table: &mut TrapTable, id: u32, armed_as: &str) {
        let Some(Entry {
            state: EntryState::Armed(pin),
            ..
        }) = table.get_mut(id)
        else {
            return;
        };
        // one fstat per entry and rescan: the name is read only on a change
        if pin.nlink_now().ok() == Some(pin.seen.nlink) {
            return;
        }
        let Ok(now) = pin.links_now() else { return };
        let v = judge_primary(armed_as, &pin.seen, &now, AtPath::Same);
        let key = pin.key;
        pin.seen = now;
        if let Some(t) = v.tamper {
            self.report_tamper(table, id, key, t);
        }
    }

    /// An armed inode is no longer at the trap's path: report how it left,
    /// and keep it armed while it has a link.
    fn left_path(
        &self,
        table: &mut TrapTable,
        id: u32,
        armed_as: &str,
        mut old: PinnedFile,
        at_path: AtPath,
    ) {
        let key = old.key;
        let verdict = match old.links_now() {
            Ok(now) => {
                let v = judge_primary(armed_as, &old.seen, &now, at_path);
                old.seen = now;
                v
            }
            // cannot look at it: keep it armed rather than open a hole
            Err(_) => Verdict {
                tamper: None,
                keep: true,
                quiet: true,
            },
        };
        if verdict.keep {
            table.follow(
                id,
                Followed {
                    pin: old,
                    quiet: verdict.quiet,
                },
            );
        }
        let _ = self.sync_key(table, key);
        if let Some(t) = verdict.tamper {
            self.report_tamper(table, id, key, t);
        }
    }

    /// Looks at every inode an entry follows: report changes, let go of
    /// those without a link left.
    pub(super) fn check_followed(&self, id: u32) {
        let mut table = self.table();
        let mut gone = Vec::new();
        let mut reports = Vec::new();
        if let Some(entry) = table.get_mut(id) {
            for f in &mut entry.followed {
                let Ok(now) = f.pin.links_now() else { continue };
                let v = judge_followed(&f.pin.seen, &now, f.quiet);
                f.pin.seen = now;
                if !v.keep {
                    gone.push(f.pin.key);
                }
                if let Some(t) = v.tamper {
                    reports.push((f.pin.key, t));
                }
            }
        }
        for (key, t) in reports {
            self.report_tamper(&table, id, key, t);
        }
        for key in gone {
            if table.unfollow(id, key) {
                let _ = self.sync_key(&table, key);
            }
        }
    }

    /// A tamper the rescan saw: queued now, or (tiers with kernel tamper
    /// hooks) dropped when the kernel reported the inode's change already,
    /// else queued at the next pass if it still has not ([`super::tamper`]).
    fn report_tamper(&self, table: &TrapTable, id: u32, key: TrapKey, tamper: Tamper) {
        if let Some(kt) = &self.kernel_tampers {
            let kind = tamper.kind;
            let waits = lock(kt).defer(id, key, tamper);
            if let (false, Some(e)) = (waits, table.get(id)) {
                // info: says why the tamper alert has a process and no twin
                tracing::info!(
                    "{}: trapped file {} seen by the rescan was already reported by the kernel",
                    escape(&e.trap.origin.to_string()),
                    kind.as_str()
                );
            }
            return;
        }
        self.send_tamper(table, id, key, tamper);
    }

    /// Queues a tamper event for the entry (the consumer turns it into an
    /// alert like any access).
    pub(super) fn send_tamper(&self, table: &TrapTable, id: u32, key: TrapKey, tamper: Tamper) {
        if let Some(e) = table.get(id) {
            // info: the tamper alert itself is the signal
            tracing::info!(
                "{}: trapped file {}: {} -> {}",
                escape(&e.trap.origin.to_string()),
                tamper.kind.as_str(),
                escape(&tamper.old_path),
                if tamper.new_path.is_empty() {
                    "?".into()
                } else {
                    escape(&tamper.new_path)
                }
            );
        }
        let ev = RawEvent {
            ts_boot_ns: boot_ns(),
            key,
            cgroup_id: 0,
            pid: 0,
            tgid: 0,
            ppid: 0,
            ns_pid: 0,
            uid: 0,
            gid: 0,
            mask: 0,
            flags: 0,
            mnt_ns: 0,
            trap_id: id,
            hook: Hook::Rescan,
            action: Action::Audit,
            text: EventText::default(),
            loginuid: None,
            process_flags: 0,
            limited: 0,
            tamper: Some(tamper),
            // found by a rescan: no process
            start_ns: 0,
        };
        if self.tamper_tx.try_send(ev).is_err() {
            self.counters.queue_drops.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The trap map refused entry `id`'s key because it is full: counted,
    /// and logged at WARN naming the trap (once while the reason stays the
    /// same: the entry is retried every rescan).
    fn map_full(&self, table: &TrapTable, id: u32, msg: &str) {
        self.counters.map_full.fetch_add(1, Ordering::Relaxed);
        let again = matches!(
            table.get(id).map(|e| &e.state),
            Some(EntryState::Pending { reason, .. }) if reason == msg
        );
        if !again {
            tracing::warn!(
                "{} (the trap is not armed: refused by the kernel's trap map, retried every rescan)",
                escape(msg)
            );
        }
    }

    /// Marks a pending entry's failure as logged; returns whether it was
    /// not yet.
    pub(crate) fn first_report(&self, id: u32) -> bool {
        match self.table().get_mut(id) {
            Some(Entry {
                state: EntryState::Pending { reported, .. },
                ..
            }) if !*reported => {
                *reported = true;
                true
            }
            _ => false,
        }
    }
}

pub(super) fn boot_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    (t.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(t.tv_nsec as u64)
}
