//! [`KeyedRegistry`]: one breaker per key, bounded in size, with idle eviction.

use std::{
    borrow::Borrow,
    cell::RefCell,
    collections::HashMap,
    fmt,
    hash::{BuildHasher, Hash},
    sync::{
        Arc, RwLock, RwLockReadGuard, RwLockWriteGuard,
        atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering},
    },
    time::Duration,
};

use foldhash::fast::RandomState;
use hashbrown::HashTable;

use tokio::time::Instant;

use super::barrier;
use super::cache::{Cache, Caches};
use super::error::{KeyedError, RegistryFull};
use crate::breaker::{
    Builder, CircuitBreaker, Config, ConfigError, Lanes, Permit, Snapshot, State,
    sync::{self, Arc as LaneArc, CachePadded},
};

/// What a full registry does with a new key when every breaker it holds is protected from
/// eviction (open before its deadline, forced open, disabled or half-open).
///
/// See [the module docs](super#bounded-memory) for the eviction order. In a configuration
/// file (feature `serde`): `"overflow"` or `"reject"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum WhenFull {
    /// The new key shares one *overflow* breaker (built from the template and named
    /// `"<template>:<overflow>"`) with every other key that did not fit, until room frees up.
    /// Calls stay guarded and memory stays bounded. The default.
    #[default]
    Overflow,
    /// The call is refused with [`RegistryFull`] (not a [`CircuitOpen`](crate::CircuitOpen)).
    Reject,
}

type NameFn<K> = Arc<dyn Fn(&str, &K) -> String + Send + Sync>;
type MapFn<K> = Arc<dyn Fn(Builder, &K) -> Builder + Send + Sync>;

/// Builds a [`KeyedRegistry`]; see [`KeyedRegistry::builder`].
#[must_use]
pub struct KeyedRegistryBuilder<K> {
    template: Builder,
    overrides: Vec<(K, Builder)>,
    max_keys: usize,
    idle_timeout: Duration,
    when_full: WhenFull,
    name_with: Option<NameFn<K>>,
    map_builder: Option<MapFn<K>>,
}

impl<K> fmt::Debug for KeyedRegistryBuilder<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRegistryBuilder")
            .field("template", &self.template)
            .field("overrides", &self.overrides.len())
            .field("max_keys", &self.max_keys)
            .field("idle_timeout", &self.idle_timeout)
            .field("when_full", &self.when_full)
            .finish_non_exhaustive()
    }
}

/// The default bound on the number of keys.
pub const DEFAULT_MAX_KEYS: usize = 10_000;
/// The default idle time after which a closed breaker may be evicted.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

impl<K> KeyedRegistryBuilder<K>
where
    K: Hash + Eq + Clone + fmt::Display + Send + Sync + 'static,
{
    /// At most `n` keys are held (default 10,000). The bound is split evenly among the
    /// registry's shards and enforced per shard, so eviction may start before the registry as
    /// a whole holds `n` keys (measured: at 92% of 10,000 keys); it never holds more. Leave
    /// headroom: about 1.2 times the number of keys you expect to be in use at once.
    pub fn max_keys(mut self, n: usize) -> Self {
        self.max_keys = n;
        self
    }

    /// A closed breaker not used for at least this long may be evicted (default 10 minutes).
    /// See [the module docs](super#bounded-memory): a key unused for this long is removed by
    /// the second sweep of its shard after its last use, so between one and about two
    /// `idle_timeout`s after it.
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.idle_timeout = idle;
        self
    }

    /// What a full registry does when nothing can be evicted (default [`WhenFull::Overflow`]).
    pub fn when_full(mut self, policy: WhenFull) -> Self {
        self.when_full = policy;
        self
    }

    /// Builds `key`'s breaker from `builder` instead of the template (e.g. embeddings trip
    /// slower than chat). The builder's own name is the base of the breaker's name.
    pub fn override_key(mut self, key: K, builder: Builder) -> Self {
        self.overrides.push((key, builder));
        self
    }

    /// Names each key's breaker `f(base, key)`, where `base` is the name of the builder it is
    /// built from (default `"{base}:{key}"`, e.g. `"openai:gpt-4o"`).
    pub fn name_with(mut self, f: impl Fn(&str, &K) -> String + Send + Sync + 'static) -> Self {
        self.name_with = Some(Arc::new(f));
        self
    }

    /// Adjusts each key's builder, after it is named and before it is built (under the
    /// shard's lock: `f` must not use the registry): e.g. installs a listener that knows the
    /// key, such as
    /// [`integrations::metrics::instrument_keyed`](crate::integrations)
    /// (feature `metrics`).
    pub fn map_builder(mut self, f: impl Fn(Builder, &K) -> Builder + Send + Sync + 'static) -> Self {
        self.map_builder = Some(Arc::new(f));
        self
    }

    /// The template's name: the base of every key's breaker name, and the registry's name.
    #[cfg(feature = "redis")]
    pub(crate) fn template_name(&self) -> Arc<str> {
        self.template.name_ref().clone()
    }

    /// Like [`map_builder`](Self::map_builder), but runs `f` after the adjustment already set
    /// (if any) instead of replacing it: for integrations that add their own listener.
    #[cfg(any(feature = "redis", feature = "webhook"))]
    pub(crate) fn and_map_builder(
        mut self,
        f: impl Fn(Builder, &K) -> Builder + Send + Sync + 'static,
    ) -> Self {
        self.map_builder = Some(match self.map_builder.take() {
            Some(first) => Arc::new(move |b, k| f(first(b, k), k)),
            None => Arc::new(f),
        });
        self
    }

    /// Validates the template, the overrides and the bounds, and builds the registry.
    pub fn build(self) -> Result<KeyedRegistry<K>, ConfigError> {
        let name = self.template.name_ref();
        if self.max_keys == 0 {
            return Err(ConfigError::new("max_keys", "must be at least 1").in_breaker(name));
        }
        if self.idle_timeout.is_zero() {
            return Err(ConfigError::new("idle_timeout", "must be greater than zero").in_breaker(name));
        }
        let template = Template::new(self.template)?;
        barrier::init();
        let mut overrides = HashMap::with_capacity(self.overrides.len());
        for (key, builder) in self.overrides {
            overrides.insert(key, Template::new(builder)?);
        }
        // Enough shards to spread contention, few enough that each share is large and the
        // shares fill evenly (a shard of ~1,000 keys fills to within a few percent of the
        // mean when the registry is full).
        let shards = (self.max_keys / 1024).clamp(1, 64).next_power_of_two().min(64);
        let (per, extra) = (self.max_keys / shards, self.max_keys % shards);
        let shards = (0..shards)
            .map(|i| {
                CachePadded(Shard {
                    table: RwLock::new(HashTable::new()),
                    capacity: per + usize::from(i < extra),
                    last_sweep: AtomicU64::new(0),
                    full_until: AtomicU64::new(0),
                    #[cfg(test)]
                    failed_scans: AtomicU64::new(0),
                    #[cfg(test)]
                    locked_lookups: AtomicU64::new(0),
                })
            })
            .collect::<Vec<_>>()
            .into_boxed_slice();
        Ok(KeyedRegistry {
            inner: Arc::new(Inner {
                shard_mask: shards.len() - 1,
                shards,
                hasher: RandomState::default(),
                template,
                overrides,
                idle_ms: u64::try_from(self.idle_timeout.as_millis()).unwrap_or(u64::MAX),
                when_full: self.when_full,
                name_with: self.name_with,
                map_builder: self.map_builder,
                overflow: std::sync::OnceLock::new(),
                epoch: Instant::now(),
                cache: Box::new(thread_local::ThreadLocal::<RefCell<Cache<K>>>::new()),
                shadow: AtomicU8::new(SHADOW_UNSET),
            }),
        })
    }
}

