//! Which armed entries a change notification names (pure).
//!
//! Every watched object (a directory on an entry's path inside its root,
//! or the entry's file) is known by a hash of its file handle (filesystem
//! id, handle type and bytes, as fanotify reports them). An entry is
//! registered under each directory of its path with the component that
//! follows it there, and under its file with no name. Two objects whose
//! hashes collide only make a notification re-check more entries than it
//! had to: never fewer.
//!
//! Each list of entries is kept sorted, so that registering an entry is a
//! binary search (an entry registered again is listed once), not a scan:
//! with 5,000 pods sharing the node's directories a list holds 100,000
//! entries, and a pass registers every one of them.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

/// The name an entry's file is registered with under its own handle.
const SELF: u64 = 0;

/// A hash of a file handle: filesystem id, handle type, handle bytes.
pub fn handle_hash(fsid: [u8; 8], handle_type: i32, bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    fsid.hash(&mut h);
    handle_type.hash(&mut h);
    bytes.hash(&mut h);
    h.finish()
}

/// A hash of one path component (never [`SELF`]).
pub fn name_hash(name: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    name.hash(&mut h);
    h.finish().max(1)
}

/// What one information record of a notification names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Named {
    /// A name in a directory (`FAN_EVENT_INFO_TYPE_DFID_NAME`).
    Child {
        /// The directory's handle hash.
        dir: u64,
        /// The name's hash.
        name: u64,
    },
    /// The object itself (`FID`, or `DFID` without a name).
    Object(u64),
}

/// Directories and files watched, and the entries each change names.
#[derive(Debug, Default)]
pub struct WatchMap {
    /// (object, component or [`SELF`]) → entries whose path goes there,
    /// ascending, each once.
    by_name: HashMap<(u64, u64), Vec<u32>>,
    /// Components registered under each directory (for a change to the
    /// directory itself: moved, deleted).
    names: HashMap<u64, HashSet<u64>>,
}

impl WatchMap {
    /// Registers entry `id` under directory `dir` with component `name`.
    pub fn add_child(&mut self, dir: u64, name: &[u8], id: u32) {
        let n = name_hash(name);
        self.names.entry(dir).or_default().insert(n);
        push_once(self.by_name.entry((dir, n)).or_default(), id);
    }

    /// Registers entry `id` under its file `file`.
    pub fn add_file(&mut self, file: u64, id: u32) {
        push_once(self.by_name.entry((file, SELF)).or_default(), id);
    }

    /// The entries a notification names: for a change to a directory
    /// itself (`self_change`: moved or deleted) every entry below it, else
    /// those registered under the name, or under the object itself.
    pub fn named(&self, records: &[Named], self_change: bool, out: &mut Vec<u32>) {
        for r in records {
            match *r {
                Named::Child { dir, name } => {
                    self.extend(dir, name, out);
                    if self_change {
                        self.below(dir, out);
                    }
                }
                Named::Object(obj) => {
                    self.extend(obj, SELF, out);
                    if self_change {
                        self.below(obj, out);
                    }
                }
            }
        }
    }

    fn extend(&self, obj: u64, name: u64, out: &mut Vec<u32>) {
        if let Some(ids) = self.by_name.get(&(obj, name)) {
            out.extend_from_slice(ids);
        }
    }

    fn below(&self, dir: u64, out: &mut Vec<u32>) {
        for n in self.names.get(&dir).into_iter().flatten() {
            self.extend(dir, *n, out);
        }
    }

    /// Keeps only the registrations of entries `live` says are still
    /// there; returns how many objects no entry needs any more.
    pub fn retain(&mut self, live: impl Fn(u32) -> bool) -> usize {
        self.by_name.retain(|_, ids| {
            ids.retain(|id| live(*id));
            !ids.is_empty()
        });
        let by_name = &self.by_name;
        for (dir, names) in &mut self.names {
            names.retain(|n| by_name.contains_key(&(*dir, *n)));
        }
        self.names.retain(|_, n| !n.is_empty());
        let mut objects: HashSet<u64> = self.names.keys().copied().collect();
        objects.extend(self.by_name.keys().map(|k| k.0));
        objects.len()
    }

    /// Forgets everything (the marks were removed).
    pub fn clear(&mut self) {
        self.by_name.clear();
        self.names.clear();
    }
}

