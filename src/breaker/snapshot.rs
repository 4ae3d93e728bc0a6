//! A point-in-time view of a breaker, for health endpoints and dashboards.

use std::time::Duration;

use super::{Reason, State};

/// What a breaker looks like now: from [`CircuitBreaker::snapshot`](super::CircuitBreaker::snapshot).
///
/// Counts and rates cover the configured window (count or time); with no window (only the
/// consecutive rule) they are zero and `None`. What opened a breaker is in
/// [`reason`](Self::reason) and, for the consecutive rule, [`consecutive_failures`](Self::consecutive_failures):
/// a consecutive-only breaker that five failures opened shows `calls: 0`, `failures: 0`,
/// `consecutive_failures: 5`, `reason: ConsecutiveFailures`.
///
/// ```
/// use tower_breaker::{CircuitBreaker, Outcome, Reason, State};
///
/// let breaker = CircuitBreaker::builder("openai").consecutive_failures(5).build().unwrap();
/// assert_eq!(breaker.snapshot().reason, None); // never changed state
/// for _ in 0..5 {
///     breaker.try_acquire().unwrap().record(Outcome::Failure);
/// }
/// let snapshot = breaker.snapshot();
/// assert_eq!(snapshot.state, State::Open);
/// assert_eq!((snapshot.calls, snapshot.failures), (0, 0)); // no window configured
/// assert_eq!(snapshot.consecutive_failures, 5); // the run that opened it
/// assert_eq!(snapshot.reason, Some(Reason::ConsecutiveFailures));
/// ```
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Snapshot {
    /// The breaker's name.
    pub name: String,
    /// Its state.
    pub state: State,
    /// The current run of consecutive failures. While open or half-open, the run that was
    /// counted when the breaker opened (it restarts at zero when the breaker closes).
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
    /// When open: the time until a probe may go through (zero once due); while a
    /// [recovery probe](crate#recovery-probes) runs, the time left until its timeout.
    /// Serialised as `retry_after_secs`, a number of seconds.
    #[cfg_attr(
        feature = "serde",
        serde(rename = "retry_after_secs", serialize_with = "secs")
    )]
    pub retry_after: Option<Duration>,
    /// When open: the length of the current open period. Serialised as `open_for_secs`, a
    /// number of seconds.
    #[cfg_attr(feature = "serde", serde(rename = "open_for_secs", serialize_with = "secs"))]
    pub open_for: Option<Duration>,
    /// Why the breaker is in its current state: the reason of its last transition
    /// (`consecutive_failures`, `failure_rate`, `server_wait`, `forced`, `probes_succeeded`...),
    /// `None` if it never changed state. Serialised as its [`as_str`](Reason::as_str) name.
    pub reason: Option<Reason>,
    /// Whether the breaker is in shadow mode (see [Shadow mode](crate#shadow-mode)): it
    /// refuses no call, and a `state` of `Open` is notional.
    pub shadow: bool,
    /// How many calls the breaker let through in shadow mode that it would have refused,
    /// since it was built.
    pub would_reject: u64,
    /// Whether a [recovery probe](crate#recovery-probes) is due or running: the open period
    /// ended, and the breaker waits for the probe's verdict (while it refuses calls, and
    /// `retry_after` is the time left until the probe's timeout).
    pub recovery_probe: bool,
}

/// Serialises a duration as fractional seconds (`null` when absent).
#[cfg(feature = "serde")]
fn secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

use super::{CircuitBreaker, sync::Ordering, window::Counts};

impl CircuitBreaker {
    /// Counts, rates, state and the time until half-open, read now.
    pub fn snapshot(&self) -> Snapshot {
        let shared = &**self.shared();
        let now = shared.clock.now();
        let l = shared.locked.lock();
        let counts = shared.window().counts(now);
        let consecutive = shared.hot.consecutive.load(Ordering::Acquire);
        let rate = |n: u32, c: &Counts| (c.calls > 0).then(|| f64::from(n) / f64::from(c.calls));
        Snapshot {
            name: shared.name.to_string(),
            state: l.state,
            consecutive_failures: consecutive as u32,
            calls: counts.map_or(0, |c| c.calls),
            failures: counts.map_or(0, |c| c.failures),
            slow_calls: counts.map_or(0, |c| c.slow),
            failure_rate: counts.and_then(|c| rate(c.failures, &c)),
            slow_call_rate: counts.and_then(|c| rate(c.slow, &c)),
            probes_in_flight: if l.state == State::HalfOpen {
                l.probes.len()
            } else {
                0
            },
            retry_after: (l.state == State::Open).then(|| {
                Duration::from_nanos(shared.hot.open_until.load(Ordering::Acquire).saturating_sub(now))
            }),
            open_for: (l.state == State::Open).then_some(l.opened_for),
            reason: l.reason,
            shadow: shared.shadow.load(Ordering::Relaxed),
            would_reject: shared.would_reject.load(Ordering::Relaxed),
            recovery_probe: l.recovery.in_flight(),
        }
    }
}
