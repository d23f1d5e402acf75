//! Who reads the ring buffer into the consumer's queue: the engine's
//! reader thread, or the consumer itself when it waits for events anyway
//! (Falco's `next_batch`): then a read costs one wake-up (the consumer's),
//! not two (the reader thread's, then the consumer's when the reader hands
//! the read on), and the records are decoded on the thread that turns them
//! into alerts. While the consumer is away (Falco evaluating the last
//! batch), a spare thread drains the ring into the queue, every 2 ms in a
//! flood (the ring need hold only that long's records, the queue takes the
//! rest of a burst), every 10 ms while records trickle, every 100 ms once
//! idle while the consumer waits on the ring ([`super::spare_pace`]).
//! The fanotify tier keeps its reader thread: its opener waits in `open`
//! until kive answers, whatever the consumer does.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::queue::Receiver;
use super::ring_sink::RingSink;
use super::spare_pace::SparePace;
use super::Counters;
use crate::sync::lock;
use crate::trap::{RawEvent, RingReader, TrapError};

/// The consumer's reader, shared with the spare thread and the rescan.
pub(super) type Reader = Arc<Mutex<RingReader<RingSink>>>;

/// The longest single wait of the consumer for the ring: the queue also
/// takes the rescan's tamper events, which are looked for between waits.
/// Falco's `next_batch` waits at most 100 ms (`batchTimeoutMs`): its waits
/// are one read each (one wake-up per batch timeout while nothing comes).
const CALLER_WAIT: Duration = Duration::from_millis(100);

/// Where the queue's kernel events come from.
pub(super) enum Reading {
    /// The engine's reader thread fills the queue.
    Thread,
    /// The consumer runs the reads itself ([`Reading::next`]).
    Caller {
        reader: Reader,
        counters: Arc<Counters>,
        spare: Spare,
    },
}

/// The thread that drains the ring while the consumer is away.
pub(super) struct Spare {
    state: Arc<SparePace>,
    handle: Option<JoinHandle<()>>,
}

impl Reading {
    /// The consumer reads `reader` itself; a spare thread drains it while
    /// the consumer is not reading. Records read are counted in `counters`.
    pub(super) fn caller(
        reader: RingReader<RingSink>,
        counters: Arc<Counters>,
    ) -> Result<Self, TrapError> {
        let reader = Arc::new(Mutex::new(reader));
        let state = Arc::new(SparePace::default());
        let handle = {
            let (reader, state) = (Arc::clone(&reader), Arc::clone(&state));
            let counters = Arc::clone(&counters);
            std::thread::Builder::new()
                .name("kive-ring-spare".into())
                .spawn(move || spare_loop(&reader, &state, &counters))
                .map_err(TrapError::Thread)?
        };
        Ok(Self::Caller {
            reader,
            counters,
            spare: Spare {
                state,
                handle: Some(handle),
            },
        })
    }

    /// The consumer's reader (`None`: the reader thread reads).
    pub(super) fn reader(&self) -> Option<Reader> {
        match self {
            Self::Thread => None,
            Self::Caller { reader, .. } => Some(Arc::clone(reader)),
        }
    }

    /// The next event of `queue`, waiting at most `timeout`; in
    /// [`Reading::Caller`] the ring buffer is read while the queue is
    /// empty (at least once, even with no time left).
    pub(super) fn next(&self, queue: &Receiver<RawEvent>, timeout: Duration) -> Option<RawEvent> {
        let (reader, counters, spare) = match self {
            Self::Thread => return queue.recv_timeout(timeout),
            Self::Caller {
                reader,
                counters,
                spare,
            } => (reader, counters, spare),
        };
        let deadline = Instant::now() + timeout;
        let _waits = Waits::new(&spare.state);
        loop {
            if let Some(ev) = queue.try_recv() {
                return Some(ev);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let mut r = lock(reader);
            // the spare or the rescan may have just moved the ring's records
            // into the queue while this waited for the lock: no new record
            // would wake the read
            if let Some(ev) = queue.try_recv() {
                return Some(ev);
            }
            let n = r.read(left.min(CALLER_WAIT));
            drop(r);
            if n > 0 {
                counters.caller_reads.fetch_add(n, Ordering::Relaxed);
                let thread = spare.handle.as_ref().map(JoinHandle::thread);
                spare.state.read(n, thread);
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

/// The consumer waits for events (in [`Reading::next`]) until dropped.
struct Waits<'a>(&'a SparePace);

impl<'a> Waits<'a> {
    fn new(pace: &'a SparePace) -> Self {
        pace.consumer_waits(true);
        Self(pace)
    }
}

impl Drop for Waits<'_> {
    fn drop(&mut self) {
        self.0.consumer_waits(false);
    }
}

/// Drains what the ring holds into the queue unless the consumer is
/// reading it (then it is being read anyway). How many records.
pub(super) fn catch_up(reader: &Mutex<RingReader<RingSink>>) -> u64 {
    match reader.try_lock() {
        Ok(mut r) => r.drain(),
        Err(TryLockError::Poisoned(p)) => p.into_inner().drain(),
        Err(TryLockError::WouldBlock) => 0,
    }
}

/// Every period [`SparePace`] gives: [`catch_up`].
fn spare_loop(reader: &Mutex<RingReader<RingSink>>, state: &SparePace, counters: &Counters) {
    while !state.stop.load(Ordering::Relaxed) {
        std::thread::park_timeout(state.period());
        if state.stop.load(Ordering::Relaxed) {
            break;
        }
        let drained = catch_up(reader);
        counters.spare_reads.fetch_add(drained, Ordering::Relaxed);
        state.after_spare_drain(drained);
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
