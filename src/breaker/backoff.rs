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
        if !secs.is_finite() || secs >= self.max.as_secs_f64() {
            self.max
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    /// The wait before the `attempt`-th probe, with jitter applied.
    pub(crate) fn next(&self, attempt: u32) -> Duration {
        let d = self.delay(attempt);
        if self.jitter == 0.0 {
            return d;
        }
        let spread = self.jitter * (2.0 * fastrand::f64() - 1.0);
        let secs = (d.as_secs_f64() * (1.0 + spread)).min(self.max.as_secs_f64());
        Duration::from_secs_f64(secs.max(0.0))
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
