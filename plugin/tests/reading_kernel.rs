//! The consumer reading the ring buffer itself (`read_in_caller`, what
//! Falco's `next_batch` does), on this machine's kernel: no reader thread
//! runs; the consumer's own reads deliver events; the rescan thread's
//! tamper events reach a consumer that waits on an idle ring; while the
//! consumer stays away the spare thread moves the ring's records into the
//! queue, so that more than the ring holds is kept; the spare thread ends
//! with the runtime. One test in its own binary: it counts this process's
//! threads by name.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use kive::runtime::{Runtime, RuntimeConfig};
use kive::trap::{FloodLimit, TierChoice, TrapKey};
use support::{key_of, run, wait_for, world_dir, DEADLINE};

fn config() -> RuntimeConfig {
    let mut cfg = RuntimeConfig {
        read_in_caller: true,
        // the rescan thread runs on its own: its tamper events come while
        // the consumer waits
        rescan: Duration::from_millis(200),
        ..support::runtime::config(TierChoice::Tracepoint)
    };
    // every open is an event (the kernel's per-process limit off)
    cfg.engine.flood_limit = FloodLimit {
        events: 0,
        ..FloodLimit::default()
    };
    cfg
}

/// This process's threads named `name`.
fn threads(name: &str) -> usize {
    support::threads_named("self", name)
}

/// Another process opens `path` `n` times (kive never reports its own
/// opens; each of the shell's is one event: the flood limit is off).
fn open_times(path: &Path, n: usize) {
    let (_, out) = run(Command::new("sh")
        .args([
            "-c",
            r#"i=0; while [ "$i" -lt "$1" ]; do : < "$2"; i=$((i + 1)); done"#,
            "sh",
        ])
        .arg(n.to_string())
        .arg(path));
    assert!(out.status.success(), "the opener failed: {out:?}");
}

/// Takes `n` events of `key` in order, then checks that no more came.
fn take_all(rt: &Runtime, key: TrapKey, n: usize) {
    let mut last_ts = 0;
    for got in 0..n {
        let ev = rt
            .next_event(DEADLINE)
            .unwrap_or_else(|| panic!("{got} of {n} events after {DEADLINE:?}"));
        assert_eq!(ev.key, key, "event {got} is the trapped file's");
        assert!(ev.ts_boot_ns >= last_ts, "event {got} out of order");
        last_ts = ev.ts_boot_ns;
    }
    assert!(
        rt.next_event(Duration::from_millis(50)).is_none(),
        "no event past the {n} opens"
    );
}

#[test]
fn the_consumer_reads_the_ring_itself_and_loses_nothing() {
    let dir = world_dir();
    let path = dir.path().join("config");
    std::fs::write(&path, "v1").expect("write");
    let traps = support::runtime::host_traps("reading", &[(&path, "")]);
    let rt = support::runtime::start(&config(), &traps);
    assert_eq!(
        threads("kive-ring"),
        0,
        "the consumer reads: no reader thread"
    );
    assert_eq!(threads("kive-ring-spare"), 1, "the spare thread runs");

    // an atomic writer replaces the file; the rescan thread finds it and
    // queues a tamper event (the tracepoint tier's kernel side does not see
    // renames) while the consumer waits on a ring where nothing comes: it
    // arrives while the consumer waits, not at the end of its wait
    let old_key = key_of(&path);
    let new = dir.path().join(".config.tmp");
    std::fs::write(&new, "v2").expect("write");
    run(Command::new("mv").arg(&new).arg(&path));
    let waited = Instant::now();
    let tamper = rt
        .next_event(DEADLINE)
        .expect("the rescan's tamper event, while the ring stays idle");
    // the rescan runs every 200 ms and a wait for the ring lasts 100 ms at
    // most: 10 s is 30 times that, a wait to the deadline is 120 s
    assert!(
        waited.elapsed() < Duration::from_secs(10),
        "the tamper event came {:?} after the consumer began to wait",
        waited.elapsed()
    );
    let t = tamper.tamper.as_ref().expect("a tamper event");
    assert_eq!(tamper.key, old_key, "the replaced inode: {t:?}");
    let new_key = key_of(&path);
    wait_for("the new file armed", || {
        (rt.kernel_keys() == [new_key]).then_some(())
    });

    // the consumer's own reads deliver: an access while it waits (the spare
    // may take one that comes before the consumer waits: tried again)
    wait_for("an event the consumer read itself", || {
        let opener = std::thread::spawn({
            let path = path.clone();
            move || open_times(&path, 1)
        });
        let ev = rt.next_event(DEADLINE);
        opener.join().expect("the opener thread");
        assert_eq!(ev.map(|e| e.key), Some(new_key), "the access is delivered");
        (rt.metrics().caller_read_records > 0).then_some(())
    });

    // 2,000 opens while nobody reads (2,000 records of 1,432 bytes fit in
    // the 4 MiB ring), then read: every one arrives, in order
    const OPENS: usize = 2_000;
    open_times(&path, OPENS);
    take_all(&rt, new_key, OPENS);

    // twice that while the consumer stays away, more than the ring holds:
    // the spare thread moves the first 2,000 into the queue meanwhile
    let spare_before = rt.metrics().spare_read_records;
    open_times(&path, OPENS);
    wait_for("the spare thread to queue the ring's records", || {
        (rt.metrics().queued == OPENS).then_some(())
    });
    open_times(&path, OPENS);
    take_all(&rt, new_key, 2 * OPENS);
    let m = rt.metrics();
    assert!(
        m.spare_read_records - spare_before >= OPENS as u64,
        "the spare thread moved the first 2,000: {m:?}"
    );
    assert_eq!(
        (m.kernel.drops, m.queue_drops, m.decode_errors),
        (0, 0, 0),
        "nothing lost: {m:?}"
    );
    assert_eq!(threads("kive-ring"), 0, "still no reader thread");
    drop(rt);
    wait_for("the spare thread to end with the runtime", || {
        (threads("kive-ring-spare") == 0).then_some(())
    });
}
