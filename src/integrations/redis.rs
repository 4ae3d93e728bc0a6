//! Replicas share trips through Redis (feature `redis`): [`RedisSync`].
//!
//! ```no_run
//! use std::time::Duration;
//! use tower_breaker::{CircuitBreaker, keyed::KeyedRegistry};
//! use tower_breaker::integrations::redis::{Client, RedisSync};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // One per process, inside the tokio runtime; it connects (and reconnects) in the background.
//! let sync = RedisSync::builder(Client::open("redis://redis.internal:6379/")?)
//!     .prefix("myapp:breakers") // every replica of the fleet uses the same prefix
//!     .build()?;
//!
//! // A breaker whose trips are shared: built through the sync (it installs a listener and
//! // registers the breaker to receive the other replicas' trips).
//! let openai = sync.attach(
//!     CircuitBreaker::builder("openai")
//!         .consecutive_failures(5)
//!         .open_duration(Duration::from_secs(30)),
//! )?;
//!
//! // Keyed breakers share per key: a trip of "openai:gpt-4o" here opens "openai:gpt-4o"
//! // on every replica (creating that key's breaker where it does not exist yet).
//! let models = sync.attach_keyed(KeyedRegistry::<String>::builder(
//!     CircuitBreaker::builder("openai").consecutive_failures(5),
//! ))?;
//!
//! // Use `openai` and `models` as usual (CircuitBreakerLayer, KeyedCircuitBreakerLayer, ...).
//! // The sync's state, for a health endpoint:
//! let status = sync.status();
//! println!("redis connected: {}, outages: {}", status.connected, status.outages);
//! # let _ = (openai, models);
//! # Ok(()) }
//! ```
//!
//! # Deployment
//!
//! N replicas of an application run behind a load balancer; each has its own breakers for the
//! same upstreams (same names), and all of them reach one Redis (a single instance or a
//! primary with replicas; Redis Cluster is not supported: the store script touches two keys).
//! Each replica builds one [`RedisSync`] at start-up with the same [`prefix`](RedisSyncBuilder::prefix),
//! and attaches the breakers that should share trips.
//!
//! When the upstream goes down, the first replica whose breaker trips tells the others, and
//! every replica stops sending it traffic at once instead of each paying for its own
//! `consecutive_failures` (N replicas × 5 failed calls, each perhaps a 60 s timeout).
//!
//! # What is shared, what is not
//!
//! **Shared: trips.** When a local breaker opens (any trip rule, a failed probe, a server's
//! `Retry-After`, [`CircuitBreaker::trip`]), the sync publishes `{name, deadline, reason,
//! origin}` and every other replica opens its breaker of that name until that deadline, with
//! [`CircuitBreaker::trip_remote`] (so the transition's reason is [`Reason::Remote`] and is
//! not echoed back). The usual max-deadline rule applies: a trip never shortens an open
//! period in force, and is clamped to the receiving breaker's `max_open_duration`.
//!
//! **Local: counters and probing.** Each replica counts its own calls, and after the deadline
//! each replica probes the upstream on its own and closes by itself. Counters stay local
//! because sharing them would put Redis on the hot path (a round trip, or a lossy batch, per
//! call), would make every replica's availability depend on Redis's, and would mix the
//! windows of replicas that see different traffic (one replica's network trouble would trip
//! the fleet). A trip is rare and idempotent, so it travels cheaply and can be re-sent.
//! Probing stays local so that each replica checks its own path to the upstream; a replica
//! whose probe fails re-opens and shares that new trip.
//!
//! Not shared: [`force_open`](CircuitBreaker::force_open), [`disable`](CircuitBreaker::disable)
//! and [`reset`](CircuitBreaker::reset) (operator actions on one replica), and the extension
//! of an open period that is already in force (a longer [`trip`](CircuitBreaker::trip) on an
//! open breaker publishes no transition).
//!
//! # In Redis
//!
//! With the default prefix `tower-breaker`:
//!
//! | key | what |
//! |---|---|
//! | `tower-breaker:trips` | the pub/sub channel; each message is one trip as JSON |
//! | `tower-breaker:trip:{name}` | the trip in force for breaker `name` (the same JSON), expiring at its deadline |
//! | `tower-breaker:index` | a sorted set of the names with a trip in force, scored by deadline, so a replica that starts (or reconnects) reads them without `SCAN` |
//!
//! A message: `{"v":1,"name":"openai:gpt-4o","registry":"openai","key":"gpt-4o",
//! "deadline":1767225600000,"reason":"consecutive_failures","origin":"web-1-4242-9f1c"}`
//! (`registry` and `key` only for keyed breakers; `deadline` in UNIX milliseconds on the Redis
//! server's clock, see below). Storing is one Lua script that keeps the later deadline: a
//! shorter trip never overwrites a longer one in force, and a trip is published only when it
//! was stored. A message that does not parse (or has an unknown `v`) is ignored, counted
//! ([`SyncStatus::malformed`]) and logged at WARN (the first ten, then one in a thousand).
//!
//! # Time and clock skew
//!
//! Deadlines travel as wall-clock time, UNIX milliseconds, on **the Redis server's clock**:
//! each replica measures the offset between its own clock and Redis's (`TIME`) when it
//! connects and at every [`ping_interval`](RedisSyncBuilder::ping_interval), and converts
//! deadlines both ways with it. Replicas whose clocks disagree (by seconds, or more) therefore
//! still agree on deadlines; the remaining error is the offset's estimate, at most half the
//! round trip to Redis plus the drift of the local clock over one ping interval, i.e.
//! milliseconds. On receipt:
//!
//! - a deadline already past (on the Redis clock) is ignored;
//! - a deadline further away than the receiving breaker's `max_open_duration` is clamped to it;
//! - otherwise the breaker opens for the time remaining, measured from receipt (so it is
//!   shortened by the delivery delay, typically under a millisecond).
//!
//! # When Redis is unreachable
//!
//! The hot path never waits on Redis: a breaker's listener only puts the trip on a bounded
//! queue ([`queue_capacity`](RedisSyncBuilder::queue_capacity); a full queue drops the trip
//! and counts it in [`SyncStatus::dropped`]), and a background task publishes it. While Redis
//! is unreachable, every replica keeps working on its local breakers; the sync logs one WARN
//! per outage (not per message), shows `connected: false` in [`RedisSync::status`] (and, with
//! the `metrics` feature, `circuit_breaker_redis_connected 0`), and reconnects by itself with
//! a backoff ([`reconnect_delay`](RedisSyncBuilder::reconnect_delay)). Once back, it
//! resubscribes, reads the trips in force from Redis and applies them, and re-publishes its
//! own trips still in force (those it could not publish during the outage, and those Redis
//! lost if it restarted without persistence).
//!
//! A connection is declared lost when the pub/sub stream ends, a command fails, or a command
//! (including the periodic ping) does not answer within [`timeout`](RedisSyncBuilder::timeout).
//!
//! # Cost and trust
//!
//! A shared breaker has one more listener: each call's event costs an indirect call and a
//! `match`; only a transition to open does more (reads the wall clock, allocates the name,
//! `try_send`s on the queue). Everything else happens on the background task: one Redis
//! round trip per local trip, and one JSON parse per trip received.
//!
//! Whoever can publish on the channel can open any shared breaker of the fleet, for at most
//! its `max_open_duration`: give the application's Redis the same trust as its configuration
//! (ACLs, a private network). A breaker that a remote trip opened for longer than its own
//! `max_open_duration` allows is opened again (for at most that) each time the sync
//! reconnects and reads the trip from the store.
//!
//! # Metrics
//!
//! With the `metrics` feature, labelled `prefix="<prefix>"`:
//!
//! | name | type | meaning |
//! |---|---|---|
//! | `circuit_breaker_redis_connected` | gauge | `1` connected, `0` not |
//! | `circuit_breaker_redis_outages_total` | counter | connections lost or failed (once per outage) |
//! | `circuit_breaker_redis_published_total` | counter | local trips stored and published |
//! | `circuit_breaker_redis_received_total` | counter | trips of other replicas received (channel or store) |
//! | `circuit_breaker_redis_malformed_total` | counter | messages on the channel that did not parse |

