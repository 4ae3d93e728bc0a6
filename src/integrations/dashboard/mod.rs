//! A live status page for circuit breakers (feature `dashboard`): one self-contained HTML page
//! (CSS and JS inline; no CDN, no build step), the JSON snapshot it reads and a server-sent
//! event stream of transitions and periodic snapshots, all served by one tower
//! [`DashboardService`] that mounts in hyper or axum.
//!
//! ```
//! use http_body_util::BodyExt;
//! use tower::ServiceExt;
//! use tower_breaker::{CircuitBreaker, Outcome, integrations::dashboard::Dashboard};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let dashboard = Dashboard::new();
//! // Instrument (calls, rejections, transitions), build, and watch (state, rates, history):
//! let openai = dashboard.build(CircuitBreaker::builder("openai").consecutive_failures(1))?;
//! openai.try_acquire()?.record(Outcome::Failure); // it trips
//!
//! // Mount `dashboard.service()` under a prefix (hyper, or axum's `nest_service`); here one
//! // request goes straight to it.
//! let req = http::Request::get("/dashboard/snapshot.json").body(())?;
//! let res = dashboard.service().oneshot(req).await?;
//! assert_eq!(res.headers()["content-type"], "application/json");
//! let json: serde_json::Value = serde_json::from_slice(&res.into_body().collect().await?.to_bytes())?;
//! let breaker = &json["breakers"][0];
//! assert_eq!(breaker["name"], "openai");
//! assert_eq!(breaker["state"], "open");
//! assert_eq!(breaker["transitions"][0]["reason"], "consecutive_failures");
//! # Ok(()) }
//! ```
//!
//! # What the page shows
//!
//! For every watched breaker: its state in colour, the failure and slow-call rates of its
//! window, calls and rejections per second, each with a sparkline of the last minutes (a
//! sample every [`sample_every`](DashboardBuilder::sample_every), [`history`](DashboardBuilder::history)
//! long), a band of its states over that time, the time until it lets a probe through, and
//! its last transitions with their reasons. For every watched keyed registry: the number of
//! keys and the [`top_keys`](DashboardBuilder::top_keys) keys by rejections per second (open
//! ones first among equals), each with the same figures.
//!
//! - A breaker in [shadow mode](crate#shadow-mode) refuses no call, and the page never draws
//!   it as refusing: a dashed "shadow" badge beside its state in a muted colour (notional),
//!   "would have refused N calls" (from [`Snapshot::would_reject`](crate::Snapshot::would_reject)),
//!   no red flash when it trips. The header's counts by state leave it out (so "open" counts
//!   only breakers that refuse calls, as `dashboards/grafana.json` does) and count it apart:
//!   "1 in shadow mode (1 would refuse)". Among a registry's keys with as many rejections, it
//!   ranks after the refusing ones, before the others.
//! - A [recovery probe](crate#recovery-probes) in flight
//!   ([`Snapshot::recovery_probe`](crate::Snapshot::recovery_probe)) shows as "probing
//!   upstream…" with the time left until its verdict is due.
//! - Operators' actions ([manual overrides](crate#manual-overrides), [hot
//!   reloads](crate#hot-reload)) show in the breaker's list of last transitions and in the
//!   page's live events, with where they come from: "force_open by web-2-4242" (another
//!   replica, through `integrations::redis`), "reset (local)", "reload (local), shadow on".
//!
//! The page opens the event stream and redraws on every event: a transition or an action
//! shows within milliseconds, without a reload; when the stream drops it reconnects, reading
//! the snapshot meanwhile.
//!
//! # The JSON
//!
//! `snapshot.json` (and each `snapshot` event) is
//! `{"title", "now_unix_ms", "sample_every_secs", "history_len", "breakers": [...],
//! "registries": [{"name", "keys", "max_keys", "top": [...]}]}`. Each breaker (and each top
//! key) has the fields of its [`Snapshot`](crate::Snapshot) as the `serde` feature writes
//! them (`name`, `state`, the counts and rates, `retry_after_secs`, `open_for_secs`,
//! `reason`, `shadow`, `would_reject`, `recovery_probe`), and:
//!
//! | field | what |
//! |---|---|
//! | `key` | the key, for a registry's breaker (else `null`) |
//! | `instrumented` | whether the dashboard's listener is installed (the fields below need it) |
//! | `calls_per_sec`, `rejections_per_sec` | over the last sample interval |
//! | `history` | columns of samples, oldest first: `state`, `failure_rate`, `slow_call_rate`, `calls_per_sec`, `rejections_per_sec` |
//! | `transitions` | newest first: `seq` (the rank among the breaker's transitions and actions: an action comes before the transition it causes), `from`, `to`, `reason`, `open_for_secs`, `shadow` (in shadow mode: it refused nothing), `at_unix_ms`, `ago_secs` |
//! | `actions` | operators' last actions, newest first: `seq`, `action` (`force_open`, `disable`, `reset`, `shadow_on`, `shadow_off`, `reload`), `origin` (`local`, or the replica's origin string), `local`, `shadow` (for a reload: the mode after it; else `null`), `at_unix_ms`, `ago_secs` |
//!
//! The event stream (`events`) sends `snapshot` events, a `transition` event per transition
//! and an `action` event per action, each with `breaker` and `key` beside the fields above:
//!
//! ```text
//! event: transition
//! data: {"breaker":"openai","key":null,"seq":0,"at_unix_ms":1767225600000,"ago_secs":0.0,"from":"closed","to":"open","reason":"consecutive_failures","open_for_secs":30.0,"shadow":true}
//!
//! event: action
//! data: {"breaker":"openai","key":null,"seq":1,"at_unix_ms":1767225600000,"ago_secs":0.0,"action":"force_open","origin":"web-2-4242","local":false,"shadow":null}
//! ```
//!
//! # Routes
//!
//! See [`DashboardService`]: the last path segment picks `snapshot.json`, `events` or the
//! page, so the same service works under any prefix. It is read-only (`GET`, `HEAD`).
//!
//! # Registration
//!
//! The same shape as [`integrations::prometheus`](super): [`instrument`](Dashboard::instrument)
//! installs a listener on a builder (it counts calls and rejections, and keeps the last
//! transitions); [`watch`](Dashboard::watch) reads a built breaker's [`Snapshot`](crate::Snapshot)
//! at each sample and each request (held weakly: a dropped breaker leaves the page);
//! [`build`](Dashboard::build) does both. A breaker watched but not instrumented still shows
//! its state, rates and time until half-open; calls, rejections and transitions need the
//! listener. For a keyed registry, instrument each key's builder with
//! [`KeyedRegistryBuilder::map_builder`](crate::keyed::KeyedRegistryBuilder::map_builder)`(`[`instrument_keyed`](Dashboard::instrument_keyed)`)`
//! and [`watch_keyed`](Dashboard::watch_keyed) the registry.
//!
//! # Cost and bounds
//!
//! On the call path the listener does one relaxed atomic increment per call or rejection; it
//! takes no lock and allocates nothing. A transition takes a short lock and, while a page is
//! open, formats one event. Sampling (one task on the tokio runtime, started by the first
//! registration, request or [`Dashboard`] made inside a runtime, ending when the last handle
//! is dropped) reads each watched breaker's snapshot and the counters of every key of every
//! watched registry, and snapshots only the top keys. Memory is bounded: `history` samples
//! per watched breaker and per key shown (a key's history starts when it enters the top and
//! is dropped when it leaves), [`transitions`](DashboardBuilder::transitions) per breaker (and
//! as many operators' actions), and
//! a broadcast channel of 256 events (a slow page skips events; the next snapshot has them).
//!
//! # What it exposes
//!
//! Breaker names, keys, states, counts, rates and transition reasons: never request data,
//! headers, API keys or other credentials (the breaker core never sees any). Keys are shown as
//! their `Display` gives them: don't key a registry by a secret (an API key) if the page is
//! visible to people who may not see it, and mount the service where your other operations
//! endpoints are (behind the same authentication).

