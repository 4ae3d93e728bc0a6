//! The trip rules' settings that the closed path reads without the lock: atomics, read
//! `Relaxed` (a plain load on x86 and ARM, as the immutable fields they replace), written only
//! by a reload ([`CircuitBreaker::reconfigure`](super::CircuitBreaker::reconfigure)) under the
//! breaker's lock. The settings read only under the lock (backoff, half-open settings,
//! `max_open_duration`) live in `Locked`'s copy of the [`Config`].
//!
//! A call recorded while a reload runs may be judged by some of the old settings and some of
//! the new: each setting is one word, read once per call.

use std::time::Duration;

use super::{
    Config, saturating_nanos,
    sync::{AtomicU32, AtomicU64, Ordering},
};

/// `timed_since` of a breaker whose calls are not timed (no slow-call rule).
const UNTIMED: u64 = u64::MAX;

#[derive(Debug)]
pub(super) struct Rules {
    /// The consecutive-failures threshold; 0: the rule is off.
    consecutive: AtomicU32,
    /// The failure-rate threshold's bits; `0.0`: the rule is off (a rate of zero is refused).
    failure_rate: AtomicU64,
    /// The slow-call rate's bits; `0.0`: the rule is off.
    slow_rate: AtomicU64,
    /// The slow-call threshold, in nanoseconds.
    slow_threshold: AtomicU64,
    /// Since when (nanoseconds since the epoch) calls are timed: a closed permit's start stamp
    /// is 0 when it was admitted untimed, so a permit from before a reload that switched the
    /// slow-call rule on is not mistaken for a call as long as the breaker's age. [`UNTIMED`]
    /// while no rule times calls.
    timed_since: AtomicU64,
    min_calls: AtomicU32,
}

impl Rules {
    pub(super) fn new(config: &Config) -> Self {
        let rules = Self {
            consecutive: AtomicU32::new(0),
            failure_rate: AtomicU64::new(0),
            slow_rate: AtomicU64::new(0),
            slow_threshold: AtomicU64::new(0),
            timed_since: AtomicU64::new(UNTIMED),
            min_calls: AtomicU32::new(0),
        };
        rules.set(config, 0);
        rules
    }

    /// Takes `config`'s trip rules (under the breaker's lock); `now`: when a slow-call rule
    /// that was off starts timing calls.
    pub(super) fn set(&self, config: &Config, now: u64) {
        self.consecutive
            .store(config.consecutive.unwrap_or(0), Ordering::Relaxed);
        self.failure_rate
            .store(config.failure_rate.unwrap_or(0.0).to_bits(), Ordering::Relaxed);
        let (threshold, rate) = config.slow.unwrap_or((Duration::ZERO, 0.0));
        self.slow_threshold
            .store(saturating_nanos(threshold), Ordering::Relaxed);
        self.slow_rate.store(rate.to_bits(), Ordering::Relaxed);
        let timed = self.timed_since.load(Ordering::Relaxed);
        let since = match (config.slow.is_some(), timed == UNTIMED) {
            (true, true) => now,
            (true, false) => timed,
            (false, _) => UNTIMED,
        };
        self.timed_since.store(since, Ordering::Relaxed);
        self.min_calls.store(config.min_calls, Ordering::Relaxed);
    }

    #[inline(always)]
    pub(super) fn times_calls(&self) -> bool {
        self.timed_since.load(Ordering::Relaxed) != UNTIMED
    }

    /// Whether a call whose permit's start stamp is `start` was timed: `false` when it was
    /// admitted untimed (stamp 0) before the slow-call rule was switched on.
    #[inline(always)]
    pub(super) fn timed(&self, start: u64) -> bool {
        match self.timed_since.load(Ordering::Relaxed) {
            UNTIMED => false,
            since => start != 0 || since == 0,
        }
    }

    #[inline(always)]
    pub(super) fn consecutive(&self) -> Option<u32> {
        match self.consecutive.load(Ordering::Relaxed) {
            0 => None,
            n => Some(n),
        }
    }

    #[inline(always)]
    pub(super) fn failure_rate(&self) -> Option<f64> {
        let r = f64::from_bits(self.failure_rate.load(Ordering::Relaxed));
        (r > 0.0).then_some(r)
    }

    #[inline(always)]
    pub(super) fn slow_rate(&self) -> Option<f64> {
        let r = f64::from_bits(self.slow_rate.load(Ordering::Relaxed));
        (r > 0.0).then_some(r)
    }

    /// The slow-call threshold in nanoseconds (saturated), when the rule is on.
    #[inline(always)]
    pub(super) fn slow_threshold(&self) -> Option<u64> {
        self.slow_rate()
            .map(|_| self.slow_threshold.load(Ordering::Relaxed))
    }

    #[inline(always)]
    pub(super) fn min_calls(&self) -> u32 {
        self.min_calls.load(Ordering::Relaxed)
    }
}
