//! The consumer reading the ring buffer itself (`read_in_caller`, what
//! Falco's `next_batch` does), on this machine's kernel: no reader thread
//! runs, every record the ring holds reaches `next_event`, the rescan's
//! tamper events reach it while the ring is idle, and while the consumer
//! stays away the spare thread moves the ring's records into the queue, so
//! that more than the ring holds is kept. One test in its own binary: it
//! counts this process's threads by name.

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use kive::policy::CompiledTrap;
use kive::runtime::{Runtime, RuntimeConfig};
use kive::trap::{FloodLimit, TierChoice, TrapKey};
use support::{key_of, run, scenarios, wait_for, DEADLINE};

fn config() -> RuntimeConfig {
    let mut cfg = RuntimeConfig {
        read_in_caller: true,
        ..support::runtime::config(TierChoice::Tracepoint)
    };
    // every open of the flood is an event (the kernel's per-process limit off)
    cfg.engine.flood_limit = FloodLimit {
        events: 0,
        ..FloodLimit::default()
    };
    cfg
}

/// This process's threads named `name`.
fn threads(name: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim_end() == name)
        .count()
}

/// The engine's reader threads.
fn reader_threads() -> usize {
    threads("kive-ring")
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
    let start = |traps: &[Arc<CompiledTrap>]| -> Runtime {
        let rt = support::runtime::start(&config(), traps);
        assert_eq!(reader_threads(), 0, "the consumer reads: no reader thread");
        rt
    };
    // the rescan's tamper event (the tracepoint tier's kernel side does not
    // see renames) reaches the consumer while it waits on an idle ring
    let scenarios::Replaced {
        dir: _dir,
        rt,
        path,
        new_key,
        ..
    } = scenarios::replaced_file(
        |f| support::runtime::host_traps("reading", &[(f, "")]),
        start,
    );
    let tamper = rt
        .next_event(DEADLINE)
        .expect("the rescan's tamper event, while the ring stays idle");
    assert!(tamper.tamper.is_some(), "a tamper event: {tamper:?}");
    assert_eq!(key_of(&path), new_key);

    // 2,000 opens while nobody reads (the ring holds them: 2,000 records
    // of 1,424 bytes in 4 MiB), then read: every one arrives, in order
    const OPENS: usize = 2_000;
    open_times(&path, OPENS);
    take_all(&rt, new_key, OPENS);

    // twice that while the consumer stays away, more than the ring holds:
    // the spare thread moves the first 2,000 into the queue meanwhile
    open_times(&path, OPENS);
    wait_for("the spare thread to queue the ring's records", || {
        (rt.metrics().queued == OPENS).then_some(())
    });
    open_times(&path, OPENS);
    take_all(&rt, new_key, 2 * OPENS);
    let m = rt.metrics();
    assert_eq!(
        (m.kernel.drops, m.queue_drops, m.decode_errors),
        (0, 0, 0),
        "nothing lost: {m:?}"
    );
    assert_eq!(reader_threads(), 0, "still no reader thread");
    assert_eq!(threads("kive-ring-spare"), 1, "the spare thread");
    drop(rt);
    assert_eq!(
        threads("kive-ring-spare"),
        0,
        "the spare thread ends with the runtime"
    );
}