mod body;
mod hub;
mod service;
mod sse;
mod view;

#[cfg(test)]
mod tests;

use std::{fmt, sync::Arc, time::Duration};

pub use body::DashboardBody;
pub use service::DashboardService;

use hub::{Hub, Settings, WatchedRegistry};

use crate::{
    breaker::{Builder, CircuitBreaker, ConfigError},
    keyed::KeyedRegistry,
};

/// Breakers and keyed registries to show, and the [`DashboardService`] that shows them. A
/// cheap `Clone` handle. See [the module docs](self).
#[derive(Clone)]
pub struct Dashboard {
    hub: Arc<Hub>,
}

impl fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.hub.fmt(f)
    }
}

impl Default for Dashboard {
    fn default() -> Self {
        Self::new()
    }
}

impl Dashboard {
    /// A dashboard with the default settings (see [`DashboardBuilder`]).
    pub fn new() -> Self {
        Self {
            hub: Hub::new(DashboardBuilder::new().settings),
        }
    }

    /// A builder for other settings.
    pub fn builder() -> DashboardBuilder {
        DashboardBuilder::new()
    }

    /// Installs the dashboard's listener on `builder`: calls and rejections are counted and
    /// the last transitions and operators' actions kept. The breaker shows once [`watch`](Self::watch)ed, or use
    /// [`build`](Self::build).
    pub fn instrument(&self, builder: Builder) -> Builder {
        let stats = self.hub.stats(builder.name_ref(), None);
        builder.on_event(move |event| stats.on_event(event))
    }

