//! Facts of a process read once from `/proc` and reused for its next
//! events (pure: the caller reads, and says what time it is).
//!
//! A process is known by its tgid **and its start time**: a pid reused by
//! another process has another start time, so a value read for one
//! process is never handed to another. A start time of 0 (unknown) is
//! never cached. Values expire after `ttl` (what can change in a live
//! process, e.g. its cgroups, is read again at that pace) and the cache
//! holds at most `cap` processes (full: emptied, then refilled by the
//! processes that still access traps).

use std::collections::HashMap;
use std::time::Duration;

/// Per-process values keyed by (tgid, start time).
#[derive(Debug)]
pub struct PidCache<V> {
    map: HashMap<(u32, u64), (u64, V)>,
    ttl_ns: u64,
    cap: usize,
}

impl<V: Clone> PidCache<V> {
    /// An empty cache whose values live `ttl`, for at most `cap` processes.
    pub fn new(ttl: Duration, cap: usize) -> Self {
        Self {
            map: HashMap::new(),
            ttl_ns: u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX),
            cap: cap.max(1),
        }
    }

    /// The value of process (`tgid`, `start_ns`) at `now_ns` (any
    /// monotonic clock the caller keeps to): the cached one if it was read
    /// less than `ttl` ago, else `read()` (kept for the next event).
    pub fn get_or_read(
        &mut self,
        tgid: u32,
        start_ns: u64,
        now_ns: u64,
        read: impl FnOnce() -> V,
    ) -> V {
        self.get_or_read_at(tgid, start_ns, now_ns, read).0
    }

    /// [`PidCache::get_or_read`], with when the value was read (`now_ns`
    /// when it is read now): what is derived from it is as old as that.
    pub fn get_or_read_at(
        &mut self,
        tgid: u32,
        start_ns: u64,
        now_ns: u64,
        read: impl FnOnce() -> V,
    ) -> (V, u64) {
        if start_ns == 0 {
            // no identity: never reuse
            return (read(), now_ns);
        }
        let key = (tgid, start_ns);
        if let Some((at, v)) = self.map.get(&key) {
            if now_ns >= *at && now_ns - at < self.ttl_ns {
                return (v.clone(), *at);
            }
        }
        let v = read();
        if self.map.len() >= self.cap && !self.map.contains_key(&key) {
            self.map.clear();
        }
        self.map.insert(key, (now_ns, v.clone()));
        (v, now_ns)
    }

    /// Processes cached.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn cache() -> PidCache<&'static str> {
        PidCache::new(Duration::from_secs(1), 2)
    }

    #[test]
    fn a_process_is_read_once_then_reused() {
        let mut c = cache();
        assert_eq!(c.get_or_read(10, 5, 0, || "a"), "a");
        let again = c.get_or_read(10, 5, SEC / 2, || panic!("read again within the ttl"));
        assert_eq!(again, "a");
    }

    #[test]
    fn a_reused_pid_is_another_process_never_its_value() {
        let mut c = cache();
        c.get_or_read(10, 5, 0, || "first process");
        // same pid, another start time: the pid was reused
        let v = c.get_or_read(10, 6, 1, || "second process");
        assert_eq!(v, "second process", "never the first process's value");
        // and each keeps its own
        assert_eq!(c.get_or_read(10, 5, 2, || "reread"), "first process");
        assert_eq!(c.get_or_read(10, 6, 3, || "reread"), "second process");
    }

    #[test]
    fn an_unknown_start_time_is_never_cached() {
        let mut c = cache();
        assert_eq!(c.get_or_read(10, 0, 0, || "a"), "a");
        assert_eq!(c.get_or_read(10, 0, 1, || "b"), "b", "read every time");
        assert!(c.is_empty());
    }

    #[test]
    fn a_reused_value_says_when_it_was_read() {
        let mut c = cache();
        assert_eq!(c.get_or_read_at(10, 5, 100, || "a"), ("a", 100));
        assert_eq!(
            c.get_or_read_at(10, 5, 150, || "b"),
            ("a", 100),
            "as old as its read, not as the event that reuses it"
        );
        assert_eq!(c.get_or_read_at(10, 0, 150, || "c"), ("c", 150));
    }

    #[test]
    fn values_expire_after_the_ttl() {
        let mut c = cache();
        c.get_or_read(10, 5, 0, || "old");
        assert_eq!(c.get_or_read(10, 5, SEC, || "new"), "new");
        assert_eq!(c.get_or_read(10, 5, SEC + 1, || "newer"), "new");
        // a clock that went back is not trusted
        assert_eq!(c.get_or_read(10, 5, 0, || "back"), "back");
    }

    #[test]
    fn the_cache_stays_bounded() {
        let mut c = cache();
        for pid in 0..100 {
            c.get_or_read(pid, 1, 0, || "v");
            assert!(c.len() <= 2, "{} entries", c.len());
        }
        // a full cache still answers right
        assert_eq!(c.get_or_read(7, 2, 0, || "fresh"), "fresh");
    }
}