/// A validated builder.
struct Template {
    builder: Builder,
    config: Config,
    base: Arc<str>,
}

impl Template {
    fn new(builder: Builder) -> Result<Self, ConfigError> {
        let config = builder.validated()?;
        let base = builder.name_ref().clone();
        Ok(Self {
            builder,
            config,
            base,
        })
    }
}

/// A key and its breaker, in its shard's table (inline: a lookup that misses this thread's
/// cache reads the key and the breaker without one more pointer to follow).
struct Entry<K> {
    key: K,
    breaker: CircuitBreaker,
    /// Set by every locked lookup (only if clear: read-mostly), cleared by each idle sweep: a
    /// key whose bit (and its [`Live`] one) is still clear at a sweep was not used since the
    /// previous one.
    used: AtomicBool,
    /// What the threads' caches share of the entry (see `cache.rs`). It holds a second
    /// handle of the breaker, so the breaker is held outside the registry when its count
    /// exceeds [`REGISTRY_HOLDS`].
    live: Arc<Live>,
}

/// The handles of a breaker that the registry itself holds: its entry's and its [`Live`]'s.
const REGISTRY_HOLDS: usize = 2;

/// The part of an entry that the threads' caches share: the breaker, its mark, and a `used`
/// bit of its own (cache hits set it, and never touch the table).
pub(super) struct Live {
    breaker: CircuitBreaker,
    used: sync::AtomicBool,
    /// Set by an eviction, under the shard's write lock, before it checks that nobody holds
    /// the breaker (and cleared again if somebody does); left set once the entry is removed.
    /// A cached lookup reads it after taking its permit (see `cache.rs` for the protocol).
    dead: sync::AtomicBool,
}

impl Live {
    /// Whether the entry was evicted (or is being evicted): a cached lookup must not use it.
    #[inline(always)]
    pub(super) fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Relaxed)
    }

    /// `take(breaker)` if the entry is alive: the lookup's half of the protocol in
    /// `cache.rs`. `take` clones the breaker's handle or takes a closed permit (either
    /// increments its reference count) and runs no listener; what it took is dropped again,
    /// unrecorded, if the entry turns out dead.
    #[inline(always)]
    fn take<T>(&self, take: impl FnOnce(&CircuitBreaker) -> Option<T>) -> Option<T> {
        if self.is_dead() {
            return None;
        }
        touch(&self.used);
        #[cfg(all(test, not(loom)))]
        if tests::WIDEN_RACE.load(Ordering::Relaxed) {
            std::thread::yield_now(); // an eviction may mark the entry now
        }
        let taken = take(&self.breaker)?;
        // Orders the count's increment before the mark's read, against the eviction's heavy
        // barrier between its marks and its reads of the counts.
        barrier::light();
        if self.is_dead() {
            discard(taken);
            return None;
        }
        Some(taken)
    }
}

/// Sets `used` if it is clear (read-mostly: no write to a shared line per lookup).
#[inline(always)]
fn touch(used: &sync::AtomicBool) {
    if !used.load(Ordering::Relaxed) {
        used.store(true, Ordering::Relaxed);
    }
}

impl<K> Entry<K> {
    #[inline]
    fn touch(&self) {
        if !self.used.load(Ordering::Relaxed) {
            self.used.store(true, Ordering::Relaxed);
        }
    }

    /// Whether a lookup (locked or cached) used the entry since the last sweep.
    fn was_used(&self) -> bool {
        self.used.load(Ordering::Relaxed) || self.live.used.load(Ordering::Relaxed)
    }

    /// Starts a new sweep period.
    fn clear_used(&self) {
        self.used.store(false, Ordering::Relaxed);
        self.live.used.store(false, Ordering::Relaxed);
    }

