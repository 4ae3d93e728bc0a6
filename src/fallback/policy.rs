//! When a fallback may re-send a request that a member already received, and where it goes:
//! the [`Policy`] trait, its [`Route`]s, and its two ready-made implementations,
//! [`CloneRequest`] and [`CloneWith`].

use std::{fmt, sync::Arc};

use crate::classify::{Classify, ErrorIsFailure, HttpClassifier, Outcome};

/// Decides whether a request that a member already received may go to the next member.
///
/// Like `tower::retry::Policy`: [`clone_request`](Self::clone_request) is asked for a copy
/// *before* the request is handed to a member (return `None` to keep this request from ever
/// falling back after a call), and [`should_fall_back`](Self::should_fall_back) judges the
/// member's result. A result that is a `CircuitOpen` rejection (a `RejectOnCall` breaker)
/// always falls back when a copy exists: nothing was sent.
///
/// The fallback types never require `Req: Clone`; only [`CloneRequest`] does.
pub trait Policy<Req, Res, E> {
    /// A copy of `req` for the next member, or `None` if this request must not be re-sent.
    fn clone_request(&mut self, req: &Req) -> Option<Req>;

    /// Whether this result of a member should send the request on to the next member.
    fn should_fall_back(&mut self, result: Result<&Res, &E>) -> bool;

    /// Where this result of a member sends the request: back to the caller (the result is
    /// returned), on to the next member, or to the first later member of a list; with a label
    /// saying why, which the [`Provenance`](super::Provenance) keeps
    /// ([`Skipped::because`](super::Skipped::because)).
    ///
    /// The default asks [`should_fall_back`](Self::should_fall_back): `true` is
    /// [`Route::to_next`], `false` [`Route::to_caller`]. Override it to route by what the
    /// result says (the `llm` feature's `LlmRouting` routes by the provider's kind of error).
    #[inline]
    fn route(&mut self, result: Result<&Res, &E>) -> Route<'_> {
        if self.should_fall_back(result) {
            Route::to_next()
        } else {
            Route::to_caller()
        }
    }
}

/// Where a [`Policy`] sends a request after a member's result; see [`Policy::route`].
///
/// ```
/// use std::sync::Arc;
/// use tower_breaker::fallback::Route;
///
/// let long_context: Vec<Arc<str>> = vec!["gpt-4.1".into(), "claude-sonnet".into()];
/// let route = Route::to_any_of(&long_context).because("context_window_exceeded");
/// assert_eq!(route.label(), Some("context_window_exceeded"));
/// assert!(!route.is_to_caller());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route<'a> {
    to: To<'a>,
    because: Option<&'static str>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum To<'a> {
    Caller,
    Next,
    AnyOf(&'a [Arc<str>]),
}

impl<'a> Route<'a> {
    /// The result goes back to the caller, as it is.
    pub const fn to_caller() -> Self {
        Self {
            to: To::Caller,
            because: None,
        }
    }

    /// The request goes on to the next member (the next that is not open).
    pub const fn to_next() -> Self {
        Self {
            to: To::Next,
            because: None,
        }
    }

    /// The request goes to the first member *after* this one whose name is in `members` (the
    /// first of them that is not open); when the chain has no such member, the result goes
    /// back to the caller. A member at or before this one is never sent to: a chain never
    /// loops.
    pub const fn to_any_of(members: &'a [Arc<str>]) -> Self {
        Self {
            to: To::AnyOf(members),
            because: None,
        }
    }

    /// Labels the route with why the request moves (a kind of failure: `"quota_exhausted"`),
    /// for the [`Provenance`](super::Provenance) and the logs.
    #[must_use]
    pub const fn because(mut self, label: &'static str) -> Self {
        self.because = Some(label);
        self
    }

    /// The label given with [`because`](Self::because).
    pub const fn label(&self) -> Option<&'static str> {
        self.because
    }

    /// Whether the result goes back to the caller.
    pub const fn is_to_caller(&self) -> bool {
        matches!(self.to, To::Caller)
    }

    /// Resolves the route of the result of member `from` in a chain named `names`.
    pub(crate) fn resolve(&self, names: &[Arc<str>], from: usize) -> Onward {
        let because = self.because;
        match self.to {
            To::Caller => Onward::Caller,
            To::Next => Onward::Any { because },
            To::AnyOf(members) => {
                let only: Vec<usize> = (from + 1..names.len())
                    .filter(|&i| members.iter().any(|m| *m == names[i]))
                    .collect();
                if only.is_empty() {
                    Onward::Caller
                } else {
                    Onward::Only { only, because }
                }
            }
        }
    }
}

/// A [`Route`] resolved against a chain's names: no borrow of the policy left.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Onward {
    /// The result is the caller's.
    Caller,
    /// Any later member.
    Any { because: Option<&'static str> },
    /// Only these later members (ascending, never empty).
    Only {
        only: Vec<usize>,
        because: Option<&'static str>,
    },
}

impl Onward {
    pub(crate) const fn because(&self) -> Option<&'static str> {
        match self {
            Self::Caller => None,
            Self::Any { because } | Self::Only { because, .. } => *because,
        }
    }

    /// The next member to try after `member`, below `len`.
    pub(crate) fn after(&self, member: usize, len: usize) -> Option<usize> {
        match self {
            Self::Caller => None,
            Self::Any { .. } => (member + 1 < len).then_some(member + 1),
            Self::Only { only, .. } => only.iter().copied().find(|&i| i > member && i < len),
        }
    }
}

