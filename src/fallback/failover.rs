//! [`Failover`]: an ordered list of services of one type, tried in order.

use std::{
    fmt,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use tower_service::Service;

use super::{
    AllOpen,
    all_open::{Candidate, Probe, add_candidates, probe_soonest},
    error::{SkipReason, Skipped, all_unavailable, chain_error, unavailable},
    future::{FailoverFuture, Next},
    policy::{CloneRequest, OnFailure, OnOpen, Policy},
    provenance::{Provenance, RecordProvenance, Shared},
};
use crate::{
    breaker::{BoxError, ConfigError},
    classify::HttpClassifier,
};

/// An ordered chain of named services of one type (for services of different types, nest
/// [`Fallback`](super::Fallback)s, or box them: `tower::util::BoxCloneService`).
///
/// Each request goes to the first member whose `poll_ready` is `Ready(Ok)`. A member whose
/// readiness fails with `CircuitOpen` (or with an inner chain's [`AllUnavailable`]) is skipped
/// without being called; when every member is skipped, `poll_ready` fails at once with
/// [`AllUnavailable`], carrying each member's reason and the smallest `retry_after`. A
/// `Pending` member is waited for (unless [`spill_over`](Self::spill_over)); any other
/// readiness error is returned (a `FallbackError` if members were skipped before it).
///
/// With [`on_http_failure`](Self::on_http_failure) (the HTTP preset: 5xx, 429, timeouts,
/// connect errors) or [`on_failure`](Self::on_failure), a request whose call failed goes on
/// to the next members (ready clones of them, readied in the response future), at most
/// [`max_attempts`](Self::max_attempts) calls in all; if none of them answers, the last
/// failed answer stands.
///
/// [`AllUnavailable`]: super::AllUnavailable
///
/// ```
/// use tower::{ServiceExt, service_fn, util::BoxService};
/// use tower_breaker::{BoxError, CircuitBreaker, CircuitBreakerLayer, Failover, Layer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), BoxError> {
/// let provider = |name: &'static str| {
///     let breaker = CircuitBreaker::builder(name).consecutive_failures(3).build().unwrap();
///     let svc = CircuitBreakerLayer::new(breaker.clone())
///         .layer(service_fn(move |q: String| async move { Ok::<_, BoxError>(format!("{name}: {q}")) }));
///     (breaker, BoxService::new(svc))
/// };
/// let (openai, a) = provider("openai");
/// let (_, b) = provider("anthropic");
/// openai.force_open();
///
/// let chain = Failover::new([("openai", a), ("anthropic", b)]);
/// assert_eq!(chain.oneshot("hi".into()).await?, "anthropic: hi");
/// # Ok(()) }
/// ```
pub struct Failover<S, F = OnOpen> {
    members: Vec<S>,
    spares: Option<Arc<[Mutex<S>]>>,
    policy: F,
    max_attempts: usize,
    spill_over: bool,
    all_open: AllOpen,
    shared: Arc<Shared>,
    /// The member picked in `poll_ready`, the members skipped, and, when it was let through
    /// as an early probe (every member open), where the records of the members after it begin.
    route: Option<(usize, Vec<Skipped>, Option<usize>)>,
}

impl<S> Failover<S> {
    /// A chain of `(name, service)` pairs, tried in order. An empty chain fails every
    /// `poll_ready` with an `AllUnavailable` that has no members.
    pub fn new<N: Into<Arc<str>>>(members: impl IntoIterator<Item = (N, S)>) -> Self {
        let (names, members): (Vec<Arc<str>>, Vec<S>) =
            members.into_iter().map(|(n, s)| (n.into(), s)).unzip();
        Self {
            members,
            spares: None,
            policy: OnOpen,
            max_attempts: usize::MAX,
            spill_over: false,
            all_open: AllOpen::Refuse,
            shared: Arc::new(Shared::new(names.into_boxed_slice())),
            route: None,
        }
    }
}

impl<S, F> Failover<S, F> {
    /// At most `n` members are *called* for one request (skipping an open member is not a
    /// call; a call rejected by a `RejectOnCall` breaker is). Only matters with
    /// [`on_failure`](Self::on_failure). Default: every member. Zero is a `ConfigError`.
    pub fn max_attempts(mut self, n: usize) -> Result<Self, ConfigError> {
        if n == 0 {
            return Err(ConfigError::new("max_attempts", "must be at least 1"));
        }
        self.max_attempts = n;
        Ok(self)
    }

    /// See [`Fallback::spill_over`](super::Fallback::spill_over): a busy member passes the
    /// request to the next ready one. When every member is open or busy, `poll_ready` waits.
    pub fn spill_over(mut self, spill_over: bool) -> Self {
        self.spill_over = spill_over;
        self
    }

    /// What to do when every member's circuit is open: [`AllOpen::Refuse`] (the default, an
    /// [`AllUnavailable`](super::AllUnavailable)) or [`AllOpen::ProbeSoonest`] (the request
    /// goes at once to the member whose open period ends soonest, as its breaker's half-open
    /// probe; never to a member forced open, nor through a server's wait). See [`AllOpen`].
    ///
    /// ```
    /// use tower::{ServiceExt, service_fn, util::BoxService};
    /// use tower_breaker::{BoxError, CircuitBreaker, CircuitBreakerLayer, Failover, Layer, Outcome};
    /// use tower_breaker::fallback::{AllOpen, Provenance};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), BoxError> {
    /// let provider = |name: &'static str| {
    ///     let breaker = CircuitBreaker::builder(name).consecutive_failures(1).build().unwrap();
    ///     breaker.try_acquire().unwrap().record(Outcome::Failure); // one blip: open for 30 s
    ///     let svc = CircuitBreakerLayer::new(breaker)
    ///         .layer(service_fn(move |_: ()| async move { Ok::<_, BoxError>(http::Response::new(name)) }));
    ///     (name, BoxService::new(svc))
    /// };
    /// let chain = Failover::new([provider("openai"), provider("anthropic")])
    ///     .when_all_open(AllOpen::ProbeSoonest);
    /// let res = chain.oneshot(()).await?; // not an AllUnavailable for 30 s
    /// let provenance = res.extensions().get::<Provenance>().unwrap();
    /// assert!(provenance.probed_early());
    /// # Ok(()) }
    /// ```
    pub fn when_all_open(mut self, all_open: AllOpen) -> Self {
        self.all_open = all_open;
        self
    }

    /// See [`Fallback::on_fallback`](super::Fallback::on_fallback).
    pub fn on_fallback(mut self, callback: impl Fn(&Provenance) + Send + Sync + 'static) -> Self {
        Arc::make_mut(&mut self.shared).on_fallback = Some(Arc::new(callback));
        self
    }

    /// See [`Fallback::on_failure`](super::Fallback::on_failure). Keeps a clone of every
    /// member, from which the response future clones (and readies) the next member when a
    /// call fails.
    pub fn on_failure<Pol>(self, policy: Pol) -> Failover<S, OnFailure<Pol>>
    where
        S: Clone,
    {
        Failover {
            spares: Some(self.members.iter().map(|m| Mutex::new(m.clone())).collect()),
            members: self.members,
            policy: OnFailure(policy),
            max_attempts: self.max_attempts,
            spill_over: self.spill_over,
            all_open: self.all_open,
            shared: self.shared,
            route: None,
        }
    }

    /// Fails over after a failed HTTP call, too: the preset for HTTP members whose requests can
    /// be sent again.
    ///
    /// The same as `.on_failure(CloneRequest::new().classify(HttpClassifier::default()))`
    /// ([`CloneRequest::http`]). Each request is cloned before a member gets it, so `Req` must
    /// be `Clone`: an `http::Request<B>` whose body is buffered (`Full<Bytes>`, `Bytes`,
    /// `String`, `Empty<Bytes>`), or such a body itself. The request goes on to the next
    /// member when the call
    ///
    /// - answered with what [`HttpClassifier`] calls a failure: a 5xx, a 429 (or a 503 with
    ///   `Retry-After`), a 408;
    /// - failed: a timeout (tower's `Timeout` inside the member), a refused connection, a
    ///   reset;
    /// - was refused by a breaker inside the member (a [keyed](crate::keyed) breaker, or one
    ///   in `RejectOnCall` mode): nothing was sent.
    ///
    /// A member whose circuit is open at readiness is skipped without a copy, as by default;
    /// if no later member can take the request, the last failed answer stands (a 5xx is
    /// returned as is). Answers the classifier accepts (2xx, other 4xx) are the caller's.
    ///
    /// A call that timed out may have reached the upstream, which may have acted on it: use the
    /// preset for requests that are safe to send twice (reads, idempotent writes, an LLM
    /// completion). For a streaming body (hyper's `Incoming`, which cannot be replayed), a
    /// policy that declines some requests, or another table, call
    /// [`on_failure`](Self::on_failure) with [`CloneWith`] or your own classifier.
    ///
    /// [`CloneRequest::http`]: super::CloneRequest::http
    /// [`HttpClassifier`]: crate::HttpClassifier
    /// [`CloneWith`]: super::CloneWith
    ///
    /// ```
    /// use tower::{ServiceExt, service_fn, util::BoxCloneService};
    /// use tower_breaker::{BoxError, Failover, fallback::Provenance};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), BoxError> {
    /// // Stand-ins for real clients: one answers 503, the other 200.
    /// let answer = |status: u16| {
    ///     BoxCloneService::new(service_fn(move |_: http::Request<String>| async move {
    ///         Ok::<_, BoxError>(http::Response::builder().status(status).body(String::new())?)
    ///     }))
    /// };
    /// let chain = Failover::new([("openai", answer(503)), ("anthropic", answer(200))]).on_http_failure();
    ///
    /// let res = chain.oneshot(http::Request::new("hello".to_owned())).await?;
    /// assert_eq!(res.status(), 200);
    /// let provenance = res.extensions().get::<Provenance>().unwrap();
    /// assert_eq!(provenance.served_by(), "anthropic");
    /// assert_eq!(provenance.skipped()[0].member(), "openai"); // it answered 503
    /// # Ok(()) }
    /// ```
    pub fn on_http_failure(self) -> Failover<S, OnFailure<CloneRequest<HttpClassifier>>>
    where
        S: Clone,
    {
        self.on_failure(CloneRequest::http())
    }

    /// The members' names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.shared.names.iter().map(|n| &**n)
    }

    /// The members, in order.
    pub fn members(&self) -> &[S] {
        &self.members
    }

    fn poll_route<Req>(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>>
    where
        S: Service<Req>,
        S::Error: Into<BoxError>,
    {
        let (start, skipped) = match self.route.take() {
            Some((i, skipped, early)) => match self.members[i].poll_ready(cx) {
                Poll::Ready(Ok(())) => {
                    self.route = Some((i, skipped, early));
                    return Poll::Ready(Ok(()));
                }
                Poll::Pending => {
                    self.route = Some((i, skipped, early));
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => {
                    let e = e.into();
                    let mut skipped = skipped;
                    match unavailable(&e, &self.shared.names[i]) {
                        Some(open) => skipped.extend(open),
                        None => return Poll::Ready(Err(chain_error(&self.shared.names[i], e, skipped))),
                    }
                    (i + 1, skipped)
                }
            },
            None => (0, Vec::new()),
        };
        self.scan(start, skipped, cx)
    }

    fn scan<Req>(
        &mut self,
        start: usize,
        mut skipped: Vec<Skipped>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), BoxError>>
    where
        S: Service<Req>,
        S::Error: Into<BoxError>,
    {
        let mut busy = false;
        let mut candidates: Vec<Candidate> = Vec::new();
        for i in start..self.members.len() {
            match self.members[i].poll_ready(cx) {
                Poll::Ready(Ok(())) => {
                    self.route = Some((i, skipped, None));
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Err(e)) => {
                    let e = e.into();
                    match unavailable(&e, &self.shared.names[i]) {
                        Some(open) => {
                            if self.all_open == AllOpen::ProbeSoonest {
                                add_candidates(&mut candidates, i, skipped.len(), &open);
                            }
                            skipped.extend(open);
                        }
                        None => return Poll::Ready(Err(chain_error(&self.shared.names[i], e, skipped))),
                    }
                }
                Poll::Pending if self.spill_over => {
                    busy = true;
                    skipped.push(Skipped::new(self.shared.names[i].clone(), SkipReason::Busy));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        if busy {
            return Poll::Pending;
        }
        if !candidates.is_empty() {
            let members = &mut self.members;
            let poll_ready = |i: usize, cx: &mut Context<'_>| members[i].poll_ready(cx).map_err(Into::into);
            match probe_soonest(candidates, &mut skipped, &self.shared.names, cx, poll_ready) {
                Probe::Routed {
                    member,
                    skipped,
                    later,
                    poll,
                } => {
                    self.route = Some((member, skipped, Some(later)));
                    return poll.map(Ok);
                }
                Probe::Failed(e) => return Poll::Ready(Err(e)),
                Probe::Refused => {}
            }
        }
        Poll::Ready(Err(all_unavailable(skipped)))
    }

    fn take_route(&mut self) -> (usize, Vec<Skipped>, Option<usize>) {
        self.route
            .take()
            .expect("Failover::call without a successful poll_ready")
    }
}

impl<S: Clone, F: Clone> Clone for Failover<S, F> {
    /// Clones every member; the clone makes its own routing decisions.
    fn clone(&self) -> Self {
        Self {
            members: self.members.clone(),
            spares: self.spares.clone(),
            policy: self.policy.clone(),
            max_attempts: self.max_attempts,
            spill_over: self.spill_over,
            all_open: self.all_open,
            shared: self.shared.clone(),
            route: None,
        }
    }
}

impl<S: fmt::Debug, F: fmt::Debug> fmt::Debug for Failover<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Failover")
            .field("names", &self.shared.names)
            .field("members", &self.members)
            .field("policy", &self.policy)
            .field("max_attempts", &self.max_attempts)
            .field("spill_over", &self.spill_over)
            .field("all_open", &self.all_open)
            .field("route", &self.route)
            .finish()
    }
}

impl<S, Req> Service<Req> for Failover<S, OnOpen>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    S::Response: RecordProvenance,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = FailoverFuture<S, OnOpen, Req>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.poll_route(cx)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let (i, skipped, early) = self.take_route();
        FailoverFuture::new(
            self.members[i].call(req),
            i,
            None,
            skipped,
            self.shared.clone(),
            early,
        )
    }
}

impl<S, Pol, Req> Service<Req> for Failover<S, OnFailure<Pol>>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    S::Response: RecordProvenance,
    Pol: Policy<Req, S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = FailoverFuture<S, OnFailure<Pol>, Req>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.poll_route(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let (i, skipped, early) = self.take_route();
        let attempts_left = self.max_attempts - 1;
        let copy = if attempts_left > 0 && i + 1 < self.members.len() {
            self.policy.0.clone_request(&req)
        } else {
            None
        };
        let next = match (copy, &self.spares) {
            (Some(request), Some(spares)) => Some(Next {
                spares: spares.clone(),
                request: Some(request),
                policy: self.policy.clone(),
                attempts_left,
            }),
            _ => None,
        };
        let future = self.members[i].call(req);
        FailoverFuture::new(future, i, next, skipped, self.shared.clone(), early)
    }
}