    /// Whether something outside the registry holds the breaker: a permit in flight, a
    /// refusal, a handle from `get`.
    fn held(&self) -> bool {
        LaneArc::strong_count(&self.breaker.root) > REGISTRY_HOLDS
    }

    /// Marks the entry for removal by [`reap`] (under the shard's write lock).
    fn mark(&self) {
        self.live.dead.store(true, Ordering::Relaxed);
    }

    fn is_marked(&self) -> bool {
        self.live.is_dead()
    }

    fn unmark(&self) {
        self.live.dead.store(false, Ordering::Relaxed);
    }
}

/// Drops what a cached lookup took from a breaker that turned out evicted (a closed permit,
/// released unrecorded; a handle). Out of line and by value, so that the hot path keeps the
/// permit in registers (a drop in place made it go through the stack, and reloading it there
/// cost a store-forwarding stall: 3 ns a lookup).
#[cold]
#[inline(never)]
fn discard<T>(taken: T) {
    drop(taken);
}

/// Removes the entries of `table` that were marked (`marked` of them), unless something took
/// hold of their breaker meanwhile: the eviction's half of the protocol in `cache.rs` (mark,
/// heavy barrier, read the count). A marked entry that stays is unmarked. `keep` runs on every
/// entry that stays. Under the shard's write lock; returns how many entries were removed.
fn reap<K>(table: &mut Table<K>, marked: usize, mut keep: impl FnMut(&Entry<K>)) -> usize {
    // Orders the marks before the counts' reads, against a cached lookup's light barrier
    // between its permit (the count's increment) and its read of the mark. Without it (the
    // system call failed), nothing marked goes.
    let fenced = marked > 0 && barrier::heavy();
    let before = table.len();
    table.retain(|e| {
        if e.is_marked() {
            if fenced && !e.held() {
                return false;
            }
            e.unmark();
        }
        keep(e);
        true
    });
    before - table.len()
}

type Table<K> = HashTable<Entry<K>>;

struct Shard<K> {
    table: RwLock<Table<K>>,
    capacity: usize,
    /// When this shard was last swept for idle keys (ms since the epoch).
    last_sweep: AtomicU64,
    /// Set when a new key found the shard full of breakers that may not be evicted: until
    /// this instant (ns since the epoch; [`UNTIL_SWEEP`] for "until the next sweep"), none of
    /// them can become evictable, so a new key is refused without a lock or a scan. Zero when
    /// unknown; reset by every removal (a sweep or a make-room pass).
    full_until: AtomicU64,
    /// Make-room scans that freed nothing (unit tests count them).
    #[cfg(test)]
    failed_scans: AtomicU64,
    /// Lookups that took the lock (unit tests count them).
    #[cfg(test)]
    locked_lookups: AtomicU64,
}

/// How many times a new key's make-room pass looks again after cached lookups took hold of
/// every breaker it was removing.
const MAKE_ROOM_TRIES: usize = 4;

/// What a make-room pass did.
enum Room {
    /// It removed at least one entry.
    Made,
    /// Nothing may go before this instant (as `full_until`).
    Full(u64),
    /// What it was removing was taken hold of meanwhile (by cached lookups).
    Raced,
}

/// `full_until` of a shard whose protected breakers can only become evictable through a sweep
/// (they were used since the last one).
const UNTIL_SWEEP: u64 = u64::MAX;

/// How long a full shard refuses new keys without looking again when what protects its
/// breakers has no deadline (a call in flight, a probe out, an operator's force-open or
/// disable): one scan per shard per this period at most.
const RECHECK_NANOS: u64 = 100_000_000;

impl<K> Shard<K> {
    fn read(&self) -> RwLockReadGuard<'_, Table<K>> {
        self.table
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Table<K>> {
        self.table
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

struct Inner<K> {
    shards: Box<[CachePadded<Shard<K>>]>,
    shard_mask: usize,
    hasher: RandomState,
    template: Template,
    overrides: HashMap<K, Template>,
    idle_ms: u64,
    when_full: WhenFull,
    name_with: Option<NameFn<K>>,
    map_builder: Option<MapFn<K>>,
    overflow: std::sync::OnceLock<CircuitBreaker>,
    epoch: Instant,
    /// Each thread's cache of hot entries (see `cache.rs`).
    cache: Box<dyn Caches<K>>,
    /// [`KeyedRegistry::set_shadow`]'s switch for keys created later: `SHADOW_UNSET`, or
    /// `SHADOW_OFF` / `SHADOW_ON` over the builders' own setting.
    shadow: AtomicU8,
}

const SHADOW_UNSET: u8 = 0;
const SHADOW_OFF: u8 = 1;
const SHADOW_ON: u8 = 2;

/// The time, read once per insert or sweep.
#[derive(Clone, Copy, Debug)]
struct Now {
    instant: Instant,
    /// Since the registry's epoch.
    nanos: u64,
    /// Since the registry's epoch.
    ms: u64,
}

impl Now {
    /// When to look again at a breaker whose protection has no deadline.
    const fn recheck(self) -> u64 {
        self.nanos.saturating_add(RECHECK_NANOS)
    }
}

/// One circuit breaker per key (per host, per model, per endpoint), built on first use from a
/// template [`Builder`], with per-key overrides and a bound on memory.
///
/// A cheap `Clone` handle over shared state. See [the module docs](super) for an example and
/// for the eviction rules.
pub struct KeyedRegistry<K> {
    inner: Arc<Inner<K>>,
}

impl<K> Clone for KeyedRegistry<K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<K> fmt::Debug for KeyedRegistry<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRegistry")
            .field("template", &self.inner.template.base)
            .field("keys", &self.len())
            .field("max_keys", &self.max_keys())
            .finish_non_exhaustive()
    }
}

