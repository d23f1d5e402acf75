//! One tamper, one event, while the consumer reads the ring itself
//! (`read_in_caller`, what Falco's `next_batch` does), on every tier this
//! kernel offers: where the kernel has tamper hooks (lsm, trampoline,
//! fentry: Debian's 6.1 in the VM suite) its hook reports a rename as it
//! happens, read from the ring by the rescan pass before it looks, and the
//! rescan's own sighting is dropped; on the tracepoint tiers (no tamper
//! hooks) the rescan reports it. In its own binary: the other caller-mode
//! test counts this process's threads.

mod support;

use std::process::Command;
use std::time::Duration;

use kive::runtime::RuntimeConfig;
use kive::trap::{Hook, TamperKind, Tier};
use support::{key_of, run, tiers, wait_for, world_dir, DEADLINE};

/// This process's threads named `name`.
fn threads(name: &str) -> usize {
    support::threads_named("self", name)
}

/// The hook that reports a rename of a trapped file on `tier`.
fn rename_hook(tier: Tier) -> Hook {
    match tier {
        Tier::Lsm => Hook::LsmInodeRename,
        Tier::Trampoline | Tier::Fentry => Hook::FentryInodeRename,
        Tier::Tracepoint | Tier::TracepointClassic | Tier::Fanotify => Hook::Rescan,
    }
}

fn one_rename_is_one_event(tier: Tier) {
    let cfg = RuntimeConfig {
        read_in_caller: true,
        ..support::runtime::config(tiers::choice_of(tier))
    };
    let dir = world_dir();
    let path = dir.path().join("secret.txt");
    std::fs::write(&path, "s").expect("write");
    let traps = support::runtime::host_traps("reading-tamper", &[(&path, "")]);
    let rt = support::runtime::start(&cfg, &traps);
    assert_eq!(rt.tier(), tier, "the runtime runs on the tier asked");
    assert_eq!(
        (threads("kive-ring-spare"), threads("kive-ring")),
        (1, 0),
        "the consumer reads the ring on {tier}: a spare thread, no reader thread"
    );
    let key = key_of(&path);

    let moved = dir.path().join("moved.txt");
    let (mover, out) = run(Command::new("mv").arg(&path).arg(&moved));
    assert!(out.status.success(), "mv failed: {out:?}");
    // two passes at once: the first sees the rename (and on a tier with
    // tamper hooks first reads the kernel's event from the ring); the
    // second sends what the first deferred if the kernel's event was not
    // recorded by then, which would be a second event for one rename
    rt.rescan_now();
    rt.rescan_now();

    let ev = rt
        .next_event(DEADLINE)
        .unwrap_or_else(|| panic!("no tamper event on {tier} after {DEADLINE:?}"));
    let t = ev
        .tamper
        .as_ref()
        .unwrap_or_else(|| panic!("a tamper event on {tier}, not an access: {ev:?}"));
    assert_eq!(ev.key, key, "the renamed inode on {tier}: {ev:?}");
    assert_eq!(t.kind, TamperKind::Rename, "on {tier}: {ev:?}");
    assert_eq!(
        ev.hook,
        rename_hook(tier),
        "on {tier} the rename is reported by {:?}: {ev:?}",
        rename_hook(tier)
    );
    let m = rt.metrics();
    if ev.hook == Hook::Rescan {
        assert_eq!(t.old_path, path.display().to_string(), "{t:?}");
        assert_eq!(t.new_path, moved.display().to_string(), "{t:?}");
    } else {
        assert_eq!(ev.tgid, mover, "the kernel names the process: {ev:?}");
        assert_eq!(t.new_name, "moved.txt", "{t:?}");
        // read by the consumer's side (the rescan's catch-up or the spare
        // thread), not by a reader thread
        assert!(
            m.spare_read_records >= 1,
            "the kernel's event was read in caller mode on {tier}: {m:?}"
        );
    }
    rt.rescan_now();
    let twin = rt.next_event(Duration::from_millis(50));
    assert!(
        twin.is_none(),
        "one rename, one event on {tier}; also got {twin:?}"
    );
    let m = rt.metrics();
    assert_eq!(
        (m.kernel.drops, m.queue_drops, m.decode_errors),
        (0, 0, 0),
        "nothing lost on {tier}: {m:?}"
    );
    drop(rt);
    wait_for("the spare thread to end with the runtime", || {
        (threads("kive-ring-spare") == 0).then_some(())
    });
}

#[test]
fn a_renamed_trap_is_one_tamper_event_on_every_tier_when_the_consumer_reads_the_ring() {
    let offer = tiers::offer();
    let tiers: Vec<Tier> = tiers::ORDER
        .into_iter()
        .filter(|t| offer.loads(*t))
        .collect();
    assert!(!tiers.is_empty(), "no tier loads here: {offer:#?}");
    for tier in tiers {
        one_rename_is_one_event(tier);
    }
}
