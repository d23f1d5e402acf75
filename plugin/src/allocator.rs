//! The allocator of kive's Rust code: mimalloc, and byte counters that a
//! benchmark can switch on.
//!
//! A `#[global_allocator]` only serves the Rust code of the binary it is
//! linked into: in libkive.so loaded by Falco, Falco's C++ `malloc` stays
//! glibc's (no `mallopt`, no environment, no symbol override). mimalloc
//! keeps a node's long-lived entries in size-class pages apart from the
//! transient allocations of a reconcile (the decoded pod list, the plan,
//! the diff, `/proc` reads), and returns pages that empty out: glibc's
//! per-thread arenas kept ≈ 30 MiB of freed memory between live blocks
//! at 100,000 entries, which `malloc_trim` could not give back.
//!
//! Tuned at its first allocation (options of mimalloc only, never of
//! glibc or of the process): freed pages go back to the kernel at once
//! (`purge_delay` 0; the default 1 s waits for the thread to come back to
//! the allocator, and a reconcile's threads go idle), and an arena's memory
//! is committed as used (`arena_eager_commit` 0), not on reservation.
//! mimalloc still keeps a few empty pages per size class and thread for
//! reuse, so the event path's short-lived allocations do not cycle pages
//! through the kernel.
//!
//! A block freed by another thread than the one that allocated it goes
//! back to its page only when that thread allocates again: a resolver
//! thread going idle after a rescan or reconcile batch whose blocks the
//! caller freed kept those pages resident (anonymous RSS minus live heap
//! 8.6-11.2 MiB at 100,000 entries). [`give_back`] collects them where a
//! batch, a rescan pass that looked at entries, or a reconcile ends (never
//! on the event path).
//!
//! Counting (live bytes and their peak) is off unless [`start_counting`]
//! is called: then one relaxed atomic add per allocation and free. Off, the
//! cost is one relaxed load.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicIsize, AtomicU8, Ordering};

use mimalloc::MiMalloc;

/// mimalloc, with optional byte counters.
pub struct KiveAlloc;

/// Not yet tuned, tuned, tuned and counting.
const UNTUNED: u8 = 0;
const TUNED: u8 = 1;
const COUNTING: u8 = 2;
static STATE: AtomicU8 = AtomicU8::new(UNTUNED);
static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

/// mimalloc v2's option numbers (`mi_option_e` of the bundled
/// `mimalloc.h`; the crate is pinned to that version).
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// What kive sets, as (option, value).
pub const OPTIONS: [(libmimalloc_sys::mi_option_t, std::ffi::c_long); 2] = [
    (MI_OPTION_PURGE_DELAY, 0),
    (MI_OPTION_ARENA_EAGER_COMMIT, 0),
];

/// Sets kive's options, once, before mimalloc's first allocation (two
/// threads may both set them: the same values).
fn tune() {
    for (option, value) in OPTIONS {
        // SAFETY: mi_option_set writes one of mimalloc's own option
        // values; no allocation, and mimalloc reads it on its next use.
        unsafe { libmimalloc_sys::mi_option_set(option, value) };
    }
    let _ = STATE.compare_exchange(UNTUNED, TUNED, Ordering::Relaxed, Ordering::Relaxed);
}

/// Tunes on the first call; whether the counters are on.
fn before_alloc() -> bool {
    match STATE.load(Ordering::Relaxed) {
        UNTUNED => {
            tune();
            STATE.load(Ordering::Relaxed) == COUNTING
        }
        s => s == COUNTING,
    }
}

fn counting() -> bool {
    STATE.load(Ordering::Relaxed) == COUNTING
}

fn grew(size: usize) {
    let size = isize::try_from(size).unwrap_or(isize::MAX);
    let now = LIVE.fetch_add(size, Ordering::Relaxed).wrapping_add(size);
    PEAK.fetch_max(now, Ordering::Relaxed);
}

fn shrank(size: usize) {
    LIVE.fetch_sub(
        isize::try_from(size).unwrap_or(isize::MAX),
        Ordering::Relaxed,
    );
}

// SAFETY: every call goes to mimalloc with the caller's layout and pointer
// unchanged; only the byte counters are added.
unsafe impl GlobalAlloc for KiveAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let count = before_alloc();
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { MiMalloc.alloc(layout) };
        if count && !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let count = before_alloc();
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { MiMalloc.alloc_zeroed(layout) };
        if count && !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { MiMalloc.dealloc(ptr, layout) };
        if counting() {
            shrank(layout.size());
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { MiMalloc.realloc(ptr, layout, new_size) };
        if counting() && !p.is_null() {
            shrank(layout.size());
            grew(new_size);
        }
        p
    }
}

/// Gives the calling thread's empty pages back: collects the blocks other
/// threads freed into its pages (mimalloc only takes them back when the
/// owning thread allocates again, and an idle resolver thread does not)
/// and frees the pages that emptied out, and looks at some of the
/// segments of exited threads; `force` also releases the pages mimalloc
/// keeps for reuse and looks at every exited thread's segment. Called
/// where a big batch of work ends (a worker's batch, a rescan pass that
/// looked at entries, a reconcile), never on the event path.
pub fn give_back(force: bool) {
    // SAFETY: mi_collect walks the calling thread's own mimalloc heap and
    // claims exited threads' segments through mimalloc's own atomics and
    // locks; no pointer of the caller is touched.
    unsafe { libmimalloc_sys::mi_collect(force) };
}

/// Starts counting live bytes (for a benchmark; never switched off). Bytes
/// allocated before are not counted, and their frees lower the count a
/// little: compare growth between two [`live_bytes`] after this call.
pub fn start_counting() {
    if !before_alloc() {
        STATE.store(COUNTING, Ordering::Relaxed);
    }
}

/// An option's value as mimalloc holds it now.
pub fn option(option: libmimalloc_sys::mi_option_t) -> std::ffi::c_long {
    // SAFETY: mi_option_get reads one of mimalloc's own option values.
    unsafe { libmimalloc_sys::mi_option_get(option) }
}

/// Bytes allocated and not freed since [`start_counting`] (0 when off).
pub fn live_bytes() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// The most [`live_bytes`] has been since the last [`reset_peak`].
pub fn peak_bytes() -> isize {
    PEAK.load(Ordering::Relaxed)
}

/// Restarts the peak from what is live now.
pub fn reset_peak() {
    PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
}
