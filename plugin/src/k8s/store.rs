//! A keyed store fed by watcher events: the last listed/watched state of
//! policies or pods. Kept across API server outages (a watcher that cannot
//! reach the server sends nothing, so nothing is forgotten), and replaced
//! atomically when a re-list completes.

use std::collections::BTreeMap;

use kube::runtime::watcher::Event;

/// The store.
#[derive(Debug)]
pub struct Store<T> {
    items: BTreeMap<String, T>,
    relist: Option<BTreeMap<String, T>>,
    /// Whether a first list has completed.
    pub synced: bool,
    /// Whether a list or watch attempt failed (not allowed, not served,
    /// unreachable): the first reconcile does not wait for this store.
    pub errored: bool,
}

impl<T> Default for Store<T> {
    fn default() -> Self {
        Self {
            items: BTreeMap::new(),
            relist: None,
            synced: false,
            errored: false,
        }
    }
}

impl<T: PartialEq> Store<T> {
    /// Applies one watcher event whose objects are already converted to
    /// `(key, value)`; returns whether the visible contents changed.
    pub fn apply(&mut self, event: Event<(String, T)>) -> bool {
        match event {
            Event::Init => {
                self.relist = Some(BTreeMap::new());
                false
            }
            Event::InitApply((k, v)) => {
                self.relist.get_or_insert_with(BTreeMap::new).insert(k, v);
                false
            }
            Event::InitDone => {
                let new = self.relist.take().unwrap_or_default();
                let changed = new != self.items || !self.synced;
                self.items = new;
                self.synced = true;
                changed
            }
            Event::Apply((k, v)) => {
                let changed = self.items.get(&k) != Some(&v);
                self.items.insert(k, v);
                changed
            }
            Event::Delete((k, _)) => self.items.remove(&k).is_some(),
        }
    }

    /// Whether the first reconcile has what this store will give it: a
    /// first list, or a failure (waiting longer would hold traps back).
    pub fn settled(&self) -> bool {
        self.synced || self.errored
    }

    /// The current items.
    pub fn items(&self) -> impl Iterator<Item = (&String, &T)> {
        self.items.iter()
    }

    /// The current item of a key.
    pub fn get(&self, key: &str) -> Option<&T> {
        self.items.get(key)
    }

    /// The current items, as a map.
    pub fn map(&self) -> &BTreeMap<String, T> {
        &self.items
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// Maps the objects of a watcher event.
pub fn map_event<K, T>(event: Event<K>, f: impl Fn(K) -> T) -> Event<T> {
    match event {
        Event::Init => Event::Init,
        Event::InitApply(k) => Event::InitApply(f(k)),
        Event::InitDone => Event::InitDone,
        Event::Apply(k) => Event::Apply(f(k)),
        Event::Delete(k) => Event::Delete(f(k)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(k: &str, v: u32) -> (String, u32) {
        (k.to_string(), v)
    }

    #[test]
    fn list_then_watch_events() {
        let mut s = Store::default();
        assert!(!s.apply(Event::Init));
        assert!(!s.apply(Event::InitApply(kv("a", 1))));
        assert!(!s.apply(Event::InitApply(kv("b", 2))));
        assert_eq!(s.len(), 0, "nothing visible before the list completes");
        assert!(s.apply(Event::InitDone));
        assert!(s.synced);
        assert_eq!(s.len(), 2);
        assert!(s.apply(Event::Apply(kv("c", 3))));
        assert!(
            !s.apply(Event::Apply(kv("c", 3))),
            "same object again: no change"
        );
        assert!(s.apply(Event::Apply(kv("c", 4))));
        assert!(s.apply(Event::Delete(kv("a", 0))));
        assert!(!s.apply(Event::Delete(kv("a", 0))));
        let keys: Vec<_> = s.items().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["b", "c"]);
    }

    #[test]
    fn a_store_is_settled_by_its_first_list_or_a_failure() {
        let mut s = Store::<u32>::default();
        assert!(!s.settled(), "nothing listed yet");
        s.apply(Event::Init);
        assert!(!s.settled(), "a list under way is waited for");
        s.errored = true;
        assert!(s.settled(), "a failed list is not waited for");
        let mut s = Store::<u32>::default();
        s.apply(Event::Init);
        s.apply(Event::InitDone);
        assert!(s.settled(), "an empty list is a list");
    }

    #[test]
    fn a_relist_replaces_atomically_and_keeps_state_until_done() {
        let mut s = Store::default();
        s.apply(Event::Init);
        s.apply(Event::InitApply(kv("a", 1)));
        s.apply(Event::InitDone);
        // the connection drops; a new list starts (410 Gone or a reconnect)
        s.apply(Event::Init);
        s.apply(Event::InitApply(kv("b", 1)));
        assert_eq!(
            s.items().next().map(|(k, _)| k.as_str()),
            Some("a"),
            "old state kept meanwhile"
        );
        assert!(s.apply(Event::InitDone));
        let keys: Vec<_> = s.items().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["b"], "a was deleted while we were away");
        // an identical relist is not a change
        s.apply(Event::Init);
        s.apply(Event::InitApply(kv("b", 1)));
        assert!(!s.apply(Event::InitDone));
    }

    #[test]
    fn an_empty_first_list_counts_as_a_change() {
        let mut s: Store<u32> = Store::default();
        s.apply(Event::Init);
        assert!(s.apply(Event::InitDone));
    }
}
