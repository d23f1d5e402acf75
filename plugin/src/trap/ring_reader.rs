//! One reader of the eBPF tiers' ring buffer: a read waits for records,
//! drains them into a [`RecordSink`] and flushes it, paced by [`Coalesce`]
//! (a flood is read in batches). The engine's reader thread runs reads in
//! a loop; a consumer that waits for events anyway (Falco's `next_batch`)
//! runs them itself, so that a read costs its own wake-up only, not the
//! reader thread's and then the consumer's.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use libbpf_rs::{MapHandle, RingBuffer, RingBufferBuilder};

use super::coalesce::Coalesce;
use super::seam::RecordSink;
use super::TrapError;

/// Reads the ring buffer into a sink.
pub struct RingReader<S: RecordSink> {
    ring: RingBuffer<'static>,
    sink: Rc<RefCell<S>>,
    handled: Rc<Cell<u64>>,
    pace: Coalesce,
    /// The pause a flood asked for at the end of the last read, waited
    /// before the next one (the last read's records are handed on first).
    pause: Option<Duration>,
}

// SAFETY: the two `Rc`s are shared only with the ring's callback, which
// the `RingBuffer` owns: every clone lives inside this value, so moving it
// to another thread moves them all together and no two threads ever touch
// the counts. The sink is `Send` (`RecordSink: Send`), and libbpf's ring
// buffer (an epoll fd and the map's mappings) is not tied to a thread
// (libbpf-rs marks `RingBuffer` `Send`).
unsafe impl<S: RecordSink> Send for RingReader<S> {}

impl<S: RecordSink> RingReader<S> {
    /// A reader of `events` (the ring buffer map) into `sink`.
    pub(super) fn new(events: &MapHandle, sink: S) -> Result<Self, TrapError> {
        let handled = Rc::new(Cell::new(0u64));
        let sink = Rc::new(RefCell::new(sink));
        let (count, records) = (Rc::clone(&handled), Rc::clone(&sink));
        let mut builder = RingBufferBuilder::new();
        builder
            .add(events, move |data: &[u8]| {
                count.set(count.get() + 1);
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
            sink,
            handled,
            pace: Coalesce::default(),
            pause: None,
        })
    }

    /// One read within `wait`: the pause a flood asked for (at most
    /// `wait`), then waiting for records for the rest of it (producers wake
    /// the reader only when it caught up or past a fill threshold, so a
    /// wait that times out still drains what is there); every record is
    /// handed to the sink, then the sink is flushed. How many records.
    pub fn read(&mut self, wait: Duration) -> u64 {
        let start = Instant::now();
        if let Some(pause) = self.pause.take() {
            std::thread::sleep(pause.min(wait));
        }
        let left = wait.saturating_sub(start.elapsed());
        self.pace.resume(Instant::now());
        let _ = self.ring.poll(whole_ms(left));
        let _ = self.ring.consume();
        self.sink.borrow_mut().flush();
        let n = self.handled.take();
        self.pause = self.pace.after_drain(n, Instant::now());
        n
    }

    /// Drains what is there without waiting (no pause), and flushes.
    pub fn drain(&mut self) -> u64 {
        let _ = self.ring.consume();
        self.sink.borrow_mut().flush();
        self.handled.take()
    }
}

/// `wait` rounded up to whole milliseconds, the poll's unit: a wait of
/// less than a millisecond is one, not zero (which would not wait at all,
/// and a caller waiting out its deadline would spin until then).
fn whole_ms(wait: Duration) -> Duration {
    Duration::from_millis(u64::try_from(wait.as_micros().div_ceil(1000)).unwrap_or(u64::MAX))
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
