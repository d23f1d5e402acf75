//! The periodic rescan, in proportion to what changed.
//!
//! An armed entry is first looked at cheaply ([`crate::node::stamp`]): its
//! path's directory resolved inside the entry's root once per pass (entries
//! are visited grouped by root and directory, so the 20 traps of a
//! container in one directory share it), then one `fstatat` of the name.
//! When the name still leads to the armed inode, with the link count the
//! entry last saw and the status-change time of the previous look, nothing
//! changed that a full re-resolution could see: the entry is skipped
//! (counted in `rescan_unchanged`). Anything else (another inode or none at
//! the name, a symlink, a directory above swapped or mounted over, a link
//! added or removed, an overlay copy-up, which changes the status time)
//! takes the full path ([`Shared::arm_entry`], counted in
//! `rescan_resolved`), as does every pending entry and every path set.
//! Inodes an entry follows away from its path are looked at every pass.
//!
//! Which entries a pass looks at follows what changed
//! ([`crate::node::watch`]): an armed entry, once watched (marks on every
//! directory of its path in its root and on its file, its root's mounts
//! watched), is looked at again only when a change notification names it
//! (counted in `rescan_notified`), when a kernel tamper event names its
//! inode, or at the safety net's full pass ([`RuntimeConfig::rescan_full`],
//! also run when the notification queue overflowed). Entries that cannot
//! be watched, pending entries, path sets and entries following inodes
//! away from their path are looked at every pass.
//!
//! Pending container entries without a root (the container had no process
//! when its traps were planned, or the process the root was opened through
//! exited) get one through the container's `cgroup.procs`
//! ([`ContainerLocator`]), never a `/proc` scan on cgroup v2.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod notified;
pub(crate) mod remembered;

use super::arm::boot_ns;
use super::config::RuntimeConfig;
use super::table::{Entry, EntryState, Owner};
use super::Shared;
use crate::alert::text::escape;
use crate::node::cgroup::CgroupIndex;
use crate::node::containers::{open_container_root, ContainerLocator};
use crate::node::stamp::{name_stat, split_parent, NameStat};
use crate::node::watch::DirWatch;
use crate::node::Root;
use crate::sync::lock;
use notified::always_looked;
use remembered::Stamp;

/// The rescan's own state.
pub(crate) struct RescanState {
    /// The directory looked in last (entries of one directory in one root
    /// are visited together); dropped at the end of each pass.
    dir: Mutex<Option<DirSlot>>,
    /// Finds a container's process through its cgroup.
    locator: Mutex<ContainerLocator>,
    proc_root: PathBuf,
    /// Change notification: what to look at between full passes.
    watch: DirWatch,
    /// Entries watched, and armed entries that could not be.
    watched: Mutex<HashSet<u32>>,
    unwatched: Mutex<HashSet<u32>>,
    /// Entries a notification named, to watch again (their directories
    /// opened anew: one may have been swapped).
    named: Mutex<HashSet<u32>>,
    full_every: Duration,
    last_full: Mutex<Instant>,
}

struct DirSlot {
    root: Arc<Root>,
    dir: String,
    fd: Arc<OwnedFd>,
}

impl RescanState {
    /// Containers are found through this node's cgroup tree, unless the
    /// processes are looked for under another proc root.
    pub(crate) fn new(cfg: &RuntimeConfig) -> Self {
        let proc_root = cfg.proc_root.as_path();
        let cgroup_root = (proc_root == Path::new("/proc"))
            .then(|| CgroupIndex::for_this_node().root().map(Path::to_path_buf))
            .flatten();
        Self {
            dir: Mutex::default(),
            locator: Mutex::new(ContainerLocator::new(cgroup_root, proc_root.to_path_buf())),
            proc_root: proc_root.to_path_buf(),
            watch: DirWatch::new(cfg.notify_max_marks, cfg.notify_max_mount_watches),
            watched: Mutex::default(),
            unwatched: Mutex::default(),
            named: Mutex::default(),
            full_every: cfg.rescan_full,
            last_full: Mutex::new(Instant::now()),
        }
    }
}

