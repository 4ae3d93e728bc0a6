//! How long the breaker stays open: fixed or exponential, with optional jitter.

use std::time::Duration;

use super::ConfigError;

/// How long an open breaker waits before it lets a probe through.
///
/// The first opening after the breaker was closed waits the first value; each reopening
/// (a failed or timed-out probe) waits the next. Closing resets the sequence.
///
/// ```
/// use std::time::Duration;
/// use tower_breaker::Backoff;
///
/// let b = Backoff::exponential(Duration::from_secs(5), 2.0, Duration::from_secs(60));
/// assert_eq!(b.delay(0), Duration::from_secs(5));
/// assert_eq!(b.delay(1), Duration::from_secs(10));
/// assert_eq!(b.delay(4), Duration::from_secs(60)); // 80 s, capped at max
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    base: Duration,
    factor: f64,
    max: Duration,
    jitter: f64,
}

impl Backoff {
    /// The same wait every time.
    pub const fn fixed(wait: Duration) -> Self {
        Self {
            base: wait,
            factor: 1.0,
            max: wait,
            jitter: 0.0,
        }
    }

    /// `base`, then `base * factor`, `base * factor²`, ... capped at `max`.
    pub const fn exponential(base: Duration, factor: f64, max: Duration) -> Self {
        Self {
            base,
            factor,
            max,
            jitter: 0.0,
        }
    }

    /// Spreads each wait uniformly over `wait * (1 - fraction) ..= wait * (1 + fraction)`
    /// (then capped at the maximum), so that replicas tripped together do not probe together.
    /// `fraction` must lie in `0.0..=1.0`; off (0) by default.
    pub const fn with_jitter(mut self, fraction: f64) -> Self {
        self.jitter = fraction;
        self
    }

    /// The wait before the `attempt`-th probe (0 for the first opening), without jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = self.factor.powi(attempt.min(i32::MAX as u32) as i32);
        let secs = self.base.as_secs_f64() * factor;
        self.clamp(secs)
    }

    /// `secs` as a wait of at most `max`. Near `Duration::MAX`, `max.as_secs_f64()` rounds up
    /// to 2^64 s, past what a `Duration` holds, so the conversion is checked, never assumed.
    fn clamp(&self, secs: f64) -> Duration {
        if secs.is_nan() || secs >= self.max.as_secs_f64() {
            return self.max;
        }
        Duration::try_from_secs_f64(secs.max(0.0)).map_or(self.max, |d| d.min(self.max))
    }

    /// The wait before the `attempt`-th probe, with jitter applied.
    pub(crate) fn next(&self, attempt: u32) -> Duration {
        let d = self.delay(attempt);
        if self.jitter == 0.0 {
            return d;
        }
        let spread = self.jitter * (2.0 * fastrand::f64() - 1.0);
        self.clamp(d.as_secs_f64() * (1.0 + spread))
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.base.is_zero() {
            return Err(ConfigError::new("open duration", "must be greater than zero"));
        }
        if !self.factor.is_finite() || self.factor < 1.0 {
            return Err(ConfigError::new(
                "backoff factor",
                "must be a finite number >= 1.0",
            ));
        }
        if self.max < self.base {
            return Err(ConfigError::new("backoff max", "must be at least the base wait"));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(ConfigError::new("backoff jitter", "must lie in 0.0..=1.0"));
        }
        Ok(())
    }
}

impl Default for Backoff {
    /// A fixed 30 s wait.
    fn default() -> Self {
        Self::fixed(Duration::from_secs(30))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// Near `Duration::MAX`, `as_secs_f64` rounds up to 2^64 s, which `from_secs_f64` refuses
    /// with a panic: every wait must come back through the checked conversion.
    #[test]
    fn waits_near_duration_max_stay_within_max() {
        for max in [
            Duration::MAX,
            Duration::MAX - Duration::from_nanos(1),
            Duration::from_secs(u64::MAX),
        ] {
            let fixed = Backoff::fixed(max).with_jitter(1.0);
            assert_eq!(fixed.delay(0), max);
            for _ in 0..100 {
                assert!(fixed.next(0) <= max);
            }
            let exp = Backoff::exponential(Duration::from_secs(1), 2.0, max).with_jitter(0.5);
            assert_eq!(exp.delay(1), Duration::from_secs(2));
            // `powi` may be off in its last bits (Miri makes it so on purpose).
            let near = |d: Duration, secs: f64| (d.as_secs_f64() / secs - 1.0).abs() < 1e-9;
            assert!(near(exp.delay(63), 2f64.powi(63)), "{:?}", exp.delay(63));
            assert!(exp.delay(64) <= max && near(exp.delay(64), max.as_secs_f64()));
            assert_eq!(exp.delay(u32::MAX), max);
            for attempt in [0, 1, 63, 64, 65, 1000, u32::MAX] {
                assert!(exp.next(attempt) <= max);
            }
        }
    }

    #[test]
    fn unvalidated_backoffs_do_not_panic() {
        // `delay` is public on any `Backoff`, validated or not.
        let zero_base = Backoff::exponential(Duration::ZERO, f64::INFINITY, Duration::from_secs(9));
        assert_eq!(zero_base.delay(0), Duration::ZERO);
        assert_eq!(
            zero_base.delay(1),
            Duration::from_secs(9),
            "0 * inf is NaN: the max"
        );
        let shrinking = Backoff::exponential(Duration::from_secs(8), -2.0, Duration::from_secs(60));
        assert_eq!(shrinking.delay(1), Duration::ZERO, "a negative wait is none");
        let nan = Backoff::exponential(Duration::from_secs(1), f64::NAN, Duration::from_secs(5));
        assert_eq!(nan.delay(3), Duration::from_secs(5));
    }
}
