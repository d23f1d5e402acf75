//! When the ring-buffer reader drains again (pure: the caller says what
//! time it is). While events are sparse, at once: each is read as soon as
//! the kernel wakes the reader. While they come back to back (a flood), after
//! a short pause: the reader then takes a batch per wake-up instead of one
//! event per wake-up (and so does the consumer it queues them for), at the
//! cost of at most the pause in latency. Nothing is dropped by waiting: the
//! ring holds thousands of events, and a full ring is counted as ever.

use std::time::{Duration, Instant};

/// Events closer than this to the reader's return to waiting are a flood.
pub const BUSY_GAP: Duration = Duration::from_micros(200);
/// How long the reader lets a flood's events gather.
pub const PAUSE: Duration = Duration::from_micros(500);

/// The reader's pacing.
#[derive(Debug, Clone)]
pub struct Coalesce {
    busy_gap: Duration,
    pause: Duration,
    /// When the reader last went back to waiting for events.
    resumed: Option<Instant>,
}

impl Default for Coalesce {
    fn default() -> Self {
        Self::new(BUSY_GAP, PAUSE)
    }
}

impl Coalesce {
    /// Pauses `pause` after a drain that found events less than `busy_gap`
    /// after the reader went back to waiting.
    pub fn new(busy_gap: Duration, pause: Duration) -> Self {
        Self {
            busy_gap,
            pause,
            resumed: None,
        }
    }

    /// After a drain at `now` that handled `events`: how long to wait
    /// before the next one (`None`: wait for the kernel's wake-up at once).
    pub fn after_drain(&self, events: u64, now: Instant) -> Option<Duration> {
        let resumed = self.resumed?;
        (events > 0 && now.saturating_duration_since(resumed) < self.busy_gap).then_some(self.pause)
    }

    /// The reader goes back to waiting at `now`.
    pub fn resume(&mut self, now: Instant) {
        self.resumed = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Duration = Duration::from_micros(1);

    #[test]
    fn sparse_events_are_read_at_once() {
        let mut c = Coalesce::default();
        let t0 = Instant::now();
        assert_eq!(c.after_drain(1, t0), None, "the first drain never waits");
        c.resume(t0);
        // paced at 2,000/s: the next event comes 500 µs after
        assert_eq!(c.after_drain(1, t0 + 500 * US), None);
        c.resume(t0 + 501 * US);
        // a poll that timed out with nothing
        assert_eq!(c.after_drain(0, t0 + 510 * US), None);
    }

    #[test]
    fn a_flood_is_read_in_batches_with_a_bounded_pause() {
        let mut c = Coalesce::default();
        let t0 = Instant::now();
        c.resume(t0);
        // events were already there when the reader went back to waiting
        assert_eq!(c.after_drain(1, t0 + 13 * US), Some(PAUSE));
        c.resume(t0 + 13 * US + PAUSE);
        // and still are after the pause: it keeps pausing, never longer
        assert_eq!(c.after_drain(40, t0 + 14 * US + PAUSE), Some(PAUSE));
        c.resume(t0 + 600 * US + PAUSE);
        // the flood stops: the next event is read at once again
        assert_eq!(c.after_drain(1, t0 + 5_000 * US), None);
    }
}
