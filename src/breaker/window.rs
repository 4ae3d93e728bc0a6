//! Sliding windows of outcomes for the rate rules.
//!
//! The count window is lock-free: a ring of slots, each tagged with the generation (state
//! epoch) it was written in, and one packed word of running counts tagged the same way. A
//! record evicts the slot's previous outcome and applies the difference to the counts, so every
//! record is O(1). Closing the breaker starts a fresh window by bumping the tag: slots from older
//! generations count as empty, so a stale outcome can never leak into the new window's decisions.
//!
//! A healthy window writes nothing: while the counts say the window is full of fast successes,
//! a fast success returns after reading them, without taking a slot. The window is still the
//! last `size` outcomes, exactly: every slot holds the same outcome, so the one a success would
//! evict is a success, whichever it is, and the ring index is needed only to order outcomes
//! that differ. The first failure or slow call takes the next slot and is evicted `size` calls
//! later, as in a ring that had moved on every call. (So threads sharing a healthy breaker
//! share no written cache line; with a ring index written per call they did.)
//!
//! The time window (`time.rs`) is lock-free too: ten buckets a tenth of the window wide, one
//! ring of them per lane, Hystrix's rolling number.

use super::sync::{AtomicU32, AtomicU64, Ordering};

pub(crate) mod time;

/// The largest count window: counts are packed as 16-bit signed fields.
pub(crate) const MAX_COUNT_WINDOW: u32 = i16::MAX as u32;

const FAILURE_BIT: u32 = 0b10;
const SLOW_BIT: u32 = 0b01;
/// Slots carry the same 16 generation bits as permits.
const SLOT_GEN_MASK: u32 = super::GEN_MASK as u32;
/// The counts word's tag: the generation bits permits carry (at most 16).
const GEN16: u64 = super::GEN_MASK;
const _: () = assert!(GEN16 <= 0xffff);

/// Counts over the current window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) calls: u32,
    pub(crate) failures: u32,
    pub(crate) slow: u32,
}

#[derive(Debug)]
pub(crate) struct CountWindow {
    next: AtomicU64,
    /// `gen16 << 48 | calls << 32 | failures << 16 | slow`, each count a wrapping 16-bit field.
    counts: AtomicU64,
    slots: Box<[AtomicU32]>,
}

fn field(word: u64, shift: u32) -> i16 {
    (word >> shift) as u16 as i16
}

fn fields_to_counts(word: u64) -> Option<Counts> {
    let (calls, failures, slow) = (field(word, 32), field(word, 16), field(word, 0));
    // While a record races with a wrap-around of the ring, a count can be off by the records
    // still applying their difference; such a reading decides nothing.
    if calls < 0 || failures < 0 || slow < 0 || failures > calls || slow > calls {
        return None;
    }
    Some(Counts {
        calls: calls as u32,
        failures: failures as u32,
        slow: slow as u32,
    })
}

impl CountWindow {
    pub(crate) fn new(size: u32, generation: u64) -> Self {
        let slots = (0..size).map(|_| AtomicU32::new(0)).collect();
        let w = Self {
            next: AtomicU64::new(0),
            counts: AtomicU64::new(0),
            slots,
        };
        w.reset(generation);
        w
    }

    /// Starts an empty window for `generation`. Slots of older generations count as empty.
    pub(crate) fn reset(&self, generation: u64) {
        self.counts.store((generation & GEN16) << 48, Ordering::Release);
    }

