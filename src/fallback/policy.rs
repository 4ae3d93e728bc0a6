//! When a fallback may re-send a request that a member already received: the [`Policy`]
//! trait and its two ready-made implementations, [`CloneRequest`] and [`CloneWith`].

use std::fmt;

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
