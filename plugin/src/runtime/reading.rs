//! Who reads the ring buffer into the consumer's queue: the engine's
//! reader thread, or the consumer itself when it waits for events anyway
//! (Falco's `next_batch`): then a read costs one wake-up (the consumer's),
//! not two (the reader thread's, then the consumer's when the reader hands
//! the read on), and the records are decoded on the thread that turns them
//! into alerts. While the consumer is away (Falco evaluating the last
//! batch), a spare thread drains the ring into the queue every poll period,
//! so that a burst still has the queue's room, not only the ring's. The
//! fanotify tier keeps its reader thread: its opener waits in `open` until
//! kive answers, whatever the consumer does.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::queue::Receiver;
use super::ring_sink::RingSink;
use crate::sync::lock;
use crate::trap::{RawEvent, RingReader, TrapError};

type Reader = Arc<Mutex<RingReader<RingSink>>>;

/// The longest single wait of the consumer for the ring: the queue also
/// takes the rescan's tamper events, which are looked for between waits.
/// Falco's `next_batch` waits at most 100 ms (`batchTimeoutMs`): its waits
/// are one read each (one wake-up per batch timeout while nothing comes).
const CALLER_WAIT: Duration = Duration::from_millis(100);

/// With no record read for this long, the spare thread wakes every
/// [`SPARE_IDLE`] instead of every poll period (the consumer wakes it again
/// with the next records it reads).
const IDLE_AFTER: Duration = Duration::from_secs(1);
/// The spare thread's period while idle.
const SPARE_IDLE: Duration = Duration::from_millis(100);

/// Where the queue's kernel events come from.
pub(super) enum Reading {
    /// The engine's reader thread fills the queue.
    Thread,
    /// The consumer runs the reads itself ([`Reading::next`]).
    Caller { reader: Reader, spare: Spare },
}

/// The thread that drains the ring while the consumer is away.
pub(super) struct Spare {
    state: Arc<SpareState>,
    handle: Option<JoinHandle<()>>,
}

struct SpareState {
    stop: AtomicBool,
    /// Waking every [`SPARE_IDLE`], not every poll period.
    idle: AtomicBool,
    /// When records were last read (ns after `since`).
    last_read_ns: AtomicU64,
    since: Instant,
}

impl SpareState {
    /// Records were just read: busy again (the parked thread woken when it
    /// was idle).
    fn read_some(&self, thread: Option<&std::thread::Thread>) {
        // SeqCst with `go_idle`: a read that ends as the thread goes idle
        // either sees it idle (and wakes it) or is seen by it
        self.last_read_ns.store(self.now_ns(), Ordering::SeqCst);
        if self.idle.swap(false, Ordering::SeqCst) {
            if let Some(t) = thread {
                t.unpark();
            }
        }
    }

    /// Idle when nothing was read for [`IDLE_AFTER`] (not when a read
    /// came meanwhile: see `read_some`).
    fn go_idle_if_quiet(&self) {
        let last = self.last_read_ns.load(Ordering::SeqCst);
        if self.now_ns().saturating_sub(last)
            < u64::try_from(IDLE_AFTER.as_nanos()).unwrap_or(u64::MAX)
        {
            return;
        }
        self.idle.store(true, Ordering::SeqCst);
        if self.last_read_ns.load(Ordering::SeqCst) != last {
            self.idle.store(false, Ordering::SeqCst);
        }
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.since.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

impl Reading {
    /// The consumer reads `reader` itself; a spare thread drains it every
    /// `poll` while the consumer is not reading.
    pub(super) fn caller(reader: RingReader<RingSink>, poll: Duration) -> Result<Self, TrapError> {
        let reader = Arc::new(Mutex::new(reader));
        let state = Arc::new(SpareState {
            stop: AtomicBool::new(false),
            idle: AtomicBool::new(false),
            last_read_ns: AtomicU64::new(0),
            since: Instant::now(),
        });
        let handle = {
            let (reader, state) = (Arc::clone(&reader), Arc::clone(&state));
            std::thread::Builder::new()
                .name("kive-ring-spare".into())
                .spawn(move || spare_loop(&reader, &state, poll))
                .map_err(TrapError::Thread)?
        };
        Ok(Self::Caller {
            reader,
            spare: Spare {
                state,
                handle: Some(handle),
            },
        })
    }

    /// The next event of `queue`, waiting at most `timeout`; in
    /// [`Reading::Caller`] the ring buffer is read while the queue is
    /// empty (at least once, even with no time left).
    pub(super) fn next(&self, queue: &Receiver<RawEvent>, timeout: Duration) -> Option<RawEvent> {
        let (reader, spare) = match self {
            Self::Thread => return queue.recv_timeout(timeout),
            Self::Caller { reader, spare } => (reader, spare),
        };
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(ev) = queue.try_recv() {
                return Some(ev);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if lock(reader).read(left.min(CALLER_WAIT)) > 0 {
                let thread = spare.handle.as_ref().map(JoinHandle::thread);
                spare.state.read_some(thread);
            }
            if let Some(ev) = queue.try_recv() {
                return Some(ev);
            }
            if Instant::now() >= deadline {
                return None;
            }
        }
    }
}

/// Every `poll` (every [`SPARE_IDLE`] once nothing was read for
/// [`IDLE_AFTER`]): drains the ring into the queue unless the consumer is
/// reading it.
fn spare_loop(reader: &Mutex<RingReader<RingSink>>, state: &SpareState, poll: Duration) {
    while !state.stop.load(Ordering::Relaxed) {
        let idle = state.idle.load(Ordering::Relaxed);
        std::thread::park_timeout(if idle { SPARE_IDLE } else { poll });
        if state.stop.load(Ordering::Relaxed) {
            break;
        }
        let drained = match reader.try_lock() {
            Ok(mut r) => r.drain(),
            Err(TryLockError::Poisoned(p)) => p.into_inner().drain(),
            // taken by the consumer: it is reading anyway
            Err(TryLockError::WouldBlock) => 0,
        };
        if drained > 0 {
            state.read_some(None);
        } else if !idle {
            state.go_idle_if_quiet();
        }
    }
}

impl Drop for Spare {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            handle.thread().unpark();
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(quiet_for: Duration) -> SpareState {
        let since = Instant::now()
            .checked_sub(quiet_for)
            .expect("the clock is past the test's quiet spell");
        SpareState {
            stop: AtomicBool::new(false),
            idle: AtomicBool::new(false),
            last_read_ns: AtomicU64::new(0),
            since,
        }
    }

    #[test]
    fn a_quiet_spell_makes_the_spare_idle_and_the_next_read_wakes_it() {
        let s = state(IDLE_AFTER * 2);
        s.go_idle_if_quiet();
        assert!(s.idle.load(Ordering::SeqCst), "nothing read for 2 s: idle");
        let me = std::thread::current();
        s.read_some(Some(&me));
        assert!(!s.idle.load(Ordering::SeqCst), "a read makes it busy again");
        // the read unparked the idle thread: its park returns at once
        let parked = Instant::now();
        std::thread::park_timeout(Duration::from_secs(600));
        assert!(
            parked.elapsed() < Duration::from_secs(600),
            "the idle spare thread was woken by the read"
        );
        s.go_idle_if_quiet();
        assert!(!s.idle.load(Ordering::SeqCst), "just read: stays busy");
    }

    #[test]
    fn a_spare_that_read_recently_stays_busy() {
        let s = state(IDLE_AFTER / 4);
        s.go_idle_if_quiet();
        assert!(
            !s.idle.load(Ordering::SeqCst),
            "quiet for less than IDLE_AFTER"
        );
    }
}
