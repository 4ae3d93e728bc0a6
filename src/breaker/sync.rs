//! The core's synchronisation primitives in one place, so that `cfg(loom)` can swap them for
//! loom's model-checked versions.

#[cfg(loom)]
use loom::sync as imp;
#[cfg(not(loom))]
use std::sync as imp;

pub(crate) use imp::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
pub(crate) use imp::{Arc, MutexGuard};

/// A mutex that ignores poisoning: the breaker's state is consistent between statements, and
/// a listener that panicked must not wedge every later call.
#[derive(Debug)]
pub(crate) struct Mutex<T>(imp::Mutex<T>);

impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Self(imp::Mutex::new(value))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Aligns a value to its own cache line(s), so that data written by different threads (the
/// shards of a keyed registry) does not share a line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct CachePadded<T>(pub(crate) T);

impl<T> std::ops::Deref for CachePadded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}
