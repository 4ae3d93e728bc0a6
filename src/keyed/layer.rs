//! [`KeyedCircuitBreakerLayer`]: wraps services in a [`KeyedCircuitBreakerService`].

use tower_layer::Layer;

use super::{KeyedCircuitBreakerService, KeyedRegistry};
use crate::classify::ErrorIsFailure;

/// Applies per-key circuit breakers to services: every service the layer makes shares
/// `registry`, and picks a request's breaker with the extractor.
///
/// See [the module docs](super) for an example.
#[derive(Clone, Debug)]
pub struct KeyedCircuitBreakerLayer<X, K, C = ErrorIsFailure> {
    registry: KeyedRegistry<K>,
    extractor: X,
    classifier: C,
}

impl<X, K> KeyedCircuitBreakerLayer<X, K> {
    /// Guards calls with `registry`'s breakers, choosing one per request with `extractor`
    /// (a closure `Fn(&Req) -> K`, or [`Authority`](super::Authority),
    /// [`PathPrefix`](super::PathPrefix), [`Header`](super::Header)).
    pub const fn new(registry: KeyedRegistry<K>, extractor: X) -> Self {
        Self {
            registry,
            extractor,
            classifier: ErrorIsFailure::new(),
        }
    }
}

impl<X, K, C> KeyedCircuitBreakerLayer<X, K, C> {
    /// Classifies results with `classifier` (default: `Err` is a failure).
    pub fn classify<C2>(self, classifier: C2) -> KeyedCircuitBreakerLayer<X, K, C2> {
        KeyedCircuitBreakerLayer {
            registry: self.registry,
            extractor: self.extractor,
            classifier,
        }
    }

    /// The registry shared by every service this layer makes.
    pub const fn registry(&self) -> &KeyedRegistry<K> {
        &self.registry
    }
}

impl<S, X: Clone, K, C: Clone> Layer<S> for KeyedCircuitBreakerLayer<X, K, C> {
    type Service = KeyedCircuitBreakerService<S, X, K, C>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedCircuitBreakerService {
            inner,
            registry: self.registry.clone(),
            extractor: self.extractor.clone(),
            classifier: self.classifier.clone(),
        }
    }
}
