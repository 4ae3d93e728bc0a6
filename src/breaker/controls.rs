//! Operator controls: force open, disable, reset, shadow mode, trips from outside.

use std::time::Duration;

use super::{CircuitBreaker, Reason, State, state::pack, sync::Ordering};

impl CircuitBreaker {
    /// Opens the breaker until [`reset`](Self::reset), whatever the calls do.
    pub fn force_open(&self) {
        self.manual(State::ForcedOpen, Reason::Forced);
    }

    /// Switches the breaker off until [`reset`](Self::reset): everything is admitted, nothing
    /// is recorded.
    pub fn disable(&self) {
        self.manual(State::Disabled, Reason::Disabled);
    }

    /// Closes the breaker and clears its statistics and backoff, whatever its state.
    pub fn reset(&self) {
        self.manual(State::Closed, Reason::Reset);
    }

    /// Switches shadow mode on or off at runtime (see [Shadow mode](crate#shadow-mode)).
    ///
    /// In shadow mode the breaker runs its state machine and publishes every event, but never
    /// refuses a call: a call it would refuse passes, counted in
    /// [`Snapshot::would_reject`](super::Snapshot::would_reject) and announced as [`Event::WouldReject`](super::Event::WouldReject). Switched off while
    /// notionally open, it refuses from the next call; switched on, it lets calls through
    /// from the next call. The state, the open deadline and the windows are kept.
    ///
    /// ```
    /// use tower_breaker::{CircuitBreaker, Outcome, State};
    ///
    /// let breaker = CircuitBreaker::builder("openai").consecutive_failures(1).shadow(true).build().unwrap();
    /// breaker.try_acquire().unwrap().record(Outcome::Failure);
    /// assert_eq!(breaker.state(), State::Open); // notionally
    /// assert!(breaker.try_acquire().is_ok()); // passes, as a would-be rejection
    /// assert_eq!(breaker.snapshot().would_reject, 1);
    ///
    /// breaker.set_shadow(false); // enforce
    /// assert!(breaker.try_acquire().is_err());
    /// ```
    pub fn set_shadow(&self, shadow: bool) {
        let shared = &**self.shared();
        if shared.shadow.swap(shadow, Ordering::Relaxed) != shadow {
            tracing::info!(breaker = %shared.name, shadow, "circuit breaker shadow mode switched");
        }
    }

    /// Whether the breaker is in shadow mode (see [`set_shadow`](Self::set_shadow)).
    pub fn is_shadow(&self) -> bool {
        self.shared().shadow.load(Ordering::Relaxed)
    }

    pub(super) fn manual(&self, to: State, reason: Reason) {
        let shared = &**self.shared();
        let mut pending = None;
        {
            let mut l = shared.locked.lock();
            if l.state != to {
                shared.transition(&mut l, to, reason, shared.clock.now(), &mut pending);
            } else if to == State::Closed {
                // Not a change of state, but a fresh start: calls admitted before it are stale.
                l.generation += 1;
                shared
                    .hot
                    .word
                    .store(pack(l.generation, State::Closed), Ordering::Release);
                shared.clear_statistics(&mut l);
            }
        }
        shared.publish(pending);
    }

    /// Opens the breaker now for `wait` (clamped to `max_open_duration`), as if a call had
    /// returned [`Outcome::Trip`](super::Outcome::Trip): a longer wait already in force stays. Forced-open and
    /// disabled breakers are left alone.
    pub fn trip(&self, wait: Duration) {
        self.shared().trip(wait);
    }

    /// Like [`trip`](Self::trip), for a trip learned from another replica: the transition's
    /// reason is [`Reason::Remote`], so a sync component can tell it from local trips and not
    /// echo it back.
    pub fn trip_remote(&self, wait: Duration) {
        self.shared().trip_for(wait, Reason::Remote);
    }
}
