//! The armed traps: one entry per (trap, owner), and which entries share a
//! kernel key. Entries whose file cannot be resolved yet stay pending and
//! are retried.

use std::collections::HashMap;
use std::sync::Arc;

use crate::node::{PinnedFile, Root};
use crate::policy::{CompiledTrap, TrapAction};
use crate::runtime::rescan::remembered::Remembered;
use crate::trap::{TrapKey, TrapValue};

mod entry;
mod slots;
pub use entry::{ContainerOwner, Entry, EntryState, Followed, FollowedList, Owner};
use slots::Slots;

/// The entries on one kernel key, and how many of them block without
/// conditions (the key's kernel value without looking at each entry).
#[derive(Debug, Default)]
struct KeyEntries {
    ids: Vec<u32>,
    blocking: usize,
}

/// Whether a trap blocks whatever the access (no conditions to decide).
fn blocks_always(t: &CompiledTrap) -> bool {
    t.action == TrapAction::Block && t.conditions.bits() == 0
}

/// Whether an entry is the cluster's (a pod's, or a host trap of a cluster
/// policy): what the pod controller reconciles and counts.
fn is_cluster(e: &Entry) -> bool {
    matches!(e.owner, Owner::Container(_)) || e.trap.from_cluster
}

/// `namespace/pod` of a pod entry the controller owns (not a path set's
/// file: those come and go with their set).
fn pod_key(e: &Entry) -> Option<String> {
    match &e.owner {
        Owner::Container(c) if e.trap.set_parent.is_none() => {
            Some(format!("{}/{}", c.namespace, c.pod))
        }
        _ => None,
    }
}

/// All entries, by id, by key and by pod. The maps by file key (an
/// outsider can influence inode numbers: a path set's children, a FUSE
/// server's) and by pod name keep SipHash; the index by id is kive's own
/// counter ([`slots`]).
#[derive(Debug, Default)]
pub struct TrapTable {
    entries: Slots,
    by_key: HashMap<TrapKey, KeyEntries>,
    /// Pod entries (not path-set files) by `namespace/pod`: a pod's change
    /// touches its entries only.
    by_pod: HashMap<String, Vec<u32>>,
    /// Entries armed (a key at their path), all and the cluster's.
    armed: usize,
    cluster_armed: usize,
    next_id: u32,
}

impl TrapTable {
    /// Adds an entry (pending); returns its id.
    pub fn insert(
        &mut self,
        trap: Arc<CompiledTrap>,
        owner: Owner,
        root: Option<Arc<Root>>,
    ) -> u32 {
        // the next id not held: after 2^32 inserts the counter wraps
        // (0 is never an id)
        loop {
            self.next_id = self.next_id.wrapping_add(1);
            if self.next_id != 0 && self.entries.get(self.next_id).is_none() {
                break;
            }
        }
        let id = self.next_id;
        let entry = Entry {
            id,
            trap,
            owner,
            root,
            state: EntryState::Pending {
                reason: "not resolved yet".into(),
                reported: true,
            },
            followed: FollowedList::default(),
            backing: None,
            stamp: Remembered::default(),
        };
        if let Some(pod) = pod_key(&entry) {
            self.by_pod.entry(pod).or_default().push(id);
        }
        self.entries.insert(entry);
        id
    }

    /// Room for `additional` more entries at once: a cold start's 100,000
    /// inserts then neither rehash nor copy the table as it grows (each
    /// growth holds the old and the new storage, and faults in both).
    pub fn reserve(&mut self, additional: usize) {
        self.entries.reserve(additional);
    }

    /// Replaces an entry's owner (pod metadata changed), keeping the pod
    /// index right.
    pub fn set_owner(&mut self, id: u32, owner: Owner) {
        let Some(e) = self.entries.get(id) else {
            return;
        };
        let before = pod_key(e);
        let was_cluster = is_cluster(e);
        let armed = e.key().is_some();
        if let Some(e) = self.entries.get_mut(id) {
            e.owner = owner;
        }
        let Some(e) = self.entries.get(id) else {
            return;
        };
        let after = pod_key(e);
        let now_cluster = is_cluster(e);
        if armed && was_cluster != now_cluster {
            if now_cluster {
                self.cluster_armed += 1;
            } else {
                self.cluster_armed -= 1;
            }
        }
        if before != after {
            self.unindex_pod(before.as_deref(), id);
            if let Some(p) = after {
                self.by_pod.entry(p).or_default().push(id);
            }
        }
    }

    /// The ids of a pod's entries (`namespace/pod`), not its path sets'
    /// files.
    pub fn pod_entries(&self, pod: &str) -> &[u32] {
        self.by_pod.get(pod).map(Vec::as_slice).unwrap_or_default()
    }

    fn unindex_pod(&mut self, pod: Option<&str>, id: u32) {
        let Some(pod) = pod else { return };
        if let Some(ids) = self.by_pod.get_mut(pod) {
            ids.retain(|&i| i != id);
            if ids.is_empty() {
                self.by_pod.remove(pod);
            }
        }
    }

