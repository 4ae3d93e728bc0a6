//! [`RedisSync`]: the handle that attaches breakers and reports the sync's state.

use std::{
    fmt,
    hash::Hash,
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::sync::mpsc;

use super::{
    Client, DEFAULT_PREFIX, RedisSyncBuilder, lock,
    shared::{KeyedTarget, Remote, Shared},
    wire::{Local, LocalOverride, LocalTrip, Wire, millis, unix_ms_now},
};
use crate::{
    breaker::{Builder, CircuitBreaker, ConfigError, Event, Origin, Override, Reason, State},
    keyed::{KeyedRegistry, KeyedRegistryBuilder},
};

/// Shares the trips and operators' overrides of a set of breakers (plain and keyed) with the
/// other replicas through Redis. See [the module docs](super) for the deployment, what is
/// shared, the format in Redis, clock skew and outages.
///
/// A cheap `Clone` handle. The background task runs while any clone is alive.
#[derive(Clone)]
pub struct RedisSync {
    pub(super) inner: Arc<Handle>,
}

pub(super) struct Handle {
    pub(super) shared: Arc<Shared>,
    pub(super) tx: mpsc::Sender<Local>,
    pub(super) dropped: Arc<AtomicU64>,
    pub(super) task: tokio::task::AbortHandle,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl fmt::Debug for RedisSync {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSync")
            .field("prefix", &self.inner.shared.prefix)
            .field("origin", &self.inner.shared.origin)
            .field("connected", &self.is_connected())
            .finish_non_exhaustive()
    }
}

/// What a [`RedisSync`] has done so far: from [`RedisSync::status`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct SyncStatus {
    /// Whether the sync is connected and subscribed now.
    pub connected: bool,
    /// Outages: connections lost, or first connections that failed (one per outage, however
    /// many reconnection attempts it takes).
    pub outages: u64,
    /// Local trips stored in Redis and published.
    pub published: u64,
    /// Local trips that Redis did not store (nor publish) because the same or a later deadline
    /// was in force there.
    pub superseded: u64,
    /// Trips of other replicas received (on the channel, or read from the store on connect).
    pub received: u64,
    /// Received trips that opened (or extended) at least one local breaker.
    pub applied: u64,
    /// Received trips whose deadline had passed: ignored.
    pub expired: u64,
    /// Messages on the channel (or entries in the store) that did not parse: ignored.
    pub malformed: u64,
    /// Local trips and overrides dropped because the queue to the background task was full.
    pub dropped: u64,
    /// Local overrides (operator actions) stored in Redis and published.
    pub overrides_published: u64,
    /// Overrides of other replicas received and newer than what this replica knew (on the
    /// channel, or read from the store on connect).
    pub overrides_received: u64,
    /// Local trips that Redis refused to store (it answered with an error, e.g. a key of the
    /// wrong type in the way): logged at WARN and dropped; the sync carries on.
    pub refused: u64,
    /// The estimated offset of Redis's clock from this replica's, in milliseconds.
    pub clock_offset_ms: i64,
    /// The last connection error, if any.
    pub last_error: Option<String>,
}

impl RedisSync {
    /// Starts a builder that connects with `client`, e.g. [`Client::open`]`("redis://host:6379/")?`
    /// (`redis://:password@host:6379/2` for a password and database 2; TLS URLs need a TLS
    /// feature of the `redis` crate, which this crate does not enable).
    pub fn builder(client: Client) -> RedisSyncBuilder {
        RedisSyncBuilder {
            client,
            prefix: DEFAULT_PREFIX.to_string(),
            origin: None,
            timeout: Duration::from_secs(2),
            ping_interval: Duration::from_secs(5),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            queue_capacity: 1024,
        }
    }

    /// Builds the breaker from `builder` with its trips and overrides shared:
    /// [`instrument`](Self::instrument) then [`register`](Self::register).
    pub fn attach(&self, builder: Builder) -> Result<CircuitBreaker, ConfigError> {
        let breaker = self.instrument(builder).build()?;
        self.register(&breaker);
        Ok(breaker)
    }

    /// Installs the listener that publishes the breaker's trips (its transitions to open,
    /// except those learned from other replicas and a shadow breaker's) and its local
    /// overrides ([`Event::Override`] with [`Origin::Local`]). The listener only enqueues.
    pub fn instrument(&self, builder: Builder) -> Builder {
        builder.on_event(self.listener(None))
    }

    /// Registers `breaker` to receive the other replicas' trips and overrides for its name
    /// (trips in force and standing overrides that the sync already knows of apply at once).
    /// The sync keeps a handle to it.
    ///
    /// Breakers built elsewhere from an [`instrument`](Self::instrument)ed builder (e.g. by
    /// [`CircuitBreakerLayer::per_service`](crate::CircuitBreakerLayer::per_service)) publish
    /// their trips but receive none until registered here.
    pub fn register(&self, breaker: &CircuitBreaker) {
        let shared = &*self.inner.shared;
        lock(&shared.plain)
            .entry(breaker.name().to_string())
            .or_default()
            .push(breaker.clone());
        let known = lock(&shared.remote).get(breaker.name()).cloned();
        if let Some(wire) = known {
            if wire.registry.is_none() {
                shared.apply(&wire);
            }
        }
        for (wire, action) in shared.standing_overrides(|w| w.registry.is_none() && w.name == breaker.name())
        {
            breaker.apply_override(action, Origin::Remote(&wire.origin));
        }
    }

