//! When the ring-buffer reader drains again (pure: the caller says what
//! time it is). While events are sparse, at once: each is read as soon as
//! the kernel wakes the reader. While they come back to back (a flood), after
//! a short pause: the reader then takes a batch per wake-up instead of one
//! event per wake-up (and so does the consumer it queues them for), at the
//! cost of at most the pause in latency. Nothing is dropped by waiting: the
//! ring holds thousands of events, and a full ring is counted as ever.

use std::time::{Duration, Instant};

/// Events closer than this to the reader's return to waiting are back to
/// back.
pub const BUSY_GAP: Duration = Duration::from_micros(200);
/// Drains in a row that found events back to back before the reader
/// pauses: a few events that bunched up (a paced opener catching up after
/// the scheduler held it) are still read at once.
pub const STREAK: u32 = 4;
/// How long the reader lets a flood's events gather.
pub const PAUSE: Duration = Duration::from_micros(500);

/// The reader's pacing.
#[derive(Debug, Clone)]
pub struct Coalesce {
    busy_gap: Duration,
    pause: Duration,
    streak: u32,
    /// When the reader last went back to waiting for events.
    resumed: Option<Instant>,
    /// Drains in a row that found events back to back.
    busy: u32,
}

impl Default for Coalesce {
    fn default() -> Self {
        Self::new(BUSY_GAP, PAUSE, STREAK)
    }
}

impl Coalesce {
    /// Pauses `pause` after `streak` drains in a row that each found
    /// events less than `busy_gap` after the reader went back to waiting.
    pub fn new(busy_gap: Duration, pause: Duration, streak: u32) -> Self {
        Self {
            busy_gap,
            pause,
            streak: streak.max(1),
            resumed: None,
            busy: 0,
        }
    }

    /// After a drain at `now` that handled `events`: how long to wait
    /// before the next one (`None`: wait for the kernel's wake-up at once).
    pub fn after_drain(&mut self, events: u64, now: Instant) -> Option<Duration> {
        let back_to_back = events > 0
            && self
                .resumed
                .is_some_and(|r| now.saturating_duration_since(r) < self.busy_gap);
        self.busy = if back_to_back { self.busy + 1 } else { 0 };
        (self.busy >= self.streak).then_some(self.pause)
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
        // a paced opener's few bunched events, then the pace again: no pause
        let mut t = t0 + 1_000 * US;
        for _ in 1..STREAK {
            c.resume(t);
            assert_eq!(c.after_drain(1, t + 5 * US), None);
            t += 6 * US;
        }
        c.resume(t);
        assert_eq!(c.after_drain(1, t + 500 * US), None, "the streak is over");
        c.resume(t + 501 * US);
        assert_eq!(c.after_drain(1, t + 505 * US), None, "and starts again");
    }

    #[test]
    fn a_flood_is_read_in_batches_with_a_bounded_pause() {
        let mut c = Coalesce::default();
        let mut t = Instant::now();
        c.resume(t);
        // events were already there when the reader went back to waiting:
        // a few rounds in a row are still read at once, then it pauses
        for round in 1..STREAK {
            assert_eq!(c.after_drain(1, t + 13 * US), None, "round {round}");
            t += 14 * US;
            c.resume(t);
        }
        assert_eq!(c.after_drain(1, t + 13 * US), Some(PAUSE));
        t += 13 * US + PAUSE;
        c.resume(t);
        // and still are after the pause: it keeps pausing, never longer
        assert_eq!(c.after_drain(40, t + US), Some(PAUSE));
        t += US + PAUSE;
        c.resume(t);
        // the flood stops: the next event is read at once again
        assert_eq!(c.after_drain(1, t + 5_000 * US), None);
    }
}
