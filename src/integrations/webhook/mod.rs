//! Alerts without user code (feature `webhook`): [`WebhookAlerts`] posts a Slack-compatible
//! or a generic JSON webhook when a breaker opens, reopens and recovers.
//!
//! ```
//! use std::time::Duration;
//! use tower_breaker::{CircuitBreaker, Outcome};
//! use tower_breaker::integrations::webhook::{Format, WebhookAlerts};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let url = "http://127.0.0.1:1/";
//! // One per process, inside the tokio runtime: e.g. a Slack incoming webhook's URL
//! // ("https://hooks.slack.com/services/T000/B000/XXXX"), from the environment.
//! let alerts = WebhookAlerts::builder(url)
//!     .format(Format::Slack)
//!     .source("checkout-web-1") // which application (or replica) speaks
//!     .build()?;
//!
//! // A breaker whose outages are alerted.
//! let openai = alerts.attach(
//!     CircuitBreaker::builder("openai")
//!         .consecutive_failures(5)
//!         .open_duration(Duration::from_secs(30)),
//! )?;
//! for _ in 0..5 {
//!     openai.try_acquire()?.record(Outcome::Failure); // the 5th opens it: an alert is queued
//! }
//! // Slack shows: "[checkout-web-1] :red_circle: Circuit breaker *openai* opened
//! // (consecutive_failures): 5 consecutive failures. Calls are refused for 30s."
//! println!("{:?}", alerts.status()); // sent, failed, retried, dropped, suppressed
//! # Ok(()) }
//! ```
//!
//! # What is alerted
//!
//! | alert | transition | |
//! |---|---|---|
//! | `opened` | closed (or disabled) → open or forced open | an outage begins |
//! | `reopened` | half-open → open | a probe failed (or was slow, or timed out): the outage goes on, for the next backoff value |
//! | `recovered` | open, half-open or forced open → closed | enough probes succeeded, or an operator reset the breaker; says how long the outage lasted |
//!
//! Open → half-open is not alerted (nothing is known yet), nor is disabling a breaker. Each
//! alert names the breaker, the [`Reason`](crate::Reason), the breaker's counts when it changed state
//! (consecutive failures, calls, failures and slow calls in its window, the failure rate),
//! and the open duration (for a recovery, the outage's). See [`Alert`] for the JSON body and
//! [`Alert::text`] for Slack's. [`WebhookBuilder::alert_on`] picks the kinds.
//!
//! With [`RedisSync`](crate::integrations), every replica's breaker opens when one replica's
//! trips (or an operator force-opens it on one replica): by default only that replica alerts
//! (an opening whose reason is [`Remote`](crate::Reason::Remote) is not alerted, nor is the
//! recovery that ends it), so a fleet of 20 does not post 20 alerts per outage; see
//! [`alert_remote_openings`](WebhookBuilder::alert_remote_openings).
//!
//! A breaker in [shadow mode](crate#shadow-mode) refuses no call, but its notional outages
//! are alerted by default, marked: `"shadow": true` in the JSON, and in Slack's text a blue
//! icon and "(shadow: would have opened)", "Calls still pass (shadow mode)". That is what a
//! team deploying observe-only wants to see before enforcing; to keep them out of an on-call
//! channel, [`shadow_alerts(false)`](WebhookBuilder::shadow_alerts) (or a second
//! [`WebhookAlerts`] for a quieter channel).
//!
//! # Never in the way of a call
//!
//! The breaker's listener only builds the alert and `try_send`s it on a bounded queue: it
//! never waits, and a full queue drops the alert and counts it
//! ([`WebhookStatus::dropped`]). Building an alert reads the breaker's snapshot (a short
//! lock), only on the transitions above. A background tokio task takes the alerts off the
//! queue and posts them one at a time, in order:
//!
//! - each attempt is bounded by [`timeout`](WebhookBuilder::timeout) (default 10 s),
//!   connecting and reading the answer included;
//! - a connection error, a timeout, a 5xx, a 429 or a 408 is retried
//!   [`retries`](WebhookBuilder::retries) times (default 3) after a growing, jittered delay
//!   ([`retry_delay`](WebhookBuilder::retry_delay), default 1 s doubling to 30 s, or the
//!   receiver's `Retry-After`); another 4xx is not;
//! - an alert whose attempts all failed is dropped, counted ([`WebhookStatus::failed`]) and
//!   logged at WARN with the receiver's host (never the URL's path: a Slack webhook's path is
//!   its secret).
//!
//! A slow or absent receiver therefore delays only the alerts behind it; the breakers work as
//! before.
//!
//! # Rate limiting
//!
//! At most one alert per breaker per [`rate_limit`](WebhookBuilder::rate_limit) (default 1
//! minute). The first goes at once; the alerts of that breaker that follow within the
//! interval are folded into one, the latest, sent when the interval ends with the number it
//! folded in `suppressed` ([`WebhookStatus::suppressed`] counts them). A flapping breaker
//! sends one alert a minute, and the last one sent always tells its latest state.
//!
//! # Transport
//!
//! `https://` through rustls (ring, Mozilla's roots compiled in through `webpki-roots`: no
//! system certificate store, no cmake), `http://` as it is, HTTP/1.1, with hyper-util's
//! client (connections kept alive between alerts). Headers for a receiver's token:
//! [`WebhookBuilder::header`].
//!
//! # Which breakers
//!
//! [`attach`](WebhookAlerts::attach) builds a breaker with the alerts' listener and
//! registers it, so that its alerts carry its counts; [`attach_keyed`](WebhookAlerts::attach_keyed)
//! does the same for every key of a [keyed registry](crate::keyed) (an outage of many keys
//! makes one alert per key, bounded by the queue and the rate limit per key);
//! [`instrument`](WebhookAlerts::instrument) only adds the listener (for builders that others
//! build, e.g. [`CircuitBreakerLayer::per_service`](crate::CircuitBreakerLayer::per_service)):
//! their alerts' counts are `null` unless the breakers are [`register`](WebhookAlerts::register)ed.

