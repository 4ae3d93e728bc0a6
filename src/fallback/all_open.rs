//! [`AllOpen`]: what a [`Failover`](super::Failover) does when every member's circuit is open.

/// What a [`Failover`](super::Failover) does when every member's circuit is open; set with
/// [`Failover::when_all_open`](super::Failover::when_all_open).
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
