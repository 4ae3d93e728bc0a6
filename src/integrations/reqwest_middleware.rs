//! [`CircuitBreakerMiddleware`]: the breaker as `reqwest_middleware` middleware (feature
//! `reqwest-middleware`).
//!
//! It holds a [`CircuitBreaker`] handle, so one breaker can guard a tower stack and a reqwest
//! client at once. A refused request is not sent: `handle` returns
//! `reqwest_middleware::Error::Middleware` around the [`CircuitOpen`]. Its message is the
//! refusal's (`circuit "api" is open; retry in 30s`; with `{:#}`, `...: request not sent`),
//! also under reqwest-retry's wrapper; downcast the `anyhow` error to `CircuitOpen`, or use the
//! crate-root [`is_circuit_open`](crate::is_circuit_open) and [`CircuitOpen::find`], which
//! take a `reqwest_middleware::Error` as they take a `BoxError`. Responses and errors are classified
//! with [`HttpClassifier`] by default: the same table as the tower stack, with reqwest's
//! timeouts and connect errors as failures. The outcome is recorded when the response headers
//! arrive (a body streamed afterwards is not observed); a request future dropped before then
//! releases its permit, neutral.
//!
//! Timeouts: set them on the `reqwest::Client` (`.timeout(..)`, `.connect_timeout(..)`); they
//! fire inside the middleware and count as failures. A timeout wrapped *around* `send()`
//! drops the call instead, which releases the permit: neutral.
//!
//! The refusal is an `anyhow::Error`, which captures a backtrace when it is made if
//! `RUST_BACKTRACE` (or `RUST_LIB_BACKTRACE`) is set: every rejection then walks the stack,
//! which costs more than the rejection itself (through a client, in a debug build: 35–97 µs a
//! rejection with `RUST_BACKTRACE=1` against 12–27 µs without, on a busy 2-core machine; the
//! issue that asked for this note measured 115–294 µs against 24–50 µs). To keep panic
//! backtraces without a capture per error, set `RUST_LIB_BACKTRACE=0` beside
//! `RUST_BACKTRACE=1` (measured: 12–38 µs). The tower layer's refusals (a `BoxError`)
//! capture nothing.
//!
//! Attach order is outermost first: put `reqwest-retry` *before* the breaker so that every
//! attempt asks the breaker. reqwest-retry's default strategy treats
//! `Error::Middleware` as fatal, so it never retries an open circuit.
//!
//! ```
//! use reqwest_middleware::ClientBuilder;
//! use reqwest_retry::{RetryTransientMiddleware, policies::ExponentialBackoff};
//! use tower_breaker::{CircuitBreaker, integrations::reqwest_middleware::CircuitBreakerMiddleware, is_circuit_open};
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

use std::{error::Error, fmt};

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

/// `Error::Middleware` around the refusal: an `anyhow` error whose message is the
/// `CircuitOpen` (as its context: `downcast_ref::<CircuitOpen>()` finds it, and the top-level
/// `Display` names the circuit and the wait) over a [`NotSent`] (`{:#}` adds "request not
/// sent").
fn refused(open: CircuitOpen) -> reqwest_middleware::Error {
    reqwest_middleware::Error::Middleware(anyhow::Error::new(NotSent(open.clone())).context(open))
}

/// The error under a refusal's `CircuitOpen`: "request not sent". It holds the refusal too,
/// for `#[error(transparent)]` wrappers such as reqwest-retry's `RetryError::Error`, whose
/// `source()` skips the top of the `anyhow` error and lands here; [`next_in_chain`] steps
/// from it to the `CircuitOpen`. Its own `source()` is `None`, so that printing the chain does
/// not repeat the circuit's message.
#[derive(Debug)]
struct NotSent(CircuitOpen);

impl fmt::Display for NotSent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("request not sent")
    }
}

impl Error for NotSent {}

/// Whether `err` is (or wraps, at any depth, through `reqwest_middleware` and `reqwest-retry`
/// errors) a [`CircuitOpen`] rejection. The same as the crate-root
/// [`is_circuit_open`](crate::is_circuit_open), which takes this error type too.
pub fn is_circuit_open(err: &reqwest_middleware::Error) -> bool {
    crate::is_circuit_open(err)
}

/// The [`CircuitOpen`] rejection in `err`, if any (see [`is_circuit_open`]). The same as
/// [`CircuitOpen::find`].
pub fn find_circuit_open(err: &reqwest_middleware::Error) -> Option<&CircuitOpen> {
    CircuitOpen::find(err)
}

/// The next error in a chain, looking *into* a `reqwest_middleware::Error` (whose variants are
/// transparent: its own `source()` skips the wrapped error), and from a [`NotSent`] to its
/// refusal.
pub(crate) fn next_in_chain<'a>(e: &'a (dyn Error + 'static)) -> Option<&'a (dyn Error + 'static)> {
    if let Some(mw) = e.downcast_ref::<reqwest_middleware::Error>() {
        return Some(mw.as_error());
    }
    if let Some(NotSent(open)) = e.downcast_ref::<NotSent>() {
        return Some(open);
    }
    e.source()
}
