//! [`StreamingBreakerLayer`].

use tower_layer::Layer;

use super::StreamingBreakerService;
use crate::{
    breaker::{Builder, CircuitBreaker, ConfigError},
    classify::ErrorIsFailure,
    service::{Readiness, Source},
};

/// Applies a circuit breaker that records outcomes at the end of the response body. See the
/// [module docs](super).
///
/// Like [`CircuitBreakerLayer`](crate::CircuitBreakerLayer): [`new`](Self::new) shares one
/// breaker among every service the layer makes, [`per_service`](Self::per_service) builds a
/// fresh one per `layer()` call.
#[derive(Clone, Debug)]
pub struct StreamingBreakerLayer<C = ErrorIsFailure> {
    source: Source,
    classifier: C,
    readiness: Readiness,
}

impl StreamingBreakerLayer {
    /// Every service this layer makes shares `breaker`.
    pub const fn new(breaker: CircuitBreaker) -> Self {
        Self {
            source: Source::Shared(breaker),
            classifier: ErrorIsFailure::new(),
            readiness: Readiness::FailFast,
        }
    }

    /// Every service this layer makes gets a breaker of its own, built from `builder`
    /// (validated here, so `layer()` never fails).
    pub fn per_service(builder: Builder) -> Result<Self, ConfigError> {
        Ok(Self {
            source: Source::per_service(builder)?,
            classifier: ErrorIsFailure::new(),
            readiness: Readiness::FailFast,
        })
    }
}

impl<C> StreamingBreakerLayer<C> {
    /// Classifies results and body errors with `classifier` (default: `Err` is a failure).
    pub fn classify<C2>(self, classifier: C2) -> StreamingBreakerLayer<C2> {
        StreamingBreakerLayer {
            source: self.source,
            classifier,
            readiness: self.readiness,
        }
    }

    /// How the service behaves while the circuit is open (default [`Readiness::FailFast`]).
    #[must_use]
    pub fn readiness(mut self, readiness: Readiness) -> Self {
        self.readiness = readiness;
        self
    }
}

impl<S, C: Clone> Layer<S> for StreamingBreakerLayer<C> {
    type Service = StreamingBreakerService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        let breaker = self.source.breaker();
        StreamingBreakerService::new(inner, breaker)
            .classify(self.classifier.clone())
            .readiness(self.readiness)
    }
}
