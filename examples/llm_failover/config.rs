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
//! [breaker]                               # optional
//! consecutive_failures = 5
//! open_secs = 30
//! ```
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

use crate::scenario::{ApiKey, Auth, BreakerConfig, Provider};

/// The file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The providers, in failover order.
    #[serde(rename = "provider")]
    pub providers: Vec<ProviderConfig>,
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
}

/// `[breaker]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerSection {
    pub consecutive_failures: u32,
    pub open_secs: f64,
}

impl Default for BreakerSection {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            open_secs: 30.0,
        }
    }
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
            match line {
                Some(line) => format!("invalid config, line {line}: {}", e.message()),
                None => format!("invalid config: {}", e.message()),
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
        if !(config.breaker.open_secs.is_finite() && config.breaker.open_secs > 0.0) {
            return Err("invalid config: breaker.open_secs must be positive".into());
        }
        Ok(config)
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
                })
            })
            .collect()
    }

    /// The breakers' configuration.
    pub fn breaker(&self) -> BreakerConfig {
        BreakerConfig {
            consecutive_failures: self.breaker.consecutive_failures,
            open_duration: Duration::from_secs_f64(self.breaker.open_secs),
            half_open_permits: 1,
        }
    }
}
