//! A `tower::retry` policy that works with the breaker: [`RetryPolicy`] (feature `retry`).
//!
//! It retries what the classifier calls a failure, with exponential backoff and jitter; it
//! waits out a `Retry-After` (a [`Trip`](crate::Outcome::Trip)) when it is no longer than a
//! cap, and gives up when it is longer; it **never** retries a [`CircuitOpen`](crate::CircuitOpen)
//! (anywhere in the error's `source()` chain), so an open breaker ends the retries at once.
//!
//! The stack for a hyper-util client, outermost first: `Retry → CircuitBreaker → Timeout →
//! Client` (each attempt asks the breaker and is timed out on its own; the breaker sees
//! `Elapsed`, connect errors and statuses). A `Fallback` goes on top of `Retry`.
//!
//! With the breaker in [`FailFast`](crate::Readiness::FailFast) mode (the default) `Retry`
//! stops on its own: it drives the breaker's readiness between attempts and returns the
//! `CircuitOpen` readiness error without asking the policy. In
//! [`RejectOnCall`](crate::Readiness::RejectOnCall) mode the rejection reaches the policy,
//! which refuses to retry it. Do not put `Retry` over a [`Wait`](crate::Readiness::Wait)-mode
//! breaker: its attempts would wait for the circuit to half-open.
//!
//! A `Fallback` on top routes to the secondary when the primary is open at readiness. When the
//! breaker opens *during* a request's retries, the retries end in `CircuitOpen` from the call;
//! to fall back then too, give the fallback
//! `.on_failure(CloneRequest::new().classify(HttpClassifier::new().circuit_open_error(Outcome::Failure)))`
//! (`HttpClassifier` alone calls a `CircuitOpen` `Ignore`, right for a breaker, not for a
//! fallback). `tests/http_stack.rs` runs both.
//!
//! The classifier is the breaker's table: a `Retry-After` wait the policy honours is also the
//! breaker's open period, so the retry that follows it is the half-open probe.
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use hyper_util::{client::legacy::Client, rt::TokioExecutor};
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_breaker::{CircuitBreaker, CircuitBreakerLayer, HttpClassifier, retry::RetryPolicy};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_breaker::BoxError> {
//! let breaker = CircuitBreaker::builder("upstream").consecutive_failures(2).build()?;
//! let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
//! let svc = ServiceBuilder::new()
//!     .retry(RetryPolicy::new().max_retries(5))
//!     .layer(CircuitBreakerLayer::new(breaker.clone()).classify(HttpClassifier::default()))
//!     .timeout(Duration::from_secs(10))
//!     .service(client);
//!
//! // Nothing listens on port 1: two refused connections open the breaker, and the retry
//! // stops there instead of making all five retries.
//! let req = http::Request::get("http://127.0.0.1:1/").body(Full::new(Bytes::new()))?;
//! let err = svc.oneshot(req).await.unwrap_err();
//! assert!(tower_breaker::is_circuit_open(&err));
//! assert_eq!(breaker.state(), tower_breaker::State::Open);
//! # Ok(()) }
//! ```

use std::time::Duration;

use tokio::time::Sleep;
use tower::retry::Policy;

use crate::{
    Backoff, ConfigError,
    classify::{AsError, Classify, ErrorClass, HttpClassifier, Outcome},
};

/// A [`tower::retry::Policy`] for calls through a circuit breaker. See the
/// [module docs](self).
///
/// Per logical request (tower clones the policy for each): at most
/// [`max_retries`](Self::max_retries) retries (default 3). A result the classifier calls
/// `Failure` is retried after the backoff (default exponential from 100 ms, factor 2, at most
/// 10 s, ±50% jitter); `Trip(wait)` (a `Retry-After`) is retried after exactly `wait` when
/// `wait <= max_retry_after` (default 10 s), and not at all when it is longer; `Success` and
/// `Ignore` are not retried; a `CircuitOpen` is never retried.
///
/// It retries any request it can clone (`Req: Clone`, e.g. `http::Request<Full<Bytes>>`);
/// only put it in front of requests that are safe to send twice.
#[derive(Clone, Debug)]
pub struct RetryPolicy<C = HttpClassifier> {
    classifier: C,
    /// `None`: retry at once.
    backoff: Option<Backoff>,
    max_retries: u32,
    max_retry_after: Duration,
    /// Retries made so far in this request session.
    retries: u32,
}

const DEFAULT_BACKOFF: Backoff =
    Backoff::exponential(Duration::from_millis(100), 2.0, Duration::from_secs(10)).with_jitter(0.5);

impl RetryPolicy {
    /// The policy with [`HttpClassifier::default`] and the defaults above.
    pub const fn new() -> Self {
        Self {
            classifier: HttpClassifier::new(),
            backoff: Some(DEFAULT_BACKOFF),
            max_retries: 3,
            max_retry_after: Duration::from_secs(10),
            retries: 0,
        }
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::new()
    }
}

impl<C> RetryPolicy<C> {
    /// Decides what to retry with `classifier` instead (e.g. the one the breaker uses).
    pub fn classify<C2>(self, classifier: C2) -> RetryPolicy<C2> {
        RetryPolicy {
            classifier,
            backoff: self.backoff,
            max_retries: self.max_retries,
            max_retry_after: self.max_retry_after,
            retries: self.retries,
        }
    }

    /// At most `retries` retries per request (0 turns retrying off).
    #[must_use]
    pub const fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// The longest `Retry-After` it waits out; a longer one ends the retries.
    #[must_use]
    pub const fn max_retry_after(mut self, cap: Duration) -> Self {
        self.max_retry_after = cap;
        self
    }

    /// The wait before each retry of a failure (`attempt` 0 for the first retry).
    pub fn backoff(mut self, backoff: Backoff) -> Result<Self, ConfigError> {
        backoff.validate()?;
        self.backoff = Some(backoff);
        Ok(self)
    }

    /// Retries failures at once, with no backoff (a `Retry-After` is still waited out).
    #[must_use]
    pub const fn no_backoff(mut self) -> Self {
        self.backoff = None;
        self
    }

    /// How long it would wait before retrying `result`, or `None` if it would not retry.
    /// Does not count as a retry.
    pub fn retry_after<Res, E>(&self, result: Result<&Res, &E>) -> Option<Duration>
    where
        C: Classify<Res, E>,
        E: AsError,
    {
        if let Err(e) = result {
            if ErrorClass::of(e.as_error()) == ErrorClass::CircuitOpen {
                return None;
            }
        }
        if self.retries >= self.max_retries {
            return None;
        }
        match self.classifier.classify(result) {
            Outcome::Success | Outcome::Ignore => None,
            Outcome::Failure => Some(self.backoff.map_or(Duration::ZERO, |b| b.next(self.retries))),
            Outcome::Trip(wait) => (wait <= self.max_retry_after).then_some(wait),
        }
    }
}

impl<Req, Res, E, C> Policy<Req, Res, E> for RetryPolicy<C>
where
    Req: Clone,
    E: AsError,
    C: Classify<Res, E>,
{
    type Future = Sleep;

    fn retry(&mut self, _req: &mut Req, result: &mut Result<Res, E>) -> Option<Self::Future> {
        let wait = self.retry_after(result.as_ref())?;
        self.retries += 1;
        Some(tokio::time::sleep(wait))
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::BoxError;
    use http::Response;

    fn res(code: u16, retry_after: Option<&str>) -> Response<()> {
        let mut b = Response::builder().status(code);
        if let Some(v) = retry_after {
            b = b.header(http::header::RETRY_AFTER, v);
        }
        b.body(()).unwrap()
    }

    fn decide(p: &mut RetryPolicy, r: Result<Response<()>, BoxError>) -> Option<Duration> {
        let mut r = r;
        let wait = p.retry_after(r.as_ref());
        let took = Policy::<(), _, _>::retry(p, &mut (), &mut r).is_some();
        assert_eq!(took, wait.is_some());
        wait
    }

    #[tokio::test(start_paused = true)]
    async fn retries_failures_with_backoff_then_stops() {
        let mut p = RetryPolicy::new()
            .backoff(Backoff::exponential(
                Duration::from_millis(100),
                2.0,
                Duration::from_secs(1),
            ))
            .unwrap()
            .max_retries(3);
        assert_eq!(
            decide(&mut p, Ok(res(500, None))),
            Some(Duration::from_millis(100))
        );
        assert_eq!(
            decide(&mut p, Err("reset".into())),
            Some(Duration::from_millis(200))
        );
        assert_eq!(
            decide(&mut p, Ok(res(502, None))),
            Some(Duration::from_millis(400))
        );
        assert_eq!(decide(&mut p, Ok(res(500, None))), None); // 3 retries made
    }

    #[tokio::test(start_paused = true)]
    async fn jitter_stays_in_bounds() {
        let p = RetryPolicy::new(); // 100 ms ± 50%
        for _ in 0..200 {
            let w = p
                .retry_after::<Response<()>, BoxError>(Ok(&res(500, None)))
                .unwrap();
            assert!(
                w >= Duration::from_millis(50) && w <= Duration::from_millis(150),
                "{w:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn honours_retry_after_up_to_the_cap() {
        let mut p = RetryPolicy::new().max_retry_after(Duration::from_secs(5));
        assert_eq!(
            decide(&mut p, Ok(res(429, Some("5")))),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            decide(&mut p, Ok(res(503, Some("2")))),
            Some(Duration::from_secs(2))
        );
        assert_eq!(decide(&mut p, Ok(res(429, Some("6")))), None); // longer than the cap
    }

    #[tokio::test(start_paused = true)]
    async fn never_retries_an_open_circuit() {
        let breaker = crate::CircuitBreaker::builder("b")
            .consecutive_failures(1)
            .build()
            .unwrap();
        breaker.force_open();
        let open: BoxError = Box::new(breaker.try_acquire().unwrap_err());
        // even with a classifier that calls every error a failure
        let mut p = RetryPolicy::new().classify(crate::ErrorIsFailure::new());
        assert_eq!(decide_with(&mut p, Err(open)), None);
        assert!(decide_with(&mut p, Err("other".into())).is_some());
    }

    fn decide_with(
        p: &mut RetryPolicy<crate::ErrorIsFailure>,
        r: Result<Response<()>, BoxError>,
    ) -> Option<Duration> {
        let mut r = r;
        let wait = p.retry_after(r.as_ref());
        let took = Policy::<(), _, _>::retry(p, &mut (), &mut r).is_some();
        assert_eq!(took, wait.is_some());
        wait
    }

    #[tokio::test(start_paused = true)]
    async fn successes_and_ignores_are_not_retried() {
        let mut p = RetryPolicy::new();
        assert_eq!(decide(&mut p, Ok(res(200, None))), None);
        assert_eq!(decide(&mut p, Ok(res(404, None))), None);
        let mut p = RetryPolicy::new().classify(HttpClassifier::new().ignore_statuses([500]));
        let mut r: Result<Response<()>, BoxError> = Ok(res(500, None));
        assert!(Policy::<(), _, _>::retry(&mut p, &mut (), &mut r).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn no_backoff_retries_at_once() {
        let mut p = RetryPolicy::new().no_backoff();
        assert_eq!(decide(&mut p, Ok(res(500, None))), Some(Duration::ZERO));
        assert_eq!(
            decide(&mut p, Ok(res(429, Some("3")))),
            Some(Duration::from_secs(3))
        );
    }

    #[test]
    fn bad_backoff_is_a_config_error() {
        let bad = Backoff::exponential(Duration::from_millis(1), f64::NAN, Duration::from_secs(1));
        assert!(RetryPolicy::new().backoff(bad).is_err());
    }
}