/// The default: fall back only when a member's readiness says its circuit is open. The
/// request is never copied. See the [module docs](super).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OnOpen;

impl<Req, Res, E> Policy<Req, Res, E> for OnOpen {
    #[inline]
    fn clone_request(&mut self, _: &Req) -> Option<Req> {
        None
    }

    #[inline]
    fn should_fall_back(&mut self, _: Result<&Res, &E>) -> bool {
        false
    }
}

/// The policy type of a fallback configured with [`on_failure`](super::Fallback::on_failure):
/// wraps the user's [`Policy`].
#[derive(Clone, Copy, Debug, Default)]
pub struct OnFailure<P>(pub(crate) P);

impl<P> OnFailure<P> {
    /// The wrapped policy.
    pub const fn get_ref(&self) -> &P {
        &self.0
    }
}

/// A [`Policy`] that copies requests with `Clone` and falls back when its classifier calls a
/// result [`Outcome::Failure`] or [`Outcome::Trip`] (default classifier: `Err` is a failure).
///
/// Pass the same classifier as the member's breaker (e.g. an `HttpClassifier`) to fall back on
/// exactly the answers that count against the breaker.
///
/// ```
/// use tower_breaker::{Outcome, fallback::CloneRequest};
///
/// // Fall back on errors and on HTTP-ish status codes >= 500.
/// let policy = CloneRequest::new().classify(|r: Result<&u16, &tower_breaker::BoxError>| match r {
///     Ok(s) if *s >= 500 => Outcome::Failure,
///     Ok(_) => Outcome::Success,
///     Err(_) => Outcome::Failure,
/// });
/// # let _ = policy;
/// ```
#[derive(Clone, Copy, Default)]
pub struct CloneRequest<C = ErrorIsFailure> {
    classifier: C,
}

impl CloneRequest {
    /// Copies every request; falls back on `Err`.
    pub const fn new() -> Self {
        Self {
            classifier: ErrorIsFailure::new(),
        }
    }
}

impl CloneRequest<HttpClassifier> {
    /// Copies every request; falls back on what [`HttpClassifier::new`] calls a failure (5xx,
    /// 429, 408, timeouts, connect errors). The policy of
    /// [`on_http_failure`](super::Failover::on_http_failure), as a `const fn`.
    pub const fn http() -> Self {
        Self {
            classifier: HttpClassifier::new(),
        }
    }
}

impl<C> CloneRequest<C> {
    /// Judges results with `classifier`: `Failure` and `Trip` fall back.
    pub fn classify<C2>(self, classifier: C2) -> CloneRequest<C2> {
        CloneRequest { classifier }
    }
}

impl<C> fmt::Debug for CloneRequest<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CloneRequest").finish_non_exhaustive()
    }
}

impl<Req: Clone, Res, E, C: Classify<Res, E>> Policy<Req, Res, E> for CloneRequest<C> {
    #[inline]
    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }

    #[inline]
    fn should_fall_back(&mut self, result: Result<&Res, &E>) -> bool {
        is_failure(self.classifier.classify(result))
    }
}

/// A [`Policy`] that copies requests with a function (`Fn(&Req) -> Option<Req>`; `None`
/// declines, e.g. for a streaming body or a non-idempotent call) and falls back when its
/// classifier calls a result [`Outcome::Failure`] or [`Outcome::Trip`].
///
/// ```
/// use tower_breaker::fallback::CloneWith;
///
/// #[derive(Debug)]
/// struct Prompt { text: String, idempotent: bool }
///
/// let policy = CloneWith::new(|p: &Prompt| {
///     p.idempotent.then(|| Prompt { text: p.text.clone(), idempotent: true })
/// });
/// # let _ = policy;
/// ```
#[derive(Clone, Copy)]
pub struct CloneWith<K, C = ErrorIsFailure> {
    clone: K,
    classifier: C,
}

impl<K> CloneWith<K> {
    /// Copies requests with `clone`; falls back on `Err`.
    pub const fn new(clone: K) -> Self {
        Self {
            clone,
            classifier: ErrorIsFailure::new(),
        }
    }
}

impl<K, C> CloneWith<K, C> {
    /// Judges results with `classifier`: `Failure` and `Trip` fall back.
    pub fn classify<C2>(self, classifier: C2) -> CloneWith<K, C2> {
        CloneWith {
            clone: self.clone,
            classifier,
        }
    }
}

impl<K, C> fmt::Debug for CloneWith<K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CloneWith").finish_non_exhaustive()
    }
}

impl<Req, Res, E, K, C> Policy<Req, Res, E> for CloneWith<K, C>
where
    K: FnMut(&Req) -> Option<Req>,
    C: Classify<Res, E>,
{
    #[inline]
    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        (self.clone)(req)
    }

    #[inline]
    fn should_fall_back(&mut self, result: Result<&Res, &E>) -> bool {
        is_failure(self.classifier.classify(result))
    }
}

#[inline]
const fn is_failure(outcome: Outcome) -> bool {
    matches!(outcome, Outcome::Failure | Outcome::Trip(_))
}