    /// Removes an entry; returns the keys it held (its path's and the
    /// followed inodes'), so that the caller can sync them with the kernel.
    pub fn remove(&mut self, id: u32) -> Vec<TrapKey> {
        let Some(entry) = self.entries.remove(id) else {
            return Vec::new();
        };
        self.unindex_pod(pod_key(&entry).as_deref(), id);
        if entry.key().is_some() {
            self.armed -= 1;
            if is_cluster(&entry) {
                self.cluster_armed -= 1;
            }
        }
        let blocking = blocks_always(&entry.trap);
        let keys: Vec<TrapKey> = entry
            .key()
            .into_iter()
            .chain(entry.followed.iter().map(|f| f.pin.key))
            .chain(entry.backing.as_ref().map(|b| b.key))
            .collect();
        for &k in &keys {
            self.drop_index(id, k, blocking);
        }
        keys
    }

    /// Every entry.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// An entry by id.
    pub fn get(&self, id: u32) -> Option<&Entry> {
        self.entries.get(id)
    }

    /// An entry by id, mutable.
    pub fn get_mut(&mut self, id: u32) -> Option<&mut Entry> {
        self.entries.get_mut(id)
    }

    /// Every entry id, ascending.
    pub fn ids(&self) -> Vec<u32> {
        let mut ids: Vec<_> = self.entries.values().map(|e| e.id).collect();
        ids.sort_unstable();
        ids
    }

    /// The entries watching a key.
    pub fn entries_for(&self, key: TrapKey) -> impl Iterator<Item = &Entry> {
        self.by_key
            .get(&key)
            .into_iter()
            .flat_map(|k| &k.ids)
            .filter_map(|id| self.entries.get(*id))
    }

    /// Marks an entry armed on `pinned.key`; returns the pinned file it
    /// left (if any): the caller follows it or lets it go, and syncs both
    /// keys with the kernel. A followed inode that is back at the path is
    /// no longer followed.
    pub fn set_armed(&mut self, id: u32, mut pinned: PinnedFile) -> Option<PinnedFile> {
        let key = pinned.key;
        // one fd per file: share the pin of an entry already on this inode
        if let Some(EntryState::Armed(other)) = self
            .by_key
            .get(&key)
            .and_then(|k| k.ids.iter().find(|&&i| i != id))
            .and_then(|i| self.entries.get(*i))
            .map(|e| &e.state)
        {
            pinned.share(other);
        }
        let entry = self.entries.get_mut(id)?;
        // an entry is on a key's list exactly while it holds the key: one
        // that did not is appended without a scan of the list (thousands
        // of entries on a node-shared file)
        let listed = entry.holds(key);
        entry.followed.retain(|f| f.pin.key != key);
        let old = self.set_state(id, EntryState::Armed(pinned));
        if listed {
            self.index(id, key);
        } else {
            self.index_new(id, key);
        }
        old
    }

    /// Marks an entry pending; returns the pinned file it left, if any. An
    /// entry already pending for the same reason keeps its `reported` flag:
    /// a state is logged once, not on every retry.
    pub fn set_pending(&mut self, id: u32, reason: String) -> Option<PinnedFile> {
        let reported = matches!(
            self.entries.get(id),
            Some(Entry {
                state: EntryState::Pending { reason: r, reported: true },
                ..
            }) if *r == reason
        );
        self.set_state(id, EntryState::Pending { reason, reported })
    }

    /// Sets (or clears) the backing file of an entry; returns the key it
    /// replaced, if any (the caller syncs both with the kernel).
    pub fn set_backing(&mut self, id: u32, backing: Option<PinnedFile>) -> Option<TrapKey> {
        let entry = self.entries.get_mut(id)?;
        let new = backing.as_ref().map(|b| b.key);
        let old = std::mem::replace(&mut entry.backing, backing.map(Box::new)).map(|b| b.key);
        if let Some(k) = old.filter(|&k| Some(k) != new) {
            self.unindex(id, k);
        }
        if let Some(k) = new {
            self.index(id, k);
        }
        old.filter(|&k| Some(k) != new)
    }

    /// Keeps an inode that left the trap's path armed for the entry.
    pub fn follow(&mut self, id: u32, followed: Followed) {
        let key = followed.pin.key;
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        if entry.holds(key) {
            return;
        }
        entry.followed.push(followed);
        self.index(id, key);
    }

    /// Stops following an inode (its last link is gone); returns whether
    /// it was followed.
    pub fn unfollow(&mut self, id: u32, key: TrapKey) -> bool {
        let Some(entry) = self.entries.get_mut(id) else {
            return false;
        };
        let before = entry.followed.len();
        entry.followed.retain(|f| f.pin.key != key);
        let gone = entry.followed.len() != before;
        self.unindex(id, key);
        gone
    }

    fn index(&mut self, id: u32, key: TrapKey) {
        self.list(id, key, false);
    }