use std::{
    collections::HashMap,
    fmt,
    hash::Hash,
    str::FromStr,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use ::redis::{AsyncConnectionConfig, ErrorKind, RedisResult, Script, aio::MultiplexedConnection};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::{
    breaker::{Builder, CircuitBreaker, ConfigError, Event, Reason, State},
    keyed::{KeyedRegistry, KeyedRegistryBuilder},
};

/// Re-exported from the `redis` crate, so that an application needs no direct dependency on
/// it (nor a matching version): `Client::open("redis://host:6379/")?`.
#[doc(no_inline)]
pub use ::redis::{Client, RedisError};

/// `circuit_breaker_redis_connected`
pub const CONNECTED: &str = "circuit_breaker_redis_connected";
/// `circuit_breaker_redis_outages_total`
pub const OUTAGES: &str = "circuit_breaker_redis_outages_total";
/// `circuit_breaker_redis_published_total`
pub const PUBLISHED: &str = "circuit_breaker_redis_published_total";
/// `circuit_breaker_redis_received_total`
pub const RECEIVED: &str = "circuit_breaker_redis_received_total";
/// `circuit_breaker_redis_malformed_total`
pub const MALFORMED: &str = "circuit_breaker_redis_malformed_total";

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "tower-breaker";

/// Stores a trip unless a later deadline is in force, and publishes it when stored.
///
/// KEYS: trip key, index. ARGV: deadline (ms, Redis clock), payload, channel, name.
const STORE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local deadline = tonumber(ARGV[1])
if deadline <= now then return 0 end
local cur = tonumber(redis.call('ZSCORE', KEYS[2], ARGV[4]) or '0')
if cur >= deadline and redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('PEXPIREAT', KEYS[1], deadline)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('ZADD', KEYS[2], deadline, ARGV[4])
local top = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[2], top[2])
redis.call('PUBLISH', ARGV[3], ARGV[2])
return 1
";

