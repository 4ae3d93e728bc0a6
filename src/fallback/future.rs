//! The response futures of [`Fallback`](super::Fallback) and [`Failover`](super::Failover).

use std::{
    fmt,
    future::Future,
    mem,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    task::{Context, Poll, ready},
};

use pin_project_lite::pin_project;
use tower_service::Service;

use super::{
    error::{SkipReason, Skipped, all_unavailable, chain_error, unavailable},
    policy::{OnFailure, OnOpen, Onward, Policy},
    provenance::{RecordProvenance, Shared},
};
use crate::breaker::BoxError;

/// A failed result kept while the next member's readiness is checked: the answer to return if
/// no member can take the request.
type Held<Res> = Result<Res, BoxError>;

fn skip_for<Res>(member: &Arc<str>, held: Held<Res>) -> Skipped {
    let reason = match held {
        Ok(_) => SkipReason::FailureResponse,
        Err(e) => SkipReason::Failed(Arc::from(e)),
    };
    Skipped::new(member.clone(), reason)
}

/// What to record for `member` whose readiness failed with `err`.
fn skip_err(member: &Arc<str>, err: BoxError) -> Vec<Skipped> {
    unavailable(&err, member)
        .unwrap_or_else(|| vec![Skipped::new(member.clone(), SkipReason::Failed(Arc::from(err)))])
}

#[inline]
fn finish<Res: RecordProvenance>(
    shared: &Shared,
    member: usize,
    result: Result<Res, BoxError>,
    skipped: Vec<Skipped>,
) -> Result<Res, BoxError> {
    finish_early(shared, member, result, skipped, false)
}

/// [`finish`], saying whether `member` was let through as an early probe.
#[inline]
fn finish_early<Res: RecordProvenance>(
    shared: &Shared,
    member: usize,
    result: Result<Res, BoxError>,
    skipped: Vec<Skipped>,
    probed_early: bool,
) -> Result<Res, BoxError> {
    match result {
        Ok(mut res) => {
            shared.served(&mut res, member, skipped, probed_early);
            Ok(res)
        }
        Err(e) => Err(chain_error(&shared.names[member], e, skipped)),
    }
}

/// Locks a spare service to clone it. A service is `Send` but rarely `Sync` (a boxed one is
/// not), so spares shared between calls sit behind a mutex, locked only to clone one when a
/// request falls back after its call.
pub(crate) fn lock<S>(spare: &Mutex<S>) -> MutexGuard<'_, S> {
    spare.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What an `on_failure` fallback needs to send a request on after the primary's call: the
/// service's spare secondary (cloned only if needed, with `clone`, which is `S::clone`: the
/// future's own bounds need no `S: Clone`), the copy of the request, and the policy.
pub(crate) struct Spare<S, Req, Pol> {
    pub(crate) secondary: Arc<Mutex<S>>,
    pub(crate) clone: fn(&S) -> S,
    pub(crate) request: Req,
    pub(crate) policy: Pol,
}

