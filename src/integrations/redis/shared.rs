//! What the handle and the background task share: the registered breakers, the trips learned
//! from other replicas, the counters; and what to do with a trip received.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    },
    time::Duration,
};

#[cfg(feature = "metrics")]
use super::{CONNECTED, MALFORMED, OUTAGES, PUBLISHED, RECEIVED};
use super::{
    lock,
    wire::{VERSION, Wire, unix_ms_now},
};
use crate::breaker::CircuitBreaker;

/// Opens the breaker of this key (a string, parsed back into the registry's key type) for
/// this long; whether there was one to open.
pub(super) type KeyedTarget = Arc<dyn Fn(&str, Duration) -> bool + Send + Sync>;

/// What the handle and the background task share.
pub(super) struct Shared {
    pub(super) prefix: String,
    pub(super) origin: String,
    pub(super) channel: String,
    pub(super) index: String,
    pub(super) plain: Mutex<HashMap<String, Vec<CircuitBreaker>>>,
    pub(super) keyed: Mutex<HashMap<String, Vec<KeyedTarget>>>,
    /// Trips in force learned from other replicas, by breaker name, for breakers registered
    /// later.
    pub(super) remote: Mutex<HashMap<String, Wire>>,
    pub(super) connected: AtomicBool,
    pub(super) offset_ms: AtomicI64,
    pub(super) outages: AtomicU64,
    pub(super) published: AtomicU64,
    pub(super) superseded: AtomicU64,
    pub(super) received: AtomicU64,
    pub(super) applied: AtomicU64,
    pub(super) expired: AtomicU64,
    pub(super) malformed: AtomicU64,
    pub(super) refused: AtomicU64,
    pub(super) last_error: Mutex<Option<String>>,
    #[cfg(feature = "metrics")]
    pub(super) metrics: Metrics,
}

#[cfg(feature = "metrics")]
pub(super) struct Metrics {
    pub(super) connected: ::metrics::Gauge,
    pub(super) outages: ::metrics::Counter,
    pub(super) published: ::metrics::Counter,
    pub(super) received: ::metrics::Counter,
    pub(super) malformed: ::metrics::Counter,
}

impl Shared {
    pub(super) fn new(prefix: &str, origin: String) -> Self {
        Self {
            prefix: prefix.to_string(),
            origin,
            channel: format!("{prefix}:trips"),
            index: format!("{prefix}:index"),
            plain: Mutex::default(),
            keyed: Mutex::default(),
            remote: Mutex::default(),
            connected: AtomicBool::new(false),
            offset_ms: AtomicI64::new(0),
            outages: AtomicU64::new(0),
            published: AtomicU64::new(0),
            superseded: AtomicU64::new(0),
            received: AtomicU64::new(0),
            applied: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            last_error: Mutex::new(None),
            #[cfg(feature = "metrics")]
            metrics: {
                let label = || vec![::metrics::Label::new("prefix", prefix.to_string())];
                let m = Metrics {
                    connected: ::metrics::gauge!(CONNECTED, label()),
                    outages: ::metrics::counter!(OUTAGES, label()),
                    published: ::metrics::counter!(PUBLISHED, label()),
                    received: ::metrics::counter!(RECEIVED, label()),
                    malformed: ::metrics::counter!(MALFORMED, label()),
                };
                m.connected.set(0.0);
                m
            },
        }
    }

    pub(super) fn trip_key(&self, name: &str) -> String {
        format!("{}:trip:{name}", self.prefix)
    }

