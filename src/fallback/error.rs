//! The fallback's errors: [`FallbackError`] (the member that answered last failed),
//! [`AllUnavailable`] (every member's circuit was open), and the per-member record
//! [`Skipped`] that both carry, as does the [`Provenance`](super::Provenance) of a response.

use std::{error::Error, fmt, sync::Arc, time::Duration};

use crate::{
    breaker::{BoxError, CircuitOpen},
    classify::{dead_buffer_found, next_in_chain},
};

/// Why a member of a fallback chain did not serve a request.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum SkipReason {
    /// Its circuit was open (or half-open with every probe in flight): it was not called.
    CircuitOpen(CircuitOpen),
    /// It was called (or its readiness was checked) and failed with this error, and the
    /// [`on_failure`](super::Fallback::on_failure) policy sent the request on.
    Failed(Arc<dyn Error + Send + Sync>),
    /// It answered, the policy's classifier called the answer a failure, and the request was
    /// sent on. The answer was dropped.
    FailureResponse,
    /// It was busy (its `poll_ready` was `Pending`) and
    /// [`spill_over`](super::Fallback::spill_over) sent the request to a ready member.
    Busy,
}

/// One member of a fallback chain that did not serve a request, and why.
///
/// Found in [`Provenance::skipped`](super::Provenance::skipped),
/// [`FallbackError::skipped`] and [`AllUnavailable::members`]. As an error, it displays the
/// member and its reason; its `source()` is the member's own error for
/// [`SkipReason::Failed`], and `None` otherwise: a circuit that was open for *this* member
/// does not make the whole request a circuit-open rejection
/// ([`is_circuit_open`](crate::is_circuit_open) is false for a [`FallbackError`]).
#[derive(Clone, Debug)]
pub struct Skipped {
    pub(crate) member: Arc<str>,
    pub(crate) reason: SkipReason,
    because: Option<&'static str>,
}

impl Skipped {
    pub(crate) const fn new(member: Arc<str>, reason: SkipReason) -> Self {
        Self {
            member,
            reason,
            because: None,
        }
    }

    pub(crate) const fn with_because(mut self, because: Option<&'static str>) -> Self {
        self.because = because;
        self
    }

    /// The member's name (as given to [`Fallback::names`](super::Fallback::names) or
    /// [`Failover::new`](super::Failover::new)).
    pub fn member(&self) -> &str {
        &self.member
    }

    /// Why it did not serve.
    pub const fn reason(&self) -> &SkipReason {
        &self.reason
    }

    /// What moved the request on from this member, as the policy labelled its
    /// [`Route`](super::Route) ([`Route::because`](super::Route::because)): with the `llm`
    /// feature's `LlmRouting`, the provider's kind of failure (`"quota_exhausted"`,
    /// `"context_window_exceeded"`, ...: `LlmErrorKind::as_str`). `None` for a member
    /// skipped at readiness, and for a policy that gives no label.
    pub const fn because(&self) -> Option<&'static str> {
        self.because
    }

    /// The member's `CircuitOpen`, when that is why it was skipped.
    pub const fn circuit_open(&self) -> Option<&CircuitOpen> {
        match &self.reason {
            SkipReason::CircuitOpen(open) => Some(open),
            _ => None,
        }
    }
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "member {:?} ", &*self.member)?;
        match &self.reason {
            SkipReason::CircuitOpen(open) => write!(f, "skipped: {open}"),
            SkipReason::Failed(e) => match self.because {
                Some(because) => write!(f, "failed ({because}): {e}"),
                None => write!(f, "failed: {e}"),
            },
            SkipReason::FailureResponse => match self.because {
                Some(because) => write!(f, "answered with a failure ({because})"),
                None => f.write_str("answered with a failure"),
            },
            SkipReason::Busy => f.write_str("was busy"),
        }
    }
}

impl Error for Skipped {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match &self.reason {
            SkipReason::Failed(e) => Some(&**e),
            _ => None,
        }
    }
}

