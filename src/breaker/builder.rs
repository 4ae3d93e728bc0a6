//! The builder: every setting, validated into a [`ConfigError`] instead of a panic.

use std::{sync::Arc, time::Duration};

use super::{
    Backoff, BoxError, CircuitBreaker, ConfigError, Event, Lanes, event::Listener, recovery::RecoveryProbe,
    window::MAX_COUNT_WINDOW,
};

/// Which window the rate rules read.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Window {
    None,
    Count(u32),
    Time(Duration),
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) consecutive: Option<u32>,
    pub(crate) failure_rate: Option<f64>,
    pub(crate) slow: Option<(Duration, f64)>,
    pub(crate) window: Window,
    pub(crate) min_calls: u32,
    pub(crate) backoff: Backoff,
    pub(crate) max_open: Duration,
    pub(crate) half_open_permits: u32,
    pub(crate) half_open_successes: u32,
    pub(crate) half_open_max_wait: Duration,
    /// `None`: the builder left it unset (a new breaker starts enforcing; a reload keeps the
    /// live breaker's flag).
    pub(crate) shadow: Option<bool>,
}

/// Builds a [`CircuitBreaker`]; see [`CircuitBreaker::builder`].
///
/// Every trip rule that is set is active, and any one of them trips the breaker. Unset rules
/// are off; at least one must be set. Defaults: open 30 s, `max_open_duration` 10 min, one
/// half-open permit, one success to close, `half_open_max_wait` 60 s, `min_calls` 10 (capped at
/// a count window's size), and a count window of 100 for the rate rules unless one is set.
///
/// A builder also reloads a live breaker: [`CircuitBreaker::reconfigure`] applies its settings
/// and keeps the breaker's state and window (see [Hot reload](crate#hot-reload)).
#[derive(Clone)]
#[must_use]
pub struct Builder {
    name: Arc<str>,
    consecutive: Option<u32>,
    failure_rate: Option<f64>,
    slow: Option<(Duration, f64)>,
    count_window: Option<u32>,
    time_window: Option<Duration>,
    min_calls: Option<u32>,
    backoff: Backoff,
    max_open: Duration,
    half_open_permits: u32,
    half_open_successes: u32,
    half_open_max_wait: Duration,
    shadow: Option<bool>,
    pub(crate) listeners: Vec<Listener>,
    recovery: Option<RecoveryProbe>,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("name", &self.name)
            .field("consecutive_failures", &self.consecutive)
            .field("failure_rate", &self.failure_rate)
            .field("slow_calls", &self.slow)
            .field("count_window", &self.count_window)
            .field("time_window", &self.time_window)
            .field("min_calls", &self.min_calls)
            .field("open_backoff", &self.backoff)
            .field("max_open_duration", &self.max_open)
            .field("half_open_permits", &self.half_open_permits)
            .field("half_open_successes", &self.half_open_successes)
            .field("half_open_max_wait", &self.half_open_max_wait)
            .field("shadow", &self.shadow)
            .field("listeners", &self.listeners.len())
            .field("recovery_probe", &self.recovery)
            .finish()
    }
}

impl Builder {
    pub(crate) fn new(name: Arc<str>) -> Self {
        Self {
            name,
            consecutive: None,
            failure_rate: None,
            slow: None,
            count_window: None,
            time_window: None,
            min_calls: None,
            backoff: Backoff::default(),
            max_open: Duration::from_secs(600),
            half_open_permits: 1,
            half_open_successes: 1,
            half_open_max_wait: Duration::from_secs(60),
            shadow: None,
            listeners: Vec::new(),
            recovery: None,
        }
    }

    /// Renames the breaker (used by per-endpoint layers and keyed registries).
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    pub(crate) fn name_ref(&self) -> &Arc<str> {
        &self.name
    }

    /// Whether breakers built from this builder start in shadow mode.
    #[cfg(feature = "metrics")]
    pub(crate) const fn starts_shadow(&self) -> bool {
        matches!(self.shadow, Some(true))
    }