/// The current version of the message format.
const VERSION: u32 = 1;

/// A trip on the wire and in the store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Wire {
    v: u32,
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    registry: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    /// UNIX milliseconds, Redis's clock.
    deadline: u64,
    reason: String,
    origin: String,
}

/// A local trip, from a listener to the background task.
#[derive(Clone, Debug)]
struct LocalTrip {
    name: String,
    /// `(registry, key)` for a keyed breaker.
    keyed: Option<(Arc<str>, String)>,
    /// UNIX milliseconds, local clock.
    deadline: u64,
    reason: Reason,
}

fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Builds a [`RedisSync`]; see [`RedisSync::builder`].
#[must_use]
#[derive(Debug, Clone)]
pub struct RedisSyncBuilder {
    client: Client,
    prefix: String,
    origin: Option<String>,
    timeout: Duration,
    ping_interval: Duration,
    reconnect_min: Duration,
    reconnect_max: Duration,
    queue_capacity: usize,
}

impl RedisSyncBuilder {
    /// The prefix of the channel and keys (default `tower-breaker`): replicas that share trips
    /// use the same prefix; separate fleets (or environments) sharing one Redis use different
    /// ones.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// This replica's identity in messages (default `"{HOSTNAME}-{pid}-{random}"`). It must be
    /// unique in the fleet: a replica ignores messages carrying its own origin.
    pub fn origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = Some(origin.into());
        self
    }

    /// How long connecting, and each command, may take before the connection is declared lost
    /// (default 2 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How often the connection is checked (a `PING` on the subscription, `TIME` on the
    /// command connection, which also refreshes the clock offset); default 5 s.
    pub fn ping_interval(mut self, interval: Duration) -> Self {
        self.ping_interval = interval;
        self
    }

    /// The delay before the first reconnection attempt after a failure, doubling at each
    /// failed attempt up to `max` (default 100 ms to 5 s).
    pub fn reconnect_delay(mut self, min: Duration, max: Duration) -> Self {
        self.reconnect_min = min;
        self.reconnect_max = max;
        self
    }

    /// How many local trips may wait for the background task (default 1,024); when full, a
    /// trip is dropped (counted in [`SyncStatus::dropped`]) rather than making a call wait.
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity;
        self
    }

    /// Validates the settings and starts the background task, which connects to Redis (and
    /// keeps reconnecting) without blocking this call.
    ///
    /// Must be called from within a tokio runtime (a [`ConfigError`] otherwise): the task is
    /// spawned on it. The task stops when the last clone of the [`RedisSync`] is dropped.
    pub fn build(self) -> Result<RedisSync, ConfigError> {
        if self.prefix.is_empty() {
            return Err(ConfigError::new("prefix", "must not be empty"));
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::new("timeout", "must be greater than zero"));
        }
        if self.ping_interval.is_zero() {
            return Err(ConfigError::new("ping_interval", "must be greater than zero"));
        }
        if self.reconnect_min.is_zero() || self.reconnect_max < self.reconnect_min {
            return Err(ConfigError::new(
                "reconnect_delay",
                "must be greater than zero, with min <= max",
            ));
        }
        if self.queue_capacity == 0 {
            return Err(ConfigError::new("queue_capacity", "must be at least 1"));
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Err(ConfigError::new(
                "runtime",
                "is missing: build the sync within a tokio runtime",
            ));
        };
        let origin = self.origin.unwrap_or_else(default_origin);
        let (tx, rx) = mpsc::channel(self.queue_capacity);
        let dropped = Arc::new(AtomicU64::new(0));
        let shared = Arc::new(Shared::new(&self.prefix, origin));
        let worker = Worker {
            shared: shared.clone(),
            client: self.client,
            rx,
            local: HashMap::new(),
            store: Script::new(STORE),
            timeout: self.timeout,
            ping_interval: self.ping_interval,
            reconnect_min: self.reconnect_min,
            reconnect_max: self.reconnect_max,
            delay: self.reconnect_min,
            in_outage: false,
        };
        let task = runtime.spawn(worker.run()).abort_handle();
        Ok(RedisSync {
            inner: Arc::new(Handle {
                shared,
                tx,
                dropped,
                task,
            }),
        })
    }
}

