//! The permission to make one call, and the place its outcome is recorded.

use std::fmt;

use super::Outcome;
use super::{GEN_MASK, Lane, STAMP_MASK, sync::Arc};

/// Permission to make one call, from [`CircuitBreaker::try_acquire`](super::CircuitBreaker::try_acquire).
///
/// Record the call's outcome with [`record`](Self::record). A permit dropped without an outcome
/// (the call was cancelled) is released and counts as nothing; a half-open probe slot goes back.
/// A permit measures its call's duration from `try_acquire` to `record`, for the slow-call rule.
#[must_use = "a permit is for one call: record its outcome, or drop it to release it"]
pub struct Permit {
    /// The lane of the thread that took it (see `lane.rs`), which holds the breaker.
    lane: Option<Arc<Lane>>,
    /// `start (47 bits) << 17 | generation (16 bits) << 1 | probe`. The start stamp is the
    /// admission in nanoseconds since the breaker's epoch, modulo 2^47 (39 hours), or 0 for a
    /// closed permit when no rule times calls (no clock read then); a probe's stamp also names
    /// its entry among the probes in flight. Two words in all, so that a permit moves in
    /// registers: a third word (a full start stamp) put the permit through the stack and cost
    /// about half again the closed path (store-forwarding stalls).
    tag: u64,
}

impl Permit {
    #[inline(always)]
    pub(crate) fn new(lane: Arc<Lane>, generation: u64, probe: bool, start: u64) -> Self {
        let tag = ((start & STAMP_MASK) << 17) | ((generation & GEN_MASK) << 1) | u64::from(probe);
        Self {
            lane: Some(lane),
            tag,
        }
    }

    /// A permit from a disabled breaker: records nothing.
    pub(crate) const fn passthrough() -> Self {
        Self { lane: None, tag: 0 }
    }

    /// Whether this permit is a half-open probe.
    pub const fn is_probe(&self) -> bool {
        self.tag & 1 == 1
    }

    /// The low 16 bits of the generation it was issued in.
    const fn generation(&self) -> u64 {
        (self.tag >> 1) & GEN_MASK
    }

    /// The start stamp (nanoseconds modulo 2^47).
    const fn start(&self) -> u64 {
        self.tag >> 17
    }

    /// Lets a closed permit go without a word to the listeners: it never stood for a call (a
    /// keyed registry's cached lookup that found its entry evicted meanwhile).
    pub(crate) fn discard_closed(mut self) {
        debug_assert!(!self.is_probe(), "a probe's slot must go back");
        self.lane = None;
    }

    /// Records the call's outcome and gives the permit back.
    #[inline(always)]
    pub fn record(mut self, outcome: Outcome) {
        self.record_in_place(outcome);
    }

    /// Records the outcome; the permit is spent (its drop does nothing).
    #[inline(always)]
    pub(crate) fn record_in_place(&mut self, outcome: Outcome) {
        if let Some(lane) = self.lane.take() {
            let shared = &*lane.shared;
            let elapsed = shared.elapsed_since(self.start());
            if self.is_probe() {
                shared.record_probe(self.generation(), self.start(), Some(outcome), elapsed);
            } else {
                shared.record_closed(self.generation(), outcome, elapsed);
            }
        }
    }
}

impl Drop for Permit {
    #[inline]
    fn drop(&mut self) {
        if let Some(lane) = self.lane.take() {
            if self.is_probe() {
                lane.shared
                    .record_probe(self.generation(), self.start(), None, None);
            } else {
                lane.shared.release_closed();
            }
        }
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("breaker", &self.lane.as_ref().map(|l| &*l.shared.name))
            .field("generation", &self.generation())
            .field("probe", &self.is_probe())
            .finish()
    }
}
