//! Breaker settings from configuration files (feature `serde`): [`BreakerConfig`] for one
//! breaker, [`KeyedConfig`] for a [keyed registry](crate::keyed) with per-key overrides.
//!
//! Both are `Deserialize` (and `Serialize`), so they read from TOML, YAML, JSON, and the
//! layered sources of the `config` or `figment` crates (a file, then environment variables
//! over it). Each mirrors every setting of the [`Builder`] (and of the
//! [`KeyedRegistryBuilder`](crate::keyed::KeyedRegistryBuilder)); what is code, not data
//! (listeners, `name_with`, `map_builder`), stays in code.
//!
//! ```
//! use std::collections::BTreeMap;
//! use std::time::Duration;
//! use serde::Deserialize;
//! use tower_breaker::{Outcome, State};
//! use tower_breaker::config::{BreakerConfig, KeyedConfig};
//!
//! /// The application's own settings, with a section for its breakers.
//! #[derive(Deserialize)]
//! struct Settings {
//!     breakers: BTreeMap<String, BreakerConfig>,
//!     models: KeyedConfig,
//! }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let settings: Settings = toml::from_str(r#"
//!     [breakers.anthropic]
//!     consecutive_failures = 5
//!     failure_rate = 0.5
//!     time_window = "1m"
//!     min_calls = 20
//!     slow_calls = { threshold = "10s", rate = 0.8 }
//!     open_backoff = { kind = "exponential", base = "10s", factor = 2, max = "5m", jitter = 0.2 }
//!     half_open_max_wait = 90      # a number is seconds
//!
//!     [models.template]            # one breaker per OpenAI model
//!     consecutive_failures = 3
//!     open_duration = "30s"
//!     [models.overrides."text-embedding-3-small"]
//!     consecutive_failures = 10    # and open_duration = "30s", from the template
//! "#)?;
//!
//! let anthropic = settings.breakers["anthropic"].builder("anthropic")?.build()?;
//! let models = settings.models.build::<String>("openai")?;
//!
//! for _ in 0..3 {
//!     models.try_acquire("gpt-4o")?.record(Outcome::Failure);
//!     models.try_acquire("text-embedding-3-small")?.record(Outcome::Failure);
//! }
//! assert_eq!(models.get("gpt-4o")?.state(), State::Open);
//! assert_eq!(models.get("text-embedding-3-small")?.state(), State::Closed);
//! # let _ = anthropic;
//!
//! // A mistake names the breaker and the field.
//! let wrong: BreakerConfig = toml::from_str("failure_rate = 1.5")?;
//! let err = wrong.builder("anthropic").unwrap_err();
//! assert_eq!((err.breaker(), err.setting()), (Some("anthropic"), "failure_rate"));
//! // A misspelt field is refused, not ignored.
//! assert!(toml::from_str::<BreakerConfig>("consecutive_failure = 5").is_err());
//! # Ok(()) }
//! ```
//!
//! # The format
//!
//! | field | builder method | example |
//! |---|---|---|
//! | `consecutive_failures` | [`consecutive_failures`](Builder::consecutive_failures) | `5` |
//! | `failure_rate` | [`failure_rate`](Builder::failure_rate) | `0.5` |
//! | `count_window` | [`count_window`](Builder::count_window) | `100` |
//! | `time_window` | [`time_window`](Builder::time_window) | `"1m"` |
//! | `min_calls` | [`min_calls`](Builder::min_calls) | `20` |
//! | `slow_calls` | [`slow_calls`](Builder::slow_calls) | `{ threshold = "10s", rate = 0.8 }` |
//! | `open_duration` | [`open_duration`](Builder::open_duration) | `"30s"` |
//! | `open_backoff` | [`open_backoff`](Builder::open_backoff) | `{ kind = "fixed", wait = "30s", jitter = 0.1 }`, `{ kind = "exponential", base = "5s", factor = 2, max = "5m", jitter = 0.2 }` ([`BackoffConfig`]) |
//! | `max_open_duration` | [`max_open_duration`](Builder::max_open_duration) | `"10m"` |
//! | `half_open_permits` | [`half_open_permits`](Builder::half_open_permits) | `1` |
//! | `half_open_successes` | [`half_open_successes`](Builder::half_open_successes) | `2` |
//! | `half_open_max_wait` | [`half_open_max_wait`](Builder::half_open_max_wait) | `"1m"` |
//! | `shadow` | [`shadow`](Builder::shadow) | `true` |
//!
//! and for a [`KeyedConfig`]: `template` (a [`BreakerConfig`]), `overrides` (a table of them
//! by key), `max_keys`, `idle_timeout` and `when_full` (`"overflow"` or `"reject"`).
//!
//! - **Durations** are strings with units, `"30s"`, `"500ms"`, `"1m30s"`, `"2h"` (parsed by
//!   [`humantime`](https://docs.rs/humantime): `ns`, `us`, `ms`, `s`, `m`, `h`, `d` and their
//!   long names), or numbers of seconds, `30` or `0.25` (what an environment variable or a
//!   YAML file writes most simply). Serialised back as `"1m 30s"`.
//! - **Unset means default**: an unset trip rule is off, any other unset setting takes the
//!   builder's default. At least one trip rule must be set.
//! - **Unknown fields are refused** (`deny_unknown_fields`): a misspelt `consecutive_failure`
//!   is an error when the file is read, not a rule silently left off.
//! - **Alternatives**: `count_window` or `time_window`, `open_duration` or `open_backoff`;
//!   setting both of a pair is an error.
//! - **Errors** come in two kinds: the file's parser refuses a value of the wrong type, a
//!   malformed duration or an unknown field, with its own position; [`BreakerConfig::builder`]
//!   and [`KeyedConfig::build`] refuse a value out of range with a [`ConfigError`] whose
//!   [`breaker`](ConfigError::breaker) and [`setting`](ConfigError::setting) name the breaker
//!   and the field (`open_backoff.factor`, `slow_calls.rate`), never with a panic.
//!
//! # Environments: a file, then variables over it
//!
//! With the [`config`](https://docs.rs/config) crate, a setting of the file is overridden per
//! environment by a variable (`tests/config.rs` runs this):
//!
//! ```text
//! APP__BREAKERS__OPENAI__OPEN_DURATION=2m   overrides   [breakers.openai] open_duration = "30s"
//! ```
//!
//! ```no_run
//! # use std::collections::BTreeMap;
//! # use tower_breaker::config::BreakerConfig;
//! # #[derive(serde::Deserialize)] struct Settings { breakers: BTreeMap<String, BreakerConfig> }
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let settings: Settings = config::Config::builder()
//!     .add_source(config::File::with_name("breakers.toml"))
//!     .add_source(config::Environment::with_prefix("APP").separator("__").try_parsing(true))
//!     .build()?
//!     .try_deserialize()?;
//! # Ok(()) }
//! ```
//!
//! `figment`'s `Env::prefixed("APP_").split("__")` layers the same way.
//!
//! # Keyed registries
//!
//! A [`KeyedConfig`]'s overrides inherit what they leave unset from the template
//! ([`BreakerConfig::inherit`], as resilience4j's `baseConfig`): an override that sets only
//! `consecutive_failures` keeps the template's open duration, window and half-open settings.
//! An override's errors name the key's breaker, `"{registry}:{key}"`.
//!
//! # Reloading
//!
//! A reloaded file applies to what is running in one call: [`BreakerConfig::reconfigure`]
//! for a breaker, [`KeyedConfig::reconfigure`] for a registry (its template and overrides;
//! its bounds are kept). The breaker keeps its state, its open deadline, its probes in flight
//! and as much of its window as the new shape allows ([Hot reload](crate#hot-reload) has the
//! rules). The file is the whole truth: a setting it leaves out takes the builder's default
//! (an unset trip rule is off), except `shadow`, which, left out, keeps the breaker's flag. A
//! file with a mistake is refused with the breaker and the field named, and changes nothing:
//! the breaker runs on with its settings. Where the file comes from (a watcher, a signal, an
//! admin endpoint) is the application's choice.
//!
//! ```
//! use std::time::Duration;
//! use tower_breaker::{Outcome, State};
//! use tower_breaker::config::BreakerConfig;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let file = r#"
//!     failure_rate = 0.5
//!     count_window = 100
//!     min_calls = 4
//! "#;
//! let breaker = toml::from_str::<BreakerConfig>(file)?.builder("openai")?.build()?;
//! for outcome in [Outcome::Success, Outcome::Failure, Outcome::Success, Outcome::Success] {
//!     breaker.try_acquire()?.record(outcome);
//! }
//!
//! // The file changed (read again, e.g. on SIGHUP): stricter, and a longer open period.
//! let file = r#"
//!     failure_rate = 0.25
//!     count_window = 20
//!     min_calls = 4
//!     open_duration = "2m"
//! "#;
//! toml::from_str::<BreakerConfig>(file)?.reconfigure(&breaker)?;
//! // The four calls were kept (a window of 20 holds them all) and judged by the new rate
//! // at once: 1 failure in 4 is 25%.
//! assert_eq!(breaker.state(), State::Open);
//! assert_eq!(breaker.snapshot().retry_after, Some(Duration::from_secs(120)));
//!
//! // A mistake is refused, and the breaker runs on as it was.
//! let wrong: BreakerConfig = toml::from_str("failure_rate = 0")?;
//! let err = wrong.reconfigure(&breaker).unwrap_err();
//! assert_eq!((err.breaker(), err.setting()), (Some("openai"), "failure_rate"));
//! # Ok(()) }
//! ```

mod breaker;
pub(crate) mod duration;
mod keyed;

pub use breaker::{BackoffConfig, BreakerConfig, SlowCalls};
pub use keyed::KeyedConfig;

#[cfg(doc)]
use crate::breaker::{Builder, ConfigError};