/// Whether a look at an armed entry's name (`now`) shows nothing a full
/// re-resolution could see: the armed inode (`st_dev`, `ino`) with the
/// link count the entry last saw (`seen_nlink`), and the same status time
/// as the previous look (`before`, its [`Stamp`]; none yet: changed).
pub(crate) fn unchanged(
    before: Option<&Stamp>,
    now: &NameStat,
    st_dev: u64,
    ino: u64,
    seen_nlink: u64,
) -> bool {
    now.regular
        && before.is_some_and(|b| Stamp::of(now).as_ref() == Some(b))
        && (now.st_dev, now.ino) == (st_dev, ino)
        && now.nlink == seen_nlink
}

/// The order of a pass: grouped by root, then by directory (so that one
/// directory is resolved once per root), then by id.
fn pass_order(mut keyed: Vec<(usize, u64, u32)>) -> Vec<u32> {
    keyed.sort_unstable();
    keyed.into_iter().map(|(_, _, id)| id).collect()
}

/// What a cheap look at an entry found.
enum Look {
    /// Skip it.
    Unchanged,
    /// Resolve it in full; the look's result, to remember once it is armed.
    Changed(Option<NameStat>),
}

impl Shared {
    /// The kernel-tamper pass, container roots found for pending entries,
    /// then every entry looked at (and re-resolved where something
    /// changed), each on a worker with a deadline ([`super::stalls`]): a
    /// hung filesystem stalls only its entries.
    pub(crate) fn rescan(self: &Arc<Self>) {
        self.rescan_pass(false);
    }

    /// A pass that looks at every armed entry (the safety net's).
    pub(crate) fn rescan_full(self: &Arc<Self>) {
        self.rescan_pass(true);
    }

    fn rescan_pass(self: &Arc<Self>, force_full: bool) {
        let mut named_keys = Vec::new();
        if let Some(kt) = &self.kernel_tampers {
            // the kernel's tamper events still in the ring recorded first
            if let Some(reader) = &self.caller_reader {
                let n = super::reading::catch_up(reader);
                self.counters.spare_reads.fetch_add(n, Ordering::Relaxed);
            }
            let (due, named) = {
                let mut kt = lock(kt);
                (kt.start_pass(boot_ns()), kt.take_named())
            };
            named_keys = named;
            let table = self.table();
            for d in due {
                // the kernel's event for it was lost (counted as a loss)
                self.send_tamper(&table, d.id, d.key, d.tamper);
            }
        }
        self.find_roots();
        let drained = self.rescan.watch.drain();
        let full = force_full
            || drained.overflow
            || !self.rescan.watch.on()
            || lock(&self.rescan.last_full).elapsed() >= self.rescan.full_every;
        if full {
            *lock(&self.rescan.last_full) = Instant::now();
            self.counters
                .rescan_full_passes
                .fetch_add(1, Ordering::Relaxed);
        }
        let named = self.named_ids(&drained.ids, &drained.roots, &named_keys);
        let looked = self.rescan_entries(full, &named);
        *lock(&self.rescan.dir) = None;
        if let Some(kt) = &self.kernel_tampers {
            lock(kt).end_pass();
        }
        // a pass that looked at entries gives its pages back; an idle one
        // (every second on a quiet node) keeps its few for the next
        if looked > 0 {
            crate::allocator::give_back(true);
        }
    }

    /// Looks at the pass's entries; returns how many.
    fn rescan_entries(self: &Arc<Self>, full: bool, named: &HashSet<u32>) -> usize {
        let keyed = {
            let table = self.table();
            let watched = lock(&self.rescan.watched);
            let keyed: Vec<(usize, u64, u32)> = table
                .entries()
                .filter(|e| {
                    full || named.contains(&e.id) || !watched.contains(&e.id) || always_looked(e)
                })
                .map(|e| {
                    let root = e.root.as_ref().map_or(0, |r| Arc::as_ptr(r) as usize);
                    let mut h = DefaultHasher::new();
                    split_parent(&e.trap.path).map(|(d, _)| d).hash(&mut h);
                    (root, h.finish(), e.id)
                })
                .collect();
            drop(watched);
            if full {
                self.forget_removed(&table);
            }
            keyed
        };
        let looked = keyed.len();
        self.isolated(&pass_order(keyed), Self::rescan_one);
        looked
    }

