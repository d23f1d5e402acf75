//! Traps inside an emulated container (overlayfs root, own mount and pid
//! namespaces, containerd-style cgroup), on this machine's kernel.

mod support;

use std::os::unix::fs::MetadataExt;

use kive::node::cgroup::CgroupIndex;
use kive::node::Root;
use kive::trap::{TierChoice, TrapValue};
use support::container::Container;
use support::{engine, events_for, events_until, quiet};

#[test]
fn paths_resolve_inside_the_container_never_on_the_host() {
    let c = Container::start(
        &[("/etc/passwd", "container-only passwd\n")],
        &[("/link", "/etc/passwd"), ("/up", "../../../../etc/passwd")],
    );
    let root = Root::open(c.root()).expect("container root");
    let own = root.resolve("/etc/passwd").expect("container passwd").key;
    let host = Root::open("/")
        .expect("/")
        .resolve("/etc/passwd")
        .expect("host passwd")
        .key;
    assert_ne!(own, host);
    for p in ["/link", "/up", "/../etc/passwd"] {
        assert_eq!(
            root.resolve(p).expect(p).key,
            own,
            "{p} stays in the container"
        );
    }
    // what a plain stat of the joined path does (the trap kive avoids)
    let joined = std::fs::metadata(c.root().join("link")).expect("joined stat");
    assert_eq!(
        joined.ino(),
        std::fs::metadata("/etc/passwd").expect("host").ino(),
        "a naive join follows the absolute symlink to the host's file"
    );
}

#[test]
fn a_trap_armed_through_the_overlay_fires_from_inside_and_survives_copy_up() {
    let c = Container::start(&[("/secret.txt", "lower secret\n")], &[]);
    let root = Root::open(c.root()).expect("container root");
    let key = root.resolve("/secret.txt").expect("resolve").key;
    assert_eq!(key.dev >> 20, 0, "overlayfs has an anonymous device");
    let (e, rx) = engine(TierChoice::Tracepoint);
    e.arm(
        key,
        TrapValue {
            trap_id: 11,
            block: false,
            conditions: 0,
        },
    )
    .expect("arm");

    c.exec("cat /secret.txt");
    let evs = events_until(&rx, key, 1);
    assert_eq!(evs.len(), 1, "{evs:#?}");
    assert_eq!(evs[0].comm, "cat");
    assert_eq!(
        evs[0].mnt_ns,
        c.mnt_ns(),
        "the access came from the container's mount ns"
    );
    assert_ne!(
        evs[0].ns_pid, evs[0].tgid,
        "pid inside the container's pid namespace"
    );

    // the event's cgroup id maps back to the container
    let mut idx = CgroupIndex::for_this_node();
    let found = idx
        .container(evs[0].cgroup_id)
        .expect("cgroup id → container");
    assert_eq!(found.id, c.id);
    assert_eq!(found.uri(), format!("containerd://{}", c.id));

    // a write copies the file up to the upper layer; the key stays valid
    assert!(!support::container::exists_nofollow(
        &c.upper().join("secret.txt")
    ));
    c.exec("echo more >> /secret.txt");
    assert!(c.upper().join("secret.txt").exists(), "copied up");
    assert_eq!(
        root.resolve("/secret.txt").expect("resolve").key,
        key,
        "same key after copy-up"
    );
    let evs = events_until(&rx, key, 1);
    assert_eq!(evs.len(), 1, "{evs:#?}");
    assert_eq!(evs[0].mask & 0x2, 0x2, "write");
    c.exec("cat /secret.txt");
    assert_eq!(
        events_until(&rx, key, 1).len(),
        1,
        "still trapped after copy-up"
    );
}

#[test]
fn replicas_of_one_image_have_distinct_keys() {
    let a = Container::start(&[("/secret.txt", "same image\n")], &[]);
    let b = Container::start(&[("/secret.txt", "same image\n")], &[]);
    let ka = Root::open(a.root())
        .expect("a")
        .resolve("/secret.txt")
        .expect("a")
        .key;
    let kb = Root::open(b.root())
        .expect("b")
        .resolve("/secret.txt")
        .expect("b")
        .key;
    assert_ne!(ka, kb, "each container's overlay has its own device");
    let (e, rx) = engine(TierChoice::Tracepoint);
    e.arm(
        ka,
        TrapValue {
            trap_id: 1,
            block: false,
            conditions: 0,
        },
    )
    .expect("arm a");
    b.exec("cat /secret.txt");
    assert!(
        events_for(&rx, ka, quiet()).is_empty(),
        "b's copy is not a's trap"
    );
    a.exec("cat /secret.txt");
    assert_eq!(events_until(&rx, ka, 1).len(), 1);
}
