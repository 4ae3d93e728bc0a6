//! The HTTP classifier: [`HttpClassifier`], and [`AsError`], the error types it understands.
//!
//! ```
//! use std::time::Duration;
//! use http::{Response, StatusCode, header::RETRY_AFTER};
//! use tower_breaker::{BoxError, Classify, HttpClassifier, Outcome};
//!
//! let classifier = HttpClassifier::default();
//! let status = |code: u16| Response::builder().status(code).body(()).unwrap();
//! let ok = |res: &Response<()>| Classify::<_, BoxError>::classify(&classifier, Ok(res));
//!
//! assert_eq!(ok(&status(200)), Outcome::Success);
//! assert_eq!(ok(&status(404)), Outcome::Success); // the upstream answered
//! assert_eq!(ok(&status(529)), Outcome::Failure); // overloaded
//! assert_eq!(ok(&status(429)), Outcome::Failure); // rate limited, no wait given
//! let limited = Response::builder().status(429).header(RETRY_AFTER, "20").body(()).unwrap();
//! assert_eq!(ok(&limited), Outcome::Trip(Duration::from_secs(20)));
//!
//! // Errors: timeouts, connect errors and anything else are failures.
//! let timeout: BoxError = Box::new(tower::timeout::error::Elapsed::new());
//! assert_eq!(Classify::<Response<()>, _>::classify(&classifier, Err(&timeout)), Outcome::Failure);
//! ```

use std::{error::Error, fmt, sync::Arc, time::Duration, time::SystemTime};

use http::{HeaderMap, StatusCode, header::RETRY_AFTER};

mod error;
mod status;
#[cfg(all(test, not(loom)))]
mod tests;

pub use error::{AsError, ErrorClass};
use status::StatusSet;

use super::{Classify, Outcome, retry_after::parse_retry_after};
#[cfg(doc)]
use crate::breaker::{BoxError, CircuitOpen};

/// Classifies HTTP responses and client errors for a breaker.
///
/// The default table ([`HttpClassifier::new`] / `default()`):
///
/// | result | default | change it with |
/// |---|---|---|
/// | 500–599 (incl. 529 "overloaded") | `Failure` | [`failure_statuses`](Self::failure_statuses), [`success_statuses`](Self::success_statuses), [`ignore_statuses`](Self::ignore_statuses) |
/// | 429, 503 with a `Retry-After` (seconds or HTTP-date) | `Trip(that wait)` | [`retry_after_statuses`](Self::retry_after_statuses) |
/// | 429 without a usable `Retry-After` | `Failure` (its row) | [`rate_limited_wait`](Self::rate_limited_wait) |
/// | 429, 408 | `Failure` | the status setters |
/// | other 1xx–4xx | `Success` (the upstream answered) | the status setters |
/// | error: timeout (`tower::timeout::error::Elapsed`, an I/O `TimedOut`, a hyper or reqwest timeout) | `Failure` | [`timeout_error`](Self::timeout_error) |
/// | error: connect (refused, DNS, unreachable) | `Failure` | [`connect_error`](Self::connect_error) |
/// | error: a [`CircuitOpen`](crate::CircuitOpen) from a breaker further down | `Ignore` (nothing was sent) | [`circuit_open_error`](Self::circuit_open_error) |
/// | error: anything else (reset, protocol error, ...) | `Failure` | [`other_error`](Self::other_error), or any error with [`on_error`](Self::on_error) |
/// | the caller cancelled the call | nothing: the permit is released | — |
///
/// A `Retry-After` that is malformed, zero, or a date not in the future is ignored: the status
/// falls back to its row (so a 429 with `Retry-After: soon` is a `Failure`). A huge wait is
/// kept as is; the breaker clamps a `Trip` to its `max_open_duration`. Statuses outside
/// 100–599 (not HTTP semantics) are failures.
///
/// # Clone
///
/// The table is plain `Copy` data (a few bit sets); the optional error hook sits behind an
/// `Arc`. Cloning (which the breaker service does for every call) allocates nothing.
///
/// # Errors it understands
///
/// It classifies `Result<&Res, &E>` for `Res` = [`http::Response<B>`] (and `reqwest::Response`
/// with the `reqwest` feature) and any `E` implementing [`AsError`]: [`BoxError`] (what
/// `tower::timeout::Timeout` and this crate's services return), `std::io::Error`, `hyper::Error`
/// and `hyper_util::client::legacy::Error` (feature `hyper-util`), `reqwest::Error` (feature
/// `reqwest`), `reqwest_middleware::Error` (feature `reqwest-middleware`). It walks the error's
/// `source()` chain to find what happened.
///
/// ```
/// use std::time::Duration;
/// use tower_breaker::{HttpClassifier, Outcome};
///
/// let classifier = HttpClassifier::new()
///     .failure_statuses([401]) // a revoked key: stop calling
///     .success_statuses([501]) // "not implemented" is our bug, not the upstream's health
///     .retry_after_statuses([429]) // a 503's Retry-After is just a 503
///     .rate_limited_wait(Some(Duration::from_secs(10))) // a bare 429 pauses 10 s
///     .on_error(|err| err.to_string().contains("certificate").then_some(Outcome::Ignore));
/// # let _ = classifier;
/// ```
#[derive(Clone)]
pub struct HttpClassifier {
    failure: StatusSet,
    ignore: StatusSet,
    retry_after: StatusSet,
    rate_limited_wait: Option<Duration>,
    timeout: Outcome,
    connect: Outcome,
    circuit_open: Outcome,
    other: Outcome,
    hook: Option<ErrorHook>,
}