    fn rescan_one(&self, id: u32) -> Result<bool, String> {
        self.check_followed(id);
        self.watch_entry(id);
        let seen = match self.look(id) {
            Look::Unchanged => {
                self.counters
                    .rescan_unchanged
                    .fetch_add(1, Ordering::Relaxed);
                return Ok(false);
            }
            Look::Changed(seen) => seen,
        };
        self.counters
            .rescan_resolved
            .fetch_add(1, Ordering::Relaxed);
        let was_armed = self.table().get(id).and_then(Entry::key);
        let result = self.arm_entry(id);
        self.remember(id, seen);
        match &result {
            Ok(true) => {
                self.counters.rearms.fetch_add(1, Ordering::Relaxed);
                if let Some(e) = self.table().get(id) {
                    tracing::info!(
                        "{}: re-armed (file {})",
                        escape(&e.trap.origin.to_string()),
                        if was_armed.is_some() {
                            "replaced"
                        } else {
                            "appeared"
                        }
                    );
                }
            }
            Ok(false) => {}
            Err(msg) => {
                if self.first_report(id) {
                    tracing::warn!("{} (kept pending, retried)", escape(msg));
                }
            }
        }
        result
    }

    /// The cheap look at an armed entry ([`unchanged`]).
    fn look(&self, id: u32) -> Look {
        let (root, trap, st_dev, ino, seen_nlink, before) = {
            let table = self.table();
            let Some(e) = table.get(id) else {
                return Look::Changed(None);
            };
            let (EntryState::Armed(pin), Some(root), None) = (&e.state, &e.root, &e.trap.path_set)
            else {
                return Look::Changed(None);
            };
            (
                Arc::clone(root),
                Arc::clone(&e.trap),
                pin.st_dev,
                pin.key.ino,
                pin.seen.nlink,
                e.stamp.get(),
            )
        };
        let Some((dir, name)) = split_parent(&trap.path) else {
            return Look::Changed(None);
        };
        let Some(fd) = self.dir_fd(&root, dir) else {
            return Look::Changed(None);
        };
        let Ok(now) = name_stat(&fd, name) else {
            return Look::Changed(None);
        };
        if unchanged(before.as_ref(), &now, st_dev, ino, seen_nlink) {
            Look::Unchanged
        } else {
            Look::Changed(Some(now))
        }
    }

    /// After a full resolution: remember what the look saw when the entry
    /// is now armed on that very inode (a change after the look shows at
    /// the next one), else forget it.
    fn remember(&self, id: u32, seen: Option<NameStat>) {
        let mut table = self.table();
        let Some(e) = table.get_mut(id) else {
            return;
        };
        let armed = match &e.state {
            EntryState::Armed(pin) => Some((pin.st_dev, pin.key.ino)),
            EntryState::Pending { .. } => None,
        };
        let stamp = seen
            .as_ref()
            .and_then(Stamp::of)
            .filter(|s| armed == Some(s.file()));
        e.stamp.set(stamp);
    }

    /// Directory `dir` inside `root`, opened once for the entries of a
    /// pass that share it (the open runs without any lock held).
    fn dir_fd(&self, root: &Arc<Root>, dir: &str) -> Option<Arc<OwnedFd>> {
        if let Some(slot) = lock(&self.rescan.dir).as_ref() {
            if Arc::ptr_eq(&slot.root, root) && slot.dir == dir {
                return Some(Arc::clone(&slot.fd));
            }
        }
        let fd = Arc::new(root.open_parent(dir).ok()?);
        *lock(&self.rescan.dir) = Some(DirSlot {
            root: Arc::clone(root),
            dir: dir.to_string(),
            fd: Arc::clone(&fd),
        });
        Some(fd)
    }

