//! Giving the heap memory freed by a large change back to the kernel.
//!
//! kive's Rust allocations go to mimalloc (`crate::allocator`), which gives
//! emptied pages back by itself. glibc's `malloc` still serves C code
//! (libbpf) and keeps what a thread frees in that thread's arena for reuse:
//! `malloc_trim` returns the free pages of every arena after a reconcile of
//! thousands of entries.

/// Entries added or removed by one change past which its freed memory is
/// given back (a pod's change, 20-odd entries, is not worth the walk over
/// the arenas).
pub const RELEASE_AFTER: usize = 4096;

/// Whether a change of `changed` entries is large enough to give its freed
/// memory back.
pub fn worth_releasing(changed: usize) -> bool {
    changed >= RELEASE_AFTER
}

/// Returns the free pages of every malloc arena to the kernel; whether any
/// was (always `false` where the C library is not glibc).
pub fn release_free() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only walks and trims glibc's own arenas (it
        // takes their locks); 0 = keep no extra pad at the top of the heap.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_large_change_is_worth_the_walk() {
        assert!(!worth_releasing(0));
        assert!(!worth_releasing(40), "one pod's restart: 20 old, 20 new");
        assert!(worth_releasing(RELEASE_AFTER));
        assert!(worth_releasing(100_000), "a cold start");
    }
}
