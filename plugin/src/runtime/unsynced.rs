//! The keys whose last kernel write failed: for them the kernel may hold
//! another value than the table lists (a write that changed the table's
//! value and was refused, e.g. by a full map or a failed allocation), so
//! an arming that leaves the table's value unchanged still writes it.

use std::collections::HashSet;
use std::sync::Mutex;

use crate::sync::lock;
use crate::trap::TrapKey;

/// Keys not known to hold the table's value in the kernel.
#[derive(Default)]
pub(crate) struct Unsynced(Mutex<HashSet<TrapKey>>);

impl Unsynced {
    /// Notes the outcome of a write of `key`'s value.
    pub(crate) fn wrote<T, E>(&self, key: TrapKey, result: &Result<T, E>) {
        let mut keys = lock(&self.0);
        match result {
            Err(_) => {
                keys.insert(key);
            }
            Ok(_) if !keys.is_empty() => {
                keys.remove(&key);
            }
            Ok(_) => {}
        }
    }

    /// Whether the kernel holds what the table listed for `key` at its
    /// last write (every write since succeeded).
    pub(crate) fn holds_listed(&self, key: TrapKey) -> bool {
        !lock(&self.0).contains(&key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_marks_its_key_until_a_write_succeeds() {
        let u = Unsynced::default();
        let (k, other) = (TrapKey { dev: 1, ino: 2 }, TrapKey { dev: 1, ino: 3 });
        assert!(u.holds_listed(k), "nothing failed yet");
        u.wrote(k, &Err::<(), _>("map full"));
        assert!(!u.holds_listed(k), "a refused write: the kernel may differ");
        assert!(u.holds_listed(other), "only that key");
        u.wrote(other, &Ok::<_, ()>(()));
        assert!(!u.holds_listed(k), "another key's write changes nothing");
        u.wrote(k, &Ok::<_, ()>(()));
        assert!(u.holds_listed(k), "a write that succeeded: in the kernel");
    }
}