    pub(super) fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Release);
        #[cfg(feature = "metrics")]
        self.metrics.connected.set(if connected { 1.0 } else { 0.0 });
    }

    pub(super) fn count_outage(&self) {
        self.outages.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        self.metrics.outages.increment(1);
    }

    pub(super) fn count_published(&self) {
        self.published.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        self.metrics.published.increment(1);
    }

    pub(super) fn count_received(&self) {
        self.received.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        self.metrics.received.increment(1);
    }

    /// Counts a local trip that Redis refused to store; whether to log it at WARN: the first
    /// ten, then one in a thousand.
    pub(super) fn count_refused(&self) -> bool {
        let n = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        n <= 10 || n % 1000 == 0
    }

    /// Counts a malformed message; whether to log it at WARN: the first ten, then one in a
    /// thousand, so that a flood of junk on the channel cannot flood the logs.
    pub(super) fn count_malformed(&self) -> bool {
        let n = self.malformed.fetch_add(1, Ordering::Relaxed) + 1;
        #[cfg(feature = "metrics")]
        self.metrics.malformed.increment(1);
        n <= 10 || n % 1000 == 0
    }

    /// Now on Redis's clock, as estimated.
    pub(super) fn redis_now(&self) -> i64 {
        i64::try_from(unix_ms_now()).unwrap_or(i64::MAX) + self.offset_ms.load(Ordering::Relaxed)
    }

    /// A message from the channel or the store.
    pub(super) fn on_payload(&self, payload: &str, source: &str) {
        let wire = match serde_json::from_str::<Wire>(payload) {
            Ok(w) if w.v == VERSION => w,
            Ok(w) => {
                if self.count_malformed() {
                    tracing::warn!(prefix = %self.prefix, source, version = w.v, "redis sync ignored a trip message of an unknown version");
                }
                return;
            }
            Err(e) => {
                if self.count_malformed() {
                    let shown: String = payload.chars().take(120).collect();
                    tracing::warn!(prefix = %self.prefix, source, error = %e, payload = %shown, "redis sync ignored a malformed trip message");
                }
                return;
            }
        };
        if wire.origin == self.origin {
            return;
        }
        self.count_received();
        let now = self.redis_now();
        if i64::try_from(wire.deadline).unwrap_or(i64::MAX) <= now {
            self.expired.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(breaker = %wire.name, origin = %wire.origin, "redis sync ignored a trip whose deadline passed");
            return;
        }
        {
            let mut remote = lock(&self.remote);
            remote.retain(|_, w| i64::try_from(w.deadline).unwrap_or(i64::MAX) > now);
            let keep = remote.get(&wire.name).is_none_or(|w| w.deadline < wire.deadline);
            if keep {
                remote.insert(wire.name.clone(), wire.clone());
            }
        }
        if self.apply(&wire) {
            self.applied.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(breaker = %wire.name, origin = %wire.origin, reason = %wire.reason, "redis sync applied a remote trip");
        }
    }

    /// Opens the local breakers `wire` names until its deadline. Whether any was found.
    pub(super) fn apply(&self, wire: &Wire) -> bool {
        let remaining = i64::try_from(wire.deadline).unwrap_or(i64::MAX) - self.redis_now();
        let Ok(ms) = u64::try_from(remaining) else {
            return false;
        };
        if ms == 0 {
            return false;
        }
        let wait = Duration::from_millis(ms);
        match (&wire.registry, &wire.key) {
            (Some(registry), Some(key)) => {
                let targets = lock(&self.keyed).get(registry).cloned().unwrap_or_default();
                let mut any = false;
                for trip in targets {
                    any |= trip(key, wait);
                }
                any
            }
            _ => {
                let targets = lock(&self.plain).get(&wire.name).cloned().unwrap_or_default();
                for b in &targets {
                    b.trip_remote(wait);
                }
                !targets.is_empty()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::State;

    #[tokio::test]
    async fn expired_and_skewed_deadlines() {
        let shared = Shared::new("t", "me".into());
        let b = CircuitBreaker::builder("b")
            .consecutive_failures(1)
            .max_open_duration(Duration::from_secs(60))
            .build()
            .unwrap();
        lock(&shared.plain).insert("b".into(), vec![b.clone()]);
        // Redis's clock runs an hour ahead of ours: deadlines are read on it.
        shared.offset_ms.store(3_600_000, Ordering::Relaxed);
        let wire = |deadline: i64, origin: &str| {
            serde_json::to_string(&Wire {
                v: 1,
                name: "b".into(),
                registry: None,
                key: None,
                deadline: u64::try_from(deadline).unwrap(),
                reason: "failure_rate".into(),
                origin: origin.into(),
            })
            .unwrap()
        };
        // Past on Redis's clock (though an hour ahead of ours): ignored.
        shared.on_payload(&wire(shared.redis_now() - 1_000, "other"), "channel");
        assert_eq!(b.state(), State::Closed);
        assert_eq!(shared.expired.load(Ordering::Relaxed), 1);
        // Our own message: ignored.
        shared.on_payload(&wire(shared.redis_now() + 10_000, "me"), "channel");
        assert_eq!(b.state(), State::Closed);
        // Ten minutes ahead: clamped to max_open_duration.
        shared.on_payload(&wire(shared.redis_now() + 600_000, "other"), "channel");
        assert_eq!(b.state(), State::Open);
        let left = b.snapshot().retry_after.unwrap();
        assert!(
            left <= Duration::from_secs(60) && left > Duration::from_secs(59),
            "{left:?}"
        );
        // Garbage: counted.
        shared.on_payload("{not json", "channel");
        assert_eq!(shared.malformed.load(Ordering::Relaxed), 1);
    }
}
