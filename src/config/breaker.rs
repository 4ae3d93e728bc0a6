//! [`BreakerConfig`]: one breaker's settings as a file writes them.

use std::{sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};

use super::duration;
use crate::breaker::{Backoff, Builder, CircuitBreaker, ConfigError};

/// One breaker's settings, as a configuration file writes them: every setting of the
/// [`Builder`] but its listeners, each optional (unset means the builder's default; unset
/// trip rules are off). Unknown fields are refused, so a misspelt setting is an error, not a
/// silently ignored line. See [the module docs](super) for the format.
///
/// Plain data (`Clone`, `PartialEq`, `Default`): build fields by hand as
/// `let mut c = BreakerConfig::default(); c.consecutive_failures = Some(5);`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct BreakerConfig {
    /// [`Builder::consecutive_failures`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<u32>,
    /// [`Builder::failure_rate`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_rate: Option<f64>,
    /// [`Builder::count_window`] (an alternative to `time_window`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count_window: Option<u32>,
    /// [`Builder::time_window`] (an alternative to `count_window`).
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub time_window: Option<Duration>,
    /// [`Builder::min_calls`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_calls: Option<u32>,
    /// [`Builder::slow_calls`]: `{ threshold = "10s", rate = 0.8 }`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slow_calls: Option<SlowCalls>,
    /// [`Builder::open_duration`] (an alternative to `open_backoff`).
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub open_duration: Option<Duration>,
    /// [`Builder::open_backoff`] (an alternative to `open_duration`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_backoff: Option<BackoffConfig>,
    /// [`Builder::max_open_duration`].
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub max_open_duration: Option<Duration>,
    /// [`Builder::half_open_permits`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub half_open_permits: Option<u32>,
    /// [`Builder::half_open_successes`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub half_open_successes: Option<u32>,
    /// [`Builder::half_open_max_wait`].
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub half_open_max_wait: Option<Duration>,
    /// [`Builder::shadow`]: observe only, never refuse (see [Shadow mode](crate#shadow-mode)).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow: Option<bool>,
}

/// The slow-call rule: calls slower than `threshold` (strictly) trip the breaker when their
/// share reaches `rate`. See [`Builder::slow_calls`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlowCalls {
    /// A call slower than this is slow.
    #[serde(with = "duration")]
    pub threshold: Duration,
    /// The share of slow calls that trips the breaker.
    pub rate: f64,
}

/// How long the breaker stays open, as [`Backoff`] builds it, tagged by `kind`:
///
/// ```toml
/// open_backoff = { kind = "fixed", wait = "30s", jitter = 0.1 }
/// open_backoff = { kind = "exponential", base = "5s", factor = 2, max = "5m", jitter = 0.2 }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum BackoffConfig {
    /// [`Backoff::fixed`], with [`jitter`](Backoff::with_jitter).
    Fixed {
        /// The wait.
        #[serde(with = "duration")]
        wait: Duration,
        /// The jitter fraction (default 0).
        #[serde(default)]
        jitter: f64,
    },
    /// [`Backoff::exponential`], with [`jitter`](Backoff::with_jitter).
    Exponential {
        /// The first wait.
        #[serde(with = "duration")]
        base: Duration,
        /// The growth of each following wait.
        factor: f64,
        /// The longest wait.
        #[serde(with = "duration")]
        max: Duration,
        /// The jitter fraction (default 0).
        #[serde(default)]
        jitter: f64,
    },
}

impl BackoffConfig {
    /// The [`Backoff`] it describes (not validated: the builder does that).
    pub const fn backoff(&self) -> Backoff {
        match *self {
            BackoffConfig::Fixed { wait, jitter } => Backoff::fixed(wait).with_jitter(jitter),
            BackoffConfig::Exponential {
                base,
                factor,
                max,
                jitter,
            } => Backoff::exponential(base, factor, max).with_jitter(jitter),
        }
    }
}

impl BreakerConfig {
    /// A validated builder named `name`, with these settings and the defaults for the rest.
    /// The error names `name` ([`ConfigError::breaker`]) and the field
    /// ([`ConfigError::setting`], e.g. `"open_backoff.factor"`).
    ///
    /// Add listeners (`on_event`, an integration's `attach`) to the builder, then build it.
    pub fn builder(&self, name: impl Into<Arc<str>>) -> Result<Builder, ConfigError> {
        self.apply(CircuitBreaker::builder(name))
    }

