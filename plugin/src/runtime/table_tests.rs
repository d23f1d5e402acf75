//! Tests of the trap table: pending reasons reported once, one pin per file.

use super::*;
use crate::policy::load_str;

/// A directory holding `files` (name, contents), opened as a root.
fn root_with(files: &[(&str, &str)]) -> (tempfile::TempDir, Arc<Root>) {
    let d = tempfile::tempdir().expect("tmp");
    for (name, text) in files {
        std::fs::write(d.path().join(name), text).expect("write");
    }
    let root = Arc::new(Root::open(d.path()).expect("root"));
    (d, root)
}

fn reported(t: &TrapTable, id: u32) -> bool {
    match t.get(id).map(|e| &e.state) {
        Some(EntryState::Pending { reported, .. }) => *reported,
        other => panic!("not pending: {other:?}"),
    }
}

fn mark(t: &mut TrapTable, id: u32) {
    if let Some(Entry {
        state: EntryState::Pending { reported, .. },
        ..
    }) = t.get_mut(id)
    {
        *reported = true;
    }
}

#[test]
fn a_pending_reason_is_reported_once_and_again_only_when_it_changes() {
    let c = load_str(
        "t.yaml",
        "apiVersion: kivebpf.san7o.github.io/v1\nkind: KivePolicy\nmetadata: {name: p}\nspec:\n  traps:\n  - path: /missing\n    matchAny: [{host: true}]\n",
    );
    let mut t = TrapTable::default();
    let id = t.insert(Arc::clone(&c.traps[0]), Owner::Host, None);
    t.set_pending(id, "file missing".into());
    assert!(!reported(&t, id), "a new reason is to be reported");
    mark(&mut t, id);
    for _ in 0..3 {
        // every rescan retries and fails the same way
        t.set_pending(id, "file missing".into());
        assert!(reported(&t, id), "the same reason again: no new WARN");
    }
    t.set_pending(id, "permission denied".into());
    assert!(!reported(&t, id), "a different reason: one WARN");
    mark(&mut t, id);
    t.set_pending(id, "permission denied".into());
    assert!(reported(&t, id));
}
use std::os::fd::{AsFd, AsRawFd};

fn trap(name: &str) -> Arc<CompiledTrap> {
    let text = format!(
        "apiVersion: kivebpf.san7o.github.io/v1\nkind: KivePolicy\nmetadata: {{name: {name}, namespace: t}}\nspec:\n  traps:\n  - path: /f\n    matchAny: [{{host: true}}]\n"
    );
    let mut c = crate::policy::load_str(name, &text);
    assert!(c.errors.is_empty(), "{:?}", c.errors);
    c.traps.remove(0)
}

fn pin_fd(t: &TrapTable, id: u32) -> i32 {
    match t.get(id).map(|e| &e.state) {
        Some(EntryState::Armed(p)) => p.as_fd().as_raw_fd(),
        other => panic!("entry {id} not armed: {other:?}"),
    }
}

#[test]
fn entries_on_one_file_share_one_pinned_fd() {
    let (_dir, root) = root_with(&[("f", "x")]);
    let mut t = TrapTable::default();
    let a = t.insert(trap("a"), Owner::Host, Some(Arc::clone(&root)));
    let b = t.insert(trap("b"), Owner::Host, Some(Arc::clone(&root)));
    t.set_armed(a, root.resolve("/f").expect("resolve"));
    t.set_armed(b, root.resolve("/f").expect("resolve"));
    assert_eq!(pin_fd(&t, a), pin_fd(&t, b), "one fd for one file");
    let key = t.get(b).and_then(Entry::key).expect("armed");
    t.remove(a);
    // the survivor's pin is still open and still that file
    let st = rustix::fs::fstat(t.pin_of(key).expect("pin")).expect("fstat");
    assert_eq!(st.st_ino, key.ino);
}

