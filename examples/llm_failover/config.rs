//! `--config FILE`: real OpenAI-compatible providers instead of the simulated ones.
//!
//! ```toml
//! # Tried in this order.
//! [[provider]]
//! name = "openai"
//! base_url = "https://api.openai.com/v1"  # {base_url}/chat/completions is called
//! api_key_env = "OPENAI_API_KEY"          # the NAME of the variable holding the key
//! model = "gpt-4o-mini"
//! price = 0.0004                          # US dollars per call, for the cost estimate
//! timeout_secs = 30                       # optional, per attempt (default 60)
//!
//! # Azure OpenAI's v1 API (OpenAI-compatible, no api-version parameter): the key goes in
//! # Azure's `api-key` header, the model is the deployment's name.
//! [[provider]]
//! name = "azure"
//! base_url = "https://my-resource.openai.azure.com/openai/v1"
//! auth = "api-key"                        # default "bearer": Authorization: Bearer <key>
//! api_key_env = "AZURE_OPENAI_API_KEY"
//! model = "my-gpt-4o-deployment"
//! price = 0.0004
//!
//! # Anthropic's OpenAI-compatible endpoint takes the key as a Bearer token.
//! [[provider]]
//! name = "anthropic"
//! base_url = "https://api.anthropic.com/v1"
//! api_key_env = "ANTHROPIC_API_KEY"
//! model = "claude-haiku-4-5"
//! price = 0.0010
//! long_context = true                     # takes prompts too long for the members before it
//!
//! [[provider]]
//! name = "local"
//! base_url = "http://localhost:11434/v1"  # plain http works too (a local model, a gateway)
//! model = "llama3.1"
//! price = 0.0                             # no api_key_env: no auth header
//!
//! [breaker]                               # optional: every provider's breaker
//! consecutive_failures = 5
//! open_duration = "30s"
//!
//! [[provider]]
//! name = "backup"
//! base_url = "https://gateway.internal/v1"
//! model = "gpt-4o-mini"
//! price = 0.0004
//! [provider.breaker]                      # optional: this provider's, over [breaker]
//! failure_rate = 0.5
//! time_window = "1m"
//! open_backoff = { kind = "exponential", base = "10s", factor = 2, max = "5m", jitter = 0.2 }
//! ```
//!
//! `[breaker]` and each `[provider.breaker]` take every setting of the crate's
//! `config::BreakerConfig` (`consecutive_failures`, `failure_rate`, `count_window` or
//! `time_window`, `min_calls`, `slow_calls`, `open_duration` or `open_backoff`,
//! `max_open_duration`, `half_open_permits`, `half_open_successes`, `half_open_max_wait`;
//! durations as `"30s"` or seconds). A provider's section inherits what it leaves unset from
//! `[breaker]`, which inherits from the example's defaults (5 consecutive failures, open 30 s).
//! That needs the crate's `serde` feature (`cargo run --example llm_failover --features serde
//! -- --config FILE`); without it, the sections take `consecutive_failures` and
//! `open_duration` (seconds) only, and any other setting is refused with that hint.
//!
//! `base_url` is `https://` (TLS through rustls with Mozilla's roots, see
//! [`https_connector`](crate::scenario::https_connector)) or `http://`; nothing else.
//!
//! `auth` is `"bearer"` (`Authorization: Bearer <key>`: OpenAI, Anthropic's compatible
//! endpoint, most gateways) or `"api-key"` (`api-key: <key>`: Azure OpenAI). A prompt that a
//! provider says is too long for its context window goes to the next provider marked
//! `long_context`, or back to the caller if there is none; a content-filter refusal always goes
//! back to the caller.
//!
//! The file holds no key, only the name of the environment variable that does. A key read
//! from it lives in an [`ApiKey`], whose `Debug` prints `<redacted>`; it leaves the process only
//! in its auth header, marked sensitive.
#![allow(dead_code)]

use std::time::Duration;

use serde::Deserialize;

use tower_breaker::Builder;

use crate::scenario::{ApiKey, Auth, BreakerConfig, Provider};

/// `[breaker]` and `[provider.breaker]`: the crate's own config type, every setting of the
/// breaker's builder.
#[cfg(feature = "serde")]
pub use tower_breaker::config::BreakerConfig as BreakerSection;

/// `[breaker]` and `[provider.breaker]` without the crate's `serde` feature: the two settings
/// the example always had.
#[cfg(not(feature = "serde"))]
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerSection {
    pub consecutive_failures: Option<u32>,
    /// Seconds.
    pub open_duration: Option<f64>,
}

#[cfg(not(feature = "serde"))]
impl BreakerSection {
    fn inherit(&self, base: &Self) -> Self {
        Self {
            consecutive_failures: self.consecutive_failures.or(base.consecutive_failures),
            open_duration: self.open_duration.or(base.open_duration),
        }
    }

    fn builder(&self, name: &str) -> Result<Builder, String> {
        let mut b = tower_breaker::CircuitBreaker::builder(name);
        if let Some(n) = self.consecutive_failures {
            b = b.consecutive_failures(n);
        }
        if let Some(secs) = self.open_duration {
            match Duration::try_from_secs_f64(secs) {
                Ok(d) if !d.is_zero() => b = b.open_duration(d),
                _ => return Err("open_duration must be a positive number of seconds".into()),
            }
        }
        b.build().map(|_| b).map_err(|e| e.to_string())
    }
}

