//! [`AllOpen`]: what a [`Failover`](super::Failover) or a [`Fallback`](super::Fallback) does
//! when every member's circuit is open, and the early probe both use for
//! [`AllOpen::ProbeSoonest`].

use std::{
    ops::Range,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use super::error::{Skipped, chain_error, unavailable};
use crate::breaker::{BoxError, CircuitOpen, State};

/// What a [`Failover`](super::Failover) or a [`Fallback`](super::Fallback) does when every
/// member's circuit is open; set with [`Failover::when_all_open`](super::Failover::when_all_open)
/// or [`Fallback::when_all_open`](super::Fallback::when_all_open).
///
/// | | every member open |
/// |---|---|
/// | [`Refuse`](Self::Refuse) (default) | `poll_ready` fails at once with [`AllUnavailable`](super::AllUnavailable) (the smallest `retry_after`) |
/// | [`ProbeSoonest`](Self::ProbeSoonest) | the request goes at once to the member whose open period ends soonest, as its breaker's half-open probe |
///
/// `ProbeSoonest` is for chains where refusing is worse than one request to a provider that
/// may still be down: a chain whose every provider tripped on the same short blip (a network
/// hiccup, a burst of 5xx) serves again at once instead of refusing everything for an open
/// period. Portkey bypasses its breakers when every target is open; LiteLLM waits for the first
/// deployment to come back; this is in between: one member, one probe at a time.
///
/// What it never bypasses:
///
/// - a member [forced open](crate::CircuitBreaker::force_open) by an operator (it is not a
///   candidate) or [disabled](crate::CircuitBreaker::disable) (it admits anyway);
/// - an open period a server asked for: a 429's or a 503's `Retry-After`, a provider's quota or
///   authentication error opened for a long time (an [`Outcome::Trip`](crate::Outcome::Trip)),
///   a trip shared by another replica. Those members are not candidates: the server said when
///   to come back;
/// - a half-open member whose probes are all in flight (it is already being probed).
///
/// The probe is a real half-open probe
/// ([`CircuitBreaker::try_probe_early`](crate::CircuitBreaker::try_probe_early)): while it is in
/// flight that member admits nothing else, a success closes its breaker (with
/// `half_open_successes(1)`), a failure opens it again with its backoff's next period. So while
/// every provider is really down, each request that finds them all open goes to one of them,
/// at most one at a time per member: as much load as half-open probing with no open period.
/// The response's [`Provenance::probed_early`](super::Provenance::probed_early) says so, and the
/// breaker's transition has the reason [`Reason::EarlyProbe`](crate::Reason::EarlyProbe).
/// With an `on_failure` policy, a failed early probe moves the request on as any failed call
/// does, to a later member whose circuit lets it through by then.
///
/// A member that is itself a chain (a nested `Failover` or `Fallback`) is a candidate through
/// its members' breakers: their open period ends, and the nested chain routes the request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AllOpen {
    /// Fail fast with `AllUnavailable` (the default).
    #[default]
    Refuse,
    /// Send the request to the member whose open period ends soonest, as its half-open probe.
    ProbeSoonest,
}

/// With [`AllOpen::ProbeSoonest`]: an open member that could be probed early, where its
/// records are in the skipped list, and its refusal.
pub(super) struct Candidate {
    member: usize,
    span: Range<usize>,
    open: CircuitOpen,
}

/// Adds `member`'s refusals in `open` (its records, about to be appended to a skipped list of
/// `at` records) to `candidates`: those of a breaker in `Open`, whose period may end early
/// (not forced open, not half-open with its probes in flight).
pub(super) fn add_candidates(candidates: &mut Vec<Candidate>, member: usize, at: usize, open: &[Skipped]) {
    let span = at..at + open.len();
    let refusals = open.iter().filter_map(Skipped::circuit_open);
    candidates.extend(refusals.filter(|o| o.state() == State::Open).map(|o| Candidate {
        member,
        span: span.clone(),
        open: o.clone(),
    }));
}

/// What [`probe_soonest`] did.
pub(super) enum Probe {
    /// `member` takes the request as its early probe: it is ready (`Ready`), or being readied
    /// (`Pending`, its admission taken). `skipped`: the other members' records, in chain
    /// order; those of the members after it begin at `later`.
    Routed {
        member: usize,
        skipped: Vec<Skipped>,
        later: usize,
        poll: Poll<()>,
    },
    /// The member picked failed its readiness with an error other than an open circuit: the
    /// caller's error.
    Failed(BoxError),
    /// No candidate took the request: the chain refuses it (`skipped` is left as it was).
    Refused,
}

/// Every member is open ([`AllOpen::ProbeSoonest`]): ends the open period of the candidate
/// whose period ends soonest (if its breaker chose it itself: never a server's wait) and
/// readies that member with `poll_ready(member, cx)`; its breaker now admits it as a probe.
/// When another caller took that probe first, the next candidate is tried.
///
/// One piece of code for [`Failover`](super::Failover) (members of one type, by index) and
/// [`Fallback`](super::Fallback) (a primary and a secondary of two types).
pub(super) fn probe_soonest(
    mut candidates: Vec<Candidate>,
    skipped: &mut Vec<Skipped>,
    names: &[Arc<str>],
    cx: &mut Context<'_>,
    mut poll_ready: impl FnMut(usize, &mut Context<'_>) -> Poll<Result<(), BoxError>>,
) -> Probe {
    candidates.sort_by_key(|c| c.open.retry_after().unwrap_or(Duration::MAX));
    for Candidate { member, span, open } in candidates {
        if !open.end_open_period() {
            continue; // a server's wait, or no longer in that open period
        }
        let name = &names[member];
        tracing::debug!(
            member = &**name,
            breaker = open.name(),
            "every member is open: an early probe"
        );
        // The member's own records go: it serves, or its error is the answer.
        let mut rest = || {
            let mut rest = std::mem::take(skipped);
            rest.drain(span.clone());
            rest
        };
        let poll = match poll_ready(member, cx) {
            Poll::Ready(Ok(())) => Poll::Ready(()),
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => {
                if unavailable(&e, name).is_none() {
                    return Probe::Failed(chain_error(name, e, rest()));
                }
                // Another caller took the probe first: the member's record stands.
                continue;
            }
        };
        return Probe::Routed {
            member,
            skipped: rest(),
            later: span.start,
            poll,
        };
    }
    Probe::Refused
}
