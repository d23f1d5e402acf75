//! The bounded queue between the ring reader and the consumer, whose memory
//! follows what it holds.
//!
//! `std::sync::mpsc::sync_channel(n)` allocates and writes its `n` slots at
//! creation: at the default 65,536 events of 344 bytes that is 21.5 MiB
//! resident from start, on every node, mostly for floods that never come.
//! This queue is std's unbounded channel (blocks allocated as events arrive
//! and freed as they are taken) with the bound kept by a counter: a send
//! past `capacity` held events is refused as [`Full`], exactly as before.
//!
//! A producer may gather values ([`Sender::try_push`]) and hand them over
//! together ([`Sender::flush`]): one message, one wake-up of a waiting
//! consumer, for a whole read of the ring buffer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Why a send was refused: `capacity` events are held (the value is given
/// back), or the consumer is gone.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused<T> {
    /// The queue holds `capacity` events.
    Full(T),
    /// The receiving side was dropped.
    Gone(T),
}

/// The sending side (cloned for each producer; they share the bound).
pub struct Sender<T> {
    tx: mpsc::Sender<Vec<T>>,
    held: Arc<AtomicUsize>,
    capacity: usize,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender {
            tx: self.tx.clone(),
            held: Arc::clone(&self.held),
            capacity: self.capacity,
        }
    }
}

/// The receiving side.
pub struct Receiver<T> {
    rx: mpsc::Receiver<Vec<T>>,
    held: Arc<AtomicUsize>,
    /// The rest of the last batch received.
    pending: Mutex<std::vec::IntoIter<T>>,
}

/// A queue holding at most `capacity` values (at least 1).
pub fn bounded<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let (tx, rx) = mpsc::channel();
    let held = Arc::new(AtomicUsize::new(0));
    (
        Sender {
            tx,
            held: Arc::clone(&held),
            capacity: capacity.max(1),
        },
        Receiver {
            rx,
            held,
            pending: Mutex::new(Vec::new().into_iter()),
        },
    )
}

impl<T> Sender<T> {
    /// Queues `v` unless `capacity` values are held; never blocks.
    pub fn try_send(&self, v: T) -> Result<(), Refused<T>> {
        let mut one = Vec::with_capacity(1);
        self.try_push(&mut one, v)?;
        match self.tx.send(one) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.held.fetch_sub(1, Ordering::AcqRel);
                let v = e.0.into_iter().next();
                Err(Refused::Gone(v.expect("the one value sent")))
            }
        }
    }

    /// How many values the queue holds at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Takes a place for `v` and adds it to `batch` (handed over by
    /// [`Sender::flush`]) unless `capacity` values are held; never blocks.
    pub fn try_push(&self, batch: &mut Vec<T>, v: T) -> Result<(), Refused<T>> {
        // take a place first, so that concurrent senders never exceed the
        // bound together
        let cap = self.capacity;
        if self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < cap).then_some(n + 1)
            })
            .is_err()
        {
            return Err(Refused::Full(v));
        }
        batch.push(v);
        Ok(())
    }

    /// Hands `batch` over as one message (left empty); a gone consumer
    /// gives its places back. Whether it was handed over.
    pub fn flush(&self, batch: &mut Vec<T>) -> bool {
        if batch.is_empty() {
            return true;
        }
        // the next batch keeps this one's room
        let room = batch.capacity();
        match self
            .tx
            .send(std::mem::replace(batch, Vec::with_capacity(room)))
        {
            Ok(()) => true,
            Err(e) => {
                self.held.fetch_sub(e.0.len(), Ordering::AcqRel);
                false
            }
        }
    }
}

