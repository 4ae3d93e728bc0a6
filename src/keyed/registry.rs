//! [`KeyedRegistry`]: one breaker per key, bounded in size, with idle eviction.

use std::{
    borrow::Borrow,
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

use super::error::{KeyedError, RegistryFull};
use crate::breaker::{
    Builder, CircuitBreaker, Config, ConfigError, Lanes, Permit, Snapshot, State,
    sync::{Arc as LaneArc, CachePadded},
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
        let templates = Templates::new(self.template, self.overrides)?;
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
                })
            })
            .collect::<Vec<_>>()
            .into_boxed_slice();
        Ok(KeyedRegistry {
            inner: Arc::new(Inner {
                shard_mask: shards.len() - 1,
                shards,
                hasher: RandomState::default(),
                base: templates.template.base.clone(),
                templates: RwLock::new(templates),
                idle_ms: u64::try_from(self.idle_timeout.as_millis()).unwrap_or(u64::MAX),
                when_full: self.when_full,
                name_with: self.name_with,
                map_builder: self.map_builder,
                overflow: std::sync::OnceLock::new(),
                epoch: Instant::now(),
                shadow: AtomicU8::new(SHADOW_UNSET),
            }),
        })
    }
}

/// The template and the overrides, validated: what a reload replaces.
struct Templates<K> {
    template: Template,
    overrides: HashMap<K, Template>,
}

