//! The circuit breaker as tower middleware: [`CircuitBreakerLayer`] and
//! [`CircuitBreakerService`].
//!
//! ```
//! use std::time::Duration;
//! use tower::{Service, ServiceExt, service_fn};
//! use tower_breaker::{CircuitBreaker, CircuitBreakerLayer, CircuitOpen, Layer};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), tower_breaker::BoxError> {
//! let breaker = CircuitBreaker::builder("flaky").consecutive_failures(2).build()?;
//! let mut svc = CircuitBreakerLayer::new(breaker)
//!     .layer(service_fn(|_: ()| async { Err::<(), _>(std::io::Error::other("down")) }));
//!
//! for _ in 0..2 {
//!     assert!(svc.ready().await?.call(()).await.is_err()); // real failures
//! }
//! // Open: readiness fails fast, the request is still in our hands.
//! let err = svc.ready().await.unwrap_err();
//! assert!(err.is::<CircuitOpen>());
//! # Ok(()) }
//! ```
//!
//! # Readiness modes
//!
//! | mode | `poll_ready` while open | `call` while open | use it when |
//! |---|---|---|---|
//! | [`FailFast`](Readiness::FailFast) (default) | `Ready(Err(CircuitOpen))`, inner not polled | never reached | direct callers, `tower::retry::Retry` above, this crate's `Fallback` |
//! | [`RejectOnCall`](Readiness::RejectOnCall) | `Ready(Ok)`, inner not polled | a future resolved to `Err(CircuitOpen)` | a `Buffer` or another combinator that treats a `poll_ready` error as final sits above |
//! | [`Wait`](Readiness::Wait) | `Pending`, woken at the half-open deadline or a manual change | — | under `tower::balance`, or under `LoadShed` |
//!
//! tower's contract says a `poll_ready` error is final for that service instance. This
//! crate's `CircuitOpen` is **transient**: the same instance, and every clone, checks the
//! breaker again on its next `poll_ready`. Combinators that honour the contract literally
//! (`Buffer`'s worker, `balance`'s ready cache) drop a service whose readiness failed: put the
//! breaker *above* a `Buffer` (`breaker(buffer(client))`) in `FailFast` mode, or use
//! `RejectOnCall` (below a `Buffer`) or `Wait` (under `balance`). A `Buffer` above a
//! `FailFast` breaker stops for good at the first open circuit; its error is not an open
//! circuit ([`is_dead_buffer`] is true for it, [`is_circuit_open`] false), and the crate logs
//! one ERROR naming the fix the first time it meets one. [`Readiness`] shows both stacks.
//!
//! Rules in every mode: the breaker is checked before the inner service is polled; the
//! admission (a rejection, or a permit) is kept across repeated `poll_ready` calls until `call`
//! consumes it; a half-open probe permit is taken in `poll_ready`, moved into the response
//! future and released if that future is dropped; clones share the breaker but not the
//! admission; errors from the inner `poll_ready` propagate (and release the permit).

mod error;
mod future;
mod gate;
mod layer;
mod response;

use std::task::{Context, Poll};

use tower_service::Service;

pub use error::{BoxError, CircuitOpen, is_circuit_open, is_dead_buffer};
pub use future::ResponseFuture;
pub(crate) use gate::Gate;
pub use layer::CircuitBreakerLayer;
pub(crate) use layer::Source;
pub use response::{CircuitOpenResponse, retry_after_secs};

use crate::{
    breaker::CircuitBreaker,
    classify::{Classify, ErrorIsFailure},
};