fn default_origin() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "replica".to_string());
    format!("{host}-{}-{:08x}", std::process::id(), fastrand::u32(..))
}

/// Shares the trips of a set of breakers (plain and keyed) with the other replicas through
/// Redis. See [the module docs](self) for the deployment, what is shared, the format in
/// Redis, clock skew and outages.
///
/// A cheap `Clone` handle. The background task runs while any clone is alive.
#[derive(Clone)]
pub struct RedisSync {
    inner: Arc<Handle>,
}

struct Handle {
    shared: Arc<Shared>,
    tx: mpsc::Sender<LocalTrip>,
    dropped: Arc<AtomicU64>,
    task: tokio::task::AbortHandle,
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
    /// Local trips dropped because the queue to the background task was full.
    pub dropped: u64,
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

    /// Builds the breaker from `builder` with its trips shared: [`instrument`](Self::instrument)
    /// then [`register`](Self::register).
    pub fn attach(&self, builder: Builder) -> Result<CircuitBreaker, ConfigError> {
        let breaker = self.instrument(builder).build()?;
        self.register(&breaker);
        Ok(breaker)
    }

    /// Installs the listener that publishes the breaker's trips (its transitions to open,
    /// except those learned from other replicas). The listener only enqueues.
    pub fn instrument(&self, builder: Builder) -> Builder {
        builder.on_event(self.listener(None))
    }