/// Whether a key's breaker may be evicted now.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Verdict {
    /// It may, in this tier.
    Evict(Tier),
    /// It may not, before this instant (ns since the registry's epoch; [`UNTIL_SWEEP`]: not
    /// before the next sweep). A breaker whose protection has no deadline is looked at again
    /// after [`RECHECK_NANOS`].
    Keep(u64),
}

/// Why a key's breaker may be evicted, best candidates first.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Tier {
    /// Closed, not used since the last sweep.
    ClosedUnused,
    /// Open past its deadline, or half-open with no probe in flight, and not used since the
    /// last sweep: nobody came back to probe.
    ElapsedUnused,
    /// Closed, used since the last sweep.
    Closed,
}

impl<K> KeyedRegistry<K>
where
    K: Hash + Eq + Clone + fmt::Display + Send + Sync + 'static,
{
    /// Starts a registry whose breakers are built from `template`.
    pub fn builder(template: Builder) -> KeyedRegistryBuilder<K> {
        KeyedRegistryBuilder {
            template,
            overrides: Vec::new(),
            max_keys: DEFAULT_MAX_KEYS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            when_full: WhenFull::default(),
            name_with: None,
            map_builder: None,
        }
    }

    /// A registry with the default bounds (10,000 keys, 10 minutes idle).
    pub fn new(template: Builder) -> Result<Self, ConfigError> {
        Self::builder(template).build()
    }

    /// `key`'s breaker, created if it is new. Fails only when the registry is full, nothing
    /// can be evicted and the policy is [`WhenFull::Reject`].
    ///
    /// While the returned handle (or a permit or refusal it gives) is alive, the key is not
    /// evicted: keep it only as long as you need it.
    ///
    /// One hash; then this thread's cache, or one shared lock of one shard, held only to clone
    /// the breaker's handle (so listeners never run under a registry lock). See
    /// [Concurrency](super#concurrency).
    #[inline]
    pub fn get<Q>(&self, key: &Q) -> Result<CircuitBreaker, RegistryFull>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
    {
        let inner = &*self.inner;
        // One hash: bits 32.. pick the shard, the table uses the low bits and the top 7, the
        // thread's cache the low bits.
        let hash = inner.hasher.hash_one(key);
        if let Some(breaker) = inner.cached(hash, key, |b| Some(b.clone())) {
            return Ok(breaker);
        }
        let shard = &inner.shards[(hash >> 32) as usize & inner.shard_mask];
        #[cfg(test)]
        shard.locked_lookups.fetch_add(1, Ordering::Relaxed);
        let found = {
            let table = shard.read();
            table.find(hash, |e| e.key.borrow() == key).map(|entry| {
                entry.touch();
                (entry.breaker.clone(), inner.to_cache(entry))
            })
        };
        match found {
            Some((breaker, fill)) => {
                inner.fill(hash, fill);
                Ok(breaker)
            }
            None => self.insert(shard, hash, key),
        }
    }

    /// Asks `key`'s breaker for a permit (creating the breaker if the key is new).
    ///
    /// The hot path of the keyed service. A closed breaker's permit is taken from this
    /// thread's cache with no lock, or else under the shard's shared lock, without cloning the
    /// breaker's handle (that path runs no listener); any other state goes through the
    /// breaker's own `try_acquire` outside the lock. See [Concurrency](super#concurrency).
    #[inline]
    pub fn try_acquire<Q>(&self, key: &Q) -> Result<Permit, KeyedError>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
    {
        let inner = &*self.inner;
        let hash = inner.hasher.hash_one(key);
        if let Some(permit) = inner.cached(hash, key, CircuitBreaker::try_acquire_closed) {
            return Ok(permit);
        }
        self.acquire_locked(hash, key)
    }

    /// [`try_acquire`](Self::try_acquire) when this thread's cache cannot answer: under the
    /// shard's shared lock for a known key, and through [`insert`](Self::insert) for a new one.
    #[inline(never)]
    fn acquire_locked<Q>(&self, hash: u64, key: &Q) -> Result<Permit, KeyedError>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
    {
        let inner = &*self.inner;
        let shard = &inner.shards[(hash >> 32) as usize & inner.shard_mask];
        #[cfg(test)]
        shard.locked_lookups.fetch_add(1, Ordering::Relaxed);
        let (found, fill) = {
            let table = shard.read();
            match table.find(hash, |e| e.key.borrow() == key) {
                Some(entry) => {
                    entry.touch();
                    let fill = inner.to_cache(entry);
                    match entry.breaker.try_acquire_closed() {
                        Some(permit) => (Ok(permit), fill),
                        None => (Err(Some(entry.breaker.clone())), fill),
                    }
                }
                None => (Err(None), None),
            }
        };
        inner.fill(hash, fill);
        let breaker = match found {
            Ok(permit) => return Ok(permit),
            Err(Some(breaker)) => breaker,
            Err(None) => self.insert(shard, hash, key)?,
        };
        Ok(breaker.try_acquire()?)
    }

    #[cold]
    fn insert<Q>(&self, shard: &Shard<K>, hash: u64, key: &Q) -> Result<CircuitBreaker, RegistryFull>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
    {
        let inner = &*self.inner;
        let now = inner.now();
        // A shard known to be full of breakers that cannot go yet refuses at once: no lock,
        // no scan (an outage that opened every key of a shard must not make each new key pay
        // for a scan of it under the write lock).
        if now.nanos < shard.full_until.load(Ordering::Acquire) && !inner.sweep_due(shard, now) {
            return inner.when_full();
        }
        let mut table = shard.write();
        if let Some(entry) = table.find(hash, |e| e.key.borrow() == key) {
            entry.touch();
            return Ok(entry.breaker.clone());
        }
        inner.sweep_if_due(shard, &mut table, now);
        if table.len() >= shard.capacity {
            if let Some(until) = inner.make_room(shard, &mut table, now) {
                shard.full_until.store(until, Ordering::Release);
                drop(table);
                return inner.when_full();
            }
        }
        let key = key.to_owned();
        let breaker = inner.create(&key);
        let result = breaker.clone();
        let hasher = &inner.hasher;
        let live = Arc::new(Live {
            breaker: breaker.clone(),
            used: sync::AtomicBool::new(false),
            dead: sync::AtomicBool::new(false),
        });
        table.insert_unique(
            hash,
            Entry {
                key,
                breaker,
                used: AtomicBool::new(true),
                live,
            },
            |e| hasher.hash_one(&e.key),
        );
        Ok(result)
    }

    /// Sweeps every shard whose last sweep is at least `idle_timeout` old: removes the
    /// breakers not used since that sweep that may be evicted (closed; open past their
    /// deadline; half-open with no probe in flight; in each case not held outside the
    /// registry, see [the module docs](super#bounded-memory)), and starts a new period for the
    /// others.
    /// Returns how many were removed.
    ///
    /// New keys sweep their shard this way already; call this from an interval task (every
    /// quarter of `idle_timeout`, say) to reclaim memory when no new keys arrive.
    pub fn evict_idle(&self) -> usize {
        let inner = &*self.inner;
        let now = inner.now();
        inner
            .shards
            .iter()
            .map(|shard| inner.sweep_if_due(shard, &mut shard.write(), now))
            .sum()
    }
}