type ErrorHook = Arc<dyn Fn(&(dyn Error + 'static)) -> Option<Outcome> + Send + Sync>;

impl Default for HttpClassifier {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpClassifier {
    /// The classifier with the default table (see the [type docs](Self)).
    pub const fn new() -> Self {
        Self {
            failure: StatusSet::EMPTY.with_range(500, 599).with(429).with(408),
            ignore: StatusSet::EMPTY,
            retry_after: StatusSet::EMPTY.with(429).with(503),
            rate_limited_wait: None,
            timeout: Outcome::Failure,
            connect: Outcome::Failure,
            circuit_open: Outcome::Ignore,
            other: Outcome::Failure,
            hook: None,
        }
    }

    /// These statuses are failures. Takes any `u16`s: `[401, 403]`, `500..=599`. Codes outside
    /// 100–599 are skipped.
    #[must_use]
    pub fn failure_statuses(mut self, statuses: impl IntoIterator<Item = u16>) -> Self {
        for s in statuses {
            self.failure.insert(s);
            self.ignore.remove(s);
        }
        self
    }

    /// These statuses are successes (the upstream is healthy).
    #[must_use]
    pub fn success_statuses(mut self, statuses: impl IntoIterator<Item = u16>) -> Self {
        for s in statuses {
            self.failure.remove(s);
            self.ignore.remove(s);
        }
        self
    }

    /// These statuses say nothing about the upstream: not counted, a half-open probe slot goes
    /// back (e.g. `400..=499` for a breaker that should see only server trouble).
    #[must_use]
    pub fn ignore_statuses(mut self, statuses: impl IntoIterator<Item = u16>) -> Self {
        for s in statuses {
            self.failure.remove(s);
            self.ignore.insert(s);
        }
        self
    }

    /// Replaces the set of statuses whose `Retry-After` trips the breaker (default `[429,
    /// 503]`); `[]` turns `Retry-After` off. A status in the set with no usable `Retry-After`
    /// falls back to its row.
    #[must_use]
    pub fn retry_after_statuses(mut self, statuses: impl IntoIterator<Item = u16>) -> Self {
        self.retry_after = StatusSet::EMPTY;
        for s in statuses {
            self.retry_after.insert(s);
        }
        self
    }

    /// What a 429 without a usable `Retry-After` means: `None` (default) falls back to 429's
    /// row (`Failure`); `Some(wait)` trips the breaker for `wait`.
    #[must_use]
    pub const fn rate_limited_wait(mut self, wait: Option<Duration>) -> Self {
        self.rate_limited_wait = wait;
        self
    }

    /// The outcome of a timeout error (default `Failure`).
    #[must_use]
    pub const fn timeout_error(mut self, outcome: Outcome) -> Self {
        self.timeout = outcome;
        self
    }

    /// The outcome of a connect error: refused, DNS failure, unreachable (default `Failure`).
    #[must_use]
    pub const fn connect_error(mut self, outcome: Outcome) -> Self {
        self.connect = outcome;
        self
    }

    /// The outcome of a [`CircuitOpen`] from a breaker further down the stack (default
    /// `Ignore`: nothing was sent upstream).
    #[must_use]
    pub const fn circuit_open_error(mut self, outcome: Outcome) -> Self {
        self.circuit_open = outcome;
        self
    }

    /// The outcome of any other error: a reset connection, a protocol error, ... (default
    /// `Failure`).
    #[must_use]
    pub const fn other_error(mut self, outcome: Outcome) -> Self {
        self.other = outcome;
        self
    }

    /// A hook that sees every error first: `Some(outcome)` decides, `None` falls back to the
    /// table. It replaces an earlier hook.
    #[must_use]
    pub fn on_error<F>(mut self, hook: F) -> Self
    where
        F: Fn(&(dyn Error + 'static)) -> Option<Outcome> + Send + Sync + 'static,
    {
        self.hook = Some(Arc::new(hook));
        self
    }

    /// Classifies a response by its status and headers (the HTTP-date form of `Retry-After`
    /// is measured from the system clock).
    pub fn classify_status(&self, status: StatusCode, headers: &HeaderMap) -> Outcome {
        self.classify_status_at(status, headers, SystemTime::now)
    }

    /// Like [`classify_status`](Self::classify_status), measuring an HTTP-date from `now`.
    pub fn classify_status_at(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        now: impl FnOnce() -> SystemTime,
    ) -> Outcome {
        let code = status.as_u16();
        if !(StatusSet::FIRST..=StatusSet::LAST).contains(&code) {
            return Outcome::Failure;
        }
        if self.retry_after.contains(code) {
            if let Some(wait) = headers
                .get(RETRY_AFTER)
                .and_then(|v| parse_retry_after(v.as_bytes(), now()))
            {
                if !wait.is_zero() {
                    return Outcome::Trip(wait);
                }
            }
        }
        if code == 429 {
            if let Some(wait) = self.rate_limited_wait {
                return Outcome::Trip(wait);
            }
        }
        if self.failure.contains(code) {
            Outcome::Failure
        } else if self.ignore.contains(code) {
            Outcome::Ignore
        } else {
            Outcome::Success
        }
    }

    /// Whether `status` is one of the [`retry_after_statuses`](Self::retry_after_statuses)
    /// (shared with the `llm` classifier, which reads the providers' wait headers on them).
    #[cfg_attr(not(feature = "llm"), allow(dead_code))]
    pub(crate) const fn waits_on(&self, status: StatusCode) -> bool {
        self.retry_after.contains(status.as_u16())
    }

    /// Classifies an error: the hook first, then the row of its [`ErrorClass`].
    pub fn classify_error(&self, err: &(dyn Error + 'static)) -> Outcome {
        if let Some(hook) = &self.hook {
            if let Some(outcome) = hook(err) {
                return outcome;
            }
        }
        match ErrorClass::of(err) {
            ErrorClass::Timeout => self.timeout,
            ErrorClass::Connect => self.connect,
            ErrorClass::CircuitOpen => self.circuit_open,
            ErrorClass::Other => self.other,
        }
    }
}

impl<B, E: AsError> Classify<http::Response<B>, E> for HttpClassifier {
    #[inline]
    fn classify(&self, result: Result<&http::Response<B>, &E>) -> Outcome {
        match result {
            Ok(res) => self.classify_status(res.status(), res.headers()),
            Err(err) => self.classify_error(err.as_error()),
        }
    }
}

#[cfg(feature = "reqwest")]
impl<E: AsError> Classify<reqwest::Response, E> for HttpClassifier {
    #[inline]
    fn classify(&self, result: Result<&reqwest::Response, &E>) -> Outcome {
        match result {
            Ok(res) => self.classify_status(res.status(), res.headers()),
            Err(err) => self.classify_error(err.as_error()),
        }
    }
}

impl fmt::Debug for HttpClassifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClassifier")
            .field("failure", &self.failure)
            .field("ignore", &self.ignore)
            .field("retry_after", &self.retry_after)
            .field("rate_limited_wait", &self.rate_limited_wait)
            .field("timeout", &self.timeout)
            .field("connect", &self.connect)
            .field("circuit_open", &self.circuit_open)
            .field("other", &self.other)
            .field("hook", &self.hook.as_ref().map(|_| "Fn"))
            .finish()
    }
}
