//! [`CircuitBreakerLayer`]: wraps services in a [`CircuitBreakerService`].

use tower_layer::Layer;

use super::{CircuitBreakerService, Readiness};
use crate::{
    breaker::{Builder, CircuitBreaker, Config, ConfigError, Lanes},
    classify::ErrorIsFailure,
};

/// Applies a circuit breaker to services.
///
/// [`new`](Self::new) shares one breaker among every service the layer makes (one upstream
/// behind several clones or stacks); [`per_service`](Self::per_service) builds a fresh breaker
/// for each `layer()` call (one breaker per endpoint, e.g. under `tower::balance`).
///
/// ```
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
/// use tower_breaker::{CircuitBreaker, CircuitBreakerLayer, Readiness};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_breaker::BoxError> {
/// let breaker = CircuitBreaker::builder("upstream").consecutive_failures(5).build()?;
/// let svc = ServiceBuilder::new()
///     .layer(CircuitBreakerLayer::new(breaker.clone()).readiness(Readiness::FailFast))
///     .service(service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x + 1) }));
/// assert_eq!(svc.oneshot(1).await?, 2);
/// # Ok(()) }
/// ```
///
/// # Where a `Buffer` goes
///
/// tower's `Buffer` (`ServiceBuilder::buffer`, often added to get a `Clone` service) drives
/// its inner service from a worker task that stops **for good** at the first `poll_ready`
/// error, as tower's contract allows. In the default [`Readiness::FailFast`] mode an open
/// circuit *is* a `poll_ready` error, so a buffer above the breaker dies at the first open
/// circuit: every later call fails with `buffered service failed: circuit "..." ...`, even
/// once the upstream is back, and no probe ever reaches the breaker. Put the breaker above the
/// buffer; or, if the buffer must be on top, use [`Readiness::RejectOnCall`].
/// [`is_dead_buffer`](crate::is_dead_buffer) recognises the dead buffer's error (it is not an
/// open circuit for [`is_circuit_open`](crate::is_circuit_open)), and the crate logs one
/// ERROR naming the fix the first time it meets one.
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
#[derive(Clone, Debug)]
pub struct CircuitBreakerLayer<C = ErrorIsFailure> {
    source: Source,
    classifier: C,
    readiness: Readiness,
}

/// Where a layer's services get their breaker: one shared, or one each from a validated
/// template. Shared by every breaker layer of the crate.
#[derive(Clone, Debug)]
pub(crate) enum Source {
    Shared(CircuitBreaker),
    PerService(Box<(Builder, Config)>),
}

impl Source {
    /// Validates `builder` once, so that [`breaker`](Self::breaker) never fails.
    pub(crate) fn per_service(builder: Builder) -> Result<Self, ConfigError> {
        let config = builder.config()?;
        Ok(Source::PerService(Box::new((builder, config))))
    }

    /// The breaker for the next service.
    pub(crate) fn breaker(&self) -> CircuitBreaker {
        match self {
            Source::Shared(b) => b.clone(),
            Source::PerService(template) => template.0.build_with(template.1.clone(), Lanes::Auto),
        }
    }
}

impl CircuitBreakerLayer {
    /// Every service this layer makes shares `breaker`.
    pub const fn new(breaker: CircuitBreaker) -> Self {
        Self {
            source: Source::Shared(breaker),
            classifier: ErrorIsFailure::new(),
            readiness: Readiness::FailFast,
        }
    }

    /// Every service this layer makes gets a breaker of its own, built from `builder`. The
    /// builder is validated here, so `layer()` never fails.
    pub fn per_service(builder: Builder) -> Result<Self, ConfigError> {
        Ok(Self {
            source: Source::per_service(builder)?,
            classifier: ErrorIsFailure::new(),
            readiness: Readiness::FailFast,
        })
    }
}

impl<C> CircuitBreakerLayer<C> {
    /// Classifies results with `classifier` (default: `Err` is a failure).
    pub fn classify<C2>(self, classifier: C2) -> CircuitBreakerLayer<C2> {
        CircuitBreakerLayer {
            source: self.source,
            classifier,
            readiness: self.readiness,
        }
    }

    /// How the service behaves while the circuit is open (default [`Readiness::FailFast`]).
    pub fn readiness(mut self, readiness: Readiness) -> Self {
        self.readiness = readiness;
        self
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreakerService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        let breaker = self.source.breaker();
        CircuitBreakerService::new(inner, breaker)
            .classify(self.classifier.clone())
            .readiness(self.readiness)
    }
}
