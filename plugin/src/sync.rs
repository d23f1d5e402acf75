//! Taking a lock whatever happened to its last holder: kive's locks guard
//! plain data (caches, tables, counters) that a panicking holder cannot
//! leave half-made in a way a later holder could misread, and a poisoned
//! lock must not stop the event path or a reconcile.

use std::sync::{Mutex, MutexGuard};

/// Takes the lock of `m`, poisoned or not.
pub(crate) fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