mod alert;
mod builder;
mod limiter;
mod post;
mod shared;
mod worker;

use std::{
    fmt,
    hash::Hash,
    sync::{Arc, OnceLock},
};

use tokio::sync::mpsc;

pub use alert::{Alert, AlertKind, Format};
pub use builder::WebhookBuilder;

use crate::{
    breaker::{Builder, CircuitBreaker, ConfigError, Event, Snapshot},
    keyed::{KeyedRegistry, KeyedRegistryBuilder, WeakRegistry},
};
use shared::Shared;

/// Posts alerts to a webhook when breakers open, reopen and recover. See [the module
/// docs](self).
///
/// A cheap `Clone` handle. The background task runs while the handle, a clone, or a breaker
/// it instruments is alive.
#[derive(Clone)]
pub struct WebhookAlerts {
    inner: Arc<Handle>,
}

struct Handle {
    tx: mpsc::Sender<Alert>,
    shared: Arc<Shared>,
}

impl fmt::Debug for WebhookAlerts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookAlerts")
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

/// What [`WebhookAlerts`] has done so far: from [`WebhookAlerts::status`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct WebhookStatus {
    /// Alerts the receiver accepted (a 2xx).
    pub sent: u64,
    /// Alerts dropped after every attempt failed (or a 4xx that a retry cannot fix).
    pub failed: u64,
    /// Attempts retried.
    pub retried: u64,
    /// Alerts dropped because the queue was full.
    pub dropped: u64,
    /// Alerts folded into a later one by the rate limit.
    pub suppressed: u64,
    /// Why the last failed alert failed.
    pub last_error: Option<String>,
}

/// How a listener finds its breaker's snapshot.
#[derive(Clone)]
enum Lookup {
    /// Among the registered breakers, by name.
    Registered,
    /// A keyed registry's breaker.
    Keyed(Arc<dyn Fn() -> Option<Snapshot> + Send + Sync>),
}

impl WebhookAlerts {
    /// Starts a builder that posts to `url` (`https://` or `http://`).
    pub fn builder(url: impl Into<String>) -> WebhookBuilder {
        WebhookBuilder::new(url.into())
    }

    /// Builds the breaker from `builder` with its outages alerted: [`instrument`](Self::instrument),
    /// build, then [`register`](Self::register).
    pub fn attach(&self, builder: Builder) -> Result<CircuitBreaker, ConfigError> {
        let breaker = self.instrument(builder).build()?;
        self.register(&breaker);
        Ok(breaker)
    }

    /// Installs the listener that alerts the breaker's outages. Its alerts carry the
    /// breaker's counts once the breaker built from it is [`register`](Self::register)ed.
    pub fn instrument(&self, builder: Builder) -> Builder {
        builder.on_event(self.make_listener(Lookup::Registered))
    }

    /// Lets the alerts of `breaker` (built from an [`instrument`](Self::instrument)ed builder)
    /// read its counts. Held weakly: registering keeps no breaker alive. Names are the key:
    /// of two breakers registered under one name, the last one's counts are read.
    pub fn register(&self, breaker: &CircuitBreaker) {
        self.inner.shared.watch(breaker);
    }

    /// Builds a keyed registry whose breakers' outages are alerted, one alert per key (named
    /// as the key's breaker, e.g. `"openai:gpt-4o"`), with its counts. The listener is added
    /// after any [`map_builder`](KeyedRegistryBuilder::map_builder) already set (set yours
    /// before calling this).
    pub fn attach_keyed<K>(&self, builder: KeyedRegistryBuilder<K>) -> Result<KeyedRegistry<K>, ConfigError>
    where
        K: Hash + Eq + Clone + fmt::Display + Send + Sync + 'static,
    {
        let cell = Arc::new(OnceLock::<WeakRegistry<K>>::new());
        let alerts = self.clone();
        let lookup_cell = cell.clone();
        let registry = builder
            .and_map_builder(move |b, key| {
                let (cell, key) = (lookup_cell.clone(), key.clone());
                let snapshot = move || {
                    let registry = cell.get()?.upgrade()?;
                    let breaker = registry.get(&key).ok()?;
                    Some(breaker.snapshot())
                };
                b.on_event(alerts.make_listener(Lookup::Keyed(Arc::new(snapshot))))
            })
            .build()?;
        let _ = cell.set(registry.downgrade());
        Ok(registry)
    }

    /// What the alerts have done so far.
    pub fn status(&self) -> WebhookStatus {
        self.inner.shared.status()
    }

    fn make_listener(&self, lookup: Lookup) -> impl Fn(&Event<'_>) + Send + Sync + 'static {
        let tx = self.inner.tx.clone();
        let shared = self.inner.shared.clone();
        move |event: &Event<'_>| {
            let Event::Transition {
                name,
                from,
                to,
                reason,
                open_for,
                shadow,
            } = *event
            else {
                return;
            };
            let Some(kind) = AlertKind::of(from, to) else {
                return;
            };
            let snapshot = match &lookup {
                Lookup::Registered => shared.snapshot_of(name),
                Lookup::Keyed(f) => f(),
            };
            let alert = Alert::new(
                name,
                kind,
                (from, to, reason, open_for),
                shadow,
                snapshot.as_ref(),
            );
            if tx.try_send(alert).is_err() {
                shared.count_dropped();
            }
        }
    }
}