pin_project! {
    /// The response future of [`Fallback`](super::Fallback).
    ///
    /// It owns whatever the request holds: the member's response future (with its breaker
    /// permit) and, with an `on_failure` policy, the copy of the request and a clone of the
    /// secondary (with the admission it takes while being readied). Dropping it releases all
    /// of them.
    pub struct ResponseFuture<P, S, Pol, Req>
    where
        P: Service<Req>,
        S: Service<Req>,
    {
        #[pin]
        state: State<P::Future, S::Future, S, Req, Pol, P::Response>,
        shared: Arc<Shared>,
        skipped: Vec<Skipped>,
        // What moved the request from the primary (the policy's route label).
        because: Option<&'static str>,
        // The member (0 or 1) let through as an early probe, both being open.
        early: Option<u8>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<PF, SF, S, Req, Pol, Res> {
        Primary { #[pin] future: PF, next: Option<Spare<S, Req, Pol>> },
        Ready { secondary: S, request: Option<Req>, held: Option<Held<Res>> },
        Secondary { #[pin] future: SF, held: Option<Held<Res>> },
        Done,
    }
}

impl<P, S, Pol, Req> ResponseFuture<P, S, Pol, Req>
where
    P: Service<Req>,
    S: Service<Req>,
{
    #[inline]
    pub(crate) fn primary(future: P::Future, next: Option<Spare<S, Req, Pol>>, shared: Arc<Shared>) -> Self {
        Self {
            state: State::Primary { future, next },
            shared,
            skipped: Vec::new(),
            because: None,
            early: None,
        }
    }

    /// The primary let through as its breaker's early probe, the secondary (its records in
    /// `skipped`) being open too.
    pub(crate) fn early_primary(
        future: P::Future,
        next: Option<Spare<S, Req, Pol>>,
        skipped: Vec<Skipped>,
        shared: Arc<Shared>,
    ) -> Self {
        Self {
            state: State::Primary { future, next },
            shared,
            skipped,
            because: None,
            early: Some(0),
        }
    }

    /// The secondary, after the primary was skipped (`skipped`); `probed_early`: let through
    /// as its breaker's early probe, both being open.
    pub(crate) fn secondary(
        future: S::Future,
        skipped: Vec<Skipped>,
        shared: Arc<Shared>,
        probed_early: bool,
    ) -> Self {
        Self {
            state: State::Secondary { future, held: None },
            shared,
            skipped,
            because: None,
            early: probed_early.then_some(1),
        }
    }
}

impl<P, S, Pol, Req> Future for ResponseFuture<P, S, Pol, Req>
where
    P: Service<Req>,
    P::Error: Into<BoxError>,
    P::Response: RecordProvenance,
    S: Service<Req, Response = P::Response>,
    S::Error: Into<BoxError>,
    Pol: Policy<Req, P::Response, P::Error>,
{
    type Output = Result<P::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Primary { future, next } => {
                    let result = ready!(future.poll(cx));
                    let Some(Spare {
                        secondary,
                        clone,
                        request,
                        mut policy,
                    }) = next.take()
                    else {
                        this.state.set(State::Done);
                        let skipped = mem::take(this.skipped);
                        return Poll::Ready(finish_early(
                            this.shared,
                            0,
                            result.map_err(Into::into),
                            skipped,
                            *this.early == Some(0),
                        ));
                    };
                    // Falls back when the route leads to the secondary (`to_any_of` may not).
                    let onward = policy.route(result.as_ref()).resolve(&this.shared.names, 0);
                    let fall = onward.after(0, 2).is_some();
                    *this.because = onward.because();
                    // With an early probe, the secondary's records from `poll_ready`: if the
                    // request moves on, its readiness now supersedes them.
                    let stale = this.skipped.len();
                    let held = match result {
                        Ok(mut res) if !fall => {
                            this.state.set(State::Done);
                            this.shared
                                .served(&mut res, 0, mem::take(this.skipped), *this.early == Some(0));
                            return Poll::Ready(Ok(res));
                        }
                        Ok(res) => Some(Ok(res)),
                        Err(e) => {
                            let e = e.into();
                            match unavailable(&e, &this.shared.names[0]) {
                                Some(open) => {
                                    this.skipped.extend(open);
                                    None
                                }
                                None if fall => Some(Err(e)),
                                None => {
                                    this.state.set(State::Done);
                                    let skipped = mem::take(this.skipped);
                                    return Poll::Ready(Err(chain_error(&this.shared.names[0], e, skipped)));
                                }
                            }
                        }
                    };
                    this.skipped.drain(..stale);
                    // Only now is the secondary cloned (from the spare the service keeps).
                    this.state.set(State::Ready {
                        secondary: clone(&lock(&secondary)),
                        request: Some(request),
                        held,
                    });
                }
                StateProj::Ready {
                    secondary,
                    request,
                    held,
                } => match secondary.poll_ready(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(())) => {
                        // The failed answer is kept until the secondary answers: a
                        // secondary that refuses the call (a `RejectOnCall` or keyed
                        // breaker) leaves it standing.
                        let held = held.take();
                        let request = request.take().expect("request taken twice");
                        let future = secondary.call(request);
                        this.state.set(State::Secondary { future, held });
                    }
                    Poll::Ready(Err(e)) => {
                        let e = e.into();
                        let held = held.take();
                        this.state.set(State::Done);
                        let mut skipped = mem::take(this.skipped);
                        return Poll::Ready(match held {
                            None => Err(chain_error(&this.shared.names[1], e, skipped)),
                            Some(held) => {
                                // Nowhere to go: the primary's own answer stands.
                                skipped.extend(skip_err(&this.shared.names[1], e));
                                finish_early(this.shared, 0, held, skipped, *this.early == Some(0))
                            }
                        });
                    }
                },
                StateProj::Secondary { future, held } => {
                    let result = ready!(future.poll(cx)).map_err(Into::into);
                    let held = held.take();
                    this.state.set(State::Done);
                    let mut skipped = mem::take(this.skipped);
                    let Some(held) = held else {
                        return Poll::Ready(finish_early(
                            this.shared,
                            1,
                            result,
                            skipped,
                            *this.early == Some(1),
                        ));
                    };
                    if let Err(e) = &result {
                        if let Some(open) = unavailable(e, &this.shared.names[1]) {
                            // Refused at call time: nothing was sent, the primary's answer
                            // stands.
                            skipped.extend(open);
                            return Poll::Ready(finish_early(
                                this.shared,
                                0,
                                held,
                                skipped,
                                *this.early == Some(0),
                            ));
                        }
                    }
                    skipped.insert(
                        0,
                        skip_for(&this.shared.names[0], held).with_because(*this.because),
                    );
                    return Poll::Ready(finish_early(
                        this.shared,
                        1,
                        result,
                        skipped,
                        *this.early == Some(1),
                    ));
                }
                StateProj::Done => panic!("fallback ResponseFuture polled after completion"),
            }
        }
    }
}