    /// Like [`instrument`](Self::instrument), for a key of a keyed registry: pass it to
    /// [`map_builder`](crate::keyed::KeyedRegistryBuilder::map_builder).
    pub fn instrument_keyed<K: fmt::Display + ?Sized>(&self, builder: Builder, key: &K) -> Builder {
        let stats = self
            .hub
            .stats(builder.name_ref(), Some(key.to_string().into_boxed_str()));
        builder.on_event(move |event| stats.on_event(event))
    }

    /// Shows `breaker` (after those watched before). It is held weakly: once every handle to
    /// it is dropped, it leaves the page.
    pub fn watch(&self, breaker: &CircuitBreaker) {
        self.hub.watch(breaker);
        self.hub.ensure_sampler();
    }

    /// Instruments `builder`, builds the breaker and watches it.
    pub fn build(&self, builder: Builder) -> Result<CircuitBreaker, ConfigError> {
        let breaker = self.instrument(builder).build()?;
        self.watch(&breaker);
        Ok(breaker)
    }

    /// Shows `registry`: its number of keys and its top keys by rejections. The registry
    /// handle is kept.
    pub fn watch_keyed<K>(&self, registry: &KeyedRegistry<K>)
    where
        K: fmt::Display + Send + Sync + 'static,
    {
        let (each, len) = (registry.clone(), registry.clone());
        self.hub.watch_registry(WatchedRegistry {
            name: registry.name().to_string(),
            for_each: Box::new(move |f| {
                each.for_each(|key, breaker| f(Some(key), breaker));
                if let Some(overflow) = each.overflow() {
                    f(None, overflow);
                }
            }),
            len: Box::new(move || len.len()),
            max_keys: registry.max_keys(),
            keys: 0,
            top: Vec::new(),
        });
        self.hub.ensure_sampler();
    }

    /// The service that serves the page, the snapshot and the event stream.
    pub fn service(&self) -> DashboardService {
        self.hub.ensure_sampler();
        DashboardService {
            hub: self.hub.clone(),
        }
    }

    /// The snapshot as the page reads it (`snapshot.json`), read now.
    pub fn snapshot_json(&self) -> Vec<u8> {
        self.hub.view_json()
    }

    /// Takes a sample now, as the sampling task does every
    /// [`sample_every`](DashboardBuilder::sample_every): for tests under paused time, or
    /// where no tokio runtime runs the task.
    pub fn sample(&self) {
        self.hub.sample(tokio::time::Instant::now());
    }
}

/// Settings of a [`Dashboard`]. Defaults: title `"circuit breakers"`, a sample every second,
/// 5 minutes of history, the 10 top keys of each registry, the last 10 transitions of each
/// breaker.
#[derive(Clone, Debug)]
#[must_use]
pub struct DashboardBuilder {
    settings: Settings,
    history: Duration,
}

/// The most samples a history may hold (an hour at one a second).
const MAX_SAMPLES: usize = 3600;

impl Default for DashboardBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl DashboardBuilder {
    /// The defaults.
    pub fn new() -> Self {
        Self {
            settings: Settings {
                title: "circuit breakers".into(),
                sample_every: Duration::from_secs(1),
                history: 300,
                top_keys: 10,
                transitions: 10,
            },
            history: Duration::from_secs(300),
        }
    }

    /// The page's title (e.g. the application's name).
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.settings.title = title.into();
        self
    }

    /// How often the history is sampled and the page gets a fresh snapshot (at least 10 ms).
    pub fn sample_every(mut self, every: Duration) -> Self {
        self.settings.sample_every = every;
        self
    }

    /// How much history the sparklines show (at least one sample, at most 3,600 samples).
    pub fn history(mut self, history: Duration) -> Self {
        self.history = history;
        self
    }

    /// How many keys of each keyed registry are shown (0: only the number of keys).
    pub fn top_keys(mut self, n: usize) -> Self {
        self.settings.top_keys = n;
        self
    }

    /// How many of its last transitions each breaker shows (at least 1, at most 1,000), and
    /// as many of its operators' last actions.
    pub fn transitions(mut self, n: usize) -> Self {
        self.settings.transitions = n;
        self
    }

    /// The dashboard, or the setting at fault.
    pub fn build(self) -> Result<Dashboard, ConfigError> {
        let mut settings = self.settings;
        if settings.sample_every < Duration::from_millis(10) {
            return Err(ConfigError::new("sample_every", "must be at least 10 ms"));
        }
        if self.history < settings.sample_every {
            return Err(ConfigError::new("history", "must hold at least one sample"));
        }
        let samples = self.history.as_nanos() / settings.sample_every.as_nanos();
        if samples > MAX_SAMPLES as u128 {
            return Err(ConfigError::new("history", "must hold at most 3600 samples"));
        }
        settings.history = samples as usize;
        if settings.transitions == 0 || settings.transitions > 1000 {
            return Err(ConfigError::new("transitions", "must be between 1 and 1000"));
        }
        if settings.top_keys > 1000 {
            return Err(ConfigError::new("top_keys", "must be at most 1000"));
        }
        Ok(Dashboard {
            hub: Hub::new(settings),
        })
    }
}