/// The member that handled a request last failed, after at least one other member was
/// skipped or failed.
///
/// [`error`](Self::error) is that member's own error (downcast it as usual);
/// [`skipped`](Self::skipped) lists every other member that was passed over, in chain
/// order, and `source()` is the first of them (the primary's reason, when the primary was not
/// the member that failed last).
///
/// When no other member was involved (the primary failed and the policy did not send the
/// request on), the caller gets the primary's error itself, not a `FallbackError`.
///
/// ```
/// use std::error::Error;
/// use tower::{Service, ServiceExt, service_fn};
/// use tower_breaker::{BoxError, CircuitBreaker, CircuitBreakerLayer, Fallback, Layer};
/// use tower_breaker::fallback::{FallbackError, Skipped};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let breaker = CircuitBreaker::builder("openai").consecutive_failures(1).build().unwrap();
/// breaker.force_open();
/// let primary = CircuitBreakerLayer::new(breaker)
///     .layer(service_fn(|_: ()| async { Ok::<&'static str, BoxError>("primary") }));
/// let secondary = service_fn(|_: ()| async { Err::<&'static str, BoxError>("quota exceeded".into()) });
///
/// let err = Fallback::new(primary, secondary).oneshot(()).await.unwrap_err();
/// let failed = err.downcast_ref::<FallbackError>().unwrap();
/// assert_eq!(failed.member(), "secondary");
/// assert_eq!(failed.error().to_string(), "quota exceeded");
/// let primary = err.source().unwrap().downcast_ref::<Skipped>().unwrap();
/// assert_eq!(primary.circuit_open().unwrap().name(), "openai");
/// assert!(!tower_breaker::is_circuit_open(&err)); // the request was sent, and failed
/// # }
/// ```
#[derive(Debug)]
pub struct FallbackError {
    member: Arc<str>,
    error: BoxError,
    skipped: Vec<Skipped>,
}

impl FallbackError {
    pub(crate) fn new(member: Arc<str>, error: BoxError, skipped: Vec<Skipped>) -> Self {
        Self {
            member,
            error,
            skipped,
        }
    }

    /// The member whose error this is.
    pub fn member(&self) -> &str {
        &self.member
    }

    /// That member's error.
    pub fn error(&self) -> &(dyn Error + Send + Sync + 'static) {
        &*self.error
    }

    /// That member's error, by value.
    pub fn into_error(self) -> BoxError {
        self.error
    }

    /// Every other member that was tried or passed over, in chain order, with its reason.
    pub fn skipped(&self) -> &[Skipped] {
        &self.skipped
    }
}

impl fmt::Display for FallbackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "member {:?} failed: {}", &*self.member, self.error)
    }
}

impl Error for FallbackError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.skipped.first().map(|s| s as &(dyn Error + 'static))
    }
}

/// Every member of a fallback chain was unavailable (its circuit open, or half-open with its
/// probes in flight): nothing was sent anywhere.
///
/// It carries each member's name and [`CircuitOpen`], and the smallest
/// [`retry_after`](Self::retry_after) among them. Its `source()` is the `CircuitOpen` of the
/// member that lets a probe through first, so [`is_circuit_open`](crate::is_circuit_open) is
/// true for it and `CircuitOpen::find` returns that member's rejection: a retry policy, or
/// an outer `Fallback`, treats the whole chain like one open circuit. (The one exception is
/// an empty [`Failover`](super::Failover): its `AllUnavailable` has no members and no
/// source.)
#[derive(Clone, Debug)]
pub struct AllUnavailable {
    members: Vec<Skipped>,
    first: Option<usize>,
}

impl AllUnavailable {
    /// `members` must all carry a [`SkipReason::CircuitOpen`].
    pub(crate) fn new(members: Vec<Skipped>) -> Self {
        // The member with the smallest known wait; failing that, the first one.
        let mut first: Option<(usize, Option<Duration>)> = None;
        for (i, m) in members.iter().enumerate() {
            let Some(open) = m.circuit_open() else {
                continue;
            };
            let after = open.retry_after();
            let better = match first {
                None => true,
                Some((_, None)) => after.is_some(),
                Some((_, Some(best))) => after.is_some_and(|a| a < best),
            };
            if better {
                first = Some((i, after));
            }
        }
        Self {
            members,
            first: first.map(|(i, _)| i),
        }
    }

