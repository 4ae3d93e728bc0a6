//! Admission: permits, refusals, early probes and waiting for a change.

use std::task::Waker;
use tokio::time::Instant;

use super::{
    CircuitBreaker, CircuitOpen, Event, GEN_MASK, NO_DEADLINE, Pending, Permit, Reason, State, WaitKey,
    state::unpack, sync::Ordering,
};

impl CircuitBreaker {
    /// Asks to make a call. `Ok(permit)`: make it and record its outcome on the permit.
    /// `Err(CircuitOpen)`: don't; the circuit is open.
    #[inline(always)]
    pub fn try_acquire(&self) -> Result<Permit, CircuitOpen> {
        self.acquire_with(|refused| refused)
    }

    /// [`try_acquire`](Self::try_acquire) with the refusal boxed where it is built: the error
    /// of `FailFast`'s `poll_ready`. The result is two words, so it comes back in registers
    /// (with a refusal by value it is 72 bytes, returned through memory): the closed path
    /// through the layer went from 23.1 to 20.7 ns here.
    #[inline(always)]
    pub(crate) fn try_acquire_boxed(&self) -> Result<Permit, Box<CircuitOpen>> {
        self.acquire_with(Box::new)
    }

    /// The one admission path of [`try_acquire`](Self::try_acquire) and
    /// [`try_acquire_boxed`](Self::try_acquire_boxed): `wrap` turns a refusal into the error
    /// where it is built.
    #[inline(always)]
    pub(super) fn acquire_with<E>(&self, wrap: impl FnOnce(CircuitOpen) -> E) -> Result<Permit, E> {
        let shared = &**self.shared();
        let (generation, state) = unpack(shared.hot.word.load(Ordering::Acquire));
        match state {
            State::Closed => Ok(Permit::new(self.lane(), generation, false, shared.call_start())),
            State::Disabled => Ok(Permit::passthrough()),
            State::Open => {
                let until = shared.hot.open_until.load(Ordering::Acquire);
                // The coarse clock decides far from the deadline, the precise one near it.
                match shared.clock.before(until) {
                    Some(now) if now >= until => self.acquire_slow(now).map_err(wrap),
                    _ => self.reject(generation, state, until, wrap),
                }
            }
            State::HalfOpen | State::ForcedOpen => self.acquire_slow(shared.clock.now()).map_err(wrap),
        }
    }

    /// A permit if the breaker is closed, else `None`: the closed path of
    /// [`try_acquire`](Self::try_acquire), which runs no listener and takes no lock (a keyed
    /// registry takes it from its thread's cache, or under its shard's shared lock).
    #[inline(always)]
    pub(crate) fn try_acquire_closed(&self) -> Option<Permit> {
        let shared = &**self.shared();
        let (generation, state) = unpack(shared.hot.word.load(Ordering::Acquire));
        (state == State::Closed).then(|| Permit::new(self.lane(), generation, false, shared.call_start()))
    }

    #[cold]
    pub(super) fn acquire_slow(&self, now: u64) -> Result<Permit, CircuitOpen> {
        let shared = &**self.shared();
        let mut pending: Pending = None;
        let result = {
            let mut l = shared.locked.lock();
            if l.state == State::Open
                && now >= shared.hot.open_until.load(Ordering::Acquire)
                && !shared.recovery_holds(&mut l, now, &mut pending)
            {
                shared.transition(&mut l, State::HalfOpen, Reason::OpenElapsed, now, &mut pending);
            }
            if l.state == State::HalfOpen && shared.probe_deadline(&l).is_some_and(|deadline| now >= deadline)
            {
                shared.transition(&mut l, State::Open, Reason::ProbeTimedOut, now, &mut pending);
            }
            match l.state {
                State::Closed => Ok(Permit::new(self.lane(), l.generation, false, shared.call_start())),
                State::Disabled => Ok(Permit::passthrough()),
                State::HalfOpen if l.probes.len() < l.config.half_open_permits => {
                    // A probe's start stamp is its admission, which its release removes.
                    l.probes.admit(now);
                    Ok(Permit::new(self.lane(), l.generation, true, now))
                }
                State::Open => Err((
                    l.generation,
                    State::Open,
                    shared.hot.open_until.load(Ordering::Acquire),
                )),
                state => Err((l.generation, state, NO_DEADLINE)),
            }
        };
        shared.publish(pending);
        result.or_else(|(generation, state, until)| self.reject(generation, state, until, |refused| refused))
    }

    /// Refuses a call, or, in shadow mode, lets it through as a would-be rejection.
    /// `wrap` makes the error where the refusal is built (a boxed one then moves as a pointer).
    #[cold]
    pub(super) fn reject<E>(
        &self,
        generation: u64,
        state: State,
        until: u64,
        wrap: impl FnOnce(CircuitOpen) -> E,
    ) -> Result<Permit, E> {
        if self.shared().shadow.load(Ordering::Relaxed) {
            return Ok(self.would_reject(state));
        }
        Err(wrap(self.refusal(generation, state, until)))
    }

