//! The permission to make one call, and the place its outcome is recorded.

use std::fmt;

use tokio::time::Instant;

use super::CircuitBreaker;
use crate::classify::Outcome;

/// Permission to make one call, from [`CircuitBreaker::try_acquire`].
///
/// Record the call's outcome with [`record`](Self::record). A permit dropped without an outcome
/// (the call was cancelled) is released and counts as nothing; a half-open probe slot goes back.
/// A permit measures its call's duration from `try_acquire` to `record`, for the slow-call rule.
#[must_use = "a permit is for one call: record its outcome, or drop it to release it"]
pub struct Permit {
    breaker: Option<CircuitBreaker>,
    generation: u64,
    probe: bool,
    start: Option<Instant>,
}

impl Permit {
    #[inline]
    pub(crate) fn closed(breaker: CircuitBreaker, generation: u64, start: Option<Instant>) -> Self {
        Self {
            breaker: Some(breaker),
            generation,
            probe: false,
            start,
        }
    }

    pub(crate) fn probe(breaker: CircuitBreaker, generation: u64, start: Option<Instant>) -> Self {
        Self {
            breaker: Some(breaker),
            generation,
            probe: true,
            start,
        }
    }

    /// A permit from a disabled breaker: records nothing.
    pub(crate) const fn passthrough() -> Self {
        Self {
            breaker: None,
            generation: 0,
            probe: false,
            start: None,
        }
    }

    /// Whether this permit is a half-open probe.
    pub const fn is_probe(&self) -> bool {
        self.probe
    }

    /// Records the call's outcome and gives the permit back.
    #[inline]
    pub fn record(mut self, outcome: Outcome) {
        if let Some(breaker) = self.breaker.take() {
            let elapsed = self.start.map(|s| s.elapsed());
            if self.probe {
                breaker
                    .shared
                    .record_probe(self.generation, Some(outcome), elapsed);
            } else {
                breaker.shared.record_closed(self.generation, outcome, elapsed);
            }
        }
    }
}

impl Drop for Permit {
    #[inline]
    fn drop(&mut self) {
        if let Some(breaker) = self.breaker.take() {
            if self.probe {
                breaker.shared.record_probe(self.generation, None, None);
            } else {
                breaker.shared.release_closed();
            }
        }
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("breaker", &self.breaker.as_ref().map(CircuitBreaker::name))
            .field("generation", &self.generation)
            .field("probe", &self.probe)
            .finish()
    }
}
