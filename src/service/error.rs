//! Errors of the breaker service: [`CircuitOpen`] (re-exported from the core) and
//! [`is_circuit_open`]. The service's error type is [`BoxError`], tower's convention; downcast
//! to `CircuitOpen` to tell a refusal from the inner service's own errors.

pub use crate::breaker::{BoxError, CircuitOpen, is_circuit_open};