#[test]
fn an_entry_is_listed_once_on_a_key_it_comes_back_to() {
    let (_dir, root) = root_with(&[("f", "x"), ("g", "y")]);
    let mut t = TrapTable::default();
    let a = t.insert(trap("a"), Owner::Host, Some(Arc::clone(&root)));
    let b = t.insert(trap("b"), Owner::Host, Some(Arc::clone(&root)));
    t.set_armed(a, root.resolve("/f").expect("resolve"));
    let f = t.get(a).and_then(Entry::key).expect("armed");
    // the path leads to another file: the first one is followed, then the
    // path leads back to it (its entry was listed on it all along)
    let old = t
        .set_armed(a, root.resolve("/g").expect("resolve"))
        .expect("old pin");
    t.follow(
        a,
        Followed {
            pin: old,
            quiet: false,
        },
    );
    let g = t.get(a).and_then(Entry::key).expect("armed");
    t.set_armed(a, root.resolve("/f").expect("resolve"));
    t.set_armed(b, root.resolve("/f").expect("resolve"));
    let ids = |k| t.entries_for(k).map(|e| e.id).collect::<Vec<_>>();
    assert_eq!(ids(f), [a, b], "each entry once on the file it is armed on");
    assert!(
        ids(g).is_empty(),
        "nothing left on the file it left: {:?}",
        ids(g)
    );
}

#[test]
fn a_keys_pin_is_its_own_file_when_an_entry_is_listed_through_its_backing() {
    let (_dir, root) = root_with(&[("f", "upper"), ("lower", "lower")]);
    let mut t = TrapTable::default();
    let a = t.insert(trap("a"), Owner::Host, Some(Arc::clone(&root)));
    t.set_armed(a, root.resolve("/f").expect("resolve"));
    let lower = root.resolve("/lower").expect("resolve");
    let l = lower.key;
    t.set_backing(a, Some(lower));
    let ids: Vec<u32> = t.entries_for(l).map(|e| e.id).collect();
    assert_eq!(ids, [a], "the entry is listed on its backing file");
    let st = rustix::fs::fstat(t.pin_of(l).expect("the backing file's pin")).expect("fstat");
    assert_eq!(
        (st.st_ino, crate::trap::dev::kernel_dev(st.st_dev)),
        (l.ino, l.dev),
        "the backing key's pin is the backing file, not the entry's own"
    );
}

#[test]
fn an_entry_and_its_pinned_file_stay_small() {
    // each byte of an entry is paid 100,000 times on a node of 5,000 pods
    // x 20 traps (the table stores entries side by side, [`slots`])
    let entry = std::mem::size_of::<Entry>();
    assert!(
        entry <= 144,
        "a trap table entry grew to {entry} B (bound 144 B: 112 and the rescan's 32-byte stamp; box what most entries leave empty)"
    );
    let pinned = std::mem::size_of::<PinnedFile>();
    assert!(
        pinned <= 64,
        "a pinned file grew to {pinned} B (bound 64 B: it is in every armed entry)"
    );
    let state = std::mem::size_of::<EntryState>();
    assert!(
        state <= pinned,
        "an entry's state ({state} B) is larger than the pinned file it holds ({pinned} B): the pending reason no longer fits beside it"
    );
}

/// A rescan stamp told apart by the entry's id.
fn stamp_of(id: u32) -> Option<crate::runtime::rescan::remembered::Stamp> {
    crate::runtime::rescan::remembered::Stamp::of(&crate::node::stamp::NameStat {
        st_dev: 8,
        ino: u64::from(id),
        nlink: 1,
        ctime: (i64::from(id), 0),
        regular: true,
    })
}

