//! What the handle, the listeners and the background task share: the counters and the
//! breakers whose counts go into alerts (held weakly: the listeners live in the breakers).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError, Weak,
        atomic::{AtomicU64, Ordering},
    },
};

use super::WebhookStatus;
use crate::breaker::{CircuitBreaker, Lane, Snapshot};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug, Default)]
pub(super) struct Shared {
    sent: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    dropped: AtomicU64,
    suppressed: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// Registered breakers, by name.
    watched: Mutex<HashMap<Arc<str>, Weak<Lane>>>,
}

impl Shared {
    pub(super) fn count_sent(&self) {
        self.sent.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn count_retry(&self) {
        self.retried.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn count_failed(&self, error: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        *lock(&self.last_error) = Some(error);
    }

    pub(super) fn count_dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn count_suppressed(&self) {
        self.suppressed.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn status(&self) -> WebhookStatus {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        WebhookStatus {
            sent: n(&self.sent),
            failed: n(&self.failed),
            retried: n(&self.retried),
            dropped: n(&self.dropped),
            suppressed: n(&self.suppressed),
            last_error: lock(&self.last_error).clone(),
        }
    }

    pub(super) fn watch(&self, breaker: &CircuitBreaker) {
        let mut watched = lock(&self.watched);
        if watched.len() >= 64 && watched.len().is_power_of_two() {
            watched.retain(|_, w| w.strong_count() > 0);
        }
        watched.insert(breaker.name().into(), Arc::downgrade(&breaker.root));
    }

    /// The snapshot of the registered breaker named `name`, if it is alive.
    pub(super) fn snapshot_of(&self, name: &str) -> Option<Snapshot> {
        let root = lock(&self.watched).get(name)?.upgrade()?;
        Some(CircuitBreaker { root }.snapshot())
    }
}
