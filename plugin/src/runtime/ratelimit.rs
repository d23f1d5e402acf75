//! Per-trap, per-process alert limits (pure): at most N alerts per window;
//! the alerts held back are counted and reported by the next one let through.
//!
//! Bounded: at most [`MAX_WINDOWS`] windows are held. Idle windows are swept
//! once per second of event time (a window holding a suppressed count is
//! kept [`KEEP_SUPPRESSED_NS`] past its end, for the next alert to report
//! it; the count is in the runtime's `suppressed` metric either way); when
//! full, the oldest eighth is evicted, so no alert pays more than an
//! amortized constant.

use std::collections::HashMap;

use crate::policy::model::RateLimit;

/// Most (trap entry, process) windows held.
pub const MAX_WINDOWS: usize = 100_000;
/// How long past its end a window holding a suppressed count is kept.
pub const KEEP_SUPPRESSED_NS: u64 = 600 * 1_000_000_000;
const SWEEP_EVERY_NS: u64 = 1_000_000_000;

#[derive(Debug, Clone, Copy)]
struct Window {
    start_ns: u64,
    window_ns: u64,
    sent: u32,
    suppressed: u64,
}

impl Window {
    /// Whether nothing is lost by forgetting it at `now`.
    fn expired(&self, now_ns: u64) -> bool {
        let age = now_ns.saturating_sub(self.start_ns);
        if self.suppressed == 0 {
            age >= self.window_ns
        } else {
            age >= self.window_ns.saturating_add(KEEP_SUPPRESSED_NS)
        }
    }
}

/// The limiter state of every (trap entry, process).
#[derive(Debug)]
pub struct RateLimiter {
    windows: HashMap<(u32, u32), Window>,
    max: usize,
    last_sweep_ns: u64,
    evicted: u64,
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self::with_capacity(MAX_WINDOWS)
    }
}

/// What to do with one alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send it; it reports this many alerts suppressed before it.
    Send {
        /// Suppressed since the last one sent for this trap and process.
        suppressed: u64,
    },
    /// Hold it back (counted).
    Suppress,
}

impl RateLimiter {
    /// A limiter holding at most `max` windows.
    pub fn with_capacity(max: usize) -> Self {
        Self {
            windows: HashMap::new(),
            max: max.max(8),
            last_sweep_ns: 0,
            evicted: 0,
        }
    }

    /// Decides for an alert of entry `entry` by process `tgid` at `now_ns`.
    pub fn check(&mut self, limit: RateLimit, entry: u32, tgid: u32, now_ns: u64) -> Verdict {
        if now_ns.saturating_sub(self.last_sweep_ns) >= SWEEP_EVERY_NS {
            self.sweep(now_ns);
        }
        if self.windows.len() >= self.max && !self.windows.contains_key(&(entry, tgid)) {
            self.sweep(now_ns);
            if self.windows.len() >= self.max {
                self.evict_oldest(self.max / 8);
            }
        }
        let window_ns = u64::from(limit.seconds) * 1_000_000_000;
        let w = self.windows.entry((entry, tgid)).or_insert(Window {
            start_ns: now_ns,
            window_ns,
            sent: 0,
            suppressed: 0,
        });
        w.window_ns = window_ns;
        if now_ns.saturating_sub(w.start_ns) >= window_ns {
            w.start_ns = now_ns;
            w.sent = 0;
        }
        if w.sent < limit.alerts {
            w.sent += 1;
            let suppressed = std::mem::take(&mut w.suppressed);
            Verdict::Send { suppressed }
        } else {
            w.suppressed += 1;
            Verdict::Suppress
        }
    }

    /// Forgets the windows nothing is lost by forgetting at `now_ns`.
    pub fn sweep(&mut self, now_ns: u64) {
        self.last_sweep_ns = now_ns;
        self.windows.retain(|_, w| !w.expired(now_ns));
    }

