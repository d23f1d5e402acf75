//! Per-trap, per-process alert limits (pure): at most N alerts per window;
//! the alerts held back are counted and reported by the next one let through.

use std::collections::HashMap;

use crate::policy::model::RateLimit;

#[derive(Debug, Clone, Copy)]
struct Window {
    start_ns: u64,
    sent: u32,
    suppressed: u64,
}

/// The limiter state of every (trap entry, process).
#[derive(Debug, Default)]
pub struct RateLimiter {
    windows: HashMap<(u32, u32), Window>,
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
    /// Decides for an alert of entry `entry` by process `tgid` at `now_ns`.
    pub fn check(&mut self, limit: RateLimit, entry: u32, tgid: u32, now_ns: u64) -> Verdict {
        let window_ns = u64::from(limit.seconds) * 1_000_000_000;
        let w = self.windows.entry((entry, tgid)).or_insert(Window {
            start_ns: now_ns,
            sent: 0,
            suppressed: 0,
        });
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

    /// Forgets windows older than `max_age_ns` (bounded memory).
    pub fn expire(&mut self, now_ns: u64, max_age_ns: u64) {
        self.windows
            .retain(|_, w| now_ns.saturating_sub(w.start_ns) < max_age_ns || w.suppressed > 0);
    }

    /// Number of (entry, process) windows held.
    pub fn len(&self) -> usize {
        self.windows.len()
    }

    /// Whether no window is held.
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
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
    fn old_windows_expire_unless_they_hold_a_count() {
        let lim = RateLimit {
            alerts: 1,
            seconds: 1,
        };
        let mut r = RateLimiter::default();
        r.check(lim, 1, 1, 0);
        r.check(lim, 1, 2, 0);
        r.check(lim, 1, 2, 0); // suppressed: kept until reported
        r.expire(100 * S, 10 * S);
        assert_eq!(r.len(), 1);
        assert_eq!(r.check(lim, 1, 2, 100 * S), Verdict::Send { suppressed: 1 });
    }
}
