//! The method section printed after the tables: how the run was made.

use kive::trap::EngineConfig;

use super::quiet::tries;
use super::Args;

pub(super) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// What the method section reports about the run.
pub(super) struct RunInfo<'a> {
    pub(super) kernel: String,
    pub(super) cpus: usize,
    pub(super) iterations: u64,
    pub(super) rounds: usize,
    pub(super) args: &'a Args,
    pub(super) load_before: String,
    pub(super) load_after: String,
    /// Measurements kept although foreign tracing links were attached.
    pub(super) foreign: usize,
    /// Whether every open+close child ran at nice -20, pinned (None: no table).
    pub(super) tuned: Option<bool>,
}

pub(super) fn method(r: &RunInfo<'_>) -> String {
    let mut m = String::new();
    m.push_str("### method\n\n");
    m.push_str(&format!(
        "- Machine: kernel {}, {} CPUs; load average {} before, {} after.\n",
        r.kernel, r.cpus, r.load_before, r.load_after
    ));
    m.push_str(&format!(
        "- open+close: a child process (this binary re-executed) calls libc `open(path, O_RDONLY)` + \
         `close` on an untrapped file {} times after {} untimed warm-up iterations. CPU ns/op = the \
         child's own CPU time over the loop (CLOCK_THREAD_CPUTIME_ID, user + system: the BPF programs \
         run in its syscalls) / iterations: on a shared machine it leaves out the time the child \
         waits for a CPU, which wall time (CLOCK_MONOTONIC, also shown) includes.{}\n",
        r.iterations,
        (r.iterations / 100).clamp(1, 10_000),
        match r.tuned {
            Some(true) => " The child runs at nice -20, pinned to the last CPU.",
            Some(false) => " The child could not be given nice -20 and a pinned CPU (or --no-tune).",
            None => "",
        }
    ));
    m.push_str(
        "- The child is not the loader, so the kernel's `self_tgid` filter cannot shorten its \
         path (on every tier the untrapped path ends at the map lookup, before that filter, \
         anyway). Each tier row loads the engine, arms its traps (the real trapped file elsewhere \
         + random keys on the same device whose inode numbers match no file; on the fanotify \
         tier, which marks inodes, real decoy files in the bench directory, with its reader \
         running), measures, and unloads. The kernel's hit counter is checked to be 0 after each measurement.\n",
    );
    m.push_str(
        "- Rows \"+ notification\" (and \"change notification only\") also hold kive's change \
         notification for the trapped file, as the runtime does for each entry it watches \
         (`node::watch`: a notification-class fanotify group marking each directory of the \
         path and the file; asked for no open or close-nowrite event, checked to have read \
         none). Once a filesystem has any watcher (this group, the fanotify tier's marks, or \
         any inotify watch such as a kubelet's), the kernel runs its fsnotify hooks on every \
         open and close on it: \"change notification only\" against the baseline is that \
         first watcher's cost; the own cost column gives a tier row with notification against \
         \"change notification only\" in the same round, what the tier adds where kive \
         watches (\"as per round\": the reference is the baseline, as in the per-round \
         column). Measured on the kernel named above; the hooks differ between kernels.\n",
    );
    m.push_str(&format!(
        "- {} interleaved rounds: each round measures every configuration once, in an order \
         rotated by one each round, so drift (other load, CPU frequency) spreads over all rows. \
         Reported: median per configuration, its ratio to the baseline median of the same run, \
         min–max, the ratio of the minima (the run least disturbed by other load, the best \
         estimate of the intrinsic cost on a busy machine), and the per-round ratios (each to \
         the same round's baseline, so that load which changes between rounds cancels out): \
         their median and range.\n",
        r.rounds
    ));
    m.push_str(&format!(
        "- Throughput: the engine's reader thread (poll timeout 10 ms, decodes each record and \
         counts the trapped key's events) runs in this process; a child process (not the loader, \
         whose own opens are filtered) opens+closes the trapped file {} times as fast as it can. \
         events/s received = events received / (time of the last event received − start of the \
         child's loop). Drops = the kernel's per-CPU drop counter (ring buffer full, {} MiB). \
         The per-(trap, process) flood limit is off (it would pass 16 events, then 64/s). \
         {} rounds, interleaved.\n",
        r.args.events,
        EngineConfig::default().ring_bytes / (1024 * 1024),
        r.args.throughput_rounds
    ));
    m.push_str(&format!(
        "- Other processes' tracing BPF programs (e.g. a concurrent kernel test) slow every \
         syscall: before each measurement the bench waits for their links to go away, samples \
         them every 100 ms during it, and measures again (up to {} times) if one appeared.\n",
        tries()
    ));
    if r.foreign > 0 {
        m.push_str(&format!(
            "- WARNING: {} measurement(s) were kept although another process had tracing BPF \
             links attached: treat this run's numbers with care.\n",
            r.foreign
        ));
    } else {
        m.push_str(
            "- No measurement was kept that ran alongside another process's tracing links.\n",
        );
    }
    m
}
