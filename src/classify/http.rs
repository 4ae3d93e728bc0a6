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

use std::{error::Error, fmt, io, sync::Arc, time::Duration, time::SystemTime};

use http::{HeaderMap, StatusCode, header::RETRY_AFTER};

use super::{Classify, Outcome, retry_after::parse_retry_after};
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
/// | error: a [`CircuitOpen`] from a breaker further down | `Ignore` (nothing was sent) | [`circuit_open_error`](Self::circuit_open_error) |
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

/// What kind of error a call ended in, found by walking its `source()` chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorClass {
    /// A timeout: `tower::timeout::error::Elapsed`, an I/O `TimedOut`, a hyper or reqwest
    /// timeout. Wins over `Connect` (a connect timeout is a timeout).
    Timeout,
    /// The connection could not be made: refused, DNS failure, unreachable (an I/O error of
    /// those kinds, or a hyper-util / reqwest connect error with their features).
    Connect,
    /// A breaker further down refused the call; nothing was sent. (Not when the refusal
    /// killed a `tower::buffer::Buffer` above that breaker: that buffer is dead for good, see
    /// [`is_dead_buffer`](crate::is_dead_buffer), and the error is `Other`.)
    CircuitOpen,
    /// Anything else: a reset, a protocol error, a body error...
    Other,
}

impl ErrorClass {
    /// Classifies `err` by the first telling error in its `source()` chain.
    pub fn of(err: &(dyn Error + 'static)) -> Self {
        let mut class = Self::Other;
        let mut in_buffer = false;
        let mut cur = Some(err);
        while let Some(e) = cur {
            if let Some(open) = e.downcast_ref::<CircuitOpen>() {
                if in_buffer {
                    super::dead_buffer_found(open);
                    return Self::Other;
                }
                return Self::CircuitOpen;
            }
            in_buffer |= e.is::<tower::buffer::error::ServiceError>();
            if e.is::<tower::timeout::error::Elapsed>() {
                return Self::Timeout;
            }
            if let Some(io) = e.downcast_ref::<io::Error>() {
                match io.kind() {
                    io::ErrorKind::TimedOut => return Self::Timeout,
                    io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::AddrNotAvailable
                    | io::ErrorKind::HostUnreachable
                    | io::ErrorKind::NetworkUnreachable => class = Self::Connect,
                    _ => {}
                }
            }
            #[cfg(feature = "hyper-util")]
            {
                if let Some(h) = e.downcast_ref::<hyper::Error>() {
                    if h.is_timeout() {
                        return Self::Timeout;
                    }
                }
                if let Some(h) = e.downcast_ref::<hyper_util::client::legacy::Error>() {
                    if h.is_connect() {
                        class = Self::Connect;
                    }
                }
            }
            #[cfg(feature = "reqwest")]
            if let Some(r) = e.downcast_ref::<reqwest::Error>() {
                if r.is_timeout() {
                    return Self::Timeout;
                }
                if r.is_connect() {
                    class = Self::Connect;
                }
            }
            cur = super::next_in_chain(e);
        }
        class
    }
}

/// An error [`HttpClassifier`] (and the crate's retry helpers) can look into: a view of it as
/// `&dyn Error`.
///
/// Implemented for [`BoxError`], `Box<dyn Error>`, `dyn Error` (with or without `Send` and
/// `Sync`), references to any of these, `std::io::Error`, `Infallible`, [`CircuitOpen`],
/// `tower::timeout::error::Elapsed`, and with their features `hyper::Error`,
/// `hyper_util::client::legacy::Error`, `reqwest::Error` and `reqwest_middleware::Error`.
/// Implement it for your own error type to use the classifier, and
/// [`is_circuit_open`](crate::is_circuit_open), with it.
pub trait AsError {
    /// This error as a `dyn Error`, whose `source()` chain the classifier walks.
    fn as_error(&self) -> &(dyn Error + 'static);
}

impl AsError for BoxError {
    fn as_error(&self) -> &(dyn Error + 'static) {
        &**self
    }
}

impl AsError for Box<dyn Error> {
    fn as_error(&self) -> &(dyn Error + 'static) {
        &**self
    }
}

impl AsError for dyn Error + 'static {
    fn as_error(&self) -> &(dyn Error + 'static) {
        self
    }
}

impl AsError for dyn Error + Send + 'static {
    fn as_error(&self) -> &(dyn Error + 'static) {
        self
    }
}

impl AsError for dyn Error + Send + Sync + 'static {
    fn as_error(&self) -> &(dyn Error + 'static) {
        self
    }
}

impl<E: AsError + ?Sized> AsError for &E {
    fn as_error(&self) -> &(dyn Error + 'static) {
        (**self).as_error()
    }
}