    /// Builds a keyed registry whose breakers share their trips and overrides, per key: a trip
    /// (or a force-open) of one key's breaker opens that key's breaker on every replica,
    /// creating it where the key is new (a reset applies only where the key exists).
    ///
    /// Trips are routed by the registry's name (its template's name, the same on every
    /// replica) and the key's `Display` form, parsed back with `FromStr` on receipt (the two
    /// must round-trip). A remote trip never opens the registry's overflow breaker. The
    /// listener is added after any [`map_builder`](KeyedRegistryBuilder::map_builder) already
    /// set (set yours before calling this).
    pub fn attach_keyed<K>(&self, builder: KeyedRegistryBuilder<K>) -> Result<KeyedRegistry<K>, ConfigError>
    where
        K: Hash + Eq + Clone + fmt::Display + FromStr + Send + Sync + 'static,
    {
        let registry_name = builder.template_name();
        let sync = self.clone_listener_parts();
        let name = registry_name.clone();
        let registry = builder
            .and_map_builder(move |b, key| b.on_event(sync.listener(Some((name.clone(), key.to_string())))))
            .build()?;
        let target = registry.clone();
        let trip: KeyedTarget = Arc::new(move |key: &str, remote: Remote<'_>| {
            let Ok(key) = key.parse::<K>() else {
                return false;
            };
            let breaker = if let Remote::Override(Override::Reset, _) = remote {
                // A reset undoes something: only a key that exists here has anything to undo.
                let mut found = None;
                target.for_each(|k, b| {
                    if *k == key {
                        found = Some(b.clone());
                    }
                });
                found
            } else {
                target
                    .get(&key)
                    .ok()
                    .filter(|b| target.overflow().is_none_or(|o| o.name() != b.name()))
            };
            let Some(breaker) = breaker else {
                return false;
            };
            remote.apply_to(&breaker);
            true
        });
        let shared = &*self.inner.shared;
        lock(&shared.keyed)
            .entry(registry_name.to_string())
            .or_default()
            .push(trip.clone());
        let known: Vec<Wire> = lock(&shared.remote)
            .values()
            .filter(|w| w.registry.as_deref() == Some(&*registry_name))
            .cloned()
            .collect();
        for wire in known {
            shared.apply(&wire);
        }
        for (wire, action) in shared.standing_overrides(|w| w.registry.as_deref() == Some(&*registry_name)) {
            if let Some(key) = &wire.key {
                trip(key, Remote::Override(action, &wire.origin));
            }
        }
        Ok(registry)
    }

    /// Whether the sync is connected to Redis and subscribed now.
    pub fn is_connected(&self) -> bool {
        self.inner.shared.connected.load(Ordering::Acquire)
    }

    /// This replica's origin (see [`RedisSyncBuilder::origin`]).
    pub fn origin(&self) -> &str {
        &self.inner.shared.origin
    }

    /// The connection state and the counters, read now.
    pub fn status(&self) -> SyncStatus {
        let s = &*self.inner.shared;
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SyncStatus {
            connected: s.connected.load(Ordering::Acquire),
            outages: n(&s.outages),
            published: n(&s.published),
            superseded: n(&s.superseded),
            received: n(&s.received),
            applied: n(&s.applied),
            expired: n(&s.expired),
            malformed: n(&s.malformed),
            dropped: n(&self.inner.dropped),
            refused: n(&s.refused),
            overrides_published: n(&s.overrides_published),
            overrides_received: n(&s.overrides_received),
            clock_offset_ms: s.offset_ms.load(Ordering::Relaxed),
            last_error: lock(&s.last_error).clone(),
        }
    }

    fn clone_listener_parts(&self) -> ListenerParts {
        ListenerParts {
            tx: self.inner.tx.clone(),
            dropped: self.inner.dropped.clone(),
        }
    }

    fn listener(&self, keyed: Option<(Arc<str>, String)>) -> impl Fn(&Event<'_>) + Send + Sync + use<> {
        self.clone_listener_parts().listener(keyed)
    }
}

/// What a breaker's listener holds: not the sync's shared state (which holds the breakers),
/// so that no reference cycle keeps them alive.
#[derive(Clone)]
pub(super) struct ListenerParts {
    pub(super) tx: mpsc::Sender<Local>,
    pub(super) dropped: Arc<AtomicU64>,
}

impl ListenerParts {
    fn listener(&self, keyed: Option<(Arc<str>, String)>) -> impl Fn(&Event<'_>) + Send + Sync + use<> {
        let ListenerParts { tx, dropped } = self.clone();
        move |event: &Event<'_>| {
            if let Event::Override {
                name,
                action,
                origin: Origin::Local,
            } = *event
            {
                // An operator's action here (a remote one is not echoed back). A shadow
                // switch is shared too, whatever the breaker's mode.
                let o = LocalOverride {
                    name: name.to_string(),
                    keyed: keyed.clone(),
                    action,
                    at: unix_ms_now(),
                };
                if tx.try_send(Local::Override(o)).is_err() {
                    dropped.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
            let Event::Transition {
                name,
                to: State::Open,
                reason,
                open_for: Some(open_for),
                // A shadow breaker's trips are notional: another replica must not enforce them.
                shadow: false,
                ..
            } = *event
            else {
                return;
            };
            if reason == Reason::Remote {
                return; // learned from another replica: not echoed back
            }
            let trip = LocalTrip {
                name: name.to_string(),
                keyed: keyed.clone(),
                deadline: unix_ms_now().saturating_add(millis(open_for)),
                reason,
            };
            if tx.try_send(Local::Trip(trip)).is_err() {
                dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