/// How a breaker service answers `poll_ready` while its circuit is open. See the
/// [module docs](self) for the table of modes.
///
/// [`FailFast`](Self::FailFast), the default, keeps the request in the caller's hands: a
/// fallback routes it elsewhere without cloning it, and tower's `Retry` stops at once. Its one
/// pitfall: a combinator that takes a `poll_ready` error as final *above* the breaker. tower's
/// `Buffer` is the common one: its worker stops for good at the first open circuit. Put the
/// breaker above the buffer, or give the breaker under a buffer
/// [`RejectOnCall`](Self::RejectOnCall):
///
/// ```
/// use std::time::Duration;
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
/// use tower_breaker::{BoxError, CircuitBreaker, CircuitBreakerLayer, Readiness, is_dead_buffer};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), BoxError> {
/// let breaker = CircuitBreaker::builder("upstream").consecutive_failures(5).build()?;
/// let client = service_fn(|_: ()| async { Ok::<_, BoxError>("ok") }); // any client
///
/// // Wrong: buffer(breaker(client)). The buffer's worker stops at the first refusal.
/// let wrong = ServiceBuilder::new()
///     .buffer(64)
///     .layer(CircuitBreakerLayer::new(breaker.clone()))
///     .service(client);
/// // Right: breaker(buffer(client)), the breaker above the buffer ...
/// let right = ServiceBuilder::new()
///     .layer(CircuitBreakerLayer::new(breaker.clone()))
///     .buffer(64)
///     .service(client);
/// // ... or, when the buffer must be on top, a breaker whose readiness never fails.
/// let also_right = ServiceBuilder::new()
///     .buffer(64)
///     .layer(CircuitBreakerLayer::new(breaker.clone()).readiness(Readiness::RejectOnCall))
///     .service(client);
///
/// breaker.force_open(); // an outage: every stack refuses
/// assert!(wrong.clone().oneshot(()).await.is_err());
/// assert!(right.clone().oneshot(()).await.is_err());
/// assert!(also_right.clone().oneshot(()).await.is_err());
///
/// breaker.reset(); // the upstream is back
/// assert_eq!(right.oneshot(()).await?, "ok");
/// assert_eq!(also_right.oneshot(()).await?, "ok");
/// let err = wrong.oneshot(()).await.unwrap_err(); // dead for good
/// assert!(is_dead_buffer(&err));
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Readiness {
    /// `poll_ready` returns `Err(CircuitOpen)` at once; the inner service is not polled and the
    /// request stays with the caller. The default: direct callers, tower's `Retry` (which
    /// stops at an open circuit) and this crate's `Fallback` (which routes the request
    /// without cloning it) want it.
    ///
    /// **Not under a `Buffer`** (or any combinator that treats a `poll_ready` error as final):
    /// `buffer(breaker(client))` dies at the first open circuit and never serves again. Write
    /// `breaker(buffer(client))`, or use [`RejectOnCall`](Self::RejectOnCall) under the
    /// buffer; the wrong and right stacks are side by side in the [`Readiness`] and
    /// [`CircuitBreakerLayer`] docs, and [`is_dead_buffer`] tells the dead buffer's error.
    #[default]
    FailFast,
    /// `poll_ready` returns `Ok`; `call` returns a future that resolves to `Err(CircuitOpen)`
    /// without touching the inner service. For a breaker under a `Buffer`: the buffer's worker
    /// never sees a readiness error.
    RejectOnCall,
    /// `poll_ready` returns `Pending` until the breaker may admit again (the end of the open
    /// period, a released probe, or a manual change). Each waiting service instance holds one
    /// waker slot in the breaker, freed when it is admitted or dropped: callers that give up
    /// (a timeout, a client gone) leave no waker behind.
    Wait,
}

/// A service guarded by a circuit breaker. See the [module docs](self).
#[derive(Debug)]
pub struct CircuitBreakerService<S, C = ErrorIsFailure> {
    inner: S,
    classifier: C,
    gate: Gate,
}

impl<S> CircuitBreakerService<S> {
    /// Guards `inner` with `breaker`, classifying `Err` as failure, in `FailFast` mode.
    pub const fn new(inner: S, breaker: CircuitBreaker) -> Self {
        Self {
            inner,
            classifier: ErrorIsFailure::new(),
            gate: Gate::new(breaker, Readiness::FailFast),
        }
    }
}

impl<S, C> CircuitBreakerService<S, C> {
    /// Classifies results with `classifier`.
    pub fn classify<C2>(self, classifier: C2) -> CircuitBreakerService<S, C2> {
        CircuitBreakerService {
            inner: self.inner,
            classifier,
            gate: self.gate,
        }
    }

    /// Sets the readiness mode.
    pub fn readiness(mut self, readiness: Readiness) -> Self {
        self.gate.readiness = readiness;
        self
    }

    /// The breaker guarding this service.
    pub const fn breaker(&self) -> &CircuitBreaker {
        &self.gate.breaker
    }

    /// The inner service.
    pub const fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, consuming this one.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, C: Clone> Clone for CircuitBreakerService<S, C> {
    /// Shares the breaker; the clone makes its own admission decisions.
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            classifier: self.classifier.clone(),
            gate: self.gate.clone(),
        }
    }
}

impl<S, C, Req> Service<Req> for CircuitBreakerService<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let inner = &mut self.inner;
        self.gate.poll_ready(cx, |cx| inner.poll_ready(cx))
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        match self.gate.take() {
            Ok(permit) => ResponseFuture::called(self.inner.call(req), permit, self.classifier.clone()),
            Err(refused) => ResponseFuture::rejected(refused),
        }
    }
}