    /// Pending container entries without a root: their container's
    /// process, through its cgroup's `cgroup.procs`.
    fn find_roots(&self) {
        let wanted: HashMap<String, String> = self
            .table()
            .entries()
            .filter(|e| e.root.is_none() && matches!(e.state, EntryState::Pending { .. }))
            .filter_map(|e| match &e.owner {
                Owner::Container(c) => Some((c.container_id.clone(), c.pod_uid.clone())),
                Owner::Host => None,
            })
            .collect();
        for (container_id, pod_uid) in wanted {
            if self.closing() {
                return;
            }
            let bare = container_id.rsplit("://").next().unwrap_or_default();
            let Some(pid) = lock(&self.rescan.locator).pid_of(bare, &pod_uid) else {
                continue;
            };
            let root = match open_container_root(&self.rescan.proc_root, pid, bare) {
                Ok(root) => Arc::new(root),
                Err(e) => {
                    tracing::debug!("container {bare}: {e}");
                    continue;
                }
            };
            let mut table = self.table();
            let ids: Vec<u32> = table
                .entries()
                .filter(|e| e.root.is_none() && e.owner.container_id() == container_id)
                .map(|e| e.id)
                .collect();
            for id in &ids {
                if let Some(e) = table.get_mut(*id) {
                    e.root = Some(Arc::clone(&root));
                }
            }
            if !ids.is_empty() {
                self.counters.rescan_roots.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("container {bare}: found through cgroup.procs (pid {pid})");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(ino: u64, nlink: u64, ctime: i64) -> NameStat {
        NameStat {
            st_dev: 8,
            ino,
            nlink,
            ctime: (ctime, 0),
            regular: true,
        }
    }

    /// `unchanged` with the stamp of look `before`.
    fn unchanged(
        before: Option<&NameStat>,
        now: &NameStat,
        st_dev: u64,
        ino: u64,
        seen_nlink: u64,
    ) -> bool {
        let stamp = before.and_then(Stamp::of);
        super::unchanged(stamp.as_ref(), now, st_dev, ino, seen_nlink)
    }

    #[test]
    fn only_the_armed_inode_with_the_same_links_and_status_time_is_unchanged() {
        let s = stat(42, 1, 100);
        assert!(unchanged(Some(&s), &s, 8, 42, 1), "the same look");
        assert!(!unchanged(None, &s, 8, 42, 1), "no previous look");
        assert!(
            !unchanged(Some(&s), &stat(43, 1, 100), 8, 42, 1),
            "another file at the name (replaced, renamed over, mounted over)"
        );
        assert!(
            !unchanged(Some(&s), &NameStat { st_dev: 9, ..s }, 8, 42, 1),
            "another filesystem at the name"
        );
        assert!(
            !unchanged(Some(&s), &stat(42, 2, 100), 8, 42, 1),
            "a link added"
        );
        assert!(
            !unchanged(Some(&s), &s, 8, 42, 2),
            "a link the entry has not seen yet"
        );
        assert!(
            !unchanged(Some(&s), &stat(42, 1, 101), 8, 42, 1),
            "a status change (write, chmod, overlay copy-up)"
        );
        assert!(
            !unchanged(Some(&s), &s, 8, 43, 1),
            "the name still leads to the remembered file, but the entry is armed on another inode since (a container's exit, then a re-arm)"
        );
        assert!(
            !unchanged(Some(&s), &s, 9, 42, 1),
            "the entry is armed on another filesystem's inode 42 since"
        );
        let link = NameStat {
            regular: false,
            ..s
        };
        assert!(!unchanged(Some(&link), &link, 8, 42, 1), "a symlink");
    }

    #[test]
    fn a_pass_visits_entries_grouped_by_root_and_directory() {
        let order = pass_order(vec![(2, 7, 1), (1, 9, 2), (2, 5, 3), (1, 9, 4), (2, 7, 5)]);
        assert_eq!(order, [2, 4, 3, 1, 5]);
    }
}
