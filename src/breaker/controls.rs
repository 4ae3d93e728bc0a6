//! Operator controls: force open, disable, reset, shadow mode, trips from outside.

use std::time::Duration;

use super::{CircuitBreaker, Event, Origin, Override, Reason, State, state::pack, sync::Ordering};

impl CircuitBreaker {
    /// Opens the breaker until [`reset`](Self::reset), whatever the calls do.
    ///
    /// An operator's action: announced as [`Event::Override`] (and shared with the other
    /// replicas by a sync component, see [Manual overrides](crate#manual-overrides)).
    pub fn force_open(&self) {
        self.apply_override(Override::ForceOpen, Origin::Local);
    }

    /// Switches the breaker off until [`reset`](Self::reset): everything is admitted, nothing
    /// is recorded.
    ///
    /// An operator's action, as [`force_open`](Self::force_open) is.
    pub fn disable(&self) {
        self.apply_override(Override::Disable, Origin::Local);
    }

    /// Closes the breaker and clears its statistics and backoff, whatever its state.
    ///
    /// An operator's action, as [`force_open`](Self::force_open) is.
    pub fn reset(&self) {
        self.apply_override(Override::Reset, Origin::Local);
    }

    /// Applies an operator's `action` that comes from `origin`: what
    /// [`force_open`](Self::force_open), [`disable`](Self::disable), [`reset`](Self::reset)
    /// and [`set_shadow`](Self::set_shadow) do, with [`Origin::Local`].
    ///
    /// A sync component applies the actions of other replicas with
    /// [`Origin::Remote`]`(their origin)`: the [`Event::Override`] it announces then names that
    /// replica, the transition it causes, if any, has the reason [`Reason::Remote`] (as a
    /// remote trip's: so that, for example, only the acting replica alerts), and the component
    /// does not share it again (no echo). The action is traced at INFO with its origin.
    ///
    /// ```
    /// use tower_breaker::{CircuitBreaker, State, breaker::{Origin, Override}};
    ///
    /// let breaker = CircuitBreaker::builder("openai").consecutive_failures(5).build().unwrap();
    /// breaker.apply_override(Override::ForceOpen, Origin::Remote("web-2"));
    /// assert_eq!(breaker.state(), State::ForcedOpen);
    /// ```
    pub fn apply_override(&self, action: Override, origin: Origin<'_>) {
        let shared = &**self.shared();
        tracing::info!(breaker = %shared.name, action = action.as_str(), origin = %origin, "circuit breaker override");
        if !shared.listeners.is_empty() {
            shared.emit(&Event::Override {
                name: &shared.name,
                action,
                origin,
            });
        }
        // Another replica's action changes the state for a remote reason, as its trips do: a
        // component that reacts to transitions (alerts) tells the fleet's echo from the act.
        let reason = |local| if origin.is_local() { local } else { Reason::Remote };
        match action {
            Override::ForceOpen => self.manual(State::ForcedOpen, reason(Reason::Forced)),
            Override::Disable => self.manual(State::Disabled, reason(Reason::Disabled)),
            Override::Reset => self.manual(State::Closed, reason(Reason::Reset)),
            Override::Shadow(shadow) => {
                shared.shadow.store(shadow, Ordering::Relaxed);
            }
        }
    }

    /// Switches shadow mode on or off at runtime (see [Shadow mode](crate#shadow-mode)).
    ///
    /// In shadow mode the breaker runs its state machine and publishes every event, but never
    /// refuses a call: a call it would refuse passes, counted in
    /// [`Snapshot::would_reject`](super::Snapshot::would_reject) and announced as [`Event::WouldReject`]. Switched off while
    /// notionally open, it refuses from the next call; switched on, it lets calls through
    /// from the next call. The state, the open deadline and the windows are kept.
    ///
    /// An operator's action, as [`force_open`](Self::force_open) is: announced as
    /// [`Event::Override`] (even when the mode was already `shadow`), and shared with the
    /// other replicas by a sync component.
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
        self.apply_override(Override::Shadow(shadow), Origin::Local);
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
