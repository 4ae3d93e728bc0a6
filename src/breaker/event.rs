//! Events a breaker publishes to its listeners: transitions with their reasons, rejections,
//! operator overrides.

use std::{fmt, sync::Arc, time::Duration};

use super::Outcome;
use super::State;

/// Why a breaker changed state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Reason {
    /// The consecutive-failures rule tripped.
    ConsecutiveFailures,
    /// The failure-rate rule tripped.
    FailureRate,
    /// The slow-call rule tripped (or a half-open probe was slow).
    SlowCalls,
    /// The upstream asked for a pause ([`Outcome::Trip`](crate::Outcome::Trip), e.g. a
    /// `Retry-After` header).
    ServerWait,
    /// The open period ended; the breaker lets probes through.
    OpenElapsed,
    /// The open period was cut short to let one call through as a probe
    /// ([`CircuitBreaker::try_probe_early`](super::CircuitBreaker::try_probe_early), or a
    /// failover whose every member was open, with `AllOpen::ProbeSoonest`).
    EarlyProbe,
    /// Enough half-open probes succeeded; the breaker closed.
    ProbesSucceeded,
    /// A half-open probe failed.
    ProbeFailed,
    /// A half-open probe brought no decision within `half_open_max_wait` of its admission.
    ProbeTimedOut,
    /// [`force_open`](super::CircuitBreaker::force_open) was called.
    Forced,
    /// [`disable`](super::CircuitBreaker::disable) was called.
    Disabled,
    /// [`reset`](super::CircuitBreaker::reset) was called.
    Reset,
    /// Another replica's trip, shared through a sync component (e.g. Redis), or
    /// [`CircuitBreaker::trip_remote`](super::CircuitBreaker::trip_remote); or another
    /// replica's force-open, disable or reset
    /// ([`apply_override`](super::CircuitBreaker::apply_override) with
    /// [`Origin::Remote`], whose [`Event::Override`] names the action).
    Remote,
    /// The [recovery probe](crate#recovery-probes) succeeded at the end of the open period:
    /// the breaker goes half-open and judges live calls as its probes (open → half-open).
    RecoveryProbeSucceeded,
    /// The [recovery probe](crate#recovery-probes) failed: the breaker opens again for the
    /// backoff's next value (open → open).
    RecoveryProbeFailed,
    /// The [recovery probe](crate#recovery-probes) brought no verdict within its timeout:
    /// the breaker opens again for the backoff's next value (open → open).
    RecoveryProbeTimedOut,
}

impl Reason {
    /// A lowercase, stable name, fit for a metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::ConsecutiveFailures => "consecutive_failures",
            Reason::FailureRate => "failure_rate",
            Reason::SlowCalls => "slow_calls",
            Reason::ServerWait => "server_wait",
            Reason::OpenElapsed => "open_elapsed",
            Reason::EarlyProbe => "early_probe",
            Reason::ProbesSucceeded => "probes_succeeded",
            Reason::ProbeFailed => "probe_failed",
            Reason::ProbeTimedOut => "probe_timed_out",
            Reason::Forced => "forced",
            Reason::Disabled => "disabled",
            Reason::Reset => "reset",
            Reason::Remote => "remote",
            Reason::RecoveryProbeSucceeded => "recovery_probe_succeeded",
            Reason::RecoveryProbeFailed => "recovery_probe_failed",
            Reason::RecoveryProbeTimedOut => "recovery_probe_timed_out",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An operator's action on a breaker (see [Manual overrides](crate#manual-overrides)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Override {
    /// [`force_open`](super::CircuitBreaker::force_open): open until reset.
    ForceOpen,
    /// [`disable`](super::CircuitBreaker::disable): admit everything, record nothing, until
    /// reset.
    Disable,
    /// [`reset`](super::CircuitBreaker::reset): closed, statistics and backoff cleared (a
    /// standing force-open or disable ends).
    Reset,
    /// [`set_shadow`](super::CircuitBreaker::set_shadow): shadow mode on (`true`) or off.
    Shadow(bool),
}

impl Override {
    /// A lowercase, stable name, fit for a metric label or a log: `force_open`, `disable`,
    /// `reset`, `shadow_on`, `shadow_off`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Override::ForceOpen => "force_open",
            Override::Disable => "disable",
            Override::Reset => "reset",
            Override::Shadow(true) => "shadow_on",
            Override::Shadow(false) => "shadow_off",
        }
    }

    /// The action named by [`as_str`](Self::as_str), if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "force_open" => Override::ForceOpen,
            "disable" => Override::Disable,
            "reset" => Override::Reset,
            "shadow_on" => Override::Shadow(true),
            "shadow_off" => Override::Shadow(false),
            _ => return None,
        })
    }
}

