//! [`KeyedRegistryBuilder`]: the template, per-key overrides and bounds of a registry.

use super::*;

/// What a full registry does with a new key when every breaker it holds is protected from
/// eviction (open before its deadline, forced open, disabled or half-open).
///
/// See [the module docs](crate::keyed#bounded-memory) for the eviction order. In a configuration
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

pub(super) type NameFn<K> = Arc<dyn Fn(&str, &K) -> String + Send + Sync>;
pub(super) type MapFn<K> = Arc<dyn Fn(Builder, &K) -> Builder + Send + Sync>;

/// Builds a [`KeyedRegistry`]; see [`KeyedRegistry::builder`].
#[must_use]
pub struct KeyedRegistryBuilder<K> {
    pub(super) template: Builder,
    pub(super) overrides: Vec<(K, Builder)>,
    pub(super) max_keys: usize,
    pub(super) idle_timeout: Duration,
    pub(super) when_full: WhenFull,
    pub(super) name_with: Option<NameFn<K>>,
    pub(super) map_builder: Option<MapFn<K>>,
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
    /// See [the module docs](crate::keyed#bounded-memory): a key unused for this long is removed by
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
    /// shard's lock: `f` must not use the registry): its settings are the breaker's (a key
    /// that trips sooner, one in shadow mode; settings made invalid fall back to the
    /// template's, with a warning), and it may install a listener that knows the key, such as
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
        barrier::init();
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
                base: templates.template.base.clone(),
                templates: RwLock::new(templates),
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

/// The template and the overrides, validated: what a reload replaces.
pub(super) struct Templates<K> {
    pub(super) template: Template,
    pub(super) overrides: HashMap<K, Template>,
}

impl<K: Hash + Eq> Templates<K> {
    pub(super) fn new(template: Builder, overrides: Vec<(K, Builder)>) -> Result<Self, ConfigError> {
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
pub(super) struct Template {
    pub(super) builder: Builder,
    pub(super) config: Config,
    pub(super) base: Arc<str>,
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
