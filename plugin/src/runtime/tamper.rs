//! One alert per tamper. On the tiers whose kernel side has tamper hooks
//! (lsm, trampoline, fentry) a rename, link or unlink of a trapped inode is
//! reported by the kernel as it happens, naming the process; the rescan
//! sees the same change later, without a process. The rescan's report is
//! then only a safety net: it is sent when the kernel reported nothing for
//! that inode (its event was lost in the ring or held back by the flood
//! limit, each counted as a loss), one rescan period later than it was
//! seen, so the kernel's event has surely been read by then.
//!
//! Deduplication is by inode, not by kind: the kernel sees each system
//! call (`ln secret x` is a link, `rm secret` an unlink) where the rescan
//! sees their sum (the file left its path for another name: a rename).
//!
//! Pure bookkeeping; the runtime records kernel events as they are read
//! from the ring and asks at each rescan.

use std::collections::HashMap;

use crate::trap::{Tamper, TrapKey};

/// How far before the previous rescan pass a kernel event still counts
/// (nanoseconds): a rename's hook runs just before the rename is done, so
/// a pass that looked in between sees the change only at the next pass.
const SLACK_NS: u64 = 1_000_000_000;
/// Kernel-reported keys kept for the next rescan pass at most.
pub const NAMED_MAX: usize = 4096;

/// A tamper the rescan saw, waiting one pass for the kernel's event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deferred {
    /// The entry.
    pub id: u32,
    /// The inode.
    pub key: TrapKey,
    /// What the rescan saw.
    pub tamper: Tamper,
}

/// Kernel tamper events seen lately, and the rescan's reports waiting.
#[derive(Debug, Default)]
pub struct KernelTampers {
    /// Trapped inode -> boot time (ns) of the kernel's latest tamper event.
    seen: HashMap<TrapKey, u64>,
    /// The previous pass's reports the kernel had not covered yet.
    deferred: Vec<Deferred>,
    /// Start of the current and of the previous rescan pass (boot ns).
    pass_start: u64,
    prev_start: u64,
    /// Keys the kernel reported since the rescan last took them: their
    /// entries are re-checked at the next pass.
    named: Vec<TrapKey>,
}

impl KernelTampers {
    /// A tamper event read from the kernel's ring.
    pub fn record(&mut self, key: TrapKey, ts_boot_ns: u64) {
        let t = self.seen.entry(key).or_insert(ts_boot_ns);
        *t = (*t).max(ts_boot_ns);
        if self.named.len() < NAMED_MAX && !self.named.contains(&key) {
            self.named.push(key);
        }
    }

    /// The keys reported since the previous call (at most [`NAMED_MAX`]
    /// per pass; past that, the rest are re-checked by the safety net).
    pub fn take_named(&mut self) -> Vec<TrapKey> {
        std::mem::take(&mut self.named)
    }

    /// Whether the kernel reported a change of `key` lately (since a
    /// little before the previous pass began).
    pub fn covers(&self, key: TrapKey) -> bool {
        self.seen.contains_key(&key)
    }

    /// The rescan saw `tamper` on `key`: `false` when the kernel already
    /// reported it (drop it), `true` when it waits for the next pass.
    pub fn defer(&mut self, id: u32, key: TrapKey, tamper: Tamper) -> bool {
        if self.covers(key) {
            return false;
        }
        self.deferred.push(Deferred { id, key, tamper });
        true
    }

    /// A rescan pass begins at `now` (boot ns): the previous pass's
    /// reports the kernel still has not covered, to send now.
    pub fn start_pass(&mut self, now: u64) -> Vec<Deferred> {
        self.pass_start = now;
        let waiting = std::mem::take(&mut self.deferred);
        waiting
            .into_iter()
            .filter(|d| !self.covers(d.key))
            .collect()
    }

    /// A rescan pass is over: kernel events from before the previous pass
    /// began have been looked at (by it or by this one) and are forgotten.
    pub fn end_pass(&mut self) {
        let horizon = self.prev_start.saturating_sub(SLACK_NS);
        self.seen.retain(|_, t| *t >= horizon);
        self.prev_start = self.pass_start;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trap::TamperKind;

    const S: u64 = 1_000_000_000;
    const K: TrapKey = TrapKey { dev: 1, ino: 42 };

    fn rename() -> Tamper {
        Tamper {
            kind: TamperKind::Rename,
            old_path: "/d/secret".into(),
            new_path: "/d/moved".into(),
            new_name: String::new(),
            new_dir_ino: 0,
        }
    }

    #[test]
    fn what_the_kernel_reported_is_not_reported_again() {
        let mut k = KernelTampers::default();
        assert!(k.start_pass(10 * S).is_empty());
        k.record(K, 11 * S);
        assert!(!k.defer(3, K, rename()), "covered: dropped");
        k.end_pass();
        assert!(k.start_pass(20 * S).is_empty(), "nothing waits");
    }

    #[test]
    fn a_kernel_event_read_after_the_rescan_looked_still_covers_it() {
        let mut k = KernelTampers::default();
        k.start_pass(10 * S);
        assert!(k.defer(3, K, rename()), "not covered yet: waits");
        k.end_pass();
        k.record(K, 10 * S + 5); // the reader was late
        assert!(k.start_pass(20 * S).is_empty(), "covered by then");
    }

    #[test]
    fn what_the_kernel_missed_is_reported_one_pass_later() {
        let mut k = KernelTampers::default();
        k.start_pass(10 * S);
        k.record(TrapKey { dev: 1, ino: 7 }, 10 * S); // another inode
        assert!(k.defer(3, K, rename()));
        k.end_pass();
        let due = k.start_pass(20 * S);
        assert_eq!(
            due,
            [Deferred {
                id: 3,
                key: K,
                tamper: rename()
            }]
        );
        k.end_pass();
        assert!(k.start_pass(30 * S).is_empty(), "sent once");
    }

    #[test]
    fn old_kernel_events_are_forgotten_after_two_passes() {
        let mut k = KernelTampers::default();
        k.start_pass(10 * S);
        k.record(K, 11 * S);
        k.end_pass();
        k.start_pass(20 * S);
        k.end_pass();
        assert!(k.covers(K), "the pass after it may still see the change");
        k.start_pass(30 * S);
        k.end_pass();
        assert!(
            !k.covers(K),
            "a later change of the inode is the rescan's again"
        );
    }
}
