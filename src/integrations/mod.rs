//! Integrations with other crates and with operations tooling, each behind a feature:
//! `metrics` (the [`metrics`](https://docs.rs/metrics) facade), `prometheus-client`, and a
//! health report (serialisable with `serde`).

pub mod health;
#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(feature = "prometheus-client")]
pub mod prometheus;

use crate::breaker::State;

/// The value of the `circuit_breaker_state` gauge for `state`, in every integration: `0`
/// closed, `1` open, `2` half-open, `3` forced open, `4` disabled.
pub const fn state_value(state: State) -> f64 {
    match state {
        State::Closed => 0.0,
        State::Open => 1.0,
        State::HalfOpen => 2.0,
        State::ForcedOpen => 3.0,
        State::Disabled => 4.0,
    }
}