impl<P, S, Pol, Req> fmt::Debug for ResponseFuture<P, S, Pol, Req>
where
    P: Service<Req>,
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Primary { .. } => "primary",
            State::Ready { .. } => "readying secondary",
            State::Secondary { .. } => "secondary",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("skipped", &self.skipped)
            .finish()
    }
}

pin_project! {
    /// The response future of [`Failover`](super::Failover).
    ///
    /// Like [`ResponseFuture`], it owns the member's response future, and with an
    /// `on_failure` policy the copy of the request and the clone of the next member being
    /// readied; dropping it releases every permit they hold.
    pub struct FailoverFuture<S, Pol, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        state: FState<S::Future, S>,
        next: Option<Next<S, Req, Pol>>,
        held: Option<Kept<S::Response>>,
        // Where the request may go next: the last route the policy gave.
        onward: Onward,
        skipped: Vec<Skipped>,
        shared: Arc<Shared>,
        // The member let through as an early probe, every member being open.
        early: Option<usize>,
        // With an early probe: where the records of the members after it begin in `skipped`.
        later: usize,
    }
}

pin_project! {
    #[project = FStateProj]
    enum FState<F, S> {
        Calling { #[pin] future: F, member: usize },
        Ready { service: S, member: usize },
        Done,
    }
}

/// A failed answer kept while later members are tried: whose, where its record goes in the
/// skipped list, and why the request moved on.
struct Kept<Res> {
    member: usize,
    at: usize,
    result: Held<Res>,
    because: Option<&'static str>,
}

/// After `member`'s failed early probe (`early`), as the request moves on to a later member:
/// drops the records of the members after it (from `later` on in `skipped`), taken at
/// `poll_ready` before the probe. They are stale: a member whose open period has ended since
/// may serve. Each member consulted now is recorded afresh; one the route passes over is not
/// listed, as in a walk without an early probe.
fn drop_stale(skipped: &mut Vec<Skipped>, early: Option<usize>, later: usize, member: usize) {
    if early == Some(member) {
        skipped.truncate(later);
    }
}

/// What an `on_failure` failover needs to try the next members.
pub(crate) struct Next<S, Req, Pol> {
    pub(crate) spares: Arc<[Mutex<S>]>,
    pub(crate) request: Option<Req>,
    pub(crate) policy: Pol,
    pub(crate) attempts_left: usize,
}

impl<S, Pol, Req> FailoverFuture<S, Pol, Req>
where
    S: Service<Req>,
{
    /// `early`: `member` was let through as an early probe, and the records of the members
    /// after it begin there in `skipped`.
    #[inline]
    pub(crate) fn new(
        future: S::Future,
        member: usize,
        next: Option<Next<S, Req, Pol>>,
        skipped: Vec<Skipped>,
        shared: Arc<Shared>,
        early: Option<usize>,
    ) -> Self {
        Self {
            state: FState::Calling { future, member },
            next,
            held: None,
            onward: Onward::Any { because: None },
            skipped,
            shared,
            early: early.map(|_| member),
            later: early.unwrap_or(0),
        }
    }
}

impl<S, Req> Future for FailoverFuture<S, OnOpen, Req>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    S::Response: RecordProvenance,
{
    type Output = Result<S::Response, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        match this.state.as_mut().project() {
            FStateProj::Calling { future, member } => {
                let member = *member;
                let result = ready!(future.poll(cx));
                this.state.set(FState::Done);
                let skipped = mem::take(this.skipped);
                let early = *this.early == Some(member);
                Poll::Ready(finish_early(
                    this.shared,
                    member,
                    result.map_err(Into::into),
                    skipped,
                    early,
                ))
            }
            _ => panic!("FailoverFuture polled after completion"),
        }
    }
}