    fn evict_oldest(&mut self, n: usize) {
        let mut starts: Vec<u64> = self.windows.values().map(|w| w.start_ns).collect();
        if starts.is_empty() {
            return;
        }
        let n = n.clamp(1, starts.len());
        let (_, cut, _) = starts.select_nth_unstable(n - 1);
        let cut = *cut;
        let before = self.windows.len();
        let mut left = n;
        self.windows.retain(|_, w| {
            if left > 0 && w.start_ns <= cut {
                left -= 1;
                false
            } else {
                true
            }
        });
        self.evicted += (before - self.windows.len()) as u64;
        tracing::debug!(
            "rate limits: {} windows held, the {n} oldest evicted",
            self.windows.len()
        );
    }

    /// Number of (entry, process) windows held.
    pub fn len(&self) -> usize {
        self.windows.len()
    }

    /// Whether no window is held.
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    /// Windows evicted because the limiter was full (their counts unreported).
    pub fn evicted(&self) -> u64 {
        self.evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn n_per_window_then_the_next_one_counts_the_rest() {
        let lim = RateLimit {
            alerts: 2,
            seconds: 10,
        };
        let mut r = RateLimiter::default();
        assert_eq!(r.check(lim, 1, 100, 0), Verdict::Send { suppressed: 0 });
        assert_eq!(r.check(lim, 1, 100, S), Verdict::Send { suppressed: 0 });
        assert_eq!(r.check(lim, 1, 100, 2 * S), Verdict::Suppress);
        assert_eq!(r.check(lim, 1, 100, 3 * S), Verdict::Suppress);
        // another process and another trap have their own windows
        assert_eq!(r.check(lim, 1, 200, 3 * S), Verdict::Send { suppressed: 0 });
        assert_eq!(r.check(lim, 2, 100, 3 * S), Verdict::Send { suppressed: 0 });
        // a new window: the first alert says two were suppressed
        assert_eq!(
            r.check(lim, 1, 100, 10 * S),
            Verdict::Send { suppressed: 2 }
        );
        assert_eq!(
            r.check(lim, 1, 100, 11 * S),
            Verdict::Send { suppressed: 0 }
        );
    }

    #[test]
    fn windows_holding_a_count_are_kept_for_a_while_then_expire() {
        let lim = RateLimit {
            alerts: 1,
            seconds: 1,
        };
        let mut r = RateLimiter::default();
        r.check(lim, 1, 1, 0);
        r.check(lim, 1, 2, 0);
        r.check(lim, 1, 2, 0); // suppressed: kept until reported
        r.sweep(100 * S);
        assert_eq!(r.len(), 1, "the idle window without a count is gone");
        assert_eq!(r.check(lim, 1, 2, 100 * S), Verdict::Send { suppressed: 1 });
        r.check(lim, 1, 2, 100 * S); // suppressed again, never reported
        r.sweep(101 * S + KEEP_SUPPRESSED_NS);
        assert!(
            r.is_empty(),
            "a count nobody reports does not pin its window forever"
        );
    }

    #[test]
    fn idle_windows_are_swept_as_events_go_by() {
        let lim = RateLimit {
            alerts: 1,
            seconds: 1,
        };
        let mut r = RateLimiter::default();
        for pid in 0..1000 {
            r.check(lim, 1, pid, 0);
        }
        assert_eq!(r.len(), 1000);
        // one event 2 s later sweeps the idle ones without being asked
        r.check(lim, 1, 5000, 2 * S);
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn the_table_never_grows_past_its_bound() {
        let lim = RateLimit {
            alerts: 1,
            seconds: 3600,
        };
        let mut r = RateLimiter::with_capacity(1000);
        for pid in 0..10_000u32 {
            // all windows active and holding a count: nothing expires
            r.check(lim, 1, pid, u64::from(pid));
            r.check(lim, 1, pid, u64::from(pid));
            assert!(r.len() <= 1000, "{} windows", r.len());
        }
        assert!(r.evicted() >= 9000, "evicted {}", r.evicted());
        // the newest survive: their counts are still reported
        assert_eq!(
            r.check(lim, 1, 9999, 3601 * S),
            Verdict::Send { suppressed: 1 }
        );
    }
}
