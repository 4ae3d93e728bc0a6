//! [`Fallback`]: a primary service and a secondary that takes over when the primary's circuit
//! is open (and, with a policy, when the primary's call failed).

use std::{
    fmt, mem,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use tower_service::Service;

use super::{
    AllOpen,
    all_open::{Probe, add_candidates, probe_soonest},
    error::{SkipReason, Skipped, all_unavailable, chain_error, unavailable},
    future::{ResponseFuture, Spare},
    policy::{CloneRequest, OnFailure, OnOpen, Policy},
    provenance::{Provenance, RecordProvenance, Shared},
};
use crate::{breaker::BoxError, classify::HttpClassifier};

/// Routes requests to `primary`, or to `secondary` when the primary is unavailable. See the
/// [module docs](super).
pub struct Fallback<P, S, F = OnOpen> {
    pub(super) primary: P,
    pub(super) secondary: S,
    pub(super) policy: F,
    pub(super) spill_over: bool,
    pub(super) all_open: AllOpen,
    pub(super) shared: Arc<Shared>,
    pub(super) route: Route,
    /// With `on_failure`: a clone of the secondary, cloned again only for a request that
    /// falls back after its call (made on the first call).
    pub(super) spare: Option<Arc<Mutex<S>>>,
}

/// What this instance decided in `poll_ready`, kept until `call`.
#[derive(Debug)]
pub(super) enum Route {
    None,
    Primary,
    Secondary(Vec<Skipped>),
    /// Both were open ([`AllOpen::ProbeSoonest`]): the member (0 or 1) let through as its
    /// breaker's early probe, and the other's records.
    Early(usize, Vec<Skipped>),
}

impl<P, S> Fallback<P, S> {
    /// Sends requests to `primary`, and to `secondary` while the primary's readiness fails
    /// with a `CircuitOpen`. The members are named `"primary"` and `"secondary"` (see
    /// [`names`](Self::names)).
    pub fn new(primary: P, secondary: S) -> Self {
        Self {
            primary,
            secondary,
            policy: OnOpen,
            spill_over: false,
            all_open: AllOpen::Refuse,
            shared: Arc::new(Shared::new(Box::new(["primary".into(), "secondary".into()]))),
            route: Route::None,
            spare: None,
        }
    }
}

impl<P, S, F> Fallback<P, S, F> {
    /// Names the two members, for [`Provenance`], [`Skipped`] and the errors (default
    /// `"primary"` and `"secondary"`).
    pub fn names(mut self, primary: impl Into<Arc<str>>, secondary: impl Into<Arc<str>>) -> Self {
        Arc::make_mut(&mut self.shared).names = Box::new([primary.into(), secondary.into()]);
        self
    }

    /// When `true`, a primary whose `poll_ready` is `Pending` (busy, not broken) does not hold
    /// the request back: if the secondary is ready, it takes the request. Default `false`:
    /// a pending primary is backpressure, and the fallback waits for it.
    ///
    /// A primary left pending keeps whatever it reserved while being readied (a breaker
    /// service keeps its admission until its next `poll_ready` or `call`, or until it is
    /// dropped), as any tower service that was polled and not called does.
    pub fn spill_over(mut self, spill_over: bool) -> Self {
        self.spill_over = spill_over;
        self
    }

    /// What to do when both circuits are open: [`AllOpen::Refuse`] (the default, an
    /// [`AllUnavailable`](super::AllUnavailable)) or [`AllOpen::ProbeSoonest`] (the request
    /// goes at once to the member whose open period ends soonest, as its breaker's half-open
    /// probe; never to a member forced open, nor through a server's wait). The same rule as
    /// [`Failover::when_all_open`](super::Failover::when_all_open); see [`AllOpen`].
    ///
    /// ```
    /// use tower::{ServiceExt, service_fn};
    /// use tower_breaker::{BoxError, CircuitBreaker, CircuitBreakerLayer, Fallback, Layer, Outcome, State};
    /// use tower_breaker::fallback::{AllOpen, Provenance};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), BoxError> {
    /// let tripped = |name: &str, open_secs: u64| {
    ///     let breaker = CircuitBreaker::builder(name)
    ///         .consecutive_failures(1)
    ///         .open_duration(std::time::Duration::from_secs(open_secs))
    ///         .build()
    ///         .unwrap();
    ///     breaker.try_acquire().unwrap().record(Outcome::Failure); // one blip: open
    ///     breaker
    /// };
    /// let (openai, anthropic) = (tripped("openai", 30), tripped("anthropic", 10));
    /// let answer = |name: &'static str| {
    ///     service_fn(move |_: ()| async move { Ok::<_, BoxError>(http::Response::new(name)) })
    /// };
    /// let llm = Fallback::new(
    ///     CircuitBreakerLayer::new(openai.clone()).layer(answer("openai")),
    ///     CircuitBreakerLayer::new(anthropic.clone()).layer(answer("anthropic")),
    /// )
    /// .names("openai", "anthropic")
    /// .when_all_open(AllOpen::ProbeSoonest);
    ///
    /// let res = llm.oneshot(()).await?; // not an AllUnavailable for 10 s
    /// assert_eq!(*res.body(), "anthropic"); // its open period ended first
    /// let provenance = res.extensions().get::<Provenance>().unwrap();
    /// assert!(provenance.probed_early());
    /// assert_eq!(anthropic.state(), State::Closed); // the probe succeeded
    /// assert_eq!(openai.state(), State::Open);
    /// # Ok(()) }
    /// ```
    pub fn when_all_open(mut self, all_open: AllOpen) -> Self {
        self.all_open = all_open;
        self
    }

    /// Calls `callback` with the [`Provenance`] of every response served after a member was
    /// skipped, whatever the response type (for `http::Response` it is also in the
    /// extensions). It runs on the task that polls the response future: keep it short.
    pub fn on_fallback(mut self, callback: impl Fn(&Provenance) + Send + Sync + 'static) -> Self {
        Arc::make_mut(&mut self.shared).on_fallback = Some(Arc::new(callback));
        self
    }

    /// Also falls back after the primary was *called*: when its call failed or its response
    /// was classified as a failure (and when a `RejectOnCall` breaker rejected the call), as
    /// `policy` decides. The policy copies each request before the primary gets it; when it
    /// returns `None`, that request cannot fall back after the call. A request that does fall
    /// back goes to a clone of the secondary (`S: Clone`), made only then and readied in the
    /// response future; requests that need no fallback cost one copy of the request.
    pub fn on_failure<Pol>(self, policy: Pol) -> Fallback<P, S, OnFailure<Pol>> {
        Fallback {
            primary: self.primary,
            secondary: self.secondary,
            policy: OnFailure(policy),
            spill_over: self.spill_over,
            all_open: self.all_open,
            shared: self.shared,
            route: self.route,
            spare: None,
        }
    }

    /// Falls back after a failed HTTP call, too: the preset for HTTP services whose requests
    /// can be sent again. The same as
    /// `.on_failure(CloneRequest::new().classify(HttpClassifier::default()))`; see
    /// [`Failover::on_http_failure`](super::Failover::on_http_failure) for what fails over
    /// (5xx, 429, 408, timeouts, connect errors, a refusal at call time) and what `Req` must
    /// be (`Clone`: a buffered body).
    ///
    /// ```
    /// use tower::{ServiceExt, service_fn};
    /// use tower_breaker::{BoxError, Fallback};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), BoxError> {
    /// let answer = |status: u16| {
    ///     service_fn(move |_: http::Request<String>| async move {
    ///         Ok::<_, BoxError>(http::Response::builder().status(status).body(String::new())?)
    ///     })
    /// };
    /// let svc = Fallback::new(answer(429), answer(200)).on_http_failure();
    /// assert_eq!(svc.oneshot(http::Request::new(String::new())).await?.status(), 200);
    /// # Ok(()) }
    /// ```
    pub fn on_http_failure(self) -> Fallback<P, S, OnFailure<CloneRequest<HttpClassifier>>> {
        self.on_failure(CloneRequest::http())
    }

    /// The primary service.
    pub const fn primary(&self) -> &P {
        &self.primary
    }

    /// The secondary service.
    pub const fn secondary(&self) -> &S {
        &self.secondary
    }

    /// The two services, consuming this one.
    pub fn into_parts(self) -> (P, S) {
        (self.primary, self.secondary)
    }

    fn poll_route<Req>(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>>
    where
        P: Service<Req>,
        P::Error: Into<BoxError>,
        S: Service<Req>,
        S::Error: Into<BoxError>,
    {
        match &self.route {
            Route::Primary => match self.primary.poll_ready(cx) {
                Poll::Ready(Ok(())) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => {
                    self.route = Route::None;
                    return self.primary_failed(e.into(), cx);
                }
            },
            Route::Secondary(_) => return self.poll_secondary(cx),
            Route::Early(member, _) => {
                let member = *member;
                match self.poll_member(member, cx) {
                    Poll::Ready(Err(e)) => {
                        let Route::Early(_, skipped) = mem::replace(&mut self.route, Route::None) else {
                            unreachable!("an early route changed while polled")
                        };
                        return Poll::Ready(Err(chain_error(&self.shared.names[member], e, skipped)));
                    }
                    poll => return poll,
                }
            }
            Route::None => {}
        }
        match self.primary.poll_ready(cx) {
            Poll::Ready(Ok(())) => {
                self.route = Route::Primary;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => self.primary_failed(e.into(), cx),
            Poll::Pending if self.spill_over => self.spill(cx),
            Poll::Pending => Poll::Pending,
        }
    }

    /// The primary's readiness failed: an open circuit routes to the secondary, anything else
    /// is the caller's error.
    fn primary_failed<Req>(&mut self, e: BoxError, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>>
    where
        P: Service<Req>,
        P::Error: Into<BoxError>,
        S: Service<Req>,
        S::Error: Into<BoxError>,
    {
        match unavailable(&e, &self.shared.names[0]) {
            Some(skipped) => {
                self.route = Route::Secondary(skipped);
                self.poll_secondary(cx)
            }
            None => Poll::Ready(Err(e)),
        }
    }

    fn poll_secondary<Req>(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>>
    where
        P: Service<Req>,
        P::Error: Into<BoxError>,
        S: Service<Req>,
        S::Error: Into<BoxError>,
    {
        match self.secondary.poll_ready(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => {
                let Route::Secondary(skipped) = mem::replace(&mut self.route, Route::None) else {
                    unreachable!("poll_secondary without a secondary route")
                };
                let e = e.into();
                // Both open (not a busy primary passed over): perhaps an early probe.
                if self.all_open == AllOpen::ProbeSoonest
                    && skipped.iter().all(|s| s.circuit_open().is_some())
                {
                    if let Some(open) = unavailable(&e, &self.shared.names[1]) {
                        return self.probe_soonest(skipped, open, cx);
                    }
                }
                Poll::Ready(Err(chain_error(&self.shared.names[1], e, skipped)))
            }
        }
    }

    /// Both circuits are open ([`AllOpen::ProbeSoonest`]): the member whose open period ends
    /// soonest takes the request as its early probe, if its breaker lets it (Failover's code).
    /// `skipped`: the primary's records; `open`: the secondary's.
    fn probe_soonest<Req>(
        &mut self,
        mut skipped: Vec<Skipped>,
        open: Vec<Skipped>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), BoxError>>
    where
        P: Service<Req>,
        P::Error: Into<BoxError>,
        S: Service<Req>,
        S::Error: Into<BoxError>,
    {
        let mut candidates = Vec::new();
        add_candidates(&mut candidates, 0, 0, &skipped);
        add_candidates(&mut candidates, 1, skipped.len(), &open);
        skipped.extend(open);
        let (primary, secondary) = (&mut self.primary, &mut self.secondary);
        let poll_ready = |member: usize, cx: &mut Context<'_>| poll_either(primary, secondary, member, cx);
        match probe_soonest(candidates, &mut skipped, &self.shared.names, cx, poll_ready) {
            Probe::Routed {
                member,
                skipped,
                poll,
                ..
            } => {
                self.route = Route::Early(member, skipped);
                poll.map(Ok)
            }
            Probe::Failed(e) => Poll::Ready(Err(e)),
            Probe::Refused => Poll::Ready(Err(all_unavailable(skipped))),
        }
    }

    /// Polls the readiness of member 0 (the primary) or 1 (the secondary).
    fn poll_member<Req>(&mut self, member: usize, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>>
    where
        P: Service<Req>,
        P::Error: Into<BoxError>,
        S: Service<Req>,
        S::Error: Into<BoxError>,
    {
        poll_either(&mut self.primary, &mut self.secondary, member, cx)
    }

    /// Spill-over: the primary is busy; a ready secondary takes the request.
    fn spill<Req>(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>>
    where
        S: Service<Req>,
        S::Error: Into<BoxError>,
    {
        match self.secondary.poll_ready(cx) {
            Poll::Ready(Ok(())) => {
                let busy = Skipped::new(self.shared.names[0].clone(), SkipReason::Busy);
                self.route = Route::Secondary(vec![busy]);
                Poll::Ready(Ok(()))
            }
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => {
                let e = e.into();
                if unavailable(&e, &self.shared.names[1]).is_some() {
                    // The secondary is open: wait for the primary (its waker is registered).
                    Poll::Pending
                } else {
                    let busy = Skipped::new(self.shared.names[0].clone(), SkipReason::Busy);
                    Poll::Ready(Err(chain_error(&self.shared.names[1], e, vec![busy])))
                }
            }
        }
    }
}

/// Polls the readiness of `primary` (member 0) or `secondary` (member 1).
fn poll_either<P, S, Req>(
    primary: &mut P,
    secondary: &mut S,
    member: usize,
    cx: &mut Context<'_>,
) -> Poll<Result<(), BoxError>>
where
    P: Service<Req>,
    P::Error: Into<BoxError>,
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    if member == 0 {
        primary.poll_ready(cx).map_err(Into::into)
    } else {
        secondary.poll_ready(cx).map_err(Into::into)
    }
}

impl<P: Clone, S: Clone, F: Clone> Clone for Fallback<P, S, F> {
    /// Clones both services; the clone makes its own routing decisions.
    fn clone(&self) -> Self {
        Self {
            primary: self.primary.clone(),
            secondary: self.secondary.clone(),
            policy: self.policy.clone(),
            spill_over: self.spill_over,
            all_open: self.all_open,
            shared: self.shared.clone(),
            route: Route::None,
            spare: self.spare.clone(),
        }
    }
}

impl<P: fmt::Debug, S: fmt::Debug, F: fmt::Debug> fmt::Debug for Fallback<P, S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fallback")
            .field("primary", &self.primary)
            .field("secondary", &self.secondary)
            .field("policy", &self.policy)
            .field("spill_over", &self.spill_over)
            .field("all_open", &self.all_open)
            .field("names", &self.shared.names)
            .field("route", &self.route)
            .finish()
    }
}

impl<P, S, Req> Service<Req> for Fallback<P, S, OnOpen>
where
    P: Service<Req>,
    P::Error: Into<BoxError>,
    P::Response: RecordProvenance,
    S: Service<Req, Response = P::Response>,
    S::Error: Into<BoxError>,
{
    type Response = P::Response;
    type Error = BoxError;
    type Future = ResponseFuture<P, S, OnOpen, Req>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.poll_route(cx)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        match mem::replace(&mut self.route, Route::None) {
            Route::Primary => ResponseFuture::primary(self.primary.call(req), None, self.shared.clone()),
            Route::Secondary(skipped) => {
                ResponseFuture::secondary(self.secondary.call(req), skipped, self.shared.clone(), false)
            }
            Route::Early(0, skipped) => {
                ResponseFuture::early_primary(self.primary.call(req), None, skipped, self.shared.clone())
            }
            Route::Early(_, skipped) => {
                ResponseFuture::secondary(self.secondary.call(req), skipped, self.shared.clone(), true)
            }
            Route::None => panic!("Fallback::call without a successful poll_ready"),
        }
    }
}

impl<P, S, Pol, Req> Service<Req> for Fallback<P, S, OnFailure<Pol>>
where
    P: Service<Req>,
    P::Error: Into<BoxError>,
    P::Response: RecordProvenance,
    S: Service<Req, Response = P::Response> + Clone,
    S::Error: Into<BoxError>,
    Pol: Policy<Req, P::Response, P::Error> + Clone,
{
    type Response = P::Response;
    type Error = BoxError;
    type Future = ResponseFuture<P, S, Pol, Req>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.poll_route(cx)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        match mem::replace(&mut self.route, Route::None) {
            Route::Primary => {
                let next = self.spare_for(&req);
                ResponseFuture::primary(self.primary.call(req), next, self.shared.clone())
            }
            Route::Secondary(skipped) => {
                ResponseFuture::secondary(self.secondary.call(req), skipped, self.shared.clone(), false)
            }
            Route::Early(0, skipped) => {
                // The secondary was open, but may be back when the probe's answer is a failure.
                let next = self.spare_for(&req);
                ResponseFuture::early_primary(self.primary.call(req), next, skipped, self.shared.clone())
            }
            Route::Early(_, skipped) => {
                ResponseFuture::secondary(self.secondary.call(req), skipped, self.shared.clone(), true)
            }
            Route::None => panic!("Fallback::call without a successful poll_ready"),
        }
    }
}

impl<P, S: Clone, Pol: Clone> Fallback<P, S, OnFailure<Pol>> {
    /// What a request sent to the primary needs to fall back after its call: a copy of it (if
    /// the policy makes one), the spare secondary and the policy.
    #[inline]
    fn spare_for<Req>(&mut self, req: &Req) -> Option<Spare<S, Req, Pol>>
    where
        Pol: Policy<Req, P::Response, P::Error>,
        P: Service<Req>,
    {
        self.policy.0.clone_request(req).map(|request| Spare {
            secondary: self
                .spare
                .get_or_insert_with(|| Arc::new(Mutex::new(self.secondary.clone())))
                .clone(),
            clone: S::clone,
            request,
            policy: self.policy.0.clone(),
        })
    }
}
