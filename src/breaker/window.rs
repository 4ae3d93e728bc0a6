//! Sliding windows of outcomes for the rate rules.
//!
//! The count window is lock-free: a ring of slots, each tagged with the generation (state
//! epoch) it was written in, and one packed word of running counts tagged the same way. A
//! record evicts the slot's previous outcome and applies the difference to the counts, so every
//! record is O(1) and an all-success steady state writes nothing but the ring index. Closing the
//! breaker starts a fresh window by bumping the tag: slots from older generations count as empty,
//! so a stale outcome can never leak into the new window's decisions.
//!
//! The time window is a ring of ten buckets (a tenth of the window each) with running totals,
//! kept under the breaker's lock; a record clears at most ten expired buckets.

use super::sync::{AtomicU32, AtomicU64, Ordering};

/// The largest count window: counts are packed as 16-bit signed fields.
pub(crate) const MAX_COUNT_WINDOW: u32 = i16::MAX as u32;

const FAILURE_BIT: u32 = 0b10;
const SLOW_BIT: u32 = 0b01;
/// Slots carry the same 16 generation bits as permits.
const SLOT_GEN_MASK: u32 = super::GEN_MASK as u32;

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
        self.counts.store((generation & 0xffff) << 48, Ordering::Release);
    }

    /// Records one outcome of `generation`. Returns the counts after it when they changed (and
    /// the generation is still current), so that the caller checks the rules only then.
    pub(crate) fn record(&self, generation: u64, failure: bool, slow: bool) -> Option<Counts> {
        let size = self.slots.len() as u64;
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
        let gen16 = generation & 0xffff;
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
}

const BUCKETS: usize = 10;

/// A time-based window of ten buckets; lives under the breaker's lock. Bucket `i` holds the
/// counts of the one epoch in `head - 9 ..= head` that is `i` modulo ten.
#[derive(Debug)]
pub(crate) struct TimeWindow {
    width: u64,
    head: u64,
    buckets: [Counts; BUCKETS],
    total: Counts,
}

impl TimeWindow {
    pub(crate) fn new(window_nanos: u64) -> Self {
        Self {
            width: (window_nanos / BUCKETS as u64).max(1),
            head: 0,
            buckets: [Counts::default(); BUCKETS],
            total: Counts::default(),
        }
    }

    pub(crate) fn reset(&mut self) {
        self.buckets = [Counts::default(); BUCKETS];
        self.total = Counts::default();
    }

    /// Expires the buckets that fell out of the window at `now` (nanoseconds since the
    /// breaker's epoch); touches at most ten buckets. Returns the bucket to count into.
    fn advance(&mut self, now: u64) -> usize {
        let epoch = now / self.width;
        if epoch > self.head {
            let from = self.head.max(epoch.saturating_sub(BUCKETS as u64)) + 1;
            for e in from..=epoch {
                let b = &mut self.buckets[(e % BUCKETS as u64) as usize];
                self.total.calls -= b.calls;
                self.total.failures -= b.failures;
                self.total.slow -= b.slow;
                *b = Counts::default();
            }
            self.head = epoch;
        }
        // A clock read just before another record's lands in the newest bucket.
        (self.head % BUCKETS as u64) as usize
    }

    pub(crate) fn record(&mut self, now: u64, failure: bool, slow: bool) -> Counts {
        let i = self.advance(now);
        for c in [&mut self.buckets[i], &mut self.total] {
            c.calls += 1;
            c.failures += u32::from(failure);
            c.slow += u32::from(slow);
        }
        self.total
    }

    pub(crate) fn counts(&mut self, now: u64) -> Counts {
        self.advance(now);
        self.total
    }
}
