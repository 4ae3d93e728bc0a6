//! Recording outcomes: closed calls against the trip rules, half-open probes, server waits.

use std::time::Duration;

use super::Outcome;
use super::{
    Event, GEN_MASK, Reason, STAMP_MASK, Shared, State, consecutive_word, lane, saturating_nanos,
    state::unpack,
    sync::Ordering,
    window::{Counts, WindowStore},
};

impl Shared {
    /// A closed permit's start stamp: nanoseconds since the epoch (the permit keeps them
    /// modulo 2^47), or 0 when no rule needs call durations (no clock read then).
    #[inline]
    pub(super) fn call_start(&self) -> u64 {
        if self.rules.times_calls() {
            self.clock.now()
        } else {
            0
        }
    }

    /// The call's duration from its permit's start stamp (nanoseconds modulo 2^47), to the
    /// nanosecond, the resolution of the clock the breaker reads; `None` when calls are not
    /// timed. A call longer than 2^47 ns (39 hours) reads short.
    #[inline]
    pub(super) fn elapsed_since(&self, start: u64) -> Option<Duration> {
        if !self.rules.timed(start) {
            return None;
        }
        Some(Duration::from_nanos(
            self.clock.now().wrapping_sub(start) & STAMP_MASK,
        ))
    }

    #[cold]
    pub(super) fn emit_recorded(&self, outcome: Option<Outcome>, elapsed: Option<Duration>) {
        let name = &*self.name;
        match outcome {
            Some(outcome) => self.emit(&Event::Recorded {
                name,
                outcome,
                slow: self.is_slow(elapsed),
            }),
            None => self.emit(&Event::Released { name }),
        }
    }

    /// A closed permit dropped unrecorded: only listeners hear of it.
    pub(crate) fn release_closed(&self) {
        if !self.listeners.is_empty() {
            self.emit_recorded(None, None);
        }
    }

    /// Records the outcome of a call admitted while closed in `generation`.
    #[inline]
    pub(super) fn record_closed(&self, generation: u64, outcome: Outcome, elapsed: Option<Duration>) {
        if !self.listeners.is_empty() {
            self.emit_recorded(Some(outcome), elapsed);
        }
        let failure = match outcome {
            Outcome::Success => false,
            Outcome::Failure => true,
            Outcome::Ignore => return,
            Outcome::Trip(wait) => return self.trip(wait),
        };
        if unpack(self.hot.word.load(Ordering::Acquire)).0 & GEN_MASK != generation {
            return; // admitted before the last change
        }
        let slow = self.is_slow(elapsed);
        let mut reason = None;
        if let Some(n) = self.rules.consecutive() {
            reason = self.count_consecutive(generation, failure, n);
        }
        match self.window() {
            WindowStore::None => {}
            WindowStore::Count(w) => {
                if let Some(counts) = w.record(generation, failure, slow) {
                    reason = reason.or_else(|| self.rate_rule(&counts));
                }
            }
            WindowStore::Time(w) => {
                // The coarse clock: a bucket boundary is late by at most its margin (exact on
                // the pausable clock).
                let at = self.clock.coarse();
                if let Some(counts) = w.record(at, generation, lane::thread_id(), failure, slow) {
                    match self.rate_rule(&counts) {
                        Some(r) => reason = reason.or(Some(r)),
                        None if counts.calls >= self.rules.min_calls() => w.settle(at, generation),
                        None => {}
                    }
                }
            }
        }
        if let Some(reason) = reason {
            self.trip_closed(generation, reason);
        }
    }

    #[inline]
    pub(super) fn is_slow(&self, elapsed: Option<Duration>) -> bool {
        // In nanoseconds: a call is at most 2^47 ns long, and a threshold past `u64::MAX` ns
        // saturates there, so the comparison is the durations'.
        elapsed.is_some_and(|e| {
            self.rules
                .slow_threshold()
                .is_some_and(|threshold| saturating_nanos(e) > threshold)
        })
    }

    #[inline]
    pub(super) fn count_consecutive(&self, generation: u64, failure: bool, n: u32) -> Option<Reason> {
        let tag = generation & GEN_MASK;
        let mut cur = self.hot.consecutive.load(Ordering::Acquire);
        loop {
            if cur >> 32 != tag || (!failure && cur as u32 == 0) {
                return None;
            }
            let count = if failure {
                (cur as u32).saturating_add(1)
            } else {
                0
            };
            match self.hot.consecutive.compare_exchange_weak(
                cur,
                consecutive_word(generation, count),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return (failure && count >= n).then_some(Reason::ConsecutiveFailures),
                Err(actual) => cur = actual,
            }
        }
    }

