//! Errors of the breaker service: [`CircuitOpen`] (re-exported from the core),
//! [`is_circuit_open`] and [`is_dead_buffer`]. The service's error type is [`BoxError`],
//! tower's convention; downcast to `CircuitOpen` to tell a refusal from the inner service's own
//! errors.

pub use crate::{
    breaker::{BoxError, CircuitOpen},
    classify::{is_circuit_open, is_dead_buffer},
};
