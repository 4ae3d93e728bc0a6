//! A point-in-time view of a breaker, for health endpoints and dashboards.

use std::time::Duration;

use super::State;

/// What a breaker looks like now: from [`CircuitBreaker::snapshot`](super::CircuitBreaker::snapshot).
///
/// Counts and rates cover the configured window (count or time); with no window (only the
/// consecutive rule) they are zero and `None`.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Snapshot {
    /// The breaker's name.
    pub name: String,
    /// Its state.
    pub state: State,
    /// The current run of consecutive failures.
    pub consecutive_failures: u32,
    /// Outcomes in the window.
    pub calls: u32,
    /// Failures in the window.
    pub failures: u32,
    /// Slow calls in the window.
    pub slow_calls: u32,
    /// `failures / calls`, when the window holds any call.
    pub failure_rate: Option<f64>,
    /// `slow_calls / calls`, when the window holds any call.
    pub slow_call_rate: Option<f64>,
    /// Half-open probes in flight.
    pub probes_in_flight: u32,
    /// When open: the time until a probe may go through (zero once due). Serialised as
    /// `retry_after_secs`, a number of seconds.
    #[cfg_attr(
        feature = "serde",
        serde(rename = "retry_after_secs", serialize_with = "secs")
    )]
    pub retry_after: Option<Duration>,
    /// When open: the length of the current open period. Serialised as `open_for_secs`, a
    /// number of seconds.
    #[cfg_attr(feature = "serde", serde(rename = "open_for_secs", serialize_with = "secs"))]
    pub open_for: Option<Duration>,
}

/// Serialises a duration as fractional seconds (`null` when absent).
#[cfg(feature = "serde")]
fn secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs_f64()),
        None => s.serialize_none(),
    }
}