    /// Shadow mode: counts, traces and announces a call the breaker would have refused in
    /// `state`, and lets it through on a permit that records nothing (a notionally open
    /// breaker, as an open one, judges no call but its probes).
    #[cold]
    pub(super) fn would_reject(&self, state: State) -> Permit {
        let shared = &**self.shared();
        shared.would_reject.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(breaker = %shared.name, state = %state, shadow = true, "circuit breaker would have rejected a call");
        if !shared.listeners.is_empty() {
            shared.emit(&Event::WouldReject {
                name: &shared.name,
                state,
            });
        }
        Permit::passthrough()
    }

    /// Traces a refusal and tells the listeners.
    #[inline(always)]
    pub(super) fn announce_refusal(&self, state: State) {
        let shared = &**self.shared();
        tracing::debug!(breaker = %shared.name, state = %state, "circuit breaker rejected a call");
        if !shared.listeners.is_empty() {
            shared.emit(&Event::Rejected {
                name: &shared.name,
                state,
            });
        }
    }

    #[inline(always)]
    pub(super) fn refusal(&self, generation: u64, state: State, until: u64) -> CircuitOpen {
        let shared = &**self.shared();
        self.announce_refusal(state);
        CircuitOpen::new(
            shared.refusal_name.clone(),
            shared.clock.epoch(),
            until,
            shared.id,
            state,
            generation,
        )
    }

    /// Like [`try_acquire`](Self::try_acquire), but an open breaker lets this call through
    /// now, as its half-open probe, instead of refusing it until its open period ends.
    ///
    /// For a caller with nowhere else to go (every provider of a failover chain open, say):
    /// the breaker moves to `HalfOpen` at once (the transition's reason is
    /// [`Reason::EarlyProbe`]) and the permit is its probe, recorded as any probe is: a
    /// success closes the breaker (with `half_open_successes(1)`), a failure opens it again
    /// with the backoff's next period.
    ///
    /// Only an open period the breaker chose itself is cut short (a trip rule, a failed or
    /// timed-out probe). An open period a server asked for, or extended ([`Outcome::Trip`](super::Outcome::Trip),
    /// e.g. a `Retry-After`, a quota error; or a trip from another replica,
    /// [`Reason::Remote`]), is kept, and so are [`force_open`](Self::force_open) and
    /// [`disable`](Self::disable): in those states, and in `Closed` and `HalfOpen`, this is
    /// `try_acquire`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_breaker::{CircuitBreaker, Outcome, State};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let breaker = CircuitBreaker::builder("openai").consecutive_failures(1).build().unwrap();
    /// breaker.try_acquire().unwrap().record(Outcome::Failure); // open for 30 s
    /// assert!(breaker.try_acquire().is_err());
    ///
    /// let probe = breaker.try_probe_early().unwrap(); // now, not in 30 s
    /// assert!(probe.is_probe());
    /// assert_eq!(breaker.state(), State::HalfOpen);
    /// probe.record(Outcome::Success);
    /// assert_eq!(breaker.state(), State::Closed);
    /// # }
    /// ```
    pub fn try_probe_early(&self) -> Result<Permit, CircuitOpen> {
        let shared = &**self.shared();
        let now = shared.clock.now();
        let mut pending = None;
        let probe = {
            let mut l = shared.locked.lock();
            // Half-open starts with no probe in flight and at least one permit: this is one.
            // A probe's start stamp is its admission, which its release removes.
            shared.end_open_early(&mut l, None, now, &mut pending).then(|| {
                l.probes.admit(now);
                Permit::new(self.lane(), l.generation, true, now)
            })
        };
        shared.publish(pending);
        match probe {
            Some(permit) => Ok(permit),
            None => self.try_acquire(),
        }
    }

    /// For a waiting service: registers `waker` in the service's slot (`key`, taken on the
    /// first wait) to be woken when the breaker may admit again (a transition or a released
    /// probe). Returns `false` when the breaker may admit already, so the caller must try
    /// again at once; the slot is freed then.
    pub(crate) fn wait_for_change(
        &self,
        refused: &CircuitOpen,
        key: &mut Option<WaitKey>,
        waker: &Waker,
    ) -> bool {
        let shared = &**self.shared();
        let mut l = shared.locked.lock();
        let may_admit = l.generation & GEN_MASK != refused.generation()
            || (l.state == State::HalfOpen && l.probes.len() < l.config.half_open_permits)
            || (l.state == State::Open
                && shared.clock.now() >= shared.hot.open_until.load(Ordering::Acquire));
        if may_admit {
            if let Some(key) = key.take() {
                l.waiters.remove(key);
            }
            return false;
        }
        l.waiters.register(key, waker);
        true
    }

    /// A waiting service was admitted, or dropped while waiting: frees its slot and waker.
    pub(crate) fn stop_waiting(&self, key: WaitKey) {
        self.shared().locked.lock().waiters.remove(key);
    }

    /// How many wakers of waiting services are registered (for tests).
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> (usize, usize) {
        let l = self.shared().locked.lock();
        (l.waiters.registered(), l.waiters.slots())
    }

    /// When the breaker will next change by itself: the end of the open period, or of the
    /// half-open wait for a decision.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let shared = &**self.shared();
        let l = shared.locked.lock();
        match l.state {
            State::Open => Some(
                shared
                    .clock
                    .instant_at(shared.hot.open_until.load(Ordering::Acquire)),
            ),
            State::HalfOpen => shared.probe_deadline(&l).map(|at| shared.clock.instant_at(at)),
            _ => None,
        }
    }
}