/// The example's defaults, under `[breaker]`: 5 consecutive failures, open 30 s.
#[cfg(feature = "serde")]
fn default_breaker() -> BreakerSection {
    // `BreakerConfig` is `#[non_exhaustive]`: set field by field.
    let mut d = BreakerSection::default();
    d.consecutive_failures = Some(5);
    d.open_duration = Some(Duration::from_secs(30));
    d
}

/// The example's defaults, under `[breaker]`: 5 consecutive failures, open 30 s.
#[cfg(not(feature = "serde"))]
fn default_breaker() -> BreakerSection {
    BreakerSection {
        consecutive_failures: Some(5),
        open_duration: Some(30.0),
    }
}

/// The file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The providers, in failover order.
    #[serde(rename = "provider")]
    pub providers: Vec<ProviderConfig>,
    /// Every provider's breaker, over the example's defaults.
    #[serde(default)]
    pub breaker: BreakerSection,
}

/// One `[[provider]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub name: String,
    pub base_url: String,
    /// The environment variable that holds the key; none for an upstream without auth.
    pub api_key_env: Option<String>,
    /// The header the key goes in (default `bearer`).
    #[serde(default)]
    pub auth: Auth,
    /// Takes prompts too long for the providers before it.
    #[serde(default)]
    pub long_context: bool,
    pub model: String,
    /// US dollars per call.
    pub price: f64,
    pub timeout_secs: Option<f64>,
    /// This provider's breaker, over `[breaker]`.
    #[serde(default)]
    pub breaker: BreakerSection,
}

/// An `http://` or `https://` URL (either case) with a host, such that
/// `{base_url}/chat/completions` is a valid URI. Errors name the scheme, never the URL: a URL
/// can carry credentials (`user:pass@`).
fn check_base_url(url: &str) -> Result<(), String> {
    const SCHEMES: &str = "must start with http:// or https://";
    match url.split_once("://").map(|(scheme, _)| scheme) {
        Some(s) if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https") => {}
        Some(s) if !s.is_empty() && s.len() <= 16 && s.bytes().all(|b| b.is_ascii_alphanumeric()) => {
            return Err(format!("{SCHEMES}, not {s}://"));
        }
        _ => return Err(SCHEMES.into()),
    }
    let uri: http::Uri = format!("{}/chat/completions", url.trim_end_matches('/'))
        .parse()
        .map_err(|_| "is not a valid URL".to_string())?;
    if uri.host().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    Ok(())
}

impl Config {
    /// Parses and checks a TOML document.
    pub fn parse(text: &str) -> Result<Self, String> {
        // Not `{e}`: toml's display quotes the offending line, which could hold a secret.
        let config: Self = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
            // Without `serde`, a breaker setting beyond the two basic ones is an unknown field.
            let hint = if cfg!(feature = "serde") || !e.message().contains("consecutive_failures") {
                ""
            } else {
                " (every breaker setting needs the crate's serde feature: cargo run --example \
                 llm_failover --features serde -- --config FILE)"
            };
            match line {
                Some(line) => format!("invalid config, line {line}: {}{hint}", e.message()),
                None => format!("invalid config: {}{hint}", e.message()),
            }
        })?;
        if config.providers.is_empty() {
            return Err("invalid config: no [[provider]]".into());
        }
        for p in &config.providers {
            check_base_url(&p.base_url).map_err(|e| format!("provider {:?}: base_url {e}", p.name))?;
            if !(p.price.is_finite() && p.price >= 0.0) {
                return Err(format!(
                    "provider {:?}: price must be a non-negative number",
                    p.name
                ));
            }
            if p.timeout_secs.is_some_and(|t| !(t.is_finite() && t > 0.0)) {
                return Err(format!("provider {:?}: timeout_secs must be positive", p.name));
            }
        }
        for p in &config.providers {
            let _validated = config
                .breaker_of(p)
                .map_err(|e| format!("provider {:?}: breaker: {e}", p.name))?;
        }
        Ok(config)
    }

    /// `p`'s breaker: its `[provider.breaker]` over `[breaker]` over the example's defaults,
    /// validated. The error names the provider and the setting.
    pub fn breaker_of(&self, p: &ProviderConfig) -> Result<Builder, String> {
        let settings = p.breaker.inherit(&self.breaker.inherit(&default_breaker()));
        let built: Result<Builder, _> = settings.builder(p.name.as_str());
        built.map_err(|e| e.to_string())
    }

    /// The providers, their keys read through `env` (`std::env::var` in the example).
    pub fn providers(&self, env: impl Fn(&str) -> Option<String>) -> Result<Vec<Provider>, String> {
        self.providers
            .iter()
            .map(|p| {
                let api_key = match &p.api_key_env {
                    Some(var) => Some(ApiKey::new(env(var).ok_or_else(|| {
                        format!("provider {:?}: environment variable {var} is not set", p.name)
                    })?)),
                    None => None,
                };
                Ok(Provider {
                    name: p.name.clone(),
                    base_url: p.base_url.clone(),
                    api_key,
                    auth: p.auth,
                    long_context: p.long_context,
                    model: p.model.clone(),
                    price: p.price,
                    timeout: Duration::from_secs_f64(p.timeout_secs.unwrap_or(60.0)),
                    breaker: Some(
                        self.breaker_of(p)
                            .map_err(|e| format!("provider {:?}: breaker: {e}", p.name))?,
                    ),
                })
            })
            .collect()
    }

    /// The breaker of a provider without settings of its own: none from
    /// [`providers`](Self::providers), which gives each its [`breaker_of`](Self::breaker_of).
    pub fn breaker(&self) -> BreakerConfig {
        BreakerConfig {
            consecutive_failures: 5,
            open_duration: Duration::from_secs(30),
            half_open_permits: 1,
        }
    }
}
