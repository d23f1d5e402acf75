//! How often the spare reader thread ([`super::reading`]) drains the ring
//! while the consumer is away: pure bookkeeping of what the reads found,
//! shared by the consumer (which tells it) and the spare thread (which
//! asks it for its next period and parks that long).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// The period while records trickle in (as often as the reader thread
/// polled).
pub const SPARE_BUSY: Duration = Duration::from_millis(10);
/// The period during a flood: the default ring (4 MiB, ~2,900 records)
/// holds this long of 1.4 million events a second, the queue the rest of
/// a burst that comes while the consumer is away.
pub const SPARE_FLOOD: Duration = Duration::from_millis(2);
/// The period once nothing was read for [`IDLE_AFTER`], while the
/// consumer waits on the ring (the kernel wakes it for the next record).
pub const SPARE_IDLE: Duration = Duration::from_millis(100);
/// A read of this many records or more is a flood's.
pub const FLOOD_READ: u64 = 32;
/// A flood is over when no read was a flood's for this long.
pub const FLOOD_FOR: Duration = Duration::from_millis(100);
/// Quiet for this long: idle.
pub const IDLE_AFTER: Duration = Duration::from_secs(1);

/// What the reads found lately.
pub struct SparePace {
    /// The spare thread is to stop.
    pub stop: AtomicBool,
    idle: AtomicBool,
    flood: AtomicBool,
    /// The consumer waits in a read: a record that comes wakes it.
    consumer_waits: AtomicBool,
    /// When records were last read, and a flood's read (ns after `since`).
    last_read_ns: AtomicU64,
    last_flood_ns: AtomicU64,
    since: Instant,
}

impl Default for SparePace {
    fn default() -> Self {
        Self::since(Instant::now())
    }
}

impl SparePace {
    /// Nothing read since `since`.
    pub fn since(since: Instant) -> Self {
        Self {
            stop: AtomicBool::new(false),
            idle: AtomicBool::new(false),
            flood: AtomicBool::new(false),
            consumer_waits: AtomicBool::new(false),
            last_read_ns: AtomicU64::new(0),
            last_flood_ns: AtomicU64::new(0),
            since,
        }
    }

    /// A read found `n` records (`n` > 0): busy again, in a flood if `n`
    /// is a flood's; the spare `thread` (when the consumer tells) is woken
    /// when that shortens its period.
    pub fn read(&self, n: u64, thread: Option<&Thread>) {
        let now = self.now_ns();
        // SeqCst with `after_spare_drain`: a read that ends as the thread goes
        // idle either sees it idle (and wakes it) or is seen by it
        self.last_read_ns.store(now, Ordering::SeqCst);
        let mut wake = self.idle.swap(false, Ordering::SeqCst);
        if n >= FLOOD_READ {
            self.last_flood_ns.store(now, Ordering::Relaxed);
            wake |= !self.flood.swap(true, Ordering::Relaxed);
        }
        if let (true, Some(t)) = (wake, thread) {
            t.unpark();
        }
    }

    /// The consumer begins (`true`) or ends (`false`) a wait for events.
    pub fn consumer_waits(&self, waits: bool) {
        self.consumer_waits.store(waits, Ordering::SeqCst);
    }

    /// The spare thread's next period: idle only while the consumer waits
    /// on the ring; a consumer kept away (Falco busy, `kive run` blocked on
    /// its stdout) has the spare read as often as records trickle, however
    /// long the ring was quiet.
    pub fn period(&self) -> Duration {
        if self.idle.load(Ordering::Relaxed) && self.consumer_waits.load(Ordering::SeqCst) {
            SPARE_IDLE
        } else if self.flood.load(Ordering::Relaxed) {
            SPARE_FLOOD
        } else {
            SPARE_BUSY
        }
    }

    /// After the spare thread's drain of `drained` records: a flood with
    /// no flood's read for [`FLOOD_FOR`] is over; with nothing read for
    /// [`IDLE_AFTER`], idle (not when a read came meanwhile).
    pub fn after_spare_drain(&self, drained: u64) {
        if drained > 0 {
            self.read(drained, None);
        }
        let now = self.now_ns();
        if now.saturating_sub(self.last_flood_ns.load(Ordering::Relaxed)) >= ns(FLOOD_FOR) {
            // a flood's read racing this one sets it again at its next
            self.flood.store(false, Ordering::Relaxed);
        }
        let last = self.last_read_ns.load(Ordering::SeqCst);
        if self.idle.load(Ordering::Relaxed) || now.saturating_sub(last) < ns(IDLE_AFTER) {
            return;
        }
        self.idle.store(true, Ordering::SeqCst);
        if self.last_read_ns.load(Ordering::SeqCst) != last {
            self.idle.store(false, Ordering::SeqCst);
        }
    }