    /// Each member, in chain order, with the `CircuitOpen` that refused it.
    pub fn members(&self) -> &[Skipped] {
        &self.members
    }

    /// The smallest wait until some member lets a probe through, when any member knows it.
    pub fn retry_after(&self) -> Option<Duration> {
        self.first
            .and_then(|i| self.members[i].circuit_open())
            .and_then(CircuitOpen::retry_after)
    }

    fn soonest(&self) -> Option<&CircuitOpen> {
        self.first.and_then(|i| self.members[i].circuit_open())
    }
}

impl fmt::Display for AllUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.members.is_empty() {
            return f.write_str("the fallback chain has no members");
        }
        f.write_str("every member is unavailable (")?;
        for (i, m) in self.members.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{:?}", &*m.member)?;
        }
        f.write_str(")")?;
        match self.retry_after() {
            Some(d) if d.is_zero() => f.write_str("; an open period has ended since"),
            Some(d) if d >= Duration::from_secs(1) => {
                let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
                write!(f, "; retry in {secs}s")
            }
            Some(d) => write!(f, "; retry in {}ms", d.as_nanos().div_ceil(1_000_000)),
            None => Ok(()),
        }
    }
}

impl Error for AllUnavailable {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.soonest().map(|open| open as &(dyn Error + 'static))
    }
}

/// Whether `err` says its member was unavailable (a `CircuitOpen` or an `AllUnavailable`
/// anywhere in its `source()` chain), and if so the member(s) to record as skipped.
///
/// A nested chain's `AllUnavailable` is flattened into its own members. A `FallbackError`
/// stops the walk (its source is a [`Skipped`] whose source hides any `CircuitOpen`). A
/// refusal under a `tower::buffer::Buffer`'s error is not an open circuit: that buffer is dead
/// for good (see [`is_dead_buffer`](crate::is_dead_buffer)), a readiness error like any other.
pub(crate) fn unavailable(err: &BoxError, member: &Arc<str>) -> Option<Vec<Skipped>> {
    let mut in_buffer = false;
    let mut cur: Option<&(dyn Error + 'static)> = Some(&**err);
    while let Some(e) = cur {
        if let Some(all) = e.downcast_ref::<AllUnavailable>() {
            if in_buffer {
                if let Some(open) = all.soonest() {
                    dead_buffer_found(open);
                }
                return None;
            }
            if all.members.is_empty() {
                return None;
            }
            return Some(all.members.clone());
        }
        if let Some(open) = e.downcast_ref::<CircuitOpen>() {
            if in_buffer {
                dead_buffer_found(open);
                return None;
            }
            return Some(vec![Skipped::new(
                member.clone(),
                SkipReason::CircuitOpen(open.clone()),
            )]);
        }
        in_buffer |= e.is::<tower::buffer::error::ServiceError>();
        cur = next_in_chain(e);
    }
    None
}

/// The error a chain returns when `member` failed with `err` after `skipped`: an
/// `AllUnavailable` if that member was unavailable too (and so was every skipped one), the
/// member's own error if nothing else was involved, a `FallbackError` otherwise.
pub(crate) fn chain_error(member: &Arc<str>, err: BoxError, mut skipped: Vec<Skipped>) -> BoxError {
    if skipped.is_empty() {
        return err;
    }
    if skipped.iter().all(|s| s.circuit_open().is_some()) {
        if let Some(more) = unavailable(&err, member) {
            skipped.extend(more);
            return Box::new(AllUnavailable::new(skipped));
        }
    }
    Box::new(FallbackError::new(member.clone(), err, skipped))
}

/// Every remaining member was unavailable: `skipped` holds only `CircuitOpen`s.
pub(crate) fn all_unavailable(skipped: Vec<Skipped>) -> BoxError {
    Box::new(AllUnavailable::new(skipped))
}
