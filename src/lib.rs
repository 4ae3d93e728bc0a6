//! tower-breaker (docs being written).
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod breaker;
pub mod classify;
pub mod service;

pub use breaker::{
    Backoff, BoxError, Builder, CircuitBreaker, CircuitOpen, ConfigError, Event, Permit, Reason, Snapshot,
    State, is_circuit_open,
};
pub use classify::{AsError, Classify, ErrorIsFailure, HttpClassifier, Outcome};
pub use service::{CircuitBreakerLayer, CircuitBreakerService, Readiness};
#[doc(no_inline)]
pub use tower_layer::Layer;
pub mod integrations;
#[cfg(feature = "retry")]
pub mod retry;
pub mod streaming;