impl<K: Hash + Eq> Templates<K> {
    fn new(template: Builder, overrides: Vec<(K, Builder)>) -> Result<Self, ConfigError> {
        let template = Template::new(template)?;
        let mut map = HashMap::with_capacity(overrides.len());
        for (key, builder) in overrides {
            map.insert(key, Template::new(builder)?);
        }
        Ok(Self {
            template,
            overrides: map,
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

struct Entry<K> {
    key: K,
    breaker: CircuitBreaker,
    /// Set by every lookup (only if clear: read-mostly), cleared by each idle sweep: a key
    /// whose bit is still clear at a sweep was not used since the previous one.
    used: AtomicBool,
}

impl<K> Entry<K> {
    #[inline]
    fn touch(&self) {
        if !self.used.load(Ordering::Relaxed) {
            self.used.store(true, Ordering::Relaxed);
        }
    }
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
    /// The template's name: the registry's.
    base: Arc<str>,
    templates: RwLock<Templates<K>>,
    idle_ms: u64,
    when_full: WhenFull,
    name_with: Option<NameFn<K>>,
    map_builder: Option<MapFn<K>>,
    overflow: std::sync::OnceLock<CircuitBreaker>,
    epoch: Instant,
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
            .field("template", &self.inner.base)
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
    /// This is the hot path of the keyed service: one hash, one shared lock of one shard, held
    /// only to clone the breaker's handle (so listeners never run under a registry lock).
    #[inline]
    pub fn get<Q>(&self, key: &Q) -> Result<CircuitBreaker, RegistryFull>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
    {
        let inner = &*self.inner;
        // One hash: bits 32.. pick the shard, the table uses the low bits and the top 7.
        let hash = inner.hasher.hash_one(key);
        let shard = &inner.shards[(hash >> 32) as usize & inner.shard_mask];
        {
            let table = shard.read();
            if let Some(entry) = table.find(hash, |e| e.key.borrow() == key) {
                entry.touch();
                return Ok(entry.breaker.clone());
            }
        }
        self.insert(shard, hash, key)
    }

    /// Asks `key`'s breaker for a permit (creating the breaker if the key is new).
    ///
    /// A closed breaker's permit is taken under the shard's shared lock, without cloning the
    /// breaker's handle (that path runs no listener); any other state goes through
    /// [`get`](Self::get), and the breaker decides outside the lock.
    #[inline]
    pub fn try_acquire<Q>(&self, key: &Q) -> Result<Permit, KeyedError>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
    {
        let inner = &*self.inner;
        let hash = inner.hasher.hash_one(key);
        let shard = &inner.shards[(hash >> 32) as usize & inner.shard_mask];
        let breaker = {
            let table = shard.read();
            match table.find(hash, |e| e.key.borrow() == key) {
                Some(entry) => {
                    entry.touch();
                    if let Some(permit) = entry.breaker.try_acquire_closed() {
                        return Ok(permit);
                    }
                    Some(entry.breaker.clone())
                }
                None => None,
            }
        };
        let breaker = match breaker {
            Some(breaker) => breaker,
            None => self.insert(shard, hash, key)?,
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
        table.insert_unique(
            hash,
            Entry {
                key,
                breaker,
                used: AtomicBool::new(true),
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

impl<K> KeyedRegistry<K>
where
    K: Hash + Eq + Clone + fmt::Display + Send + Sync + 'static,
{
    /// Hot reload: applies `template` to every key's breaker that has no override, live
    /// (see [`CircuitBreaker::reconfigure`] for what a breaker keeps: its state, open
    /// deadline, probes in flight and as much of its window as the new shape allows), to the
    /// overflow breaker, and to the keys created from now on. Keys with an override keep it.
    /// Each key's builder is adjusted by [`map_builder`](KeyedRegistryBuilder::map_builder)
    /// again, as when it was created (listeners it adds are ignored: a live breaker keeps its
    /// own). The bounds (`max_keys`, `idle_timeout`, `when_full`) are kept, and so is the
    /// switch of [`set_shadow`](Self::set_shadow) if it was used (an operator's action wins
    /// over the template's `shadow`).
    ///
    /// `template` must be named as the registry (its name is the registry's,
    /// [`name`](Self::name)); another name, or an invalid setting, is a [`ConfigError`] and
    /// changes nothing. A key whose breaker cannot take it (`map_builder` made its builder
    /// invalid, or it is out of window shapes, see [`CircuitBreaker::reconfigure`]) keeps its
    /// settings; the others are reloaded, and the first such error is returned. Listeners run
    /// outside the registry's locks. One tracing event at
    /// info level says `keyed registry reconfigured` (each key's, at debug level).
    pub fn reconfigure(&self, template: Builder) -> Result<(), ConfigError> {
        let overrides = {
            let templates = self.inner.templates();
            templates
                .overrides
                .iter()
                .map(|(k, t)| (k.clone(), t.builder.clone()))
                .collect()
        };
        self.reload(template, overrides)
    }

    /// Hot reload of the template and the overrides of `builder` (a registry builder as
    /// `config::KeyedConfig::registry_builder` makes from a reloaded file, feature `serde`): as [`reconfigure`](Self::reconfigure), with `builder`'s
    /// overrides replacing the registry's (a key whose override went takes the template).
    /// `builder`'s bounds and hooks are ignored: the registry keeps its own.
    pub fn reconfigure_from(&self, builder: KeyedRegistryBuilder<K>) -> Result<(), ConfigError> {
        self.reload(builder.template, builder.overrides)
    }

    fn reload(&self, template: Builder, overrides: Vec<(K, Builder)>) -> Result<(), ConfigError> {
        let inner = &*self.inner;
        if *template.name_ref() != inner.base {
            return Err(ConfigError::new(
                "name",
                "differs from the registry's: a reload keeps the registry's name",
            )
            .in_breaker(&inner.base));
        }
        let templates = Templates::new(template, overrides)?;
        // New keys take the new templates from here on; the keys already in the shards
        // (inserted under their shard's lock, which the collection below takes after this)
        // are all reloaded.
        *inner
            .templates
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = templates;
        let mut live = Vec::with_capacity(self.len());
        self.for_each(|key, breaker| live.push((key.clone(), breaker.clone())));
        let keys = live.len();
        let mut first_error = None;
        for (key, breaker) in live {
            let (builder, config) = inner.builder_for(&inner.templates(), &key);
            // The hook may have changed a setting: validate what it made.
            let config = match inner.map_builder {
                Some(_) => builder.validated(),
                None => Ok(config),
            };
            let result = config.and_then(|c| breaker.reconfigure_with(inner.shadowed(&c), false));
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        if let Some(overflow) = inner.overflow.get() {
            let config = inner.shadowed(&inner.templates().template.config);
            if let Err(e) = overflow.reconfigure_with(config, false) {
                first_error.get_or_insert(e);
            }
        }
        tracing::info!(registry = %inner.base, keys, "keyed registry reconfigured");
        first_error.map_or(Ok(()), Err)
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
        &self.inner.base
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

    fn when_full(&self) -> Result<CircuitBreaker, RegistryFull> {
        match self.when_full {
            WhenFull::Overflow => Ok(self.overflow().clone()),
            WhenFull::Reject => Err(RegistryFull {
                registry: self.base.clone(),
            }),
        }
    }

    fn templates(&self) -> RwLockReadGuard<'_, Templates<K>> {
        self.templates
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn create(&self, key: &K) -> CircuitBreaker {
        let (builder, config) = self.builder_for(&self.templates(), key);
        builder.build_with(self.shadowed(&config), Lanes::One)
    }

    /// `key`'s builder, named and adjusted, and its configuration: the template's validated
    /// one, or the adjusted builder's when `map_builder` may have changed a setting.
    fn builder_for(&self, templates: &Templates<K>, key: &K) -> (Builder, Config) {
        let template = templates.overrides.get(key).unwrap_or(&templates.template);
        let name = match &self.name_with {
            Some(f) => f(&template.base, key),
            None => format!("{}:{}", template.base, key),
        };
        let mut builder = template.builder.clone().name(name);
        if let Some(f) = &self.map_builder {
            builder = f(builder, key);
        }
        (builder, template.config.clone())
    }

    /// `config`, with [`KeyedRegistry::set_shadow`]'s switch if it was used.
    fn shadowed(&self, config: &Config) -> Config {
        let mut config = config.clone();
        match self.shadow.load(Ordering::Acquire) {
            SHADOW_ON => config.shadow = Some(true),
            SHADOW_OFF => config.shadow = Some(false),
            _ => {}
        }
        config
    }

    fn overflow(&self) -> &CircuitBreaker {
        self.overflow.get_or_init(|| {
            let templates = self.templates();
            let t = &templates.template;
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
        if LaneArc::strong_count(&entry.breaker.root) > 1 {
            return recheck;
        }
        let used = entry.used.load(Ordering::Relaxed);
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
        let before = table.len();
        table.retain(|e| {
            if matches!(
                self.verdict(e, now),
                Verdict::Evict(Tier::ClosedUnused | Tier::ElapsedUnused)
            ) {
                return false;
            }
            e.used.store(false, Ordering::Relaxed);
            true
        });
        before - table.len()
    }

    /// Makes room in a full shard: removes up to an eighth of its capacity (at least one),
    /// best candidates first, so the scan is paid once per many inserts. When nothing may go,
    /// returns the instant until which nothing can (for `full_until`).
    fn make_room(&self, shard: &Shard<K>, table: &mut Table<K>, now: Now) -> Option<u64> {
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
            return Some(until);
        }
        shard.full_until.store(0, Ordering::Release);
        let mut budget = (shard.capacity / 8).max(1);
        let mut quota = [0usize; 3];
        for (q, c) in quota.iter_mut().zip(count) {
            *q = c.min(budget);
            budget -= *q;
        }
        table.retain(|e| match self.verdict(e, now) {
            Verdict::Evict(t) if quota[t as usize] > 0 => {
                quota[t as usize] -= 1;
                false
            }
            _ => true,
        });
        // A breaker counted as evictable may have changed between the two passes.
        (table.len() >= shard.capacity).then(|| now.recheck())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use tokio::time::advance;

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