    /// `builder` with the settings this config sets (the others as `builder` had them), then
    /// validated. Keeps the builder's name and listeners. The error names the builder's
    /// breaker and the field.
    pub fn apply(&self, builder: Builder) -> Result<Builder, ConfigError> {
        let name = builder.name_ref().clone();
        let mut b = builder;
        if self.open_duration.is_some() && self.open_backoff.is_some() {
            return Err(ConfigError::new(
                "open_duration and open_backoff",
                "are alternatives: set one of them",
            )
            .in_breaker(&name));
        }
        if let Some(n) = self.consecutive_failures {
            b = b.consecutive_failures(n);
        }
        if let Some(rate) = self.failure_rate {
            b = b.failure_rate(rate);
        }
        if let Some(n) = self.count_window {
            b = b.count_window(n);
        }
        if let Some(d) = self.time_window {
            b = b.time_window(d);
        }
        if let Some(n) = self.min_calls {
            b = b.min_calls(n);
        }
        if let Some(SlowCalls { threshold, rate }) = self.slow_calls {
            b = b.slow_calls(threshold, rate);
        }
        if let Some(d) = self.open_duration {
            b = b.open_duration(d);
        }
        if let Some(backoff) = self.open_backoff {
            b = b.open_backoff(backoff.backoff());
        }
        if let Some(d) = self.max_open_duration {
            b = b.max_open_duration(d);
        }
        if let Some(n) = self.half_open_permits {
            b = b.half_open_permits(n);
        }
        if let Some(n) = self.half_open_successes {
            b = b.half_open_successes(n);
        }
        if let Some(d) = self.half_open_max_wait {
            b = b.half_open_max_wait(d);
        }
        if let Some(shadow) = self.shadow {
            b = b.shadow(shadow);
        }
        match b.validated() {
            Ok(_) => Ok(b),
            Err(e) => {
                let field = self.field_of(e.setting());
                Err(e.at(field))
            }
        }
    }

    /// Hot reload: applies these settings to the live `breaker` in one call, keeping its
    /// state, open deadline, probes in flight and as much of its window as the new shape
    /// allows (see [`CircuitBreaker::reconfigure`] and [Hot reload](crate#hot-reload)). The
    /// file is the whole truth: a setting it leaves unset takes the builder's default (an
    /// unset trip rule is off), except `shadow`, which unset keeps the breaker's flag. The
    /// error names the breaker and the field; on error nothing changes.
    pub fn reconfigure(&self, breaker: &CircuitBreaker) -> Result<(), ConfigError> {
        breaker.reconfigure(self.builder(breaker.name())?)
    }

    /// Validates these settings as the breaker `name`'s, without building anything.
    pub fn validate(&self, name: impl Into<Arc<str>>) -> Result<(), ConfigError> {
        self.builder(name).map(drop)
    }

    /// This config, with every setting it leaves unset taken from `base` (as resilience4j's
    /// `baseConfig`): how a keyed registry's overrides inherit from its template. The
    /// alternatives go together: a config that sets `count_window` or `time_window` takes
    /// neither from `base`, and one that sets `open_duration` or `open_backoff` takes neither
    /// from `base`. A trip rule set in `base` cannot be switched off by an inheriting config.
    pub fn inherit(&self, base: &BreakerConfig) -> BreakerConfig {
        let sets_window = self.count_window.is_some() || self.time_window.is_some();
        let sets_open = self.open_duration.is_some() || self.open_backoff.is_some();
        BreakerConfig {
            consecutive_failures: self.consecutive_failures.or(base.consecutive_failures),
            failure_rate: self.failure_rate.or(base.failure_rate),
            count_window: if sets_window {
                self.count_window
            } else {
                base.count_window
            },
            time_window: if sets_window {
                self.time_window
            } else {
                base.time_window
            },
            min_calls: self.min_calls.or(base.min_calls),
            slow_calls: self.slow_calls.or(base.slow_calls),
            open_duration: if sets_open {
                self.open_duration
            } else {
                base.open_duration
            },
            open_backoff: if sets_open {
                self.open_backoff
            } else {
                base.open_backoff
            },
            max_open_duration: self.max_open_duration.or(base.max_open_duration),
            half_open_permits: self.half_open_permits.or(base.half_open_permits),
            half_open_successes: self.half_open_successes.or(base.half_open_successes),
            half_open_max_wait: self.half_open_max_wait.or(base.half_open_max_wait),
            shadow: self.shadow.or(base.shadow),
        }
    }

    /// The field of this config that a builder's setting name comes from.
    fn field_of(&self, setting: &'static str) -> &'static str {
        let backoff = self.open_backoff.as_ref();
        match setting {
            "open duration" => match backoff {
                Some(BackoffConfig::Fixed { .. }) => "open_backoff.wait",
                Some(BackoffConfig::Exponential { .. }) => "open_backoff.base",
                None if self.open_duration.is_some() => "open_duration",
                None => setting,
            },
            "backoff factor" if backoff.is_some() => "open_backoff.factor",
            "backoff max" if backoff.is_some() => "open_backoff.max",
            "backoff jitter" if backoff.is_some() => "open_backoff.jitter",
            "slow_calls" if self.slow_calls.is_some() => "slow_calls.rate",
            other => other,
        }
    }
}