    /// The rate rules, pinned (issue 13): trip iff `bad as f64 / calls as f64 >= threshold`,
    /// the quotient [`snapshot`](CircuitBreaker::snapshot) reports, so that the breaker never
    /// disagrees with its own snapshot. The division of two integers below 2^53 is correctly
    /// rounded, as is the parse of a decimal literal: a threshold written as the ratio `k/n`
    /// (`0.07` for 7 of 100) is the same `f64` as the quotient of any window at that ratio, so
    /// equality trips. Rounding is monotonic, so a greater ratio never reads below the
    /// threshold; and two different ratios `j/m` and `k/n` in `0..=1` differ by at least
    /// `1/(m·n)`, which for any window (`m < 2^32` calls) and `n < 2^20` is more than the
    /// spacing of `f64`s there (at most 2^-53), so a smaller ratio never rounds up to the
    /// threshold. (The former `failures >= rate * calls` rounded the product instead:
    /// `0.07 * 100.0` is `7.000000000000001`, so 7 failures of 100 did not trip.)
    pub(super) fn rate_rule(&self, c: &Counts) -> Option<Reason> {
        if c.calls < self.rules.min_calls() || c.calls == 0 {
            return None;
        }
        let rate = |bad: u32| f64::from(bad) / f64::from(c.calls);
        if self.rules.failure_rate().is_some_and(|r| rate(c.failures) >= r) {
            return Some(Reason::FailureRate);
        }
        if self.rules.slow_rate().is_some_and(|r| rate(c.slow) >= r) {
            return Some(Reason::SlowCalls);
        }
        None
    }

    #[cold]
    pub(super) fn trip_closed(&self, generation: u64, reason: Reason) {
        let mut pending = None;
        {
            let mut l = self.locked.lock();
            if l.generation & GEN_MASK == generation && l.state == State::Closed {
                self.transition(&mut l, State::Open, reason, self.clock.now(), &mut pending);
            }
        }
        self.publish(pending);
    }

    /// A server asked for a pause: open now, until the later of the current deadline and
    /// `now + min(wait, max_open_duration)`, whatever the generation.
    #[cold]
    pub(super) fn trip(&self, wait: Duration) {
        self.trip_for(wait, Reason::ServerWait);
    }

    pub(super) fn trip_for(&self, wait: Duration, reason: Reason) {
        let now = self.clock.now();
        let mut pending = None;
        {
            let mut l = self.locked.lock();
            let wait = wait.min(l.config.max_open);
            match l.state {
                State::ForcedOpen | State::Disabled => {}
                State::Open => {
                    let until = Self::deadline(now, wait);
                    l.recovery.saw_trip(until);
                    if until > self.hot.open_until.load(Ordering::Acquire) {
                        self.hot.open_until.store(until, Ordering::Release);
                        l.opened_for = wait;
                        l.server_wait = true;
                    }
                }
                State::Closed | State::HalfOpen => {
                    l.opened_for = wait;
                    self.transition(&mut l, State::Open, reason, now, &mut pending);
                    l.server_wait = true;
                }
            }
        }
        self.publish(pending);
    }

    /// Records the outcome of a half-open probe admitted at `admitted` (nanoseconds since the
    /// epoch modulo 2^47); `None`: dropped unrecorded, released.
    pub(super) fn record_probe(
        &self,
        generation: u64,
        admitted: u64,
        outcome: Option<Outcome>,
        elapsed: Option<Duration>,
    ) {
        if !self.listeners.is_empty() {
            self.emit_recorded(outcome, elapsed);
        }
        if let Some(Outcome::Trip(wait)) = outcome {
            self.release_probe(generation, admitted, None);
            return self.trip(wait);
        }
        let slow = self.is_slow(elapsed);
        self.release_probe(generation, admitted, outcome.map(|o| (o, slow)));
    }

    pub(super) fn release_probe(&self, generation: u64, admitted: u64, outcome: Option<(Outcome, bool)>) {
        let now = self.clock.now();
        let mut pending = None;
        {
            let mut l = self.locked.lock();
            if l.generation & GEN_MASK != generation || l.state != State::HalfOpen {
                return; // the probe's half-open period is over; its slot went with it
            }
            l.probes.release(admitted, now);
            match outcome {
                Some((Outcome::Success, false)) => {
                    l.probe_successes += 1;
                    if l.probe_successes >= l.config.half_open_successes {
                        self.transition(&mut l, State::Closed, Reason::ProbesSucceeded, now, &mut pending);
                    }
                }
                Some((Outcome::Success, true)) => {
                    self.transition(&mut l, State::Open, Reason::SlowCalls, now, &mut pending)
                }
                Some((Outcome::Failure, _)) => {
                    self.transition(&mut l, State::Open, Reason::ProbeFailed, now, &mut pending)
                }
                _ => {} // ignored or dropped: the permit goes back
            }
            if pending.is_none() {
                l.waiters.wake_all(); // a slot is free
            }
        }
        self.publish(pending);
    }
}