impl fmt::Display for Override {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an [`Override`] comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Origin<'a> {
    /// This process: [`force_open`](super::CircuitBreaker::force_open) and the other controls.
    Local,
    /// Another replica, named by its origin string (for the Redis sync,
    /// `RedisSyncBuilder::origin`), applied with
    /// [`apply_override`](super::CircuitBreaker::apply_override).
    Remote(&'a str),
}

impl Origin<'_> {
    /// Whether the action was taken on this process.
    pub const fn is_local(&self) -> bool {
        matches!(self, Origin::Local)
    }
}

impl fmt::Display for Origin<'_> {
    /// `local`, or the remote replica's origin string.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Local => f.write_str("local"),
            Origin::Remote(origin) => f.write_str(origin),
        }
    }
}

/// Something that happened to a breaker, as its listeners see it.
///
/// Events borrow the breaker's name, so building one costs nothing; a listener that keeps an
/// event copies what it needs.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum Event<'a> {
    /// The breaker changed state. Only real changes are published; a new open period after a
    /// failed [recovery probe](crate#recovery-probes) is one (`from` and `to` are both
    /// `Open`).
    Transition {
        /// The breaker's name.
        name: &'a str,
        /// The state before.
        from: State,
        /// The state after.
        to: State,
        /// Why.
        reason: Reason,
        /// When `to` is `Open`: how long it stays open.
        open_for: Option<Duration>,
        /// Whether the breaker is in shadow mode (see [Shadow mode](crate#shadow-mode)): it
        /// changed state, but refuses no call; an `Open` here is notional.
        shadow: bool,
    },
    /// A call was refused.
    Rejected {
        /// The breaker's name.
        name: &'a str,
        /// The state that refused it.
        state: State,
    },
    /// A breaker in shadow mode let through a call it would have refused in `state` (see
    /// [Shadow mode](crate#shadow-mode)). Its outcome is not recorded: a notionally open
    /// breaker, as an open one, judges only its probes.
    WouldReject {
        /// The breaker's name.
        name: &'a str,
        /// The state that would have refused it.
        state: State,
    },
    /// A call's outcome was recorded on its permit (whether or not it still counted: an
    /// outcome from before the last state change is recorded but decides nothing).
    Recorded {
        /// The breaker's name.
        name: &'a str,
        /// The outcome.
        outcome: Outcome,
        /// Whether the call was slower than the slow-call threshold.
        slow: bool,
    },
    /// A permit was dropped without an outcome: the call was cancelled; it counts as nothing.
    Released {
        /// The breaker's name.
        name: &'a str,
    },
    /// An operator's action (see [Manual overrides](crate#manual-overrides)), announced
    /// whenever it is applied, even when it changes nothing (a reset of a closed breaker), and
    /// before the [`Transition`](Event::Transition) it causes, if any: the audit trail.
    Override {
        /// The breaker's name.
        name: &'a str,
        /// What the operator did.
        action: Override,
        /// Where: this process, or another replica (through a sync component).
        origin: Origin<'a>,
    },
    /// New settings were applied to the live breaker
    /// ([`CircuitBreaker::reconfigure`](super::CircuitBreaker::reconfigure), see
    /// [Hot reload](crate#hot-reload)). If the new trip rules open it at once, a
    /// [`Transition`](Event::Transition) follows.
    Reconfigured {
        /// The breaker's name.
        name: &'a str,
        /// Whether the breaker is in shadow mode after the reload (a builder that sets
        /// [`shadow`](super::Builder::shadow) switches it; one that leaves it unset keeps it).
        shadow: bool,
    },
}

impl Event<'_> {
    /// The name of the breaker the event comes from.
    pub const fn name(&self) -> &str {
        match self {
            Event::Transition { name, .. }
            | Event::Rejected { name, .. }
            | Event::WouldReject { name, .. }
            | Event::Recorded { name, .. }
            | Event::Released { name }
            | Event::Override { name, .. }
            | Event::Reconfigured { name, .. } => name,
        }
    }
}

/// A listener registered with
/// [`Builder::on_event`](super::Builder::on_event).
pub(crate) type Listener = Arc<dyn Fn(&Event<'_>) + Send + Sync>;
