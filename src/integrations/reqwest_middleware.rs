//! [`CircuitBreakerMiddleware`]: the breaker as `reqwest_middleware` middleware (feature
//! `reqwest-middleware`).
//!
//! It holds a [`CircuitBreaker`] handle, so one breaker can guard a tower stack and a reqwest
//! client at once. A refused request is not sent: `handle` returns
//! `reqwest_middleware::Error::Middleware` around the [`CircuitOpen`] (downcast the `anyhow`
//! error to `CircuitOpen`, or use [`is_circuit_open`]). Responses and errors are classified
//! with [`HttpClassifier`] by default: the same table as the tower stack, with reqwest's
//! timeouts and connect errors as failures. The outcome is recorded when the response headers
//! arrive (a body streamed afterwards is not observed); a request future dropped before then
//! releases its permit, neutral.
//!
//! Timeouts: set them on the `reqwest::Client` (`.timeout(..)`, `.connect_timeout(..)`); they
//! fire inside the middleware and count as failures. A timeout wrapped *around* `send()`
//! drops the call instead, which releases the permit: neutral.
//!
//! Attach order is outermost first: put `reqwest-retry` *before* the breaker so that every
//! attempt asks the breaker. reqwest-retry's default strategy treats
//! `Error::Middleware` as fatal, so it never retries an open circuit.
//!
//! ```
//! use reqwest_middleware::ClientBuilder;
//! use reqwest_retry::{RetryTransientMiddleware, policies::ExponentialBackoff};
//! use tower_breaker::{CircuitBreaker, integrations::reqwest_middleware::{CircuitBreakerMiddleware, is_circuit_open}};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let breaker = CircuitBreaker::builder("upstream").consecutive_failures(2).build()?;
//! let client = ClientBuilder::new(reqwest::Client::new())
//!     .with(RetryTransientMiddleware::new_with_policy(
//!         ExponentialBackoff::builder().build_with_max_retries(5),
//!     ))
//!     .with(CircuitBreakerMiddleware::new(breaker.clone()))
//!     .build();
//!
//! // Nothing listens on port 1: two refused connections open the breaker, and reqwest-retry
//! // stops at the open circuit instead of making all five retries.
//! let err = client.get("http://127.0.0.1:1/").send().await.unwrap_err();
//! assert!(is_circuit_open(&err));
//! assert_eq!(breaker.state(), tower_breaker::State::Open);
//! # Ok(()) }
//! ```

use std::error::Error;

use http::Extensions;
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next};

use crate::{
    breaker::{CircuitBreaker, CircuitOpen},
    classify::{AsError, Classify, HttpClassifier},
};

/// The breaker as `reqwest_middleware` middleware. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct CircuitBreakerMiddleware<C = HttpClassifier> {
    breaker: CircuitBreaker,
    classifier: C,
}

impl CircuitBreakerMiddleware {
    /// Guards requests with `breaker` (a clone shares its state), classifying with
    /// [`HttpClassifier::default`].
    pub const fn new(breaker: CircuitBreaker) -> Self {
        Self {
            breaker,
            classifier: HttpClassifier::new(),
        }
    }
}

impl<C> CircuitBreakerMiddleware<C> {
    /// Classifies results with `classifier`: any
    /// `Classify<reqwest::Response, reqwest_middleware::Error>`.
    pub fn classify<C2>(self, classifier: C2) -> CircuitBreakerMiddleware<C2> {
        CircuitBreakerMiddleware {
            breaker: self.breaker,
            classifier,
        }
    }

    /// The breaker.
    pub const fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }
}

#[async_trait::async_trait]
impl<C> Middleware for CircuitBreakerMiddleware<C>
where
    C: Classify<Response, reqwest_middleware::Error> + Send + Sync + 'static,
{
    async fn handle(
        &self,
        req: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let permit = self.breaker.try_acquire().map_err(refused)?;
        let result = next.run(req, extensions).await;
        permit.record(self.classifier.classify(result.as_ref()));
        result
    }
}

/// `Error::Middleware` around the `CircuitOpen`, with a context line so that the rejection
/// stays in the `source()` chain even under `#[error(transparent)]` wrappers (reqwest-retry's
/// `RetryError::Error`); `anyhow`'s `downcast_ref::<CircuitOpen>()` still finds it.
fn refused(open: CircuitOpen) -> reqwest_middleware::Error {
    reqwest_middleware::Error::Middleware(anyhow::Error::new(open).context("request not sent"))
}

/// Whether `err` is (or wraps, at any depth, through `reqwest_middleware` and `reqwest-retry`
/// errors) a [`CircuitOpen`] rejection.
pub fn is_circuit_open(err: &reqwest_middleware::Error) -> bool {
    find_circuit_open(err).is_some()
}

/// The [`CircuitOpen`] rejection in `err`, if any (see [`is_circuit_open`]).
pub fn find_circuit_open(err: &reqwest_middleware::Error) -> Option<&CircuitOpen> {
    let mut cur = Some(err.as_error());
    while let Some(e) = cur {
        if let Some(open) = e.downcast_ref::<CircuitOpen>() {
            return Some(open);
        }
        cur = next_in_chain(e);
    }
    None
}

/// The next error in a chain, looking *into* a `reqwest_middleware::Error` (whose variants are
/// transparent: its own `source()` skips the wrapped error).
pub(crate) fn next_in_chain<'a>(e: &'a (dyn Error + 'static)) -> Option<&'a (dyn Error + 'static)> {
    match e.downcast_ref::<reqwest_middleware::Error>() {
        Some(mw) => Some(mw.as_error()),
        None => e.source(),
    }
}
