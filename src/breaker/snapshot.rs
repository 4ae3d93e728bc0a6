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
    /// When open: the time until a probe may go through (zero once due).
    pub retry_after: Option<Duration>,
    /// When open: the length of the current open period.
    pub open_for: Option<Duration>,
}