    /// Registers `breaker` to receive the other replicas' trips for its name (trips in force
    /// that the sync already knows of apply at once). The sync keeps a handle to it.
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
    }

    /// Builds a keyed registry whose breakers share their trips, per key: a trip of one key's
    /// breaker opens that key's breaker on every replica, creating it where the key is new.
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
        let trip: KeyedTarget = Arc::new(move |key: &str, wait: Duration| {
            let Ok(key) = key.parse::<K>() else {
                return false;
            };
            match target.get(&key) {
                Ok(b) if target.overflow().is_none_or(|o| o.name() != b.name()) => {
                    b.trip_remote(wait);
                    true
                }
                _ => false,
            }
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
struct ListenerParts {
    tx: mpsc::Sender<LocalTrip>,
    dropped: Arc<AtomicU64>,
}

impl ListenerParts {
    fn listener(&self, keyed: Option<(Arc<str>, String)>) -> impl Fn(&Event<'_>) + Send + Sync + use<> {
        let ListenerParts { tx, dropped } = self.clone();
        move |event: &Event<'_>| {
            let Event::Transition {
                name,
                to: State::Open,
                reason,
                open_for: Some(open_for),
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
            if tx.try_send(trip).is_err() {
                dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

type KeyedTarget = Arc<dyn Fn(&str, Duration) -> bool + Send + Sync>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What the handle and the background task share.
struct Shared {
    prefix: String,
    origin: String,
    channel: String,
    index: String,
    plain: Mutex<HashMap<String, Vec<CircuitBreaker>>>,
    keyed: Mutex<HashMap<String, Vec<KeyedTarget>>>,
    /// Trips in force learned from other replicas, by breaker name, for breakers registered
    /// later.
    remote: Mutex<HashMap<String, Wire>>,
    connected: AtomicBool,
    offset_ms: AtomicI64,
    outages: AtomicU64,
    published: AtomicU64,
    superseded: AtomicU64,
    received: AtomicU64,
    applied: AtomicU64,
    expired: AtomicU64,
    malformed: AtomicU64,
    last_error: Mutex<Option<String>>,
    #[cfg(feature = "metrics")]
    metrics: Metrics,
}

#[cfg(feature = "metrics")]
struct Metrics {
    connected: ::metrics::Gauge,
    outages: ::metrics::Counter,
    published: ::metrics::Counter,
    received: ::metrics::Counter,
    malformed: ::metrics::Counter,
}

impl Shared {
    fn new(prefix: &str, origin: String) -> Self {
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

    fn trip_key(&self, name: &str) -> String {
        format!("{}:trip:{name}", self.prefix)
    }

    fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Release);
        #[cfg(feature = "metrics")]
        self.metrics.connected.set(if connected { 1.0 } else { 0.0 });
    }

    fn count_outage(&self) {
        self.outages.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        self.metrics.outages.increment(1);
    }

    fn count_published(&self) {
        self.published.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        self.metrics.published.increment(1);
    }

    fn count_received(&self) {
        self.received.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        self.metrics.received.increment(1);
    }

    /// Counts a malformed message; whether to log it at WARN: the first ten, then one in a
    /// thousand, so that a flood of junk on the channel cannot flood the logs.
    fn count_malformed(&self) -> bool {
        let n = self.malformed.fetch_add(1, Ordering::Relaxed) + 1;
        #[cfg(feature = "metrics")]
        self.metrics.malformed.increment(1);
        n <= 10 || n % 1000 == 0
    }

    /// Now on Redis's clock, as estimated.
    fn redis_now(&self) -> i64 {
        i64::try_from(unix_ms_now()).unwrap_or(i64::MAX) + self.offset_ms.load(Ordering::Relaxed)
    }

    /// A message from the channel or the store.
    fn on_payload(&self, payload: &str, source: &str) {
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
    fn apply(&self, wire: &Wire) -> bool {
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

/// The background task: owns the connections and the local trips in force.
struct Worker {
    shared: Arc<Shared>,
    client: Client,
    rx: mpsc::Receiver<LocalTrip>,
    /// Local trips in force, by breaker name: re-published on every (re)connection.
    local: HashMap<String, LocalTrip>,
    store: Script,
    timeout: Duration,
    ping_interval: Duration,
    reconnect_min: Duration,
    reconnect_max: Duration,
    delay: Duration,
    in_outage: bool,
}

/// How a session ended: the queue closed, or the connection failed.
enum End {
    Closed,
    Failed(RedisError),
}

impl From<RedisError> for End {
    fn from(e: RedisError) -> Self {
        End::Failed(e)
    }
}

async fn within<T>(d: Duration, f: impl Future<Output = RedisResult<T>>) -> RedisResult<T> {
    tokio::time::timeout(d, f).await.unwrap_or_else(|_| {
        Err(RedisError::from((
            ErrorKind::IoError,
            "redis did not answer in time",
        )))
    })
}

impl Worker {
    async fn run(mut self) {
        loop {
            let e = match self.session().await {
                End::Closed => return,
                End::Failed(e) => e,
            };
            self.shared.set_connected(false);
            *lock(&self.shared.last_error) = Some(e.to_string());
            if !self.in_outage {
                self.in_outage = true;
                self.shared.count_outage();
                tracing::warn!(
                    prefix = %self.shared.prefix, error = %e,
                    "redis sync: redis is unreachable; breakers work locally until it is back"
                );
            } else {
                tracing::debug!(prefix = %self.shared.prefix, error = %e, "redis sync: reconnection failed");
            }
            // Wait before the next attempt, still taking local trips off the queue.
            let mut sleep = std::pin::pin!(tokio::time::sleep(self.delay));
            loop {
                tokio::select! {
                    () = &mut sleep => break,
                    trip = self.rx.recv() => match trip {
                        Some(trip) => self.remember(trip),
                        None => return,
                    },
                }
            }
            self.delay = (self.delay * 2).min(self.reconnect_max);
        }
    }

    async fn session(&mut self) -> End {
        match self.session_inner().await {
            Ok(never) => match never {},
            Err(end) => end,
        }
    }

    async fn session_inner(&mut self) -> Result<std::convert::Infallible, End> {
        let t = self.timeout;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(t)
            .set_response_timeout(t);
        let mut conn = within(
            t,
            self.client.get_multiplexed_async_connection_with_config(&config),
        )
        .await?;
        let mut pubsub = within(t, self.client.get_async_pubsub()).await?;
        within(t, pubsub.subscribe(&self.shared.channel)).await?;
        let (mut sink, mut stream) = pubsub.split();
        self.measure_offset(&mut conn).await?;
        // Subscribed first, then read the store: no trip falls between the two.
        self.resync(&mut conn).await?;
        self.republish(&mut conn).await?;
        self.shared.set_connected(true);
        self.delay = self.reconnect_min;
        if std::mem::take(&mut self.in_outage) {
            tracing::info!(prefix = %self.shared.prefix, "redis sync: reconnected; trips in force resynchronised");
        } else {
            tracing::debug!(prefix = %self.shared.prefix, origin = %self.shared.origin, "redis sync: connected");
        }
        let mut ping = tokio::time::interval(self.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        loop {
            tokio::select! {
                msg = stream.next() => match msg {
                    Some(msg) => match msg.get_payload::<String>() {
                        Ok(payload) => self.shared.on_payload(&payload, "channel"),
                        Err(_) => self.shared.on_payload("<not a string>", "channel"),
                    },
                    None => {
                        return Err(End::Failed(RedisError::from((ErrorKind::IoError, "the subscription was closed"))));
                    }
                },
                trip = self.rx.recv() => match trip {
                    Some(trip) => {
                        let name = trip.name.clone();
                        self.remember(trip);
                        if let Some(trip) = self.local.get(&name).cloned() {
                            self.publish(&mut conn, &trip).await?;
                        }
                    }
                    None => return Err(End::Closed),
                },
                _ = ping.tick() => {
                    within(t, sink.ping::<::redis::Value>()).await?; // `pong` in subscribed mode
                    self.measure_offset(&mut conn).await?;
                }
            }
        }
    }

    /// Estimates the offset of Redis's clock (`TIME`) from the local one.
    async fn measure_offset(&self, conn: &mut MultiplexedConnection) -> RedisResult<()> {
        let before = unix_ms_now();
        let (secs, micros): (u64, u64) = within(self.timeout, ::redis::cmd("TIME").query_async(conn)).await?;
        let after = unix_ms_now();
        let redis_ms = secs.saturating_mul(1000).saturating_add(micros / 1000);
        let local_ms = before / 2 + after / 2 + (before % 2 + after % 2) / 2;
        let offset =
            i64::try_from(redis_ms).unwrap_or(i64::MAX) - i64::try_from(local_ms).unwrap_or(i64::MAX);
        self.shared.offset_ms.store(offset, Ordering::Relaxed);
        Ok(())
    }

    /// Reads the trips in force from the store and applies them.
    async fn resync(&self, conn: &mut MultiplexedConnection) -> RedisResult<()> {
        let names: Vec<String> = within(
            self.timeout,
            ::redis::cmd("ZRANGE")
                .arg(&self.shared.index)
                .arg(0)
                .arg(-1)
                .query_async(conn),
        )
        .await?;
        if names.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = names.iter().map(|n| self.shared.trip_key(n)).collect();
        let payloads: Vec<Option<String>> =
            within(self.timeout, ::redis::cmd("MGET").arg(&keys).query_async(conn)).await?;
        for payload in payloads.into_iter().flatten() {
            self.shared.on_payload(&payload, "store");
        }
        Ok(())
    }

    /// Re-publishes the local trips still in force.
    async fn republish(&mut self, conn: &mut MultiplexedConnection) -> RedisResult<()> {
        let now = unix_ms_now();
        self.local.retain(|_, t| t.deadline > now);
        let trips: Vec<LocalTrip> = self.local.values().cloned().collect();
        for trip in &trips {
            self.publish(conn, trip).await?;
        }
        Ok(())
    }

    /// Keeps `trip` as the name's local trip in force if its deadline is the later one.
    fn remember(&mut self, trip: LocalTrip) {
        let now = unix_ms_now();
        self.local.retain(|_, t| t.deadline > now);
        if trip.deadline <= now {
            return;
        }
        match self.local.get(&trip.name) {
            Some(t) if t.deadline >= trip.deadline => {}
            _ => {
                self.local.insert(trip.name.clone(), trip);
            }
        }
    }

    /// Stores and publishes `trip` (the script keeps the later deadline).
    async fn publish(&self, conn: &mut MultiplexedConnection, trip: &LocalTrip) -> RedisResult<()> {
        let offset = self.shared.offset_ms.load(Ordering::Relaxed);
        let deadline = u64::try_from(
            i64::try_from(trip.deadline)
                .unwrap_or(i64::MAX)
                .saturating_add(offset),
        )
        .unwrap_or(0);
        let wire = Wire {
            v: VERSION,
            name: trip.name.clone(),
            registry: trip.keyed.as_ref().map(|(r, _)| r.to_string()),
            key: trip.keyed.as_ref().map(|(_, k)| k.clone()),
            deadline,
            reason: trip.reason.as_str().to_string(),
            origin: self.shared.origin.clone(),
        };
        let Ok(payload) = serde_json::to_string(&wire) else {
            return Ok(());
        };
        let stored: i64 = within(
            self.timeout,
            self.store
                .key(self.shared.trip_key(&trip.name))
                .key(&self.shared.index)
                .arg(deadline)
                .arg(&payload)
                .arg(&self.shared.channel)
                .arg(&trip.name)
                .invoke_async(conn),
        )
        .await?;
        if stored == 1 {
            self.shared.count_published();
            tracing::debug!(breaker = %trip.name, reason = %trip.reason, "redis sync published a trip");
        } else {
            self.shared.superseded.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_round_trips_and_omits_absent_keys() {
        let w = Wire {
            v: 1,
            name: "openai".into(),
            registry: None,
            key: None,
            deadline: 1_767_225_600_000,
            reason: "consecutive_failures".into(),
            origin: "a".into(),
        };
        let json = serde_json::to_string(&w).unwrap();
        assert_eq!(
            json,
            r#"{"v":1,"name":"openai","deadline":1767225600000,"reason":"consecutive_failures","origin":"a"}"#
        );
        assert_eq!(serde_json::from_str::<Wire>(&json).unwrap(), w);
        // Unknown fields are tolerated (newer senders), missing ones are not.
        assert!(
            serde_json::from_str::<Wire>(
                r#"{"v":1,"name":"x","deadline":1,"reason":"r","origin":"o","new":true}"#
            )
            .is_ok()
        );
        assert!(serde_json::from_str::<Wire>(r#"{"v":1,"name":"x","reason":"r","origin":"o"}"#).is_err());
    }

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