    /// Records one outcome of `generation`. Returns the counts after it when they changed (and
    /// the generation is still current), so that the caller checks the rules only then.
    pub(crate) fn record(&self, generation: u64, failure: bool, slow: bool) -> Option<Counts> {
        let size = self.slots.len() as u64;
        if !failure
            && !slow
            && self.counts.load(Ordering::Acquire) == ((generation & GEN16) << 48 | size << 32)
        {
            // Full of fast successes: this one would evict a fast success, and with every
            // slot alike, which one does not matter. The window is the same multiset of the
            // last `size` outcomes, and nothing is written (see the module docs).
            return None;
        }
        let slot = &self.slots[(self.next.fetch_add(1, Ordering::Relaxed) % size) as usize];
        let slot_gen = (generation as u32) & SLOT_GEN_MASK;
        let new = (slot_gen << 2) | if failure { FAILURE_BIT } else { 0 } | if slow { SLOW_BIT } else { 0 };
        let mut old = slot.load(Ordering::Relaxed);
        loop {
            if old == new {
                return None; // same outcome evicted: nothing changes
            }
            let old_gen = old >> 2;
            let ahead = old_gen.wrapping_sub(slot_gen) & SLOT_GEN_MASK;
            if ahead != 0 && ahead <= SLOT_GEN_MASK / 2 {
                return None; // a newer generation owns the slot: this record is stale
            }
            match slot.compare_exchange_weak(old, new, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => break,
                Err(actual) => old = actual,
            }
        }
        let live = (old >> 2) == slot_gen;
        let bit = |word: u32, b: u32| i16::from(live && word & b != 0);
        let d_calls = 1 - i16::from(live);
        let d_fail = i16::from(failure) - bit(old, FAILURE_BIT);
        let d_slow = i16::from(slow) - bit(old, SLOW_BIT);
        let gen16 = generation & GEN16;
        let mut cur = self.counts.load(Ordering::Acquire);
        loop {
            if cur >> 48 != gen16 {
                return None; // the window was reset since this call was admitted
            }
            let put = |shift: u32, d: i16| (field(cur, shift).wrapping_add(d) as u16 as u64) << shift;
            let next = (gen16 << 48) | put(32, d_calls) | put(16, d_fail) | put(0, d_slow);
            match self
                .counts
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return fields_to_counts(next),
                Err(actual) => cur = actual,
            }
        }
    }

    pub(crate) fn counts(&self) -> Counts {
        fields_to_counts(self.counts.load(Ordering::Acquire)).unwrap_or_default()
    }

    /// The outcomes in the window, `(failure, slow)`, oldest first (for a reload: under the
    /// breaker's lock; a record racing it may be missed). The ring read from the next slot
    /// on is the order of the calls: a success that took no slot (the window full of fast
    /// successes) left every slot alike, so where it would have gone does not matter.
    pub(crate) fn outcomes(&self) -> Vec<(bool, bool)> {
        let gen16 = (self.counts.load(Ordering::Acquire) >> 48) as u32;
        let size = self.slots.len();
        let next = (self.next.load(Ordering::Relaxed) % size as u64) as usize;
        (0..size)
            .map(|i| self.slots[(next + i) % size].load(Ordering::Acquire))
            .filter(|&slot| slot >> 2 == gen16)
            .map(|slot| (slot & FAILURE_BIT != 0, slot & SLOW_BIT != 0))
            .collect()
    }

    /// A window of `size` for `generation` holding the latest `size` of `outcomes` (oldest
    /// first), in order.
    pub(crate) fn with_outcomes(size: u32, generation: u64, outcomes: &[(bool, bool)]) -> Self {
        let w = Self::new(size, generation);
        let kept = &outcomes[outcomes.len().saturating_sub(size as usize)..];
        let slot_gen = (generation as u32) & SLOT_GEN_MASK;
        let (mut failures, mut slow) = (0u64, 0u64);
        for (slot, &(failure, is_slow)) in w.slots.iter().zip(kept) {
            let bits = if failure { FAILURE_BIT } else { 0 } | if is_slow { SLOW_BIT } else { 0 };
            slot.store((slot_gen << 2) | bits, Ordering::Relaxed);
            failures += u64::from(failure);
            slow += u64::from(is_slow);
        }
        let calls = kept.len() as u64;
        w.next.store(calls, Ordering::Relaxed);
        w.counts.store(
            (generation & GEN16) << 48 | calls << 32 | failures << 16 | slow,
            Ordering::Release,
        );
        w
    }
}

/// The window the rate rules read, in its configured shape.
#[derive(Debug)]
pub(crate) enum WindowStore {
    /// No rate rule.
    None,
    Count(Box<CountWindow>),
    Time(Box<time::TimeWindow>),
}

impl WindowStore {
    /// The window's counts at `now` (nanoseconds since the epoch); `None` with no window.
    pub(crate) fn counts(&self, now: u64) -> Option<Counts> {
        match self {
            WindowStore::None => None,
            WindowStore::Count(w) => Some(w.counts()),
            WindowStore::Time(w) => Some(w.counts(now)),
        }
    }

    /// Starts an empty window for `generation`.
    pub(crate) fn reset(&self, generation: u64) {
        match self {
            WindowStore::None => {}
            WindowStore::Count(w) => w.reset(generation),
            WindowStore::Time(w) => w.reset(generation),
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    /// The counts after every record are those of the last `size` outcomes, whether or not a
    /// healthy window skipped the ring, for long runs of successes broken by failures and slow
    /// calls.
    #[test]
    fn count_window_holds_exactly_the_last_n_outcomes() {
        let mut rng = fastrand::Rng::with_seed(7);
        for size in [1, 2, 3, 10, 100] {
            let w = CountWindow::new(size, 1);
            let mut model = VecDeque::new();
            for _ in 0..20_000 {
                // Bursts: mostly successes, so the window is often full of them.
                let (failure, slow) = (rng.u32(..40) == 0, rng.u32(..60) == 0);
                w.record(1, failure, slow);
                model.push_back((failure, slow));
                if model.len() > size as usize {
                    model.pop_front();
                }
                let expected = Counts {
                    calls: model.len() as u32,
                    failures: model.iter().filter(|o| o.0).count() as u32,
                    slow: model.iter().filter(|o| o.1).count() as u32,
                };
                assert_eq!(w.counts(), expected, "size {size}");
            }
        }
    }

    #[test]
    fn a_healthy_count_window_writes_nothing() {
        let w = CountWindow::new(4, 1);
        for _ in 0..4 {
            assert!(w.record(1, false, false).is_some());
        }
        let next = w.next.load(Ordering::Relaxed);
        for _ in 0..1000 {
            assert_eq!(w.record(1, false, false), None);
        }
        assert_eq!(
            w.next.load(Ordering::Relaxed),
            next,
            "the ring index did not move"
        );
        assert_eq!(
            w.record(1, true, false),
            Some(Counts {
                calls: 4,
                failures: 1,
                slow: 0
            }),
            "a failure takes a slot"
        );
        for _ in 0..3 {
            assert_eq!(w.counts().failures, 1);
            w.record(1, false, false);
        }
        assert_eq!(w.counts().failures, 1, "still among the last four");
        w.record(1, false, false);
        assert_eq!(w.counts().failures, 0, "evicted four calls later");
    }
}
