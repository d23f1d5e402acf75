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
use crate::trap::{RawEvent, RecordSink};

/// Events handed over at most together.
pub const GATHER: usize = 256;

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
            let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
            seen.record(ev.key, ev.ts_boot_ns);
        }
        if let Err(Refused::Full(_)) = self.tx.try_push(&mut self.gathered, ev) {
            self.counters.queue_drops.fetch_add(1, Ordering::Relaxed);
        }
        if self.gathered.len() >= GATHER {
            self.flush();
        }
    }

    fn flush(&mut self) {
        // a gone consumer: the runtime is shutting down, nothing to count
        let _ = self.tx.flush(&mut self.gathered);
    }
}
