//! What the handle and the background task share: the registered breakers, the trips and
//! overrides learned from other replicas, the counters; and what to do with a trip or an
//! override received.

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
    wire::{OverrideWire, VERSION, Wire, unix_ms_now},
};
use crate::breaker::{CircuitBreaker, Origin, Override};

/// Applies a remote trip or override to the breaker of this key (a string, parsed back into
/// the registry's key type); whether there was one to apply it to.
pub(super) type KeyedTarget = Arc<dyn Fn(&str, Remote<'_>) -> bool + Send + Sync>;

/// What another replica sent, for one breaker.
#[derive(Clone, Copy, Debug)]
pub(super) enum Remote<'a> {
    /// Open for this long.
    Trip(Duration),
    /// An operator's action, from this origin.
    Override(Override, &'a str),
}

impl Remote<'_> {
    pub(super) fn apply_to(self, breaker: &CircuitBreaker) {
        match self {
            Remote::Trip(wait) => breaker.trip_remote(wait),
            Remote::Override(action, origin) => breaker.apply_override(action, Origin::Remote(origin)),
        }
    }
}

/// Where the overrides known for a breaker are kept: whether it is a shadow switch, and the
/// breaker's name.
pub(super) type Slot = (bool, String);

/// What the handle and the background task share.
pub(super) struct Shared {
    pub(super) prefix: String,
    pub(super) origin: String,
    pub(super) channel: String,
    pub(super) index: String,
    /// The channel of overrides.
    pub(super) override_channel: String,
    /// The hashes of standing overrides: force-open / disable / reset, and shadow switches.
    pub(super) manual_hash: String,
    pub(super) shadow_hash: String,
    pub(super) plain: Mutex<HashMap<String, Vec<CircuitBreaker>>>,
    pub(super) keyed: Mutex<HashMap<String, Vec<KeyedTarget>>>,
    /// Trips in force learned from other replicas, by breaker name, for breakers registered
    /// later.
    pub(super) remote: Mutex<HashMap<String, Wire>>,
    /// The latest override known per slot, this replica's (as stored, or to be stored) and the
    /// others' (as applied): what a remote override must be newer than to apply.
    pub(super) overrides: Mutex<HashMap<Slot, OverrideWire>>,
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
    pub(super) overrides_published: AtomicU64,
    pub(super) overrides_received: AtomicU64,
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
            override_channel: format!("{prefix}:overrides"),
            manual_hash: format!("{prefix}:override:manual"),
            shadow_hash: format!("{prefix}:override:shadow"),
            plain: Mutex::default(),
            keyed: Mutex::default(),
            remote: Mutex::default(),
            overrides: Mutex::default(),
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
            overrides_published: AtomicU64::new(0),
            overrides_received: AtomicU64::new(0),
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
                for target in targets {
                    any |= target(key, Remote::Trip(wait));
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

impl Shared {
    /// The hash where `wire`'s kind of override stands.
    pub(super) fn override_hash(&self, shadow: bool) -> &str {
        if shadow {
            &self.shadow_hash
        } else {
            &self.manual_hash
        }
    }

    /// An override from the channel or the store: applied when it is another replica's and
    /// newer than the override this replica knows for the same slot.
    pub(super) fn on_override(&self, payload: &str, source: &str) {
        let (wire, action) = match serde_json::from_str::<OverrideWire>(payload) {
            Ok(w) => match w.action() {
                Some(action) if w.v == VERSION => (w, action),
                _ => {
                    if self.count_malformed() {
                        tracing::warn!(prefix = %self.prefix, source, version = w.v, action = %w.action, "redis sync ignored an override of an unknown version or action");
                    }
                    return;
                }
            },
            Err(e) => {
                if self.count_malformed() {
                    let shown: String = payload.chars().take(120).collect();
                    tracing::warn!(prefix = %self.prefix, source, error = %e, payload = %shown, "redis sync ignored a malformed override message");
                }
                return;
            }
        };
        // Our own, echoed by the channel. From the store, our own is applied unless known: a
        // replica restarted under the same origin learns what it did before.
        if wire.origin == self.origin && source == "channel" {
            return;
        }
        let previous = {
            let mut known = lock(&self.overrides);
            let slot = (wire.is_shadow(), wire.name.clone());
            match known.get(&slot) {
                // Already applied, or older than what this replica knows (its own later action).
                Some(k) if *k == wire || k.at > wire.at => return,
                _ => known.insert(slot, wire.clone()),
            }
        };
        self.overrides_received.fetch_add(1, Ordering::Relaxed);
        // A replica that starts reads resets too: with nothing before them, nothing to undo.
        if source == "store" && action == Override::Reset && previous.is_none() {
            return;
        }
        let applied = self.apply_override(&wire, action);
        tracing::info!(
            breaker = %wire.name, action = action.as_str(), origin = %wire.origin, source, applied,
            "redis sync applied a remote override"
        );
    }

    /// Applies `action` from `wire` to the local breakers it names. Whether any was found.
    fn apply_override(&self, wire: &OverrideWire, action: Override) -> bool {
        let remote = Remote::Override(action, &wire.origin);
        match (&wire.registry, &wire.key) {
            (Some(registry), Some(key)) => {
                let targets = lock(&self.keyed).get(registry).cloned().unwrap_or_default();
                let mut any = false;
                for target in targets {
                    any |= target(key, remote);
                }
                any
            }
            _ => {
                let targets = lock(&self.plain).get(&wire.name).cloned().unwrap_or_default();
                for b in &targets {
                    remote.apply_to(b);
                }
                !targets.is_empty()
            }
        }
    }

    /// The standing overrides (not resets) known that `filter` selects, oldest first: for a
    /// breaker registered after they were learned or taken (this replica's own included: an
    /// override stands for every breaker of its name).
    pub(super) fn standing_overrides(
        &self,
        filter: impl Fn(&OverrideWire) -> bool,
    ) -> Vec<(OverrideWire, Override)> {
        let mut standing: Vec<_> = lock(&self.overrides)
            .values()
            .filter(|w| filter(w))
            .filter_map(|w| Some((w.clone(), w.action().filter(|a| *a != Override::Reset)?)))
            .collect();
        standing.sort_by_key(|(w, _)| w.at);
        standing
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