/// Adds `id` to the ascending list `ids` unless it is there (a pass
/// registers entries mostly in ascending order: then an append).
fn push_once(ids: &mut Vec<u32>, id: u32) {
    if ids.last().is_none_or(|&last| last < id) {
        ids.push(id);
    } else if let Err(at) = ids.binary_search(&id) {
        ids.insert(at, id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(m: &WatchMap, r: &[Named], self_change: bool) -> Vec<u32> {
        let mut out = Vec::new();
        m.named(r, self_change, &mut out);
        out.sort_unstable();
        out.dedup();
        out
    }

    /// `/etc/app/{key,conf}` (entries 1, 2) and `/etc/other` (3) in one root.
    fn map() -> WatchMap {
        let mut m = WatchMap::default();
        for (id, path) in [(1, ["etc", "app", "key"]), (2, ["etc", "app", "conf"])] {
            m.add_child(10, path[0].as_bytes(), id);
            m.add_child(11, path[1].as_bytes(), id);
            m.add_child(12, path[2].as_bytes(), id);
            m.add_file(100 + u64::from(id), id);
        }
        m.add_child(10, b"etc", 3);
        m.add_child(11, b"other", 3);
        m.add_file(103, 3);
        m
    }

    #[test]
    fn a_name_changed_in_a_directory_names_only_the_entries_going_through_it() {
        let m = map();
        let child = |dir, name: &[u8]| Named::Child {
            dir,
            name: name_hash(name),
        };
        assert_eq!(named(&m, &[child(12, b"key")], false), [1], "file replaced");
        assert_eq!(
            named(&m, &[child(11, b"app")], false),
            [1, 2],
            "directory above swapped"
        );
        assert_eq!(named(&m, &[child(10, b"etc")], false), [1, 2, 3]);
        assert!(
            named(&m, &[child(12, b"unrelated")], false).is_empty(),
            "another file in a watched directory"
        );
        assert!(named(&m, &[child(99, b"key")], false).is_empty());
    }

    #[test]
    fn a_change_to_a_file_or_a_directory_itself_names_what_is_below_it() {
        let m = map();
        assert_eq!(named(&m, &[Named::Object(102)], false), [2], "link added");
        assert_eq!(
            named(&m, &[Named::Object(12)], true),
            [1, 2],
            "directory moved away"
        );
        assert!(
            named(&m, &[Named::Object(12)], false).is_empty(),
            "a change to a directory's own attributes"
        );
    }

    #[test]
    fn an_entry_registered_again_is_listed_once_in_any_order() {
        let mut m = WatchMap::default();
        // registered out of order, then again (watched anew after a
        // notification) before, between and after the others
        for id in [5, 2, 9, 5, 2, 7, 9, 1, 7, 5] {
            m.add_child(10, b"etc", id);
            m.add_file(100, id);
        }
        let mut out = Vec::new();
        m.named(
            &[Named::Child {
                dir: 10,
                name: name_hash(b"etc"),
            }],
            false,
            &mut out,
        );
        assert_eq!(out, [1, 2, 5, 7, 9], "each entry once under the name");
        out.clear();
        m.named(&[Named::Object(100)], false, &mut out);
        assert_eq!(out, [1, 2, 5, 7, 9], "each entry once under the file");
        m.retain(|id| id != 5);
        m.add_file(100, 5);
        m.add_file(100, 3);
        out.clear();
        m.named(&[Named::Object(100)], false, &mut out);
        assert_eq!(out, [1, 2, 3, 5, 7, 9], "registered again after a removal");
    }

    #[test]
    fn registrations_of_removed_entries_go_and_are_counted() {
        let mut m = map();
        m.add_file(101, 1); // twice: once
        let mut out = Vec::new();
        m.named(&[Named::Object(101)], false, &mut out);
        assert_eq!(out, [1]);
        let objects = m.retain(|id| id != 3);
        assert_eq!(objects, 5, "10, 11, 12 and files 101, 102");
        assert!(named(&m, &[Named::Object(103)], false).is_empty());
        assert_eq!(
            named(
                &m,
                &[Named::Child {
                    dir: 11,
                    name: name_hash(b"other")
                }],
                false
            ),
            Vec::<u32>::new()
        );
        m.clear();
        assert!(named(&m, &[Named::Object(101)], false).is_empty());
    }
}