#[test]
fn entries_stay_found_by_id_as_others_are_removed() {
    let t1 = trap("/a");
    let mut t = TrapTable::default();
    t.reserve(10);
    let ids: Vec<u32> = (0..10)
        .map(|_| t.insert(Arc::clone(&t1), Owner::Host, None))
        .collect();
    // removing from the front, the middle and the end moves the last entry
    // into the hole: every other id still finds its own entry
    for gone in [ids[0], ids[5], ids[9]] {
        assert!(t.get(gone).is_some(), "entry {gone} there before");
        t.remove(gone);
        assert!(t.get(gone).is_none(), "entry {gone} gone");
        assert!(t.get_mut(gone).is_none(), "entry {gone} gone (mutable)");
    }
    let left: Vec<u32> = ids
        .iter()
        .copied()
        .filter(|id| ![ids[0], ids[5], ids[9]].contains(id))
        .collect();
    for &id in &left {
        assert_eq!(t.get(id).map(|e| e.id), Some(id), "entry {id} by id");
        assert_eq!(t.get_mut(id).map(|e| e.id), Some(id), "entry {id} mutable");
    }
    assert_eq!(t.ids(), left, "the ids left, ascending");
    assert_eq!(t.counts(), (0, left.len()), "all pending");
    assert_eq!(t.entries().count(), left.len());
    assert!(t.remove(ids[0]).is_empty(), "a removed id again: nothing");
    // the rescan's stamp is the entry's own: it moves with it
    for &id in &left {
        let stamp = stamp_of(id);
        t.get_mut(id).expect("entry left").stamp.set(stamp);
    }
    t.remove(left[0]);
    for &id in &left[1..] {
        assert_eq!(
            t.get(id).and_then(|e| e.stamp.get()),
            stamp_of(id),
            "entry {id}'s stamp after another was removed"
        );
    }
}

#[test]
fn ids_stay_unique_when_the_counter_wraps() {
    let t1 = trap("/a");
    let mut t = TrapTable::default();
    let first = t.insert(Arc::clone(&t1), Owner::Host, None);
    t.next_id = u32::MAX - 1;
    let last = t.insert(Arc::clone(&t1), Owner::Host, None);
    let wrapped = t.insert(Arc::clone(&t1), Owner::Host, None);
    assert_eq!(last, u32::MAX, "the counter's last id");
    assert!(
        wrapped != 0 && wrapped != first && wrapped != last,
        "a wrapped counter skips 0 and the ids held ({first}, {last}): got {wrapped}"
    );
    for id in [first, last, wrapped] {
        assert_eq!(
            t.get(id).map(|e| e.id),
            Some(id),
            "entry {id} found by its id"
        );
    }
    assert_eq!(t.entries().count(), 3, "three entries, none replaced");
}

#[test]
fn the_table_grows_by_an_eighth_not_by_doubling() {
    let t1 = trap("/a");
    let mut t = TrapTable::default();
    t.reserve(800);
    assert_eq!(t.entries.capacity(), 800, "a batch's room, exactly");
    for _ in 0..801 {
        t.insert(Arc::clone(&t1), Owner::Host, None);
    }
    assert_eq!(
        t.entries.capacity(),
        900,
        "one more entry past the room: an eighth more, not twice as much"
    );
    let mut small = TrapTable::default();
    small.insert(Arc::clone(&t1), Owner::Host, None);
    assert_eq!(
        small.entries.capacity(),
        16,
        "a small table grows by 16 at least, not one entry at a time"
    );
}

#[test]
fn a_remembered_look_is_forgotten_when_the_entry_leaves_its_inode() {
    let (_dir, root) = root_with(&[("f", "x"), ("g", "y")]);
    let mut t = TrapTable::default();
    let a = t.insert(trap("a"), Owner::Host, Some(Arc::clone(&root)));
    let stamp = |t: &TrapTable| t.get(a).and_then(|e| e.stamp.get());
    let remember = |t: &mut TrapTable| t.get_mut(a).expect("entry").stamp.set(stamp_of(a));
    t.set_armed(a, root.resolve("/f").expect("resolve"));
    remember(&mut t);
    t.set_armed(a, root.resolve("/f").expect("resolve"));
    assert_eq!(
        stamp(&t),
        stamp_of(a),
        "armed again on the same inode: kept"
    );
    t.set_armed(a, root.resolve("/g").expect("resolve"));
    assert_eq!(stamp(&t), None, "armed on another inode: forgotten");
    remember(&mut t);
    t.set_pending(a, "its container exited".into());
    assert_eq!(stamp(&t), None, "pending: forgotten");
}
