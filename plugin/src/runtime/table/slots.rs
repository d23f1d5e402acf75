//! The entries by id, stored densely: a vector of entries and an index
//! from id to position. A hash map of entries paid for its empty buckets
//! (100,000 entries in 131,072 buckets of an entry and its id: 19 MiB) and
//! doubled past 87.5 % full; here the entries take their own size each,
//! the index 8 bytes a bucket, and the vector grows by an eighth.

use std::collections::HashMap;

use super::Entry;

/// A map by entry id (kive's own counter, nothing from outside): looked
/// up at every event, hashed with foldhash's fast hasher instead of
/// SipHash.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Entries in a vector, found by id through an index of positions.
#[derive(Debug, Default)]
pub(super) struct Slots {
    entries: Vec<Entry>,
    /// id → position in `entries` (fits: there are never more entries
    /// than ids, which are `u32`).
    at: FastMap<u32, u32>,
}

impl Slots {
    /// Room for `additional` more entries: at least an eighth of what is
    /// held (and 16) when it must grow (amortized, and a slack of an
    /// eighth at most instead of a doubling's half).
    pub(super) fn reserve(&mut self, additional: usize) {
        let (len, cap) = (self.entries.len(), self.entries.capacity());
        if len + additional > cap {
            let step = (cap / 8).max(MIN_GROWTH);
            self.entries.reserve_exact(additional.max(cap + step - len));
        }
        self.at.reserve(additional);
    }

    /// Adds an entry under a fresh id (the table's counter: never one
    /// held already).
    pub(super) fn insert(&mut self, entry: Entry) {
        debug_assert!(
            self.position(entry.id).is_none(),
            "entry id {} inserted twice",
            entry.id
        );
        self.reserve(1);
        let pos = position_of(self.entries.len());
        self.at.insert(entry.id, pos);
        self.entries.push(entry);
    }

    /// Removes an entry; the last one takes its place.
    pub(super) fn remove(&mut self, id: u32) -> Option<Entry> {
        let pos = usize::try_from(self.at.remove(&id)?).ok()?;
        let entry = self.entries.swap_remove(pos);
        if let Some(moved) = self.entries.get(pos) {
            self.at.insert(moved.id, position_of(pos));
        }
        Some(entry)
    }

    fn position(&self, id: u32) -> Option<usize> {
        self.at.get(&id).and_then(|&p| usize::try_from(p).ok())
    }

    pub(super) fn get(&self, id: u32) -> Option<&Entry> {
        self.entries.get(self.position(id)?)
    }

    pub(super) fn get_mut(&mut self, id: u32) -> Option<&mut Entry> {
        let pos = self.position(id)?;
        self.entries.get_mut(pos)
    }

    pub(super) fn values(&self) -> std::slice::Iter<'_, Entry> {
        self.entries.iter()
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Entries the vector has room for without growing.
    #[cfg(test)]
    pub(super) fn capacity(&self) -> usize {
        self.entries.capacity()
    }
}

/// The fewest entries the vector grows by.
const MIN_GROWTH: usize = 16;

/// A position as the index holds it: there are never more entries than
/// `u32` ids.
fn position_of(pos: usize) -> u32 {
    u32::try_from(pos).unwrap_or(u32::MAX)
}