    /// Trips on the `n`-th consecutive failure. A success resets the run; `Ignore` leaves it.
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.consecutive = Some(n);
        self
    }

    /// Trips when the failure rate over the window is `>= rate`, once `min_calls` outcomes are
    /// in the window. The rate is the quotient `failures / calls` that
    /// [`Snapshot::failure_rate`](crate::breaker::Snapshot::failure_rate) reports, so a rate
    /// written as a ratio trips at that ratio: `failure_rate(0.07)` over 100 calls trips on the
    /// 7th failure. `rate` must be greater than 0 and at most 1 (a zero rate, which would trip
    /// on successes alone, is a [`ConfigError`], as in resilience4j and Polly).
    pub fn failure_rate(mut self, rate: f64) -> Self {
        self.failure_rate = Some(rate);
        self
    }

    /// The rate rules read the last `calls` outcomes (a true sliding window). At most 32,767.
    pub fn count_window(mut self, calls: u32) -> Self {
        self.count_window = Some(calls);
        self
    }

    /// The rate rules read the outcomes of the last `window` (ten buckets of a tenth each).
    pub fn time_window(mut self, window: Duration) -> Self {
        self.time_window = Some(window);
        self
    }

    /// No rate decision while fewer than `calls` outcomes are in the window (default 10,
    /// capped at a count window's size).
    pub fn min_calls(mut self, calls: u32) -> Self {
        self.min_calls = Some(calls);
        self
    }

    /// Trips when the share of calls slower than `threshold` (strictly, measured to the
    /// nanosecond from `try_acquire` to `record`) is `>= rate`, once `min_calls` outcomes are
    /// in the window; the share is compared as the failure rate is. `rate` must be greater than
    /// 0 and at most 1. A slow half-open probe reopens the breaker.
    pub fn slow_calls(mut self, threshold: Duration, rate: f64) -> Self {
        self.slow = Some((threshold, rate));
        self
    }

    /// Stays open this long each time (default 30 s). Same as `open_backoff(Backoff::fixed(d))`.
    pub fn open_duration(mut self, wait: Duration) -> Self {
        self.backoff = Backoff::fixed(wait);
        self
    }

    /// Stays open for the backoff's next value each time it reopens; closing resets it.
    pub fn open_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The longest a server-imposed wait ([`Outcome::Trip`](crate::Outcome::Trip)) may keep
    /// the breaker open (default 10 min). `Duration::MAX` clamps nothing: every open period
    /// (a backoff's too) ends at the latest about 584 years after the breaker was built, the
    /// reach of its nanosecond clock.
    pub fn max_open_duration(mut self, max: Duration) -> Self {
        self.max_open = max;
        self
    }

    /// How many probes half-open admits at once (default 1).
    pub fn half_open_permits(mut self, permits: u32) -> Self {
        self.half_open_permits = permits;
        self
    }

    /// How many probe successes close the breaker (default 1).
    pub fn half_open_successes(mut self, successes: u32) -> Self {
        self.half_open_successes = successes;
        self
    }

    /// A half-open probe that brings no decision for this long after its admission sends the
    /// breaker back to open, so a hung probe cannot wedge it (default 60 s). The wait runs from
    /// the admission of the oldest probe in flight; with no probe in flight, half-open waits
    /// for the next caller, who becomes the probe. A wait past what the clock can hold
    /// (`Duration::MAX`) means half-open never gives up on its probes.
    pub fn half_open_max_wait(mut self, wait: Duration) -> Self {
        self.half_open_max_wait = wait;
        self
    }

    /// Starts the breaker in shadow mode (default off): it runs its state machine and
    /// publishes every event, but never refuses a call; see [Shadow mode](crate#shadow-mode)
    /// and [`CircuitBreaker::set_shadow`], which switches it at runtime.
    pub fn shadow(mut self, shadow: bool) -> Self {
        self.shadow = Some(shadow);
        self
    }

    /// Sets an out-of-band recovery probe: when an open period ends, the breaker runs
    /// `probe()` (bounded by `timeout`) on tokio, and only its success lets live calls in, as
    /// half-open probes; a failure or a timeout opens the breaker again for the backoff's next
    /// value. So a user's request is not the one that finds the upstream still down. See
    /// [Recovery probes](crate#recovery-probes) for the rules (what refusals say meanwhile,
    /// server waits, manual controls, shadow mode, the runtime it runs on).
    ///
    /// The probe resolves to `Ok(())` when the upstream looks healthy; any error (anything
    /// `Into<BoxError>`) is a failure. Map an HTTP status to an error yourself: a `500` is an
    /// `Ok` response to most clients. The probe must not hold the breaker (a clone of it in the
    /// closure keeps the breaker alive for as long as the closure lives). `timeout` must be
    /// greater than zero. A configuration file ([`config`](crate#operating-it), feature
    /// `serde`) cannot set it: a probe is code.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_breaker::{CircuitBreaker, Outcome, Reason, State};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let breaker = CircuitBreaker::builder("openai")
    ///     .consecutive_failures(1)
    ///     .open_duration(Duration::from_secs(30))
    ///     // e.g. a `GET /v1/models` on the provider, mapped to `Ok(())` on a 200
    ///     .recovery_probe(|| async { Ok::<(), std::io::Error>(()) }, Duration::from_secs(5))
    ///     .build()
    ///     .unwrap();
    /// breaker.try_acquire().unwrap().record(Outcome::Failure);
    /// tokio::time::sleep(Duration::from_secs(30)).await; // the probe runs at the deadline
    /// # for _ in 0..10 { tokio::task::yield_now().await; }
    /// assert_eq!(breaker.state(), State::HalfOpen);
    /// assert_eq!(breaker.snapshot().reason, Some(Reason::RecoveryProbeSucceeded));
    /// let probe = breaker.try_acquire().unwrap(); // a live call, judged as a probe
    /// assert!(probe.is_probe());
    /// probe.record(Outcome::Success);
    /// assert_eq!(breaker.state(), State::Closed);
    /// # }
    /// ```
    pub fn recovery_probe<F, Fut, E>(mut self, probe: F, timeout: Duration) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError>,
    {
        self.recovery = Some(RecoveryProbe::new(probe, timeout));
        self
    }

    /// Calls `listener` with every [`Event`]: each transition with its reason, each rejection,
    /// each recorded outcome and each released permit. Listeners run after the breaker's lock is released; keep them short. With no
    /// listener, no event is built.
    pub fn on_event(mut self, listener: impl Fn(&Event<'_>) + Send + Sync + 'static) -> Self {
        self.listeners.push(Arc::new(listener));
        self
    }

    pub(crate) fn config(&self) -> Result<Config, ConfigError> {
        // A zero rate is refused: it would trip on `min_calls` successes.
        let rate_ok = |r: f64| r > 0.0 && r <= 1.0;
        if self.consecutive.is_none() && self.failure_rate.is_none() && self.slow.is_none() {
            return Err(ConfigError::new(
                "trip rules",
                "are all unset: set consecutive_failures, failure_rate or slow_calls",
            ));
        }
        if self.consecutive == Some(0) {
            return Err(ConfigError::new("consecutive_failures", "must be at least 1"));
        }
        if self.failure_rate.is_some_and(|r| !rate_ok(r)) {
            return Err(ConfigError::new(
                "failure_rate",
                "must be greater than 0 and at most 1",
            ));
        }
        if self.slow.is_some_and(|(_, r)| !rate_ok(r)) {
            return Err(ConfigError::new(
                "slow_calls",
                "rate must be greater than 0 and at most 1",
            ));
        }
        let window = match (self.count_window, self.time_window) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "count_window and time_window",
                    "are alternatives: set one of them",
                ));
            }
            (Some(0), None) => return Err(ConfigError::new("count_window", "must be at least 1")),
            (Some(n), None) if n > MAX_COUNT_WINDOW => {
                return Err(ConfigError::new("count_window", "must be at most 32767"));
            }
            (Some(n), None) => Window::Count(n),
            (None, Some(d)) if d < Duration::from_micros(10) => {
                return Err(ConfigError::new("time_window", "must be at least 10 µs"));
            }
            (None, Some(d)) => Window::Time(d),
            (None, None) if self.failure_rate.is_some() || self.slow.is_some() => Window::Count(100),
            (None, None) => Window::None,
        };
        let min_calls = match self.min_calls {
            Some(0) => return Err(ConfigError::new("min_calls", "must be at least 1")),
            Some(n) => n,
            None => 10,
        };
        let min_calls = match window {
            Window::Count(size) => min_calls.min(size),
            _ => min_calls,
        };
        self.backoff.validate()?;
        if self.max_open.is_zero() {
            return Err(ConfigError::new("max_open_duration", "must be greater than zero"));
        }
        if self.half_open_permits == 0 {
            return Err(ConfigError::new("half_open_permits", "must be at least 1"));
        }
        if self.half_open_successes == 0 {
            return Err(ConfigError::new("half_open_successes", "must be at least 1"));
        }
        if self.half_open_max_wait.is_zero() {
            return Err(ConfigError::new(
                "half_open_max_wait",
                "must be greater than zero",
            ));
        }
        if self.recovery.as_ref().is_some_and(|p| p.timeout.is_zero()) {
            return Err(ConfigError::new(
                "recovery_probe",
                "timeout must be greater than zero",
            ));
        }
        Ok(Config {
            consecutive: self.consecutive,
            failure_rate: self.failure_rate,
            slow: self.slow,
            window,
            min_calls,
            backoff: self.backoff,
            max_open: self.max_open,
            half_open_permits: self.half_open_permits,
            half_open_successes: self.half_open_successes,
            half_open_max_wait: self.half_open_max_wait,
            shadow: self.shadow,
        })
    }

    /// Validates the settings and builds the breaker. An error names the setting and this
    /// breaker ([`ConfigError::breaker`]).
    pub fn build(&self) -> Result<CircuitBreaker, ConfigError> {
        Ok(self.build_with(self.validated()?, Lanes::Auto))
    }

    /// [`config`](Self::config), its error naming this breaker.
    pub(crate) fn validated(&self) -> Result<Config, ConfigError> {
        self.config().map_err(|e| e.in_breaker(&self.name))
    }

    /// Builds a breaker from a configuration this builder validated before.
    pub(crate) fn build_with(&self, config: Config, lanes: Lanes) -> CircuitBreaker {
        CircuitBreaker::from_config(
            self.name.clone(),
            config,
            self.listeners.clone(),
            self.recovery.clone(),
            lanes,
        )
    }
}
