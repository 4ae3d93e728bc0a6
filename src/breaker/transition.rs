//! Transitions: deadlines, the move between states, and their announcement.

use std::time::Duration;

use super::{
    Event, GEN_MASK, LAST_DEADLINE, Locked, Pending, Reason, Shared, State, consecutive_word,
    saturating_nanos, state::pack, sync::Ordering,
};

impl Shared {
    /// The deadline `wait` after `now` (nanoseconds since the epoch); saturates at
    /// [`LAST_DEADLINE`] (whatever the wait: `Duration::MAX` is fine).
    pub(super) fn deadline(now: u64, wait: Duration) -> u64 {
        now.saturating_add(saturating_nanos(wait)).min(LAST_DEADLINE)
    }

    /// When half-open gives up on its probes in flight and reopens, in nanoseconds since the
    /// epoch: `half_open_max_wait` after the admission of the oldest probe in flight. `None`
    /// with no probe in flight (half-open waits for the next caller, who becomes the probe),
    /// or when the wait reaches past what the clock can hold (it never gives up then).
    pub(super) fn probe_deadline(&self, l: &Locked) -> Option<u64> {
        let oldest = l.probes.oldest()?;
        oldest
            .checked_add(saturating_nanos(l.config.half_open_max_wait))
            .filter(|&at| at <= LAST_DEADLINE)
    }

    /// Moves to `to` under the lock: new generation, fresh per-state bookkeeping, waiters woken.
    pub(super) fn transition(
        &self,
        l: &mut Locked,
        to: State,
        reason: Reason,
        now: u64,
        pending: &mut Pending,
    ) {
        let from = l.state;
        l.generation += 1;
        l.state = to;
        l.reason = Some(reason);
        l.server_wait = false;
        let mut open_for = None;
        match to {
            State::Open => {
                let d = if matches!(reason, Reason::ServerWait | Reason::Remote) {
                    l.opened_for // set by the caller
                } else {
                    let d = l.config.backoff.next(l.opened);
                    l.opened = l.opened.saturating_add(1);
                    d
                };
                l.opened_for = d;
                // A trip is where a breaker built before `tokio::time::pause()` learns of it.
                let now = if self.clock.recheck() {
                    self.clock.now()
                } else {
                    now
                };
                self.hot
                    .open_until
                    .store(Self::deadline(now, d), Ordering::Release);
                open_for = Some(d);
            }
            State::HalfOpen => {
                l.probes.clear();
                l.probe_successes = 0;
            }
            State::Closed => {
                l.opened = 0;
                self.clear_statistics(l);
            }
            State::ForcedOpen | State::Disabled => {}
        }
        self.recovery_transition(l, from, to);
        self.hot.word.store(pack(l.generation, to), Ordering::Release);
        l.waiters.wake_all();
        // A locked section makes one transition at most (open → half-open clears the probes,
        // so the half-open wait that follows it in `acquire_slow` cannot end in the same
        // section). Were there a second, the first would be announced here, under the lock.
        debug_assert!(pending.is_none(), "two transitions in one locked section");
        if let Some((f, t, r, d)) = pending.take() {
            self.announce(f, t, r, d);
        }
        *pending = Some((from, to, reason, open_for));
    }

    pub(super) fn clear_statistics(&self, l: &mut Locked) {
        self.hot
            .consecutive
            .store(consecutive_word(l.generation, 0), Ordering::Release);
        self.window().reset(l.generation);
    }

    pub(super) fn publish(&self, pending: Pending) {
        if let Some((from, to, reason, open_for)) = pending {
            self.announce(from, to, reason, open_for);
        }
    }

    pub(super) fn announce(&self, from: State, to: State, reason: Reason, open_for: Option<Duration>) {
        let name = &*self.name;
        let shadow = self.shadow.load(Ordering::Relaxed);
        match to {
            State::Open | State::ForcedOpen => tracing::warn!(
                breaker = name, from = %from, reason = %reason, open_for = ?open_for, shadow,
                "circuit breaker opened"
            ),
            State::Closed => {
                tracing::info!(breaker = name, from = %from, reason = %reason, shadow, "circuit breaker closed")
            }
            _ => {
                tracing::info!(breaker = name, from = %from, to = %to, reason = %reason, shadow, "circuit breaker changed state")
            }
        }
        if !self.listeners.is_empty() {
            self.emit(&Event::Transition {
                name: &self.name,
                from,
                to,
                reason,
                open_for,
                shadow,
            });
        }
    }

    pub(super) fn emit(&self, event: &Event<'_>) {
        for listener in &*self.listeners {
            listener(event);
        }
    }

    /// Ends an open period early (to `HalfOpen`, [`Reason::EarlyProbe`]) when the breaker is
    /// `Open` (in `generation`, if given) until a deadline of its own, not a server's wait.
    pub(super) fn end_open_early(
        &self,
        l: &mut Locked,
        generation: Option<u64>,
        now: u64,
        pending: &mut Pending,
    ) -> bool {
        // A refusal carries the generation's low bits (`GEN_MASK`).
        if l.state != State::Open || l.server_wait || generation.is_some_and(|g| g != l.generation & GEN_MASK)
        {
            return false;
        }
        self.transition(l, State::HalfOpen, Reason::EarlyProbe, now, pending);
        true
    }

    /// For a refusal's holder: ends the open period that refused in `generation` early, so the
    /// next `try_acquire` is admitted as a probe (see [`CircuitBreaker::try_probe_early`]).
    /// Whether it did.
    pub(crate) fn open_early(&self, generation: u64) -> bool {
        let mut pending = None;
        let ended = {
            let mut l = self.locked.lock();
            self.end_open_early(&mut l, Some(generation), self.clock.now(), &mut pending)
        };
        self.publish(pending);
        ended
    }
}