macro_rules! as_error_itself {
    ($($(#[$m:meta])* $t:ty),* $(,)?) => {$(
        $(#[$m])*
        impl AsError for $t {
            fn as_error(&self) -> &(dyn Error + 'static) {
                self
            }
        }
    )*};
}

as_error_itself!(
    io::Error,
    std::convert::Infallible,
    CircuitOpen,
    tower::timeout::error::Elapsed,
    #[cfg(feature = "hyper-util")]
    hyper::Error,
    #[cfg(feature = "hyper-util")]
    hyper_util::client::legacy::Error,
    #[cfg(feature = "reqwest")]
    reqwest::Error,
);

#[cfg(feature = "reqwest-middleware")]
impl AsError for reqwest_middleware::Error {
    fn as_error(&self) -> &(dyn Error + 'static) {
        // The variants are `#[error(transparent)]`: look at the wrapped error itself, not
        // past it.
        match self {
            reqwest_middleware::Error::Middleware(e) => {
                let e: &(dyn Error + Send + Sync + 'static) = e.as_ref();
                e
            }
            reqwest_middleware::Error::Reqwest(e) => e,
        }
    }
}

/// A set of status codes 100–599, one bit each: `Copy`, 64 bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
struct StatusSet([u64; 8]);

impl StatusSet {
    const FIRST: u16 = 100;
    const LAST: u16 = 599;
    const EMPTY: Self = Self([0; 8]);

    const fn index(code: u16) -> Option<(usize, u64)> {
        if code < Self::FIRST || code > Self::LAST {
            return None;
        }
        let i = (code - Self::FIRST) as usize;
        Some((i / 64, 1 << (i % 64)))
    }

    const fn with(mut self, code: u16) -> Self {
        if let Some((w, bit)) = Self::index(code) {
            self.0[w] |= bit;
        }
        self
    }

    const fn with_range(mut self, first: u16, last: u16) -> Self {
        let mut code = first;
        while code <= last {
            self = self.with(code);
            code += 1;
        }
        self
    }

    fn insert(&mut self, code: u16) {
        *self = self.with(code);
    }

    fn remove(&mut self, code: u16) {
        if let Some((w, bit)) = Self::index(code) {
            self.0[w] &= !bit;
        }
    }

    #[inline]
    const fn contains(&self, code: u16) -> bool {
        match Self::index(code) {
            Some((w, bit)) => self.0[w] & bit != 0,
            None => false,
        }
    }
}

impl fmt::Debug for StatusSet {
    /// As runs: `{408, 429, 500-599}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        let mut first = true;
        let mut code = Self::FIRST;
        while code <= Self::LAST {
            if !self.contains(code) {
                code += 1;
                continue;
            }
            let start = code;
            while code < Self::LAST && self.contains(code + 1) {
                code += 1;
            }
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            if start == code {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{code}")?;
            }
            code += 1;
        }
        f.write_str("}")
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use http::{HeaderValue, Response};

    /// Wed, 21 Oct 2015 07:28:00 GMT
    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480)
    }

    fn status(c: &HttpClassifier, code: u16, retry_after: Option<&str>) -> Outcome {
        let mut headers = HeaderMap::new();
        if let Some(v) = retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from_str(v).unwrap());
        }
        c.classify_status_at(StatusCode::from_u16(code).unwrap(), &headers, now)
    }

    fn err(c: &HttpClassifier, e: BoxError) -> Outcome {
        Classify::<Response<()>, BoxError>::classify(c, Err(&e))
    }

    #[test]
    fn server_errors_are_failures() {
        let c = HttpClassifier::default();
        for code in [500, 501, 502, 503, 504, 529, 599] {
            assert_eq!(status(&c, code, None), Outcome::Failure, "{code}");
        }
    }

    #[test]
    fn retry_after_trips_on_429_and_503() {
        let c = HttpClassifier::default();
        let secs = Outcome::Trip(Duration::from_secs(30));
        assert_eq!(status(&c, 429, Some("30")), secs);
        assert_eq!(status(&c, 503, Some("30")), secs);
        let date = Some("Wed, 21 Oct 2015 07:30:00 GMT");
        assert_eq!(status(&c, 429, date), Outcome::Trip(Duration::from_secs(120)));
        assert_eq!(status(&c, 503, date), Outcome::Trip(Duration::from_secs(120)));
        // Not on other statuses: a 500 or 502 with Retry-After is just a failure.
        assert_eq!(status(&c, 500, Some("30")), Outcome::Failure);
        assert_eq!(status(&c, 502, Some("30")), Outcome::Failure);
        assert_eq!(status(&c, 200, Some("30")), Outcome::Success);
    }

    #[test]
    fn unusable_retry_after_falls_back_to_the_row() {
        let c = HttpClassifier::default();
        for bad in ["soon", "-5", "1.5", "", "0", "Wed, 21 Oct 2015 07:00:00 GMT"] {
            assert_eq!(status(&c, 429, Some(bad)), Outcome::Failure, "{bad:?}");
            assert_eq!(status(&c, 503, Some(bad)), Outcome::Failure, "{bad:?}");
        }
        assert_eq!(status(&c, 429, None), Outcome::Failure);
        assert_eq!(status(&c, 503, None), Outcome::Failure);
    }

    #[test]
    fn huge_retry_after_is_kept_for_the_core_to_clamp() {
        let c = HttpClassifier::default();
        assert_eq!(
            status(&c, 429, Some("99999999999999999999999999")),
            Outcome::Trip(Duration::from_secs(u64::MAX))
        );
    }

    #[test]
    fn rate_limited_and_request_timeout_are_failures() {
        let c = HttpClassifier::default();
        assert_eq!(status(&c, 429, None), Outcome::Failure);
        assert_eq!(status(&c, 408, None), Outcome::Failure);
        // 408 has no Retry-After row by default
        assert_eq!(status(&c, 408, Some("10")), Outcome::Failure);
    }

    #[test]
    fn other_statuses_are_successes() {
        let c = HttpClassifier::default();
        for code in [
            100, 101, 200, 201, 204, 301, 304, 400, 401, 403, 404, 409, 422, 499,
        ] {
            assert_eq!(status(&c, code, None), Outcome::Success, "{code}");
        }
    }

    #[test]
    fn nonstandard_statuses_are_failures() {
        let c = HttpClassifier::default();
        assert_eq!(status(&c, 600, None), Outcome::Failure);
        assert_eq!(status(&c, 999, None), Outcome::Failure);
    }

    #[test]
    fn status_rows_are_configurable() {
        let c = HttpClassifier::new()
            .failure_statuses([401])
            .success_statuses([501])
            .ignore_statuses(400..=403)
            .failure_statuses([403]);
        assert_eq!(status(&c, 401, None), Outcome::Ignore); // ignore came later
        assert_eq!(status(&c, 403, None), Outcome::Failure);
        assert_eq!(status(&c, 400, None), Outcome::Ignore);
        assert_eq!(status(&c, 501, None), Outcome::Success);
        assert_eq!(status(&c, 500, None), Outcome::Failure);
        let c = c.success_statuses(100..=599);
        assert_eq!(status(&c, 500, None), Outcome::Success);
        assert_eq!(status(&c, 400, None), Outcome::Success);
        // out-of-range codes are skipped, not a panic
        let _ = HttpClassifier::new().failure_statuses([0, 99, 600, u16::MAX]);
    }

    #[test]
    fn retry_after_statuses_are_configurable() {
        let c = HttpClassifier::new().retry_after_statuses([]);
        assert_eq!(status(&c, 429, Some("30")), Outcome::Failure);
        assert_eq!(status(&c, 503, Some("30")), Outcome::Failure);
        let c = HttpClassifier::new().retry_after_statuses([429, 502]);
        assert_eq!(status(&c, 503, Some("30")), Outcome::Failure);
        assert_eq!(
            status(&c, 502, Some("30")),
            Outcome::Trip(Duration::from_secs(30))
        );
        // a success status in the set can trip too
        let c = HttpClassifier::new().retry_after_statuses([200]);
        assert_eq!(status(&c, 200, Some("5")), Outcome::Trip(Duration::from_secs(5)));
        assert_eq!(status(&c, 200, None), Outcome::Success);
    }

    #[test]
    fn rate_limited_wait_applies_to_bare_429() {
        let c = HttpClassifier::new().rate_limited_wait(Some(Duration::from_secs(10)));
        let ten = Outcome::Trip(Duration::from_secs(10));
        assert_eq!(status(&c, 429, None), ten);
        assert_eq!(status(&c, 429, Some("garbage")), ten);
        assert_eq!(status(&c, 429, Some("3")), Outcome::Trip(Duration::from_secs(3)));
        assert_eq!(status(&c, 503, None), Outcome::Failure); // 429 only
    }

    #[test]
    fn errors_by_class() {
        let c = HttpClassifier::default();
        assert_eq!(
            err(&c, Box::new(tower::timeout::error::Elapsed::new())),
            Outcome::Failure
        );
        assert_eq!(
            err(&c, Box::new(io::Error::from(io::ErrorKind::TimedOut))),
            Outcome::Failure
        );
        assert_eq!(
            err(&c, Box::new(io::Error::from(io::ErrorKind::ConnectionRefused))),
            Outcome::Failure
        );
        assert_eq!(
            err(&c, Box::new(io::Error::from(io::ErrorKind::ConnectionReset))),
            Outcome::Failure
        );
        assert_eq!(err(&c, "boom".into()), Outcome::Failure);

        let c = HttpClassifier::new()
            .timeout_error(Outcome::Trip(Duration::from_secs(3)))
            .connect_error(Outcome::Ignore)
            .other_error(Outcome::Success)
            .circuit_open_error(Outcome::Failure);
        assert_eq!(
            err(&c, Box::new(tower::timeout::error::Elapsed::new())),
            Outcome::Trip(Duration::from_secs(3))
        );
        assert_eq!(
            err(&c, Box::new(io::Error::from(io::ErrorKind::TimedOut))),
            Outcome::Trip(Duration::from_secs(3))
        );
        assert_eq!(
            err(&c, Box::new(io::Error::from(io::ErrorKind::ConnectionRefused))),
            Outcome::Ignore
        );
        assert_eq!(err(&c, "boom".into()), Outcome::Success);
    }

    #[test]
    fn classes_walk_the_source_chain() {
        #[derive(Debug)]
        struct Wrap(BoxError);
        impl fmt::Display for Wrap {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("wrapped")
            }
        }
        impl Error for Wrap {
            fn source(&self) -> Option<&(dyn Error + 'static)> {
                Some(&*self.0)
            }
        }
        let timeout = Wrap(Box::new(io::Error::new(
            io::ErrorKind::TimedOut,
            Wrap(Box::new(io::Error::from(io::ErrorKind::ConnectionRefused))),
        )));
        assert_eq!(ErrorClass::of(&timeout), ErrorClass::Timeout);
        let refused = Wrap(Box::new(io::Error::from(io::ErrorKind::ConnectionRefused)));
        assert_eq!(ErrorClass::of(&refused), ErrorClass::Connect);
        assert_eq!(ErrorClass::of(&Wrap("x".into())), ErrorClass::Other);
    }

    #[test]
    fn circuit_open_below_is_ignored() {
        let breaker = crate::CircuitBreaker::builder("inner")
            .consecutive_failures(1)
            .build()
            .unwrap();
        breaker.force_open();
        let open = breaker.try_acquire().unwrap_err();
        let c = HttpClassifier::default();
        assert_eq!(err(&c, Box::new(open.clone())), Outcome::Ignore);
        assert_eq!(ErrorClass::of(&open), ErrorClass::CircuitOpen);
    }

    #[test]
    fn error_hook_goes_first_and_can_pass() {
        let c = HttpClassifier::new().on_error(|e| {
            e.to_string()
                .contains("quota")
                .then_some(Outcome::Trip(Duration::from_secs(60)))
        });
        assert_eq!(
            err(&c, "quota exceeded".into()),
            Outcome::Trip(Duration::from_secs(60))
        );
        assert_eq!(err(&c, "boom".into()), Outcome::Failure);
        assert_eq!(
            err(&c, Box::new(tower::timeout::error::Elapsed::new())),
            Outcome::Failure
        );
    }

    #[test]
    fn classifies_http_responses_through_the_trait() {
        let c = HttpClassifier::default();
        let res = Response::builder()
            .status(503)
            .header(RETRY_AFTER, "7")
            .body(())
            .unwrap();
        assert_eq!(
            Classify::<_, io::Error>::classify(&c, Ok(&res)),
            Outcome::Trip(Duration::from_secs(7))
        );
        let e = io::Error::from(io::ErrorKind::BrokenPipe);
        assert_eq!(
            Classify::<Response<()>, _>::classify(&c, Err(&e)),
            Outcome::Failure
        );
    }

    #[cfg(feature = "reqwest-middleware")]
    #[test]
    fn reqwest_middleware_errors_are_looked_into() {
        let breaker = crate::CircuitBreaker::builder("mw")
            .consecutive_failures(1)
            .build()
            .unwrap();
        breaker.force_open();
        let open = reqwest_middleware::Error::middleware(breaker.try_acquire().unwrap_err());
        assert_eq!(ErrorClass::of(open.as_error()), ErrorClass::CircuitOpen);
        let other = reqwest_middleware::Error::middleware(io::Error::from(io::ErrorKind::TimedOut));
        assert_eq!(ErrorClass::of(other.as_error()), ErrorClass::Timeout);
    }

    #[test]
    fn clone_is_cheap_and_debug_is_readable() {
        assert!(std::mem::size_of::<HttpClassifier>() <= 320);
        let dbg = format!("{:?}", HttpClassifier::default());
        assert!(dbg.contains("failure: {408, 429, 500-599}"), "{dbg}");
        assert!(dbg.contains("retry_after: {429, 503}"), "{dbg}");
        assert!(dbg.contains("ignore: {}"), "{dbg}");
    }
}
