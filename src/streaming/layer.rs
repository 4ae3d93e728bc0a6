//! [`StreamingBreakerLayer`].

use tower_layer::Layer;

use super::StreamingBreakerService;
use crate::{breaker::CircuitBreaker, classify::ErrorIsFailure, service::Readiness};

/// Applies a circuit breaker that records outcomes at the end of the response body. Every
/// service it makes shares the breaker. See the [module docs](super).
#[derive(Clone, Debug)]
pub struct StreamingBreakerLayer<C = ErrorIsFailure> {
    breaker: CircuitBreaker,
    classifier: C,
    readiness: Readiness,
}

impl StreamingBreakerLayer {
    /// Every service this layer makes shares `breaker`.
    pub const fn new(breaker: CircuitBreaker) -> Self {
        Self {
            breaker,
            classifier: ErrorIsFailure::new(),
            readiness: Readiness::FailFast,
        }
    }
}

impl<C> StreamingBreakerLayer<C> {
    /// Classifies results and body errors with `classifier` (default: `Err` is a failure).
    pub fn classify<C2>(self, classifier: C2) -> StreamingBreakerLayer<C2> {
        StreamingBreakerLayer {
            breaker: self.breaker,
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
        StreamingBreakerService::new(inner, self.breaker.clone())
            .classify(self.classifier.clone())
            .readiness(self.readiness)
    }
}
