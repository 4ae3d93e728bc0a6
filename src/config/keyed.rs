//! [`KeyedConfig`]: a keyed registry's settings, with per-key overrides.

use std::{collections::BTreeMap, fmt, hash::Hash, str::FromStr, sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};

use super::{BreakerConfig, duration};
use crate::{
    breaker::ConfigError,
    keyed::{KeyedRegistry, KeyedRegistryBuilder, WhenFull},
};

/// A [keyed registry](crate::keyed)'s settings: the `template` every key's breaker is built
/// from, `overrides` by key (each inheriting what it leaves unset from the template, see
/// [`BreakerConfig::inherit`]), and the registry's bounds. Unknown fields are refused.
///
/// ```toml
/// max_keys = 1000
/// idle_timeout = "5m"
/// when_full = "overflow"        # or "reject"
///
/// [template]
/// consecutive_failures = 5
/// open_duration = "30s"
///
/// [overrides."text-embedding-3-small"]
/// consecutive_failures = 10     # and open_duration = "30s", from the template
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct KeyedConfig {
    /// The settings of every key's breaker.
    pub template: BreakerConfig,
    /// Settings by key ([`KeyedRegistryBuilder::override_key`]), over the template's.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub overrides: BTreeMap<String, BreakerConfig>,
    /// [`KeyedRegistryBuilder::max_keys`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_keys: Option<usize>,
    /// [`KeyedRegistryBuilder::idle_timeout`].
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Duration>,
    /// [`KeyedRegistryBuilder::when_full`]: `"overflow"` or `"reject"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub when_full: Option<WhenFull>,
}

impl KeyedConfig {
    /// The settings of `key`'s breaker: its override over the template, or the template.
    pub fn for_key(&self, key: &str) -> BreakerConfig {
        match self.overrides.get(key) {
            Some(o) => o.inherit(&self.template),
            None => self.template.clone(),
        }
    }

    /// A registry builder whose template is named `name` (the base of every key's breaker
    /// name, `"{name}:{key}"` by default), with every setting validated. Add a
    /// [`name_with`](KeyedRegistryBuilder::name_with) or
    /// [`map_builder`](KeyedRegistryBuilder::map_builder), or hand it to an integration
    /// (e.g. `RedisSync::attach_keyed`), then build it.
    ///
    /// The error names the field and the breaker: `name` for the template and the bounds,
    /// `"{name}:{key}"` for an override (also when an override's key does not parse as `K`).
    pub fn registry_builder<K>(
        &self,
        name: impl Into<Arc<str>>,
    ) -> Result<KeyedRegistryBuilder<K>, ConfigError>
    where
        K: Hash + Eq + Clone + fmt::Display + FromStr + Send + Sync + 'static,
    {
        let name: Arc<str> = name.into();
        let template = self.template.builder(name.clone())?;
        let mut builder = KeyedRegistry::<K>::builder(template);
        for (key, config) in &self.overrides {
            let full: Arc<str> = format!("{name}:{key}").into();
            let merged = config.inherit(&self.template);
            merged.validate(full.clone())?;
            let Ok(parsed) = key.parse::<K>() else {
                return Err(ConfigError::new(
                    "overrides",
                    "has a key that does not parse as the registry's key type",
                )
                .in_breaker(&full));
            };
            builder = builder.override_key(parsed, merged.builder(name.clone())?);
        }
        if let Some(n) = self.max_keys {
            if n == 0 {
                return Err(ConfigError::new("max_keys", "must be at least 1").in_breaker(&name));
            }
            builder = builder.max_keys(n);
        }
        if let Some(idle) = self.idle_timeout {
            if idle.is_zero() {
                return Err(ConfigError::new("idle_timeout", "must be greater than zero").in_breaker(&name));
            }
            builder = builder.idle_timeout(idle);
        }
        if let Some(policy) = self.when_full {
            builder = builder.when_full(policy);
        }
        Ok(builder)
    }

    /// Hot reload: applies this config's template and overrides to the live `registry` in
    /// one call ([`KeyedRegistry::reconfigure_from`]): every key's breaker keeps its state,
    /// open deadline, probes in flight and as much of its window as the new shape allows; a
    /// key whose override went takes the template. The bounds (`max_keys`, `idle_timeout`,
    /// `when_full`) are validated but kept: they shape the registry's memory, and change
    /// with a new registry. The error names the breaker and the field; an invalid file
    /// changes nothing.
    pub fn reconfigure<K>(&self, registry: &KeyedRegistry<K>) -> Result<(), ConfigError>
    where
        K: Hash + Eq + Clone + fmt::Display + FromStr + Send + Sync + 'static,
    {
        registry.reconfigure_from(self.registry_builder(registry.name())?)
    }

    /// Builds the registry named `name`: [`registry_builder`](Self::registry_builder), then
    /// [`build`](KeyedRegistryBuilder::build).
    pub fn build<K>(&self, name: impl Into<Arc<str>>) -> Result<KeyedRegistry<K>, ConfigError>
    where
        K: Hash + Eq + Clone + fmt::Display + FromStr + Send + Sync + 'static,
    {
        self.registry_builder(name)?.build()
    }
}
