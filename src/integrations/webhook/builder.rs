//! [`WebhookBuilder`]: the settings of [`WebhookAlerts`] and the start of its task.

use std::{
    collections::{HashSet, VecDeque},
    fmt,
    sync::Arc,
    time::Duration,
};

use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use tokio::sync::mpsc;

use super::{
    AlertKind, Format, WebhookAlerts,
    limiter::Limiter,
    post::{Poster, client},
    shared::Shared,
    worker::Worker,
};
use crate::breaker::{Backoff, ConfigError};

/// Builds [`WebhookAlerts`]; see [`WebhookAlerts::builder`].
#[must_use]
#[derive(Clone)]
pub struct WebhookBuilder {
    pub(super) url: String,
    pub(super) format: Format,
    pub(super) headers: HeaderMap,
    pub(super) timeout: Duration,
    pub(super) retries: u32,
    pub(super) retry_min: Duration,
    pub(super) retry_max: Duration,
    pub(super) rate_limit: Duration,
    pub(super) queue_capacity: usize,
    pub(super) kinds: HashSet<AlertKind>,
    pub(super) remote: bool,
    pub(super) shadow: bool,
    pub(super) source: Option<String>,
}

impl fmt::Debug for WebhookBuilder {
    /// The URL shows its scheme and host only: a Slack webhook's path is its secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookBuilder")
            .field("url", &redacted(&self.url))
            .field("format", &self.format)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .field("retry_delay", &(self.retry_min, self.retry_max))
            .field("rate_limit", &self.rate_limit)
            .field("queue_capacity", &self.queue_capacity)
            .field("alert_on", &self.kinds)
            .field("remote_openings", &self.remote)
            .field("shadow_alerts", &self.shadow)
            .field("source", &self.source)
            .finish()
    }
}

/// `scheme://host/…`: what a log or a `Debug` may show of a webhook's URL.
pub(super) fn redacted(url: &str) -> String {
    match url.parse::<Uri>() {
        Ok(uri) => format!(
            "{}://{}/…",
            uri.scheme_str().unwrap_or("?"),
            uri.host().unwrap_or("?")
        ),
        Err(_) => "<invalid>".to_string(),
    }
}

impl WebhookBuilder {
    pub(super) fn new(url: String) -> Self {
        Self {
            url,
            format: Format::Json,
            headers: HeaderMap::new(),
            timeout: Duration::from_secs(10),
            retries: 3,
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(30),
            rate_limit: Duration::from_secs(60),
            queue_capacity: 256,
            kinds: [AlertKind::Opened, AlertKind::Reopened, AlertKind::Recovered].into(),
            remote: false,
            shadow: true,
            source: None,
        }
    }

    /// The body's format (default [`Format::Json`]; [`Format::Slack`] for a Slack incoming
    /// webhook).
    pub fn format(mut self, format: Format) -> Self {
        self.format = format;
        self
    }

    /// Sends this header with every alert (e.g. `authorization` for a receiver that wants a
    /// token). Set again, a header replaces the value set before.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// How long one attempt may take, connecting and reading the answer included (default
    /// 10 s); past it, the attempt failed.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How many times a failed attempt is retried (default 3): after a connection error, a
    /// timeout, a 5xx, a 429 or a 408. Another 4xx (a wrong URL, a revoked token) is not
    /// retried. An alert whose attempts all failed is dropped and counted
    /// ([`WebhookStatus::failed`](super::WebhookStatus::failed)).
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// The wait before the first retry, doubling (with 20% jitter) up to `max` (default 1 s to
    /// 30 s). A receiver's `Retry-After` is honoured, up to `max`.
    pub fn retry_delay(mut self, min: Duration, max: Duration) -> Self {
        self.retry_min = min;
        self.retry_max = max;
        self
    }

