//! Other processes' tracing programs: they slow every syscall on the
//! machine, so a measurement waits for them to go away and is taken again
//! (or reported) when one showed up meanwhile.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{env_or, progress};

/// How long to wait for other processes' tracing links to go away
/// (`KIVE_BENCH_QUIET_WAIT_S`, default 120 s).
fn quiet_wait() -> Duration {
    Duration::from_secs(env_or("KIVE_BENCH_QUIET_WAIT_S", 120u64).unwrap_or(120))
}

/// Measurements tried before one with foreign links is kept
/// (`KIVE_BENCH_TRIES`, default 5).
pub(super) fn tries() -> usize {
    env_or("KIVE_BENCH_TRIES", 5usize).unwrap_or(5).max(1)
}

/// Links that run programs on syscalls or tracepoints, whoever owns them.
fn tracing_links() -> usize {
    use libbpf_rs::query::{LinkInfoIter, LinkTypeInfo};
    LinkInfoIter::default()
        .filter(|l| {
            matches!(
                l.info,
                LinkTypeInfo::RawTracepoint(_)
                    | LinkTypeInfo::Tracing(_)
                    | LinkTypeInfo::PerfEvent(_)
                    | LinkTypeInfo::KprobeMulti(_)
                    | LinkTypeInfo::UprobeMulti(_)
                    | LinkTypeInfo::Unknown
            )
        })
        .count()
}

/// Another process's tracing programs slow every syscall on the machine:
/// count them so that a contaminated measurement is reported.
fn foreign_links(ours: usize) -> usize {
    tracing_links().saturating_sub(ours)
}

/// Waits (at most `QUIET_WAIT`) until no other process has tracing links.
pub(super) fn wait_quiet(ours: usize) {
    let deadline = Instant::now() + quiet_wait();
    let mut said = false;
    while foreign_links(ours) > 0 && Instant::now() < deadline {
        if !said {
            progress(format_args!(
                "another process has tracing BPF links attached: waiting (at most {} s) for it to finish",
                quiet_wait().as_secs()
            ));
            said = true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs `f` while a thread samples foreign tracing links every 100 ms;
/// returns `f`'s result and the most foreign links seen.
pub(super) fn watched<T>(ours: usize, f: impl FnOnce() -> T) -> (T, usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(AtomicUsize::new(foreign_links(ours)));
    let watcher = {
        let (stop, seen) = (Arc::clone(&stop), Arc::clone(&seen));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                seen.fetch_max(foreign_links(ours), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let out = f();
    stop.store(true, Ordering::Relaxed);
    let _ = watcher.join();
    let foreign = seen.load(Ordering::Relaxed).max(foreign_links(ours));
    (out, foreign)
}

/// Measures with `f` until no foreign tracing link was seen during the
/// measurement (at most `TRIES` times); returns the last result and whether
/// it was contaminated.
pub(super) fn measure_clean<T>(
    ours: usize,
    mut f: impl FnMut() -> Result<T, String>,
) -> Result<(T, bool), String> {
    let mut attempt = 1;
    loop {
        wait_quiet(ours);
        let (r, foreign) = watched(ours, &mut f);
        let r = r?;
        if foreign == 0 {
            return Ok((r, false));
        }
        if attempt == tries() {
            progress(format_args!(
                "warning: {foreign} tracing link(s) of another process were attached during this measurement (kept after {} tries)", tries()
            ));
            return Ok((r, true));
        }
        progress(format_args!(
            "{foreign} tracing link(s) of another process appeared during the measurement: measuring again"
        ));
        attempt += 1;
    }
}
