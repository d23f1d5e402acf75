//! Each endpoint's counters, live and as a snapshot.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one endpoint.
#[derive(Debug, Default)]
pub struct EndpointStats {
    /// Alerts delivered (2xx).
    pub delivered: AtomicU64,
    /// Alerts given up on (4xx, or retries exhausted).
    pub failed: AtomicU64,
    /// Retries made.
    pub retries: AtomicU64,
    /// Alerts dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Alerts not sent because the destination is refused.
    pub refused: AtomicU64,
}

/// A snapshot of one endpoint's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointCounts {
    /// Delivered.
    pub delivered: u64,
    /// Given up on.
    pub failed: u64,
    /// Retries.
    pub retries: u64,
    /// Dropped on overflow.
    pub dropped: u64,
    /// Not sent: refused destination, or no room for one more endpoint.
    pub refused: u64,
}

impl EndpointCounts {
    pub(super) fn of(stats: &EndpointStats) -> Self {
        Self {
            delivered: stats.delivered.load(Ordering::Relaxed),
            failed: stats.failed.load(Ordering::Relaxed),
            retries: stats.retries.load(Ordering::Relaxed),
            dropped: stats.dropped.load(Ordering::Relaxed),
            refused: stats.refused.load(Ordering::Relaxed),
        }
    }

    pub(super) fn add(&mut self, o: &Self) {
        self.delivered += o.delivered;
        self.failed += o.failed;
        self.retries += o.retries;
        self.dropped += o.dropped;
        self.refused += o.refused;
    }
}
