//! The reader thread's side of the event queue: each record decoded and
//! gathered, the gathered events handed to the consumer together at the
//! end of each read (one wake-up per drain of the ring buffer, not one per
//! event), or every [`GATHER`] events in a long drain so that its first
//! events do not wait for its end.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use super::queue::{Refused, Sender};
use super::tamper::KernelTampers;
use super::Counters;
use crate::sync::lock;
use crate::trap::{RawEvent, RecordSink};

/// Events handed over at most together.
pub const GATHER: usize = 256;

/// How many events are gathered before they are handed over: [`GATHER`],
/// or a quarter of a small queue, so that gathered events (which already
/// hold their places) never fill it while the consumer waits for them.
pub(super) fn gather_limit(capacity: usize) -> usize {
    GATHER.min((capacity / 4).max(1))
}

/// Decodes, gathers and queues the reader's records.
pub(super) struct RingSink {
    pub tx: Sender<RawEvent>,
    pub counters: Arc<Counters>,
    /// Tamper events seen by the kernel, recorded at once (the rescan asks).
    pub seen: Option<Arc<Mutex<KernelTampers>>>,
    pub gathered: Vec<RawEvent>,
}

impl RecordSink for RingSink {
    fn record(&mut self, data: &[u8]) {
        let Ok(ev) = RawEvent::decode(data) else {
            self.counters.decode_errors.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if let (Some(seen), Some(_)) = (&self.seen, &ev.tamper) {
            // read at once, before the queue: the rescan asks
            let mut seen = lock(seen);
            seen.record(ev.key, ev.ts_boot_ns);
        }
        if let Err(Refused::Full(_)) = self.tx.try_push(&mut self.gathered, ev) {
            self.counters.queue_drops.fetch_add(1, Ordering::Relaxed);
        }
        if self.gathered.len() >= gather_limit(self.tx.capacity()) {
            self.flush();
        }
    }

    fn flush(&mut self) {
        // a gone consumer: the runtime is shutting down, nothing to count
        let _ = self.tx.flush(&mut self.gathered);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::queue;

    #[test]
    fn a_small_queue_is_handed_its_events_before_it_can_fill() {
        assert_eq!(gather_limit(65_536), GATHER);
        assert_eq!(gather_limit(100), 25);
        assert_eq!(gather_limit(3), 1);
        assert_eq!(gather_limit(1), 1);
        // a burst of 150 into a queue of 100 with a consumer that keeps
        // up: nothing is dropped while the reader gathers
        let (tx, rx) = queue::bounded::<u32>(100);
        let mut gathered = Vec::new();
        let mut got = 0;
        for i in 0..150 {
            tx.try_push(&mut gathered, i)
                .unwrap_or_else(|_| panic!("event {i} refused with {got} taken"));
            if gathered.len() >= gather_limit(tx.capacity()) {
                assert!(tx.flush(&mut gathered), "the consumer is there");
                while rx.try_recv().is_some() {
                    got += 1;
                }
            }
        }
        assert!(tx.flush(&mut gathered));
        while rx.try_recv().is_some() {
            got += 1;
        }
        assert_eq!(got, 150, "every event arrived");
    }
}
