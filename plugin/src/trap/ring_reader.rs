//! One reader of the eBPF tiers' ring buffer: a read waits for records,
//! hands at most [`READ_LIMIT`] of them to a [`RecordSink`] and flushes it,
//! paced by [`Coalesce`] (a flood is read in batches). The engine's reader
//! thread runs reads in a loop; a consumer that waits for events anyway
//! (Falco's `next_batch`) runs them itself, so that a read costs its own
//! wake-up only, not the reader thread's and then the consumer's.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use libbpf_rs::{MapHandle, RingBuffer, RingBufferBuilder};

use super::coalesce::Coalesce;
use super::seam::RecordSink;
use super::TrapError;

/// Records one read hands on at most: a read returns even while producers
/// keep up with it (libbpf's own poll and consume loop until the ring is
/// empty, which a flood may never let happen), so that a consumer reading
/// for Falco goes back to Falco with what it has.
pub const READ_LIMIT: usize = 4096;

/// Reads the ring buffer into a sink.
pub struct RingReader<S: RecordSink> {
    ring: RingBuffer<'static>,
    /// The map the ring reads (its fd is the one libbpf registered).
    _events: MapHandle,
    sink: Rc<RefCell<S>>,
    pace: Coalesce,
    /// Until when a flood asked the next read to wait (the last read's
    /// records are handed on first; only what is left of it is waited).
    pause_until: Option<Instant>,
}

// SAFETY: the `Rc` is shared only with the ring's callback, which the
// `RingBuffer` owns: every clone lives inside this value, so moving it to
// another thread moves them all together and no two threads ever touch the
// count. The sink is `Send` (`RecordSink: Send`), and libbpf's ring buffer
// (an epoll fd and the map's mappings) is not tied to a thread (libbpf-rs
// marks `RingBuffer` `Send`). `RingReader` is not `Sync`: one thread reads
// at a time.
unsafe impl<S: RecordSink> Send for RingReader<S> {}

impl<S: RecordSink> RingReader<S> {
    /// A reader of `events` (the ring buffer map) into `sink`.
    pub(super) fn new(events: MapHandle, sink: S) -> Result<Self, TrapError> {
        let sink = Rc::new(RefCell::new(sink));
        let records = Rc::clone(&sink);
        let mut builder = RingBufferBuilder::new();
        builder
            .add(&events, move |data: &[u8]| {
                records.borrow_mut().record(data);
                0
            })
            .map_err(|source| TrapError::Config {
                what: "ring buffer reader",
                source,
            })?;
        let ring = builder.build().map_err(|source| TrapError::Config {
            what: "ring buffer reader",
            source,
        })?;
        Ok(Self {
            ring,
            _events: events,
            sink,
            pace: Coalesce::default(),
            pause_until: None,
        })
    }

    /// One read within `wait`: what is left of the pause a flood asked for
    /// (at most `wait`), then, when the ring is empty, waiting for records
    /// for the rest of it (producers wake the reader when it caught up or
    /// past a fill threshold, so a wait that times out still reads what is
    /// there); at most [`READ_LIMIT`] records handed to the sink, then the
    /// sink flushed. How many records.
    pub fn read(&mut self, wait: Duration) -> u64 {
        let start = Instant::now();
        if let Some(until) = self.pause_until.take() {
            let pause = until.saturating_duration_since(start).min(wait);
            if !pause.is_zero() {
                std::thread::sleep(pause);
            }
        }
        let left = wait.saturating_sub(start.elapsed());
        self.pace.resume(Instant::now());
        let mut n = self.consume();
        if n == 0 && !left.is_zero() {
            self.wait_readable(left);
            n = self.consume();
        }
        self.sink.borrow_mut().flush();
        let now = Instant::now();
        self.pause_until = self.pace.after_drain(n, now).map(|p| now + p);
        n
    }

    /// Reads what is there (at most [`READ_LIMIT`]) without waiting or
    /// pausing, and flushes.
    pub fn drain(&mut self) -> u64 {
        let n = self.consume();
        self.sink.borrow_mut().flush();
        n
    }

    /// At most [`READ_LIMIT`] records to the sink.
    fn consume(&self) -> u64 {
        u64::try_from(self.ring.consume_raw_n(READ_LIMIT)).unwrap_or(0)
    }

    /// Waits at most `wait` (rounded up to whole milliseconds) for the ring
    /// to hold records; consumes nothing.
    fn wait_readable(&self, wait: Duration) {
        let mut fd = libc::pollfd {
            fd: self.ring.epoll_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(whole_ms(wait).as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: one valid `pollfd` for the call's duration; the epoll fd
        // (readable when a ring it watches holds records) is the ring's,
        // open while `self` lives. An error or a signal only ends the wait.
        unsafe { libc::poll(&mut fd, 1, ms) };
    }
}

/// `wait` rounded up to whole milliseconds, the poll's unit: a wait of
/// less than a millisecond is one, not zero (which would not wait at all,
/// and a caller waiting out its deadline would spin until then).
fn whole_ms(wait: Duration) -> Duration {
    Duration::from_millis(u64::try_from(wait.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_of_part_of_a_millisecond_is_one_and_none_is_none() {
        assert_eq!(whole_ms(Duration::ZERO), Duration::ZERO, "no wait: a drain");
        assert_eq!(whole_ms(Duration::from_nanos(1)), Duration::from_millis(1));
        assert_eq!(
            whole_ms(Duration::from_micros(300)),
            Duration::from_millis(1)
        );
        assert_eq!(
            whole_ms(Duration::from_millis(10)),
            Duration::from_millis(10)
        );
        assert_eq!(
            whole_ms(Duration::from_micros(10_001)),
            Duration::from_millis(11)
        );
    }
}
