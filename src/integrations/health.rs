//! A health report over many breakers, for a `/health/circuit-breakers` endpoint:
//! every breaker's [`Snapshot`] and an overall verdict. With the `serde` feature it
//! serialises as `{"breakers": {"<name>": {...}}, "overall": "healthy"|"degraded"|"critical",
//! "would_refuse": ["<name>", ...]}`.
//!
//! Each breaker's entry says what it is doing and why: an open consecutive-only breaker (no
//! window, so its counts are zero) shows the run of failures that opened it and the reason of
//! its last transition:
//!
//! ```json
//! {"name": "openai", "state": "open", "consecutive_failures": 5, "calls": 0, "failures": 0,
//!  "slow_calls": 0, "failure_rate": null, "slow_call_rate": null, "probes_in_flight": 0,
//!  "retry_after_secs": 27.5, "open_for_secs": 30.0, "reason": "consecutive_failures",
//!  "shadow": false, "would_reject": 0, "recovery_probe": false}
//! ```
//!
//! ```
//! use tower_breaker::{CircuitBreaker, Outcome, integrations::health::{HealthReport, Overall}};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let openai = CircuitBreaker::builder("openai").consecutive_failures(1).build()?;
//! let anthropic = CircuitBreaker::builder("anthropic").consecutive_failures(1).build()?;
//! assert_eq!(HealthReport::new().breaker(&openai).breaker(&anthropic).overall, Overall::Healthy);
//!
//! openai.try_acquire()?.record(Outcome::Failure);
//! let report = HealthReport::new().breaker(&openai).breaker(&anthropic);
//! assert_eq!(report.overall, Overall::Degraded);
//! assert_eq!(report.status(), http::StatusCode::OK);
//!
//! anthropic.force_open();
//! let report = HealthReport::new().breaker(&openai).breaker(&anthropic);
//! assert_eq!(report.overall, Overall::Critical);
//! assert_eq!(report.status(), http::StatusCode::SERVICE_UNAVAILABLE);
//! # Ok(()) }
//! ```
//!
//! # The verdict
//!
//! | overall | when |
//! |---|---|
//! | `healthy` | every breaker is closed or disabled (or there is none) |
//! | `degraded` | at least one breaker is open, forced open or half-open, but not all |
//! | `critical` | every breaker is open, forced open or half-open (half-open admits only probes): nothing is served normally |
//!
//! A breaker in [shadow mode](crate#shadow-mode) refuses no call, whatever its state: it
//! counts as serving. One that is notionally open (or forced open, or half-open) is listed in
//! [`would_refuse`](HealthReport::would_refuse): what the verdict would be once it enforces.
//!
//! ```
//! use tower_breaker::{CircuitBreaker, Outcome, integrations::health::{HealthReport, Overall}};
//!
//! let observed = CircuitBreaker::builder("openai").consecutive_failures(1).shadow(true).build()?;
//! observed.try_acquire()?.record(Outcome::Failure); // notionally open: calls still pass
//! let report = HealthReport::new().breaker(&observed);
//! assert_eq!(report.overall, Overall::Healthy);
//! assert_eq!(report.would_refuse, ["openai"]);
//! assert!(report.breakers["openai"].shadow);
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! ```

use std::{collections::BTreeMap, fmt};

use crate::{
    breaker::{CircuitBreaker, Snapshot, State},
    keyed::KeyedRegistry,
};

/// The overall verdict of a [`HealthReport`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum Overall {
    /// Every breaker lets calls through.
    Healthy,
    /// Some breakers refuse calls.
    Degraded,
    /// Every breaker refuses calls.
    Critical,
}

impl Overall {
    /// `healthy`, `degraded` or `critical`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Overall::Healthy => "healthy",
            Overall::Degraded => "degraded",
            Overall::Critical => "critical",
        }
    }
}

impl fmt::Display for Overall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a breaker in `state` refuses ordinary calls (unless it is in shadow mode).
const fn refuses(state: State) -> bool {
    matches!(state, State::Open | State::ForcedOpen | State::HalfOpen)
}

/// Every breaker's snapshot, by name, and the overall verdict. See [the module docs](self).
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct HealthReport {
    /// Snapshots by breaker name (a keyed breaker's name contains its key), sorted.
    pub breakers: BTreeMap<String, Snapshot>,
    /// The verdict over all of them. A breaker in shadow mode counts as serving.
    pub overall: Overall,
    /// The breakers in [shadow mode](crate#shadow-mode) that would refuse calls now (they are
    /// notionally open, forced open or half-open) but let them through, by name, sorted.
    pub would_refuse: Vec<String>,
}

impl Default for HealthReport {
    fn default() -> Self {
        Self::new()
    }
}

impl HealthReport {
    /// An empty report: healthy.
    pub const fn new() -> Self {
        Self {
            breakers: BTreeMap::new(),
            overall: Overall::Healthy,
            would_refuse: Vec::new(),
        }
    }

    /// A report over these snapshots. A later snapshot with the same name replaces an
    /// earlier one.
    pub fn from_snapshots(snapshots: impl IntoIterator<Item = Snapshot>) -> Self {
        snapshots.into_iter().fold(Self::new(), Self::snapshot)
    }

    /// Adds a snapshot.
    pub fn snapshot(mut self, snapshot: Snapshot) -> Self {
        self.breakers.insert(snapshot.name.clone(), snapshot);
        self.judge();
        self
    }

    /// Adds `breaker`'s snapshot, read now.
    pub fn breaker(self, breaker: &CircuitBreaker) -> Self {
        self.snapshot(breaker.snapshot())
    }

    /// Adds the snapshot of every key of `registry` (and of its overflow breaker, if used).
    pub fn keyed<K>(mut self, registry: &KeyedRegistry<K>) -> Self {
        registry.for_each(|_, breaker| {
            let s = breaker.snapshot();
            self.breakers.insert(s.name.clone(), s);
        });
        if let Some(overflow) = registry.overflow() {
            let s = overflow.snapshot();
            self.breakers.insert(s.name.clone(), s);
        }
        self.judge();
        self
    }

    /// The verdict and the shadow breakers that would refuse, over the snapshots held.
    fn judge(&mut self) {
        // A shadow breaker serves, whatever its state: as a closed one, for the verdict.
        let serving = |s: &Snapshot| if s.shadow { State::Closed } else { s.state };
        self.overall = Self::verdict(self.breakers.values().map(serving));
        self.would_refuse = self
            .breakers
            .values()
            .filter(|s| s.shadow && refuses(s.state))
            .map(|s| s.name.clone())
            .collect();
    }

    /// The verdict over breakers in these states (enforcing ones: a breaker in shadow mode
    /// refuses nothing, and counts as closed).
    pub fn verdict(states: impl IntoIterator<Item = State>) -> Overall {
        let (mut total, mut refusing) = (0usize, 0usize);
        for state in states {
            total += 1;
            refusing += usize::from(refuses(state));
        }
        match refusing {
            0 => Overall::Healthy,
            n if n == total => Overall::Critical,
            _ => Overall::Degraded,
        }
    }

    /// The HTTP status a health endpoint answers with: `503 Service Unavailable` when
    /// critical, `200 OK` otherwise (a degraded service still serves).
    pub fn status(&self) -> http::StatusCode {
        match self.overall {
            Overall::Critical => http::StatusCode::SERVICE_UNAVAILABLE,
            _ => http::StatusCode::OK,
        }
    }
}
