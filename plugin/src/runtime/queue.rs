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
//! consumer, for a whole read of the ring buffer. The consumer gives each
//! emptied batch's vector back ([`SPARE`] at most kept), and the next
//! flush gathers into it: a flood reuses the same few vectors instead of
//! taking fresh memory (page faults) for every batch and freeing it.

use crate::sync::lock;
use std::collections::VecDeque;
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

/// Emptied batch vectors kept for the next flushes at most (each holds
/// a drain's gathered events' room at most: 256).
pub const SPARE: usize = 2;

/// Emptied vectors, given back by the consumer (always empty).
type Spares<T> = Arc<Mutex<Vec<Vec<T>>>>;

/// The sending side (cloned for each producer; they share the bound).
pub struct Sender<T> {
    tx: mpsc::Sender<Vec<T>>,
    held: Arc<AtomicUsize>,
    capacity: usize,
    spares: Spares<T>,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender {
            tx: self.tx.clone(),
            held: Arc::clone(&self.held),
            capacity: self.capacity,
            spares: Arc::clone(&self.spares),
        }
    }
}

/// The receiving side.
pub struct Receiver<T> {
    rx: mpsc::Receiver<Vec<T>>,
    held: Arc<AtomicUsize>,
    /// The rest of the last batch received.
    pending: Mutex<VecDeque<T>>,
    spares: Spares<T>,
}

/// A queue holding at most `capacity` values (at least 1).
pub fn bounded<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let (tx, rx) = mpsc::channel();
    let held = Arc::new(AtomicUsize::new(0));
    let spares = Arc::new(Mutex::new(Vec::new()));
    (
        Sender {
            tx,
            held: Arc::clone(&held),
            capacity: capacity.max(1),
            spares: Arc::clone(&spares),
        },
        Receiver {
            rx,
            held,
            pending: Mutex::new(VecDeque::new()),
            spares,
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
        let message = if batch.len() < batch.capacity() / 4 {
            // a few values in a large room (a trickle after a flood): sent
            // in a vector of their size, the room kept for the next ones
            // (a held message never holds much more room than values)
            let mut sized = Vec::with_capacity(batch.len());
            sized.append(batch);
            sized
        } else {
            // the next batch gathers into an emptied vector as large, else
            // into a new one with this one's room
            let spare = lock(&self.spares)
                .pop()
                .filter(|v| v.capacity() >= batch.capacity());
            let next = spare.unwrap_or_else(|| Vec::with_capacity(batch.capacity()));
            std::mem::replace(batch, next)
        };
        match self.tx.send(message) {
            Ok(()) => true,
            Err(e) => {
                self.held.fetch_sub(e.0.len(), Ordering::AcqRel);
                false
            }
        }
    }
}

impl<T> Receiver<T> {
    /// How many values are held (queued, or gathered by a sender).
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }

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
        let mut pending = lock(&self.pending);
        let v = match pending.pop_front() {
            Some(v) => v,
            None => {
                // a batch is never empty (flush sends none)
                let next = VecDeque::from(recv(&self.rx)?);
                self.give_back(std::mem::replace(&mut *pending, next));
                pending.pop_front()?
            }
        };
        self.held.fetch_sub(1, Ordering::AcqRel);
        Some(v)
    }

    /// Keeps an emptied batch's vector for the senders' next flushes
    /// (at most [`SPARE`]; the first, empty one has no room to keep).
    fn give_back(&self, emptied: VecDeque<T>) {
        let v = Vec::from(emptied);
        if v.capacity() == 0 || !v.is_empty() {
            return;
        }
        let mut spares = lock(&self.spares);
        if spares.len() < SPARE {
            spares.push(v);
        }
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

    #[test]
    fn an_emptied_batch_is_gathered_into_again_and_carries_no_old_value() {
        let (tx, rx) = bounded(1000);
        let drain = |rx: &Receiver<u32>| std::iter::from_fn(|| rx.try_recv()).collect::<Vec<_>>();
        let mut batch = Vec::new();
        for v in [1, 2, 3] {
            tx.try_push(&mut batch, v).expect("room");
        }
        assert!(tx.flush(&mut batch));
        assert_eq!(drain(&rx), [1, 2, 3]);
        for v in [4, 5, 6] {
            tx.try_push(&mut batch, v).expect("room");
        }
        assert!(tx.flush(&mut batch));
        assert_eq!(drain(&rx), [4, 5, 6]);
        let given_back: Vec<usize> = lock(&rx.spares).iter().map(Vec::capacity).collect();
        assert_eq!(
            given_back.len(),
            1,
            "the first batch's vector was given back"
        );
        assert!(given_back[0] >= 3, "with its room");
        tx.try_push(&mut batch, 7).expect("room");
        assert!(tx.flush(&mut batch));
        assert!(lock(&rx.spares).is_empty(), "the flush took the spare");
        assert!(batch.is_empty(), "a reused vector comes back empty");
        assert!(batch.capacity() >= 3, "the spare's room is gathered into");
        assert_eq!(drain(&rx), [7], "nothing old comes out again");
    }

    #[test]
    fn at_most_spare_emptied_vectors_are_kept_aside() {
        let (tx, rx) = bounded(1000);
        // five batches held at once, then all received: each emptied one
        // is given back, and the spares stop at SPARE
        for v in 0..5 {
            let mut batch = Vec::with_capacity(2);
            tx.try_push(&mut batch, v).expect("room");
            tx.try_push(&mut batch, v + 100).expect("room");
            assert!(tx.flush(&mut batch));
        }
        let got: Vec<u32> = std::iter::from_fn(|| rx.try_recv()).collect();
        assert_eq!(got.len(), 10, "every value received: {got:?}");
        assert_eq!(lock(&rx.spares).len(), SPARE, "the spares are bounded");
    }

    #[test]
    fn a_few_values_in_a_large_room_go_in_a_message_of_their_size() {
        let (tx, rx) = bounded(1000);
        let mut batch = Vec::with_capacity(256);
        tx.try_push(&mut batch, 1u32).expect("room");
        assert!(tx.flush(&mut batch));
        assert!(batch.is_empty(), "the batch is handed over");
        assert!(batch.capacity() >= 256, "its room stays with the sender");
        assert_eq!(rx.try_recv(), Some(1));
        assert!(
            lock(&rx.pending).capacity() < 64,
            "the message held the value's room, not the batch's: {}",
            lock(&rx.pending).capacity()
        );
    }

    #[test]
    fn a_small_spare_is_not_gathered_into_by_a_larger_batch() {
        let (tx, rx) = bounded(1000);
        // a one-value message (a tamper event's) given back as a spare
        tx.try_send(7u32).expect("room");
        assert_eq!(rx.try_recv(), Some(7));
        let mut batch = Vec::with_capacity(8);
        tx.try_push(&mut batch, 1).expect("room");
        assert!(tx.flush(&mut batch));
        assert_eq!(rx.try_recv(), Some(1), "the one-value message given back");
        assert!(!lock(&rx.spares).is_empty(), "a spare is kept");
        let mut batch = Vec::with_capacity(256);
        for v in 0..200 {
            tx.try_push(&mut batch, v).expect("room");
        }
        assert!(tx.flush(&mut batch));
        assert!(
            batch.capacity() >= 256,
            "the next batch keeps the flood's room: {}",
            batch.capacity()
        );
    }
}