    /// At most one alert per breaker per `interval` (default 1 minute; zero: no limit). The
    /// first alert goes at once; those that follow within the interval are folded into one,
    /// the latest, sent when the interval ends and counting the others in its `suppressed`
    /// field. So a flapping breaker cannot flood the channel, and the last alert it sends
    /// always tells its latest state.
    pub fn rate_limit(mut self, interval: Duration) -> Self {
        self.rate_limit = interval;
        self
    }

    /// How many alerts may wait to be sent (default 256); past that, new alerts are dropped
    /// and counted ([`WebhookStatus::dropped`](super::WebhookStatus::dropped)): a call never
    /// waits for an alert.
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity;
        self
    }

    /// Which kinds of alert are sent (default all three). An outage is still followed when its
    /// opening is not alerted: a recovery says how long it lasted.
    pub fn alert_on(mut self, kinds: impl IntoIterator<Item = AlertKind>) -> Self {
        self.kinds = kinds.into_iter().collect();
        self
    }

    /// Whether a breaker opened by another replica's trip (shared through
    /// [`RedisSync`](crate::integrations), [`Reason::Remote`](crate::Reason::Remote)) is
    /// alerted, and its recovery (default `false`: the replica whose breaker tripped
    /// alerts, not every replica of the fleet).
    pub fn alert_remote_openings(mut self, alert: bool) -> Self {
        self.remote = alert;
        self
    }

    /// Whether the notional outages of a breaker in [shadow mode](crate#shadow-mode) are
    /// alerted (default `true`, marked `"shadow": true` and "shadow: would have opened").
    /// `false` leaves out their openings, reopenings and recoveries (an outage that began in
    /// shadow mode stays unalerted to its end, even if the breaker is switched to enforce
    /// meanwhile).
    pub fn shadow_alerts(mut self, alert: bool) -> Self {
        self.shadow = alert;
        self
    }

    /// Names the application or replica in every alert (`source` in the JSON, a `[source]`
    /// prefix in Slack's text).
    pub fn source(mut self, source: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Validates the settings and starts the background task that posts the alerts.
    ///
    /// Must be called within a tokio runtime (a [`ConfigError`] otherwise). The task runs
    /// until the handle, its clones and every breaker it instruments are dropped; it then
    /// posts the alerts still waiting (those held by the rate limit too) and ends.
    pub fn build(self) -> Result<WebhookAlerts, ConfigError> {
        let url = match self.url.parse::<Uri>() {
            Ok(uri) if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some() => uri,
            _ => {
                return Err(ConfigError::new(
                    "url",
                    "must be an absolute http:// or https:// URL",
                ));
            }
        };
        if self.timeout.is_zero() {
            return Err(ConfigError::new("timeout", "must be greater than zero"));
        }
        if self.retry_min.is_zero() || self.retry_max < self.retry_min {
            return Err(ConfigError::new(
                "retry_delay",
                "must be greater than zero, with min <= max",
            ));
        }
        if self.queue_capacity == 0 {
            return Err(ConfigError::new("queue_capacity", "must be at least 1"));
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Err(ConfigError::new(
                "runtime",
                "is missing: build the alerts within a tokio runtime",
            ));
        };
        let shared = Arc::new(Shared::default());
        let (tx, rx) = mpsc::channel(self.queue_capacity);
        let poster = Poster {
            client: client(),
            url,
            headers: self.headers,
            format: self.format,
            timeout: self.timeout,
            retries: self.retries,
            backoff: Backoff::exponential(self.retry_min, 2.0, self.retry_max).with_jitter(0.2),
            max_wait: self.retry_max,
        };
        let worker = Worker {
            rx,
            limiter: Limiter::new(self.rate_limit, self.kinds, self.remote, self.shadow),
            outbox: VecDeque::new(),
            capacity: self.queue_capacity,
            poster: Arc::new(poster),
            shared: shared.clone(),
            source: self.source,
        };
        runtime.spawn(worker.run());
        Ok(WebhookAlerts {
            inner: Arc::new(super::Handle { tx, shared }),
        })
    }
}