/// A handle that does not keep a registry alive: for the listeners of its own breakers, which
/// the registry holds.
#[cfg(feature = "webhook")]
pub(crate) struct WeakRegistry<K>(std::sync::Weak<Inner<K>>);

#[cfg(feature = "webhook")]
impl<K> WeakRegistry<K> {
    pub(crate) fn upgrade(&self) -> Option<KeyedRegistry<K>> {
        self.0.upgrade().map(|inner| KeyedRegistry { inner })
    }
}

impl<K> KeyedRegistry<K> {
    #[cfg(feature = "webhook")]
    pub(crate) fn downgrade(&self) -> WeakRegistry<K> {
        WeakRegistry(Arc::downgrade(&self.inner))
    }

    /// Every key with a snapshot of its breaker, in no particular order. Each shard is read
    /// under its shared lock, one at a time.
    pub fn snapshot(&self) -> Vec<(K, Snapshot)>
    where
        K: Clone,
    {
        let mut out = Vec::with_capacity(self.len());
        self.for_each(|key, breaker| out.push((key.clone(), breaker.snapshot())));
        out
    }

    /// Calls `f` with every key and its breaker (shard by shard, under a shared lock: keep it
    /// short).
    pub fn for_each(&self, mut f: impl FnMut(&K, &CircuitBreaker)) {
        for shard in &*self.inner.shards {
            for entry in shard.read().iter() {
                f(&entry.key, &entry.breaker);
            }
        }
    }

    /// The breaker shared by keys that did not fit, if the registry ever overflowed
    /// ([`WhenFull::Overflow`]).
    pub fn overflow(&self) -> Option<&CircuitBreaker> {
        self.inner.overflow.get()
    }

    /// How many keys the registry holds now.
    pub fn len(&self) -> usize {
        self.inner.shards.iter().map(|s| s.read().len()).sum()
    }

    /// Whether the registry holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most keys the registry holds.
    pub fn max_keys(&self) -> usize {
        self.inner.shards.iter().map(|s| s.capacity).sum()
    }

    /// The template's name: the base of every breaker's name.
    pub fn name(&self) -> &str {
        &self.inner.template.base
    }

    /// Switches [shadow mode](crate#shadow-mode) on or off for the whole registry at runtime:
    /// every key's breaker now (each with [`CircuitBreaker::set_shadow`], the overflow breaker
    /// too), and the breakers of keys created later, whatever their builders (template,
    /// per-key override) say.
    ///
    /// Each live key's switch is an operator's action on that breaker: announced as
    /// [`Event::Override`](crate::Event::Override), and, with
    /// [`RedisSync::attach_keyed`](crate::integrations), shared per key with the other
    /// replicas. The setting for keys created later stays on this replica.
    ///
    /// ```
    /// use tower_breaker::{CircuitBreaker, keyed::KeyedRegistry};
    ///
    /// let models = KeyedRegistry::<String>::new(CircuitBreaker::builder("openai").consecutive_failures(5))?;
    /// let live = models.get("gpt-4o")?;
    /// models.set_shadow(true);
    /// assert!(live.is_shadow());
    /// assert!(models.get("o3")?.is_shadow()); // a key created later
    /// # Ok::<_, Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_shadow(&self, shadow: bool) {
        let inner = &*self.inner;
        inner
            .shadow
            .store(if shadow { SHADOW_ON } else { SHADOW_OFF }, Ordering::Release);
        self.for_each(|_, breaker| breaker.set_shadow(shadow));
        if let Some(overflow) = inner.overflow.get() {
            overflow.set_shadow(shadow);
        }
    }
}