    /// [`TrapTable::index`] for an entry that did not hold `key`: not on
    /// its list yet (no scan of it).
    fn index_new(&mut self, id: u32, key: TrapKey) {
        self.list(id, key, true);
    }

    /// Puts `id` on `key`'s list once (`new`: known not to be on it).
    fn list(&mut self, id: u32, key: TrapKey, new: bool) {
        let Some(blocking) = self.entries.get(id).map(|e| blocks_always(&e.trap)) else {
            return;
        };
        let k = self.by_key.entry(key).or_default();
        debug_assert!(
            !new || !k.ids.contains(&id),
            "entry {id} listed on a key it did not hold"
        );
        if new || !k.ids.contains(&id) {
            k.ids.push(id);
            k.blocking += usize::from(blocking);
        }
    }

    /// Drops `id` from `key`'s list unless the entry still holds the key.
    fn unindex(&mut self, id: u32, key: TrapKey) {
        let Some(e) = self.entries.get(id) else {
            return;
        };
        if e.holds(key) {
            return;
        }
        let blocking = blocks_always(&e.trap);
        self.drop_index(id, key, blocking);
    }

    fn drop_index(&mut self, id: u32, key: TrapKey, blocking: bool) {
        if let Some(k) = self.by_key.get_mut(&key) {
            let before = k.ids.len();
            k.ids.retain(|&i| i != id);
            if k.ids.len() != before {
                k.blocking -= usize::from(blocking);
            }
            if k.ids.is_empty() {
                self.by_key.remove(&key);
            }
        }
    }

    fn set_state(&mut self, id: u32, state: EntryState) -> Option<PinnedFile> {
        let entry = self.entries.get_mut(id)?;
        let now_armed = matches!(state, EntryState::Armed(_));
        let cluster = is_cluster(entry);
        let old = match std::mem::replace(&mut entry.state, state) {
            EntryState::Armed(p) => Some(p),
            EntryState::Pending { .. } => None,
        };
        // the rescan's memory of a look holds while the entry stays armed
        // on that inode only: pending, or armed on another, it looks again
        let now = entry.key();
        if now.is_none() || old.as_ref().map(|p| p.key) != now {
            entry.stamp.set(None);
        }
        match (old.is_some(), now_armed) {
            (false, true) => {
                self.armed += 1;
                self.cluster_armed += usize::from(cluster);
            }
            (true, false) => {
                self.armed -= 1;
                self.cluster_armed -= usize::from(cluster);
            }
            _ => {}
        }
        if let Some(p) = &old {
            self.unindex(id, p.key);
        }
        old
    }

    /// What the kernel map must hold for a key: `None` = no entry left.
    pub fn kernel_value(&self, key: TrapKey) -> Option<TrapValue> {
        let k = self.by_key.get(&key)?;
        let first = *k.ids.first()?;
        // conditions (decided in the kernel) hold for one trap only: a key
        // shared by several traps reports every access, and blocks only
        // for a blocking trap without conditions (counted as indexed: a key
        // shared by every pod of a node costs nothing more to sync)
        let (conditions, block) = match k.ids.as_slice() {
            [one] => {
                let t = self.entries.get(*one).map(|e| e.trap.as_ref())?;
                (t.conditions.bits(), t.action == TrapAction::Block)
            }
            _ => (0, k.blocking > 0),
        };
        Some(TrapValue {
            trap_id: first,
            block,
            conditions,
        })
    }

    /// A pinned file of a key: the pin of the key's own inode held by an
    /// entry listed on it (armed at a path, followed or backing; never
    /// another key's pin of an entry listed through its backing).
    pub fn pin_of(&self, key: TrapKey) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        self.pinned_of(key).map(|p| p.as_fd())
    }

    /// The pin of `key` (armed at a path, followed or backing), shared so
    /// that the file can be looked at without the table.
    pub fn shared_pin(&self, key: TrapKey) -> Option<Arc<std::os::fd::OwnedFd>> {
        self.pinned_of(key).map(PinnedFile::shared_pin)
    }

    /// The pinned file of `key` among the pins of the entries listed on it.
    fn pinned_of(&self, key: TrapKey) -> Option<&PinnedFile> {
        self.entries_for(key).find_map(|e| {
            let armed = match &e.state {
                EntryState::Armed(p) => Some(p),
                EntryState::Pending { .. } => None,
            };
            armed
                .into_iter()
                .chain(e.followed.iter().map(|f| &f.pin))
                .chain(e.backing.as_deref())
                .find(|p| p.key == key)
        })
    }

    /// (armed, pending) counts.
    pub fn counts(&self) -> (usize, usize) {
        (self.armed, self.entries.len() - self.armed)
    }

    /// Cluster entries (pods', cluster host traps) armed.
    pub fn cluster_armed(&self) -> usize {
        self.cluster_armed
    }

    /// Number of distinct keys armed.
    pub fn key_count(&self) -> usize {
        self.by_key.len()
    }
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