    fn now_ns(&self) -> u64 {
        ns(self.since.elapsed())
    }
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nothing read for `quiet_for`.
    fn quiet_for(quiet_for: Duration) -> SparePace {
        let since = Instant::now()
            .checked_sub(quiet_for)
            .expect("the clock is past the test's quiet spell");
        SparePace::since(since)
    }

    /// Whether this thread was unparked (its park returns at once).
    fn was_unparked() -> bool {
        let parked = Instant::now();
        std::thread::park_timeout(Duration::from_millis(500));
        parked.elapsed() < Duration::from_millis(500)
    }

    #[test]
    fn a_quiet_spell_idles_the_spare_and_the_next_read_wakes_it() {
        let p = quiet_for(IDLE_AFTER * 2);
        p.consumer_waits(true);
        assert_eq!(p.period(), SPARE_BUSY, "busy until a quiet wake-up");
        p.after_spare_drain(0);
        assert_eq!(p.period(), SPARE_IDLE, "nothing read for 2 s: idle");
        let me = std::thread::current();
        p.read(1, Some(&me));
        assert_eq!(p.period(), SPARE_BUSY, "a read makes it busy again");
        assert!(
            was_unparked(),
            "the idle spare thread was woken by the read"
        );
        p.after_spare_drain(0);
        assert_eq!(p.period(), SPARE_BUSY, "just read: stays busy");
    }

    #[test]
    fn a_flood_shortens_the_period_until_its_reads_stop() {
        let p = quiet_for(FLOOD_FOR * 3);
        let me = std::thread::current();
        p.read(FLOOD_READ - 1, Some(&me));
        assert_eq!(p.period(), SPARE_BUSY, "a small read is no flood");
        assert!(!was_unparked(), "nothing to wake for");
        p.read(FLOOD_READ, Some(&me));
        assert_eq!(p.period(), SPARE_FLOOD, "a flood's read");
        assert!(was_unparked(), "woken to its shorter period");
        p.read(FLOOD_READ, Some(&me));
        p.after_spare_drain(0);
        assert_eq!(p.period(), SPARE_FLOOD, "the flood's read was just now");
        assert!(!was_unparked(), "already in the flood's period");
        // the flood's last read FLOOD_FOR ago
        let p = quiet_for(FLOOD_FOR * 3);
        p.read(FLOOD_READ, None);
        p.last_flood_ns.store(0, Ordering::Relaxed);
        p.after_spare_drain(0);
        assert_eq!(p.period(), SPARE_BUSY, "over: back to the trickle's period");
    }

    #[test]
    fn small_drains_end_a_flood_after_its_last_big_read() {
        let p = quiet_for(FLOOD_FOR * 3);
        p.read(FLOOD_READ, None);
        p.after_spare_drain(FLOOD_READ - 1);
        assert_eq!(p.period(), SPARE_FLOOD, "the flood's read was just now");
        p.last_flood_ns.store(0, Ordering::Relaxed);
        p.after_spare_drain(FLOOD_READ - 1);
        assert_eq!(
            p.period(),
            SPARE_BUSY,
            "a trickle since FLOOD_FOR: no flood"
        );
        p.after_spare_drain(FLOOD_READ);
        assert_eq!(
            p.period(),
            SPARE_FLOOD,
            "the spare's own big drain is a flood's"
        );
    }

    #[test]
    fn a_quiet_ring_idles_the_spare_only_while_the_consumer_waits_on_it() {
        let p = quiet_for(IDLE_AFTER * 2);
        p.after_spare_drain(0);
        assert_eq!(
            p.period(),
            SPARE_BUSY,
            "the consumer is away (nobody the kernel would wake): the trickle's period"
        );
        p.consumer_waits(true);
        assert_eq!(p.period(), SPARE_IDLE, "the consumer waits on the ring");
        p.consumer_waits(false);
        assert_eq!(p.period(), SPARE_BUSY, "away again");
    }

    #[test]
    fn a_spare_that_read_recently_stays_busy() {
        let p = quiet_for(IDLE_AFTER / 4);
        p.after_spare_drain(0);
        assert_eq!(p.period(), SPARE_BUSY, "quiet for less than IDLE_AFTER");
    }
}
