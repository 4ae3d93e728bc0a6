//! [`Outcome`]: what a call's result means for the breaker, the core's vocabulary.

use std::time::Duration;

/// What a call's result means for the breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The upstream is healthy: resets the consecutive-failure run, closes half-open once
    /// enough probes succeed.
    Success,
    /// The upstream is failing: counts toward the trip rules, reopens half-open.
    Failure,
    /// Says nothing about the upstream (a bad request, a cancelled call): not counted; a
    /// half-open probe slot goes back.
    Ignore,
    /// The upstream asked for a pause (`Retry-After`): open at once from any state for this
    /// long (clamped to `max_open_duration`; a longer wait already in force stays).
    Trip(Duration),
}