impl<K> Inner<K>
where
    K: Hash + Eq + Clone + fmt::Display + Send + Sync + 'static,
{
    /// Now, since the epoch. Only the insert path and sweeps read the clock; lookups of known
    /// keys only set a bit.
    #[inline]
    fn now(&self) -> Now {
        let instant = Instant::now();
        let since = instant.saturating_duration_since(self.epoch);
        Now {
            instant,
            nanos: u64::try_from(since.as_nanos()).unwrap_or(u64::MAX - 1),
            ms: u64::try_from(since.as_millis()).unwrap_or(u64::MAX),
        }
    }

    fn nanos(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX - 1)
    }

    /// `take(breaker)` on `key`'s entry in this thread's cache, if it holds it and it is
    /// alive (see [`Live::take`]).
    #[inline(always)]
    fn cached<Q, T>(&self, hash: u64, key: &Q, take: impl FnOnce(&CircuitBreaker) -> Option<T>) -> Option<T>
    where
        K: Borrow<Q>,
        Q: ?Sized + Eq,
    {
        let cache = self.cache.get()?.try_borrow().ok()?;
        cache.find(hash, key)?.take(take)
    }

    /// The entry to cache after a locked lookup found it, on one miss in
    /// [`FILL_ONE_IN`](super::cache::FILL_ONE_IN) (under the shard's lock: a clone).
    #[inline]
    fn to_cache(&self, entry: &Entry<K>) -> Option<(K, Arc<Live>)> {
        let cache = self.cache.get_or_new();
        let mut cache = cache.try_borrow_mut().ok()?;
        cache.draw().then(|| (entry.key.clone(), entry.live.clone()))
    }

    /// Caches `entry` in this thread's cache (outside any shard lock: what it replaces may
    /// be the last reference to an evicted breaker, whose listeners then drop).
    #[inline]
    fn fill(&self, hash: u64, entry: Option<(K, Arc<Live>)>) {
        let Some(entry) = entry else { return };
        let Some(cache) = self.cache.get() else { return };
        let replaced = match cache.try_borrow_mut() {
            Ok(mut cache) => cache.fill(hash, entry),
            Err(_) => Some(entry),
        };
        drop(replaced);
    }

    fn when_full(&self) -> Result<CircuitBreaker, RegistryFull> {
        match self.when_full {
            WhenFull::Overflow => Ok(self.overflow().clone()),
            WhenFull::Reject => Err(RegistryFull {
                registry: self.template.base.clone(),
            }),
        }
    }

    fn create(&self, key: &K) -> CircuitBreaker {
        let template = self.overrides.get(key).unwrap_or(&self.template);
        let name = match &self.name_with {
            Some(f) => f(&template.base, key),
            None => format!("{}:{}", template.base, key),
        };
        let mut builder = template.builder.clone().name(name);
        if let Some(f) = &self.map_builder {
            builder = f(builder, key);
        }
        builder.build_with(self.shadowed(&template.config), Lanes::One)
    }

    /// `config`, with [`KeyedRegistry::set_shadow`]'s switch if it was used.
    fn shadowed(&self, config: &Config) -> Config {
        let mut config = config.clone();
        match self.shadow.load(Ordering::Acquire) {
            SHADOW_ON => config.shadow = true,
            SHADOW_OFF => config.shadow = false,
            _ => {}
        }
        config
    }

    fn overflow(&self) -> &CircuitBreaker {
        self.overflow.get_or_init(|| {
            let t = &self.template;
            t.builder
                .clone()
                .name(format!("{}:<overflow>", t.base))
                .build_with(self.shadowed(&t.config), Lanes::Auto)
        })
    }

    /// Whether `entry`'s breaker may be evicted now, and if not, until when it stays
    /// protected. Reads the state word, and the deadline (a short lock) of an open breaker;
    /// allocates nothing, but for an unused half-open breaker (its probes in flight).
    fn verdict(&self, entry: &Entry<K>, now: Now) -> Verdict {
        let recheck = Verdict::Keep(now.recheck());
        // Held outside the registry (a permit in flight, a streaming body, a refusal not yet
        // dropped, a handle from `get`): kept, so that the outcome reaches the key's breaker
        // and a key never has two breakers. Nobody can take a new hold while the shard's
        // write lock is held, so the count cannot go up under us.
        if entry.held() {
            return recheck;
        }
        let used = entry.was_used();
        match entry.breaker.state() {
            State::Closed if used => Verdict::Evict(Tier::Closed),
            State::Closed => Verdict::Evict(Tier::ClosedUnused),
            // Used since the last sweep: only a sweep can make it evictable.
            State::Open | State::HalfOpen if used => Verdict::Keep(UNTIL_SWEEP),
            State::Open => match entry.breaker.next_deadline() {
                Some(deadline) if deadline <= now.instant => Verdict::Evict(Tier::ElapsedUnused),
                Some(deadline) => Verdict::Keep(self.nanos(deadline)),
                None => recheck, // it changed under us
            },
            State::HalfOpen if entry.breaker.snapshot().probes_in_flight == 0 => {
                Verdict::Evict(Tier::ElapsedUnused)
            }
            // A probe out, forced open, disabled: kept, with no deadline to wait for.
            _ => recheck,
        }
    }

    /// Whether `shard`'s sweep is due (its last one at least `idle_timeout` ago).
    fn sweep_due(&self, shard: &Shard<K>, now: Now) -> bool {
        now.ms.saturating_sub(shard.last_sweep.load(Ordering::Relaxed)) >= self.idle_ms
    }

    /// Sweeps `shard` if its last sweep is at least `idle_timeout` old: removes the entries
    /// unused since then that may go, and clears the others' `used` bits.
    fn sweep_if_due(&self, shard: &Shard<K>, table: &mut Table<K>, now: Now) -> usize {
        if !self.sweep_due(shard, now) {
            return 0;
        }
        shard.last_sweep.store(now.ms, Ordering::Relaxed);
        // The sweep changes what may be evicted: the next new key looks again.
        shard.full_until.store(0, Ordering::Release);
        let mut marked = 0;
        for e in table.iter() {
            if matches!(
                self.verdict(e, now),
                Verdict::Evict(Tier::ClosedUnused | Tier::ElapsedUnused)
            ) {
                e.mark();
                marked += 1;
            }
        }
        reap(table, marked, Entry::clear_used)
    }

    /// Makes room in a full shard: removes up to an eighth of its capacity (at least one),
    /// best candidates first, so the scan is paid once per many inserts. When nothing may go,
    /// returns the instant until which nothing can (for `full_until`).
    fn make_room(&self, shard: &Shard<K>, table: &mut Table<K>, now: Now) -> Option<u64> {
        // A cached lookup may take hold of a breaker between the verdict and the removal (it
        // takes no lock): that breaker stays, and the scan is made again, a few times at most.
        for _ in 0..MAKE_ROOM_TRIES {
            match self.make_room_once(shard, table, now) {
                Room::Made => return None,
                Room::Full(until) => return Some(until),
                Room::Raced => {}
            }
        }
        Some(now.recheck())
    }

    /// One pass of [`make_room`](Self::make_room).
    fn make_room_once(&self, shard: &Shard<K>, table: &mut Table<K>, now: Now) -> Room {
        let mut count = [0usize; 3];
        let mut until = UNTIL_SWEEP;
        for e in table.iter() {
            match self.verdict(e, now) {
                Verdict::Evict(t) => count[t as usize] += 1,
                Verdict::Keep(t) => until = until.min(t),
            }
        }
        if count.iter().all(|&c| c == 0) {
            #[cfg(test)]
            shard.failed_scans.fetch_add(1, Ordering::Relaxed);
            return Room::Full(until);
        }
        shard.full_until.store(0, Ordering::Release);
        let mut budget = (shard.capacity / 8).max(1);
        let mut quota = [0usize; 3];
        for (q, c) in quota.iter_mut().zip(count) {
            *q = c.min(budget);
            budget -= *q;
        }
        let mut marked = 0;
        for e in table.iter() {
            if let Verdict::Evict(t) = self.verdict(e, now) {
                if quota[t as usize] > 0 {
                    quota[t as usize] -= 1;
                    e.mark();
                    marked += 1;
                }
            }
        }
        reap(table, marked, |_| {});
        // A breaker counted as evictable may have changed since it was counted.
        if table.len() >= shard.capacity {
            Room::Raced
        } else {
            Room::Made
        }
    }
}

