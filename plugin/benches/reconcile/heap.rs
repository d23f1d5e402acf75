//! What the bench process's memory is made of: kive's global allocator's
//! counters (bytes the Rust code holds live, and the peak; switched on by
//! [`start`]), glibc's own view (`mallinfo2`: what its arenas hold for C
//! code, libbpf, in use or free but kept), and `VmRSS`. The gap between
//! live heap and anonymous RSS is what the allocators keep (freed memory,
//! fragmentation), C allocations and stacks.

use kive::allocator;

/// One look at the process's memory.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot {
    /// Bytes allocated through Rust's allocator and not freed (since the
    /// counters were switched on).
    pub live: usize,
    /// The most `live` has been since the last [`reset_peak`].
    pub peak: usize,
    /// glibc: bytes its arenas hold from the kernel (in use or free).
    pub arenas: usize,
    /// glibc: bytes of those free but kept (not returned to the kernel).
    pub kept_free: usize,
    /// `VmRSS`.
    pub rss: u64,
    /// `RssAnon`: heap, stacks (the rest of `VmRSS` is mapped files: code).
    pub rss_anon: u64,
}

/// Switches kive's allocator counters on (first thing in `main`).
pub fn start() {
    allocator::start_counting();
}

/// Restarts the peak from what is live now.
pub fn reset_peak() {
    allocator::reset_peak();
}

/// Now.
pub fn snapshot() -> Snapshot {
    // SAFETY: mallinfo2 only reads glibc's arena statistics.
    let mi = unsafe { libc::mallinfo2() };
    Snapshot {
        live: usize::try_from(allocator::live_bytes()).unwrap_or(0),
        peak: usize::try_from(allocator::peak_bytes()).unwrap_or(0),
        arenas: mi.arena + mi.hblkhd,
        kept_free: mi.fordblks,
        rss: rss_of("/proc/self/status"),
        rss_anon: status_kib("/proc/self/status", "RssAnon:") * 1024,
    }
}

/// `VmRSS` of a `/proc/<pid>/status` file, bytes (0 when unreadable).
pub fn rss_of(status: &str) -> u64 {
    status_kib(status, "VmRSS:") * 1024
}

/// A `kB` line of a `/proc/<pid>/status` file (0 when unreadable).
fn status_kib(status: &str, field: &str) -> u64 {
    std::fs::read_to_string(status)
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0)
}

/// Bytes as MiB.
pub fn mib(b: impl TryInto<u64>) -> f64 {
    b.try_into().unwrap_or(0) as f64 / (1024.0 * 1024.0)
}

/// Prints the phases as a table: what kive's state holds after each.
pub fn print_table(phases: &[(&str, Snapshot)], entries: usize, server_rss: u64) {
    let Some((_, base)) = phases.first() else {
        return;
    };
    println!();
    println!("| phase | RSS (bench process, no API server) | RSS growth from kive's start | of which anonymous (heap, stacks) | of which files (code) | Rust heap live, growth | per entry | Rust heap peak in the phase, growth | glibc (C code only): free, kept | glibc: in use by C (libbpf) |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (what, s) in phases {
        let live = s.live.saturating_sub(base.live);
        let anon = s.rss_anon.saturating_sub(base.rss_anon);
        let grown = s.rss.saturating_sub(base.rss);
        println!(
            "| {what} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.0} B | {:.1} MiB | {:.1} MiB | {:.1} MiB |",
            mib(s.rss),
            mib(grown),
            mib(anon),
            mib(grown.saturating_sub(anon)),
            mib(live),
            live as f64 / entries.max(1) as f64,
            mib(s.peak.saturating_sub(base.live)),
            mib(s.kept_free),
            mib(s.arenas.saturating_sub(s.kept_free)),
        );
    }
    println!(
        "sizes: a trap table entry {} B (+ its id and position in the index by id), a container's owner record {} B, a pod's view {} B (each + its strings and label maps)",
        std::mem::size_of::<kive::runtime::Entry>(),
        std::mem::size_of::<kive::runtime::ContainerOwner>(),
        std::mem::size_of::<kive::policy::pods::PodView>(),
    );
    println!(
        "the event queue holds memory only for queued events (none here); the test API server runs in its own process (RSS {:.1} MiB, not counted above)",
        mib(server_rss)
    );
}