impl<S, Pol, Req> Future for FailoverFuture<S, OnFailure<Pol>, Req>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    S::Response: RecordProvenance,
    Pol: Policy<Req, S::Response, S::Error>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let len = this.shared.names.len();
        loop {
            let after = match this.state.as_mut().project() {
                FStateProj::Calling { future, member } => {
                    let member = *member;
                    let result = ready!(future.poll(cx));
                    // Where the request goes, when a copy of it is in hand.
                    let route = match this.next {
                        Some(next) if next.request.is_some() => Some(
                            next.policy
                                .0
                                .route(result.as_ref())
                                .resolve(&this.shared.names, member),
                        ),
                        _ => None,
                    };
                    let result = result.map_err(Into::into);
                    let refused = match &result {
                        Err(e) => unavailable(e, &this.shared.names[member]),
                        Ok(_) => None,
                    };
                    if let Some(open) = refused {
                        // Refused at call time (a `RejectOnCall` or keyed breaker): nothing
                        // was sent, and an answer held from an earlier member stands. The
                        // request goes where it was going.
                        if route.is_none() {
                            this.state.set(FState::Done);
                            let mut skipped = mem::take(this.skipped);
                            return Poll::Ready(match this.held.take() {
                                Some(kept) => {
                                    skipped.extend(open);
                                    let early = *this.early == Some(kept.member);
                                    finish_early(this.shared, kept.member, kept.result, skipped, early)
                                }
                                None => finish(this.shared, member, result, skipped),
                            });
                        }
                        if this.onward.after(member, len).is_some() {
                            drop_stale(this.skipped, *this.early, *this.later, member);
                        }
                        this.skipped.extend(open);
                    } else {
                        // The member answered: an answer held from an earlier member is
                        // superseded by this one.
                        if let Some(kept) = this.held.take() {
                            let skip = skip_for(&this.shared.names[kept.member], kept.result);
                            this.skipped.insert(kept.at, skip.with_because(kept.because));
                        }
                        let early = *this.early == Some(member);
                        match (result, route) {
                            (Ok(mut res), None | Some(Onward::Caller)) => {
                                this.state.set(FState::Done);
                                this.shared
                                    .served(&mut res, member, mem::take(this.skipped), early);
                                return Poll::Ready(Ok(res));
                            }
                            (Err(e), None | Some(Onward::Caller)) => {
                                this.state.set(FState::Done);
                                let skipped = mem::take(this.skipped);
                                return Poll::Ready(Err(chain_error(&this.shared.names[member], e, skipped)));
                            }
                            (result, Some(onward)) => {
                                if onward.after(member, len).is_some() {
                                    drop_stale(this.skipped, *this.early, *this.later, member);
                                }
                                *this.held = Some(Kept {
                                    member,
                                    at: this.skipped.len(),
                                    result,
                                    because: onward.because(),
                                });
                                *this.onward = onward;
                            }
                        }
                    }
                    this.onward.after(member, len)
                }
                FStateProj::Ready { service, member } => {
                    let member = *member;
                    match service.poll_ready(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(())) => {
                            // An answer held from an earlier member is kept until this one
                            // answers: a refusal at call time leaves it standing.
                            let next = this.next.as_mut().expect("failover future lost its policy");
                            let request = next.request.take().expect("request taken twice");
                            next.attempts_left = next.attempts_left.saturating_sub(1);
                            if next.attempts_left > 0 && member + 1 < len {
                                next.request = next.policy.0.clone_request(&request);
                            }
                            let future = service.call(request);
                            this.state.set(FState::Calling { future, member });
                            continue;
                        }
                        Poll::Ready(Err(e)) => {
                            let e: BoxError = e.into();
                            match unavailable(&e, &this.shared.names[member]) {
                                Some(open) => this.skipped.extend(open),
                                // An earlier member's answer (a failure, but an answer)
                                // beats this member's readiness error.
                                None if matches!(this.held, Some(Kept { result: Ok(_), .. })) => {
                                    let failed = SkipReason::Failed(Arc::from(e));
                                    this.skipped
                                        .push(Skipped::new(this.shared.names[member].clone(), failed));
                                }
                                None => {
                                    // A member that cannot be readied is a failure like any
                                    // other: it becomes the answer if nothing else works.
                                    if let Some(kept) = this.held.take() {
                                        let skip = skip_for(&this.shared.names[kept.member], kept.result);
                                        this.skipped.insert(kept.at, skip.with_because(kept.because));
                                    }
                                    *this.held = Some(Kept {
                                        member,
                                        at: this.skipped.len(),
                                        result: Err(e),
                                        because: None,
                                    });
                                }
                            }
                            this.onward.after(member, len)
                        }
                    }
                }
                FStateProj::Done => panic!("FailoverFuture polled after completion"),
            };
            // Try the next member, if there is one.
            if let Some(after) = after {
                let next = this.next.as_ref().expect("failover future lost its policy");
                let service = lock(&next.spares[after]).clone();
                this.state.set(FState::Ready {
                    service,
                    member: after,
                });
                continue;
            }
            this.state.set(FState::Done);
            let skipped = mem::take(this.skipped);
            return Poll::Ready(match this.held.take() {
                Some(kept) => {
                    let early = *this.early == Some(kept.member);
                    finish_early(this.shared, kept.member, kept.result, skipped, early)
                }
                None => Err(all_unavailable(skipped)),
            });
        }
    }
}

impl<S, Pol, Req> fmt::Debug for FailoverFuture<S, Pol, Req>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            FState::Calling { member, .. } => ("calling", Some(*member)),
            FState::Ready { member, .. } => ("readying", Some(*member)),
            FState::Done => ("done", None),
        };
        f.debug_struct("FailoverFuture")
            .field("state", &state)
            .field("skipped", &self.skipped)
            .finish()
    }
}
