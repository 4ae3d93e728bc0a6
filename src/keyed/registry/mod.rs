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

mod builder;
mod entry;
mod evict;

pub use builder::{DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_KEYS, KeyedRegistryBuilder, WhenFull};
pub(super) use entry::Live;

use builder::{MapFn, NameFn, Templates};
use entry::Entry;
use evict::RECHECK_NANOS;

use super::barrier;
use super::cache::{Cache, Caches};
use super::error::{KeyedError, RegistryFull};
use crate::breaker::{
    Builder, CircuitBreaker, Config, ConfigError, Lanes, Permit, Snapshot, State,
    sync::{self, Arc as LaneArc, CachePadded},
};

type Table<K> = HashTable<Entry<K>>;

struct Shard<K> {
    table: RwLock<Table<K>>,
    capacity: usize,
    /// When this shard was last swept for idle keys (ms since the epoch).
    last_sweep: AtomicU64,
    /// Set when a new key found the shard full of breakers that may not be evicted: until
    /// this instant (ns since the epoch; [`UNTIL_SWEEP`](evict::UNTIL_SWEEP) for "until the next sweep"), none of
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
            .field("template", &self.inner.base)
            .field("keys", &self.len())
            .field("max_keys", &self.max_keys())
            .finish_non_exhaustive()
    }
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
            let (_, config) = inner.builder_for(&inner.templates(), &key);
            let result = config
                .map_err(|(error, _)| error)
                .and_then(|c| breaker.reconfigure_with(inner.shadowed(&c), false));
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
    /// replicas. The setting for keys created later stays on this replica. Listeners run
    /// outside the registry's locks (they may use the registry).
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
        // Switched outside the shards' locks: each switch runs the breaker's listeners.
        let mut live = Vec::with_capacity(self.len());
        self.for_each(|_, breaker| live.push(breaker.clone()));
        for breaker in live {
            breaker.set_shadow(shadow);
        }
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
    fn cached<Q, T: entry::Taken>(
        &self,
        hash: u64,
        key: &Q,
        take: impl FnOnce(&CircuitBreaker) -> Option<T>,
    ) -> Option<T>
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
        // Settings the hook made invalid cannot refuse the call that creates the key: the
        // template's serve, and a warning says so.
        let config = config.unwrap_or_else(|(error, template)| {
            tracing::warn!(%error, "map_builder made invalid settings for a key: its breaker takes the template's");
            template
        });
        builder.build_with(self.shadowed(&config), Lanes::One)
    }

    /// `key`'s builder, named and adjusted, and its configuration: the template's (validated
    /// when the registry was built), or, as `map_builder` may change a setting, what the
    /// adjusted builder makes, validated now (`Err`: its error, and the template's).
    fn builder_for(
        &self,
        templates: &Templates<K>,
        key: &K,
    ) -> (Builder, Result<Config, (ConfigError, Config)>) {
        let template = templates.overrides.get(key).unwrap_or(&templates.template);
        let name = match &self.name_with {
            Some(f) => f(&template.base, key),
            None => format!("{}:{}", template.base, key),
        };
        let builder = template.builder.clone().name(name);
        match &self.map_builder {
            Some(f) => {
                let builder = f(builder, key);
                let config = builder
                    .validated()
                    .map_err(|error| (error, template.config.clone()));
                (builder, config)
            }
            None => (builder, Ok(template.config.clone())),
        }
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
}

#[cfg(all(test, loom))]
mod loom_tests;

#[cfg(all(test, not(loom)))]
mod tests;
