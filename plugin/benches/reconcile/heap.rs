//! What the bench process's memory is made of: a counting global allocator
//! (bytes kive's Rust code holds live, and the peak), glibc's own view
//! (`mallinfo2`: memory its arenas hold, in use or free but kept), and
//! `VmRSS`. The gap between live heap and RSS is the allocator keeping
//! freed memory (peaks, fragmentation, per-thread arenas), code and stacks.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system allocator, counted.
pub struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(size: usize) {
    let now = LIVE.fetch_add(size, Ordering::Relaxed) + size;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call goes to `System` with the caller's layout and pointer
// unchanged; only the byte counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        p
    }
}

/// One look at the process's memory.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot {
    /// Bytes allocated through Rust's allocator and not freed.
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

/// Restarts the peak from what is live now.
pub fn reset_peak() {
    PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
}

/// Now.
pub fn snapshot() -> Snapshot {
    // SAFETY: mallinfo2 only reads glibc's arena statistics.
    let mi = unsafe { libc::mallinfo2() };
    Snapshot {
        live: LIVE.load(Ordering::Relaxed),
        peak: PEAK.load(Ordering::Relaxed),
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
    println!("| phase | RSS (bench process, no API server) | RSS growth from kive's start | of which anonymous (heap, stacks) | of which files (code) | Rust heap live, growth | per entry | Rust heap peak in the phase, growth | glibc: free, kept | glibc: in use by C (libbpf) |");
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
            mib(s.arenas.saturating_sub(s.kept_free).saturating_sub(s.live)),
        );
    }
    println!(
        "sizes: a trap table entry {} B (+ its hash bucket's id and control byte), a container's owner record {} B, a pod's view {} B (each + its strings and label maps)",
        std::mem::size_of::<kive::runtime::Entry>(),
        std::mem::size_of::<kive::runtime::ContainerOwner>(),
        std::mem::size_of::<kive::policy::pods::PodView>(),
    );
    println!(
        "the event queue holds memory only for queued events (none here); the test API server runs in its own process (RSS {:.1} MiB, not counted above)",
        mib(server_rss)
    );
}
