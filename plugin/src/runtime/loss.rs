//! Loss reports: trap hits that never became alerts (the kernel's ring
//! buffer full, the consumer queue full, the kernel's flood limit) are not
//! only counted: at most once per period the consumer gets a loss report,
//! an alert with `metadata.loss` that Falco rules can match, and the loss
//! is logged at WARN (as often as the reports, no more). Pure logic; the
//! runtime feeds it its counters.

use std::time::{Duration, Instant};

use crate::alert::LossMetadata;

/// Turns the cumulative loss counters into per-period reports.
#[derive(Debug)]
pub struct LossTracker {
    every: Duration,
    reported: LossMetadata,
    last_check: Option<Instant>,
}

impl LossTracker {
    /// Reports at most once per `every`.
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            reported: LossMetadata::default(),
            last_check: None,
        }
    }

    /// Whether the counters are due for a look at `now` (one look per
    /// period: reading them costs a syscall).
    pub fn due(&self, now: Instant) -> bool {
        self.last_check
            .is_none_or(|t| now.saturating_duration_since(t) >= self.every)
    }

    /// The losses since the previous report, given the cumulative
    /// counters; `None` when nothing was lost. Marks the check done.
    pub fn check(&mut self, now: Instant, totals: LossMetadata) -> Option<LossMetadata> {
        self.last_check = Some(now);
        let delta = LossMetadata {
            ring: totals.ring.saturating_sub(self.reported.ring),
            queue: totals.queue.saturating_sub(self.reported.queue),
            limited: totals.limited.saturating_sub(self.reported.limited),
        };
        self.reported = totals;
        (delta.total() > 0).then_some(delta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loss(ring: u64, queue: u64, limited: u64) -> LossMetadata {
        LossMetadata {
            ring,
            queue,
            limited,
        }
    }

    #[test]
    fn reports_the_losses_since_the_previous_report_once_per_period() {
        let t0 = Instant::now();
        let mut t = LossTracker::new(Duration::from_secs(1));
        assert!(t.due(t0));
        assert_eq!(t.check(t0, loss(0, 0, 0)), None, "nothing lost: no report");
        assert!(!t.due(t0 + Duration::from_millis(500)));
        let t1 = t0 + Duration::from_secs(1);
        assert!(t.due(t1));
        assert_eq!(t.check(t1, loss(3, 1, 40)), Some(loss(3, 1, 40)));
        let t2 = t1 + Duration::from_secs(1);
        assert_eq!(t.check(t2, loss(3, 1, 45)), Some(loss(0, 0, 5)));
        assert_eq!(t.check(t2 + Duration::from_secs(1), loss(3, 1, 45)), None);
    }
}