impl<T> Receiver<T> {
    /// The next value, waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<T> {
        self.next(|rx| rx.recv_timeout(timeout).ok())
    }

    /// The next value if one is held.
    pub fn try_recv(&self) -> Option<T> {
        self.next(|rx| rx.try_recv().ok())
    }

    /// The next value of the pending batch, else of the next batch `recv`
    /// gives.
    fn next(&self, recv: impl FnOnce(&mpsc::Receiver<Vec<T>>) -> Option<Vec<T>>) -> Option<T> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let v = match pending.next() {
            Some(v) => v,
            None => {
                // a batch is never empty (flush sends none)
                *pending = recv(&self.rx)?.into_iter();
                pending.next()?
            }
        };
        self.held.fetch_sub(1, Ordering::AcqRel);
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_refuses_and_gives_the_value_back() {
        let (tx, rx) = bounded(2);
        assert_eq!(tx.try_send(1), Ok(()));
        assert_eq!(tx.try_send(2), Ok(()));
        assert_eq!(tx.try_send(3), Err(Refused::Full(3)), "the bound holds");
        assert_eq!(rx.try_recv(), Some(1));
        assert_eq!(tx.try_send(4), Ok(()), "a taken value frees its place");
        assert_eq!(rx.try_recv(), Some(2));
        assert_eq!(rx.recv_timeout(Duration::from_millis(1)), Some(4));
        assert_eq!(rx.try_recv(), None);
    }

    #[test]
    fn clones_share_one_bound() {
        let (tx, rx) = bounded(3);
        let other = tx.clone();
        assert!(tx.try_send(1).is_ok());
        assert!(other.try_send(2).is_ok());
        assert!(tx.try_send(3).is_ok());
        assert_eq!(other.try_send(4), Err(Refused::Full(4)));
        assert_eq!(rx.try_recv(), Some(1));
    }

    #[test]
    fn concurrent_senders_never_exceed_the_bound() {
        let (tx, rx) = bounded(1000);
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    (0..1000)
                        .filter(|i| tx.try_send(t * 1000 + i).is_ok())
                        .count()
                })
            })
            .collect();
        let sent: usize = threads
            .into_iter()
            .map(|t| t.join().expect("sender thread"))
            .sum();
        assert_eq!(sent, 1000, "exactly the capacity got in");
        let mut got = 0;
        while rx.try_recv().is_some() {
            got += 1;
        }
        assert_eq!(got, 1000);
    }

    #[test]
    fn a_capacity_of_zero_holds_one() {
        let (tx, _rx) = bounded(0);
        assert!(tx.try_send(()).is_ok());
        assert_eq!(tx.try_send(()), Err(Refused::Full(())));
    }

    #[test]
    fn a_dropped_consumer_is_gone_not_full() {
        let (tx, rx) = bounded(4);
        drop(rx);
        assert_eq!(tx.try_send(7), Err(Refused::Gone(7)));
        assert_eq!(
            tx.try_send(8),
            Err(Refused::Gone(8)),
            "its place was given back"
        );
    }

    #[test]
    fn a_queue_without_senders_gives_nothing() {
        let (tx, rx) = bounded::<u8>(4);
        drop(tx);
        assert_eq!(rx.recv_timeout(Duration::from_secs(30)), None);
    }

    #[test]
    fn a_gathered_batch_arrives_whole_at_its_flush_within_the_bound() {
        let (tx, rx) = bounded(3);
        let mut batch = Vec::new();
        assert_eq!(tx.try_push(&mut batch, 1), Ok(()));
        assert_eq!(tx.try_push(&mut batch, 2), Ok(()));
        assert_eq!(rx.try_recv(), None, "nothing handed over before the flush");
        assert_eq!(tx.try_send(3), Ok(()), "a gathered value holds its place");
        assert_eq!(tx.try_push(&mut batch, 4), Err(Refused::Full(4)));
        assert!(tx.flush(&mut batch));
        assert!(batch.is_empty(), "the batch is handed over, not copied");
        assert!(tx.flush(&mut batch), "an empty flush sends nothing");
        assert_eq!(rx.try_recv(), Some(3), "in the order handed over");
        assert_eq!(rx.try_recv(), Some(1));
        assert_eq!(tx.try_send(5), Ok(()), "a taken value frees its place");
        assert_eq!(rx.recv_timeout(Duration::from_millis(1)), Some(2));
        assert_eq!(rx.try_recv(), Some(5));
        assert_eq!(rx.try_recv(), None);
        drop(rx);
        assert_eq!(tx.try_push(&mut batch, 6), Ok(()));
        assert!(!tx.flush(&mut batch), "a gone consumer takes nothing");
        assert_eq!(
            tx.try_send(7),
            Err(Refused::Gone(7)),
            "its places were given back"
        );
    }
}