#[cfg(all(test, loom))]
#[path = "loom_tests.rs"]
mod loom_tests;

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::Outcome;
    use tokio::time::advance;

    /// Set by the stress test: a cached lookup yields between its first look at the mark and
    /// its permit, so that evictions land in that window often.
    pub(super) static WIDEN_RACE: AtomicBool = AtomicBool::new(false);

    fn locked(registry: &KeyedRegistry<String>) -> u64 {
        registry
            .inner
            .shards
            .iter()
            .map(|s| s.locked_lookups.load(Ordering::Relaxed))
            .sum()
    }

    /// Whether `breaker` is the breaker the table holds for `key` now.
    fn in_table(registry: &KeyedRegistry<String>, key: &str, breaker: &CircuitBreaker) -> bool {
        let inner = &*registry.inner;
        let hash = inner.hasher.hash_one(key);
        let shard = &inner.shards[(hash >> 32) as usize & inner.shard_mask];
        shard
            .read()
            .find(hash, |e| e.key == key)
            .is_some_and(|e| LaneArc::ptr_eq(&e.breaker.root, &breaker.root))
    }

    #[test]
    fn a_hot_key_is_served_from_the_threads_cache_without_the_shards_lock() {
        let registry =
            KeyedRegistry::<String>::new(CircuitBreaker::builder("up").consecutive_failures(5)).unwrap();
        // A miss fills the cache one time in eight: within a few dozen lookups.
        for _ in 0..100 {
            registry.try_acquire("a").unwrap().record(Outcome::Success);
        }
        let before = locked(&registry);
        for _ in 0..1_000 {
            registry.try_acquire("a").unwrap().record(Outcome::Success);
            drop(registry.get("a").unwrap());
        }
        assert_eq!(
            locked(&registry),
            before,
            "no lookup of a cached key took the lock"
        );
        // Another thread has a cache of its own, empty at first.
        let other = registry.clone();
        std::thread::spawn(move || other.try_acquire("a").unwrap().record(Outcome::Success))
            .join()
            .unwrap();
        assert_eq!(locked(&registry), before + 1);
        // Not cached: an open breaker's refusal goes through the lock (and the breaker decides).
        registry.get("a").unwrap().force_open();
        assert!(registry.try_acquire("a").is_err());
        assert_eq!(locked(&registry), before + 2);
    }

    #[tokio::test(start_paused = true)]
    async fn an_evicted_keys_cached_entry_is_never_used_again() {
        let registry =
            KeyedRegistry::<String>::builder(CircuitBreaker::builder("up").consecutive_failures(5))
                .idle_timeout(Duration::from_secs(10))
                .build()
                .unwrap();
        let old = registry.get("a").unwrap();
        for _ in 0..100 {
            registry.try_acquire("a").unwrap().record(Outcome::Success);
        }
        let cached = locked(&registry);
        drop(old.clone());
        let old_root = LaneArc::downgrade(&old.root);
        drop(old);
        // Two sweeps without a use: the key goes (its cached entry stays in this thread's
        // cache, marked dead).
        advance(Duration::from_secs(10)).await;
        assert_eq!(registry.evict_idle(), 0);
        advance(Duration::from_secs(10)).await;
        assert_eq!(registry.evict_idle(), 1);
        assert!(registry.is_empty());
        assert!(
            old_root.upgrade().is_some(),
            "the cache still holds the evicted breaker"
        );
        // The next lookup skips the dead entry, takes the lock and builds a new breaker.
        let new = registry.get("a").unwrap();
        assert!(locked(&registry) > cached);
        assert!(!LaneArc::ptr_eq(&new.root, &old_root.upgrade().unwrap()));
        assert!(in_table(&registry, "a", &new));
        assert_eq!(registry.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_eviction_keeps_a_breaker_that_a_cached_lookup_holds() {
        // One shard of 8: each new key in the full shard evicts one closed breaker.
        let registry =
            KeyedRegistry::<String>::builder(CircuitBreaker::builder("up").consecutive_failures(5))
                .max_keys(8)
                .idle_timeout(Duration::from_secs(10))
                .build()
                .unwrap();
        for _ in 0..100 {
            drop(registry.get("hot").unwrap());
        }
        let before = locked(&registry);
        let held = registry.get("hot").unwrap();
        let permit = registry.try_acquire("hot").unwrap();
        assert_eq!(locked(&registry), before, "both from this thread's cache");
        for i in 0..64 {
            drop(registry.get(format!("cold-{i}").as_str()).unwrap());
        }
        assert!(in_table(&registry, "hot", &held), "held, so never made room for");
        for _ in 0..2 {
            advance(Duration::from_secs(10)).await;
            registry.evict_idle();
        }
        assert!(in_table(&registry, "hot", &held), "held, so never swept");
        drop(held);
        for _ in 0..2 {
            advance(Duration::from_secs(10)).await;
            registry.evict_idle();
        }
        assert!(
            registry.get("hot").is_ok() && registry.len() == 1,
            "the permit still holds it"
        );
        permit.record(Outcome::Failure);
        for _ in 0..2 {
            advance(Duration::from_secs(10)).await;
            registry.evict_idle();
        }
        assert!(registry.is_empty(), "no longer held: swept as any idle breaker");
    }

    /// The protocol under real threads: lookups through their caches race a thread whose new
    /// keys evict the hot ones (a shard of 8, one eviction per new key). Every handle a lookup
    /// returns must be the one its key has in the table while the handle is held, and every
    /// permit's outcome must land in a breaker of the table. `loom_tests.rs` checks the same
    /// two steps exhaustively.
    #[test]
    fn cached_lookups_racing_evictions_never_hold_a_breaker_that_left_the_table() {
        use std::sync::atomic::AtomicUsize;
        // `Reject`: a key that finds no room is refused, rather than served by the overflow
        // breaker (which is not in the table either, by design).
        let registry =
            KeyedRegistry::<String>::builder(CircuitBreaker::builder("race").consecutive_failures(1_000_000))
                .max_keys(8)
                .when_full(WhenFull::Reject)
                .build()
                .unwrap();
        let hot = ["h0", "h1", "h2", "h3"];
        WIDEN_RACE.store(true, Ordering::Relaxed);
        let running = Arc::new(AtomicUsize::new(2));
        let evictor = {
            let (registry, running) = (registry.clone(), running.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while running.load(Ordering::Relaxed) > 0 {
                    drop(registry.get(format!("cold-{i}").as_str()));
                    i += 1;
                }
                i
            })
        };
        let readers: Vec<_> = (0..2)
            .map(|t| {
                let (registry, running) = (registry.clone(), running.clone());
                std::thread::spawn(move || {
                    let (mut stray, mut refused) = (0, 0);
                    for i in 0..20_000 {
                        let key = hot[(i + t) % hot.len()];
                        let Ok(breaker) = registry.get(key) else {
                            refused += 1;
                            continue;
                        };
                        if !in_table(&registry, key, &breaker) {
                            stray += 1;
                        }
                        drop(breaker);
                        // A permit holds its breaker in the table the same way.
                        if let Ok(permit) = registry.try_acquire(key) {
                            permit.record(Outcome::Failure);
                        }
                    }
                    running.fetch_sub(1, Ordering::Relaxed);
                    assert!(
                        refused < 20_000 / 2,
                        "most lookups found their key ({refused} refused)"
                    );
                    stray
                })
            })
            .collect();
        let strays: usize = readers.into_iter().map(|r| r.join().unwrap()).sum();
        let evictions = evictor.join().unwrap();
        WIDEN_RACE.store(false, Ordering::Relaxed);
        assert!(
            evictions > 100,
            "the evictor ran alongside ({evictions} new keys)"
        );
        assert_eq!(strays, 0, "a handle on a breaker that had left the table");
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_shard_is_scanned_once_per_deadline_not_once_per_new_key() {
        let registry =
            KeyedRegistry::<String>::builder(CircuitBreaker::builder("up").consecutive_failures(1))
                .max_keys(64)
                .idle_timeout(Duration::from_secs(10))
                .when_full(WhenFull::Reject)
                .build()
                .unwrap();
        assert_eq!(registry.inner.shards.len(), 1);
        let shard = &registry.inner.shards[0];
        let scans = || shard.failed_scans.load(Ordering::Relaxed);
        for i in 0..64 {
            registry
                .get(format!("k{i}").as_str())
                .unwrap()
                .trip(Duration::from_secs(20 + i));
        }
        advance(Duration::from_secs(10)).await; // the next new key sweeps: nobody used them
        for i in 0..10_000 {
            assert!(registry.get(format!("new-{i}").as_str()).is_err());
        }
        assert_eq!(scans(), 1, "one scan, then refusals without one");
        assert_eq!(
            shard.full_until.load(Ordering::Relaxed),
            Duration::from_secs(20).as_nanos() as u64,
            "until the earliest deadline"
        );
        advance(Duration::from_secs(10)).await; // k0's open period ends
        // k0 makes room; the newcomer's upstream is down too.
        registry
            .get("x")
            .expect("k0 made room")
            .trip(Duration::from_secs(100));
        for i in 0..10_000 {
            assert!(registry.get(format!("new-{i}").as_str()).is_err());
        }
        assert_eq!(scans(), 2);
        assert_eq!(registry.len(), 64);
    }
}
