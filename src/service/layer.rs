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
