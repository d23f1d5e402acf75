//! Tests of the trap table: pending reasons reported once, one pin per file.

use super::*;
use crate::policy::load_str;

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
    let d = tempfile::tempdir().expect("tmp");
    std::fs::write(d.path().join("f"), "x").expect("write");
    let root = Arc::new(Root::open(d.path()).expect("root"));
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
    let d = tempfile::tempdir().expect("tmp");
    std::fs::write(d.path().join("f"), "x").expect("write");
    std::fs::write(d.path().join("g"), "y").expect("write");
    let root = Arc::new(Root::open(d.path()).expect("root"));
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
    let d = tempfile::tempdir().expect("tmp");
    std::fs::write(d.path().join("f"), "upper").expect("write");
    std::fs::write(d.path().join("lower"), "lower").expect("write");
    let root = Arc::new(Root::open(d.path()).expect("root"));
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
