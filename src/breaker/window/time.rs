//! The time window, lock-free: Hystrix's rolling number, striped.
//!
//! The window is ten buckets, each a tenth of it (`width`). Each *stripe* has its own ring of
//! ten buckets, and a bucket is a tag (`window generation << 48 | bucket epoch`,
//! `epoch = now / width`) and three counters. A breaker has a stripe per lane (per core, up to
//! 8), each *owned* by the first thread that records on it (by its thread slot, which no other
//! thread ever has), and one shared stripe. A record finds its bucket (`epoch % 10`): if the tag
//! is its own, it adds to the counters; if the tag is older (the bucket last counted a past
//! epoch, or a past generation of the window), it *rotates* the bucket: zeroes the counters and
//! publishes its own tag. Nothing else ever moves: an expired bucket is simply one whose tag is
//! not among the last ten epochs, so no thread sweeps, and the window's counts are the sum, over
//! stripes, of the buckets whose tags are live for the reader's epoch.
//!
//! The owner of a stripe is its only writer, so it adds with plain loads and stores (an atomic
//! read-modify-write per call cost as much as the rest of a record); a thread whose stripe
//! another thread owns (more threads than lanes) adds to the shared stripe with atomic
//! additions, and rotates a bucket there by a compare-and-swap of its tag to a rotating mark.
//!
//! **Counts are exact** single-threaded, and for every owner. On the shared stripe, a record
//! that finds its bucket mid-rotation by another thread is **lost**: at most one record per
//! thread racing that one rotation, and a bucket rotates once per `width`. A record whose
//! clock read is a whole window behind another's (a thread descheduled for `width × 10`
//! between reading the clock and recording) may count in a newer bucket. A stale record (its
//! permit from before the window was cleared) never counts: it is dropped when it meets a
//! bucket of the newer generation, and a bucket it claims carries its old generation, which no
//! reader counts.
//!
//! **Deciding**: a rate rule needs the window's counts after a record, which cost a sum over
//! every stripe's ten buckets. Within one epoch a success cannot make a rule trip once the
//! window holds at least `min_calls` calls and no rule tripped (the counts only grow, and the
//! rates only fall). So after an evaluation that decided nothing with `min_calls` reached, the
//! window is marked *settled* for that epoch and generation, and the successes that follow in
//! the same epoch add to their counter and return: the closed path of a healthy breaker is one
//! clock read, one tag load and one atomic add. A failure, a slow call, the first record of an
//! epoch and every record until `min_calls` is reached still sum the window.

use super::Counts;
use crate::breaker::sync::{AtomicU32, AtomicU64, Ordering};

const BUCKETS: u64 = 10;
/// A bucket that counts nothing yet (and the settled mark of no epoch).
const EMPTY: u64 = u64::MAX;
/// A bucket being rotated: readers skip it, recorders count elsewhere.
const ROTATING: u64 = u64::MAX - 1;
const EPOCH_BITS: u32 = 48;
const EPOCH_MASK: u64 = (1 << EPOCH_BITS) - 1;
const GEN_MASK: u64 = 0xffff;

/// `generation (16 bits) << 48 | epoch (48 bits)`. An epoch is `now / width`; 2^48 of them
/// are 78 hours at the smallest width (1 ns) and 8,900 years at 1 ms: a bucket untouched for
/// that long and matching a live epoch's index could read as live, which no window lives to see.
const fn tag(generation: u64, epoch: u64) -> u64 {
    ((generation & GEN_MASK) << EPOCH_BITS) | (epoch & EPOCH_MASK)
}

#[derive(Debug)]
struct Bucket {
    tag: AtomicU64,
    calls: AtomicU32,
    failures: AtomicU32,
    slow: AtomicU32,
}

/// One stripe's ring, in cache lines of its own (another stripe's writes never touch them),
/// and its owner: the thread (slot + 1) that alone writes it, 0 before one claims it.
#[derive(Debug)]
#[repr(align(128))]
struct Stripe {
    buckets: [Bucket; BUCKETS as usize],
    owner: AtomicU64,
}

impl Stripe {
    fn new() -> Self {
        Self {
            buckets: std::array::from_fn(|_| Bucket {
                tag: AtomicU64::new(EMPTY),
                calls: AtomicU32::new(0),
                failures: AtomicU32::new(0),
                slow: AtomicU32::new(0),
            }),
            owner: AtomicU64::new(0),
        }
    }
}

/// A lock-free time window of ten buckets, striped by lane.
#[derive(Debug)]
pub(crate) struct TimeWindow {
    width: u64,
    /// The generation the window was last cleared in: records of older permits are stale.
    generation: AtomicU64,
    /// The tag (generation, epoch) in which successes need no decision; `EMPTY` for none.
    settled: AtomicU64,
    /// A power of two of them, each written by its owner alone.
    stripes: Box<[Stripe]>,
    /// Written by the threads whose stripe another thread owns, with atomic additions.
    shared: Box<Stripe>,
}

impl TimeWindow {
    /// A window of `window_nanos`, for permits of `generation`, with `stripes` stripes
    /// (rounded up to a power of two, at least one).
    pub(crate) fn new(window_nanos: u64, generation: u64, stripes: usize) -> Self {
        let n = stripes.max(1).next_power_of_two();
        Self {
            width: (window_nanos / BUCKETS).max(1),
            generation: AtomicU64::new(generation),
            settled: AtomicU64::new(EMPTY),
            stripes: (0..n).map(|_| Stripe::new()).collect(),
            shared: Box::new(Stripe::new()),
        }
    }

    /// Starts an empty window for the permits of `generation` (under the breaker's lock).
    pub(crate) fn reset(&self, generation: u64) {
        self.generation.store(generation, Ordering::Release);
        self.settled.store(EMPTY, Ordering::Relaxed);
        for stripe in self.stripes.iter().chain([&*self.shared]) {
            for b in &stripe.buckets {
                b.tag.store(EMPTY, Ordering::Release);
            }
        }
    }

    /// Records one outcome of a permit of `generation` (its low bits) at `at` (nanoseconds
    /// since the breaker's epoch), by the thread of `slot` (unique to the thread; `None` where
    /// threads have no slot of their own, under loom). Returns the window's counts after it
    /// when a rule may have to decide: `None` for a stale record, and for a success in a
    /// settled epoch.
    pub(crate) fn record(
        &self,
        at: u64,
        generation: u64,
        slot: Option<usize>,
        failure: bool,
        slow: bool,
    ) -> Option<Counts> {
        let current = self.generation.load(Ordering::Acquire);
        if current & super::super::GEN_MASK != generation & super::super::GEN_MASK {
            return None; // admitted before the window was cleared
        }
        let epoch = at / self.width;
        let mine = tag(current, epoch);
        let counted = match slot.map(|slot| (&self.stripes[slot & (self.stripes.len() - 1)], slot as u64 + 1))
        {
            Some((stripe, me)) if Self::owns(stripe, me) => Self::add_own(stripe, epoch, mine, failure, slow),
            _ => Self::add_shared(&self.shared, epoch, mine, failure, slow),
        };
        if !counted {
            return None; // lost to a rotation racing on the shared stripe (see the module docs)
        }
        if !failure && !slow && self.settled.load(Ordering::Acquire) == mine {
            return None;
        }
        Some(self.sum(epoch, current))
    }

    /// The counts a record just returned decided nothing, with `min_calls` reached: the
    /// successes that follow in the same epoch need no decision.
    pub(crate) fn settle(&self, at: u64, generation: u64) {
        let current = self.generation.load(Ordering::Acquire);
        if current & super::super::GEN_MASK == generation & super::super::GEN_MASK {
            self.settled
                .store(tag(current, at / self.width), Ordering::Release);
        }
    }

    /// The counts over the window at `at`.
    pub(crate) fn counts(&self, at: u64) -> Counts {
        self.sum(at / self.width, self.generation.load(Ordering::Acquire))
    }

    /// Whether thread `me` owns `stripe`, claiming it if no thread does yet.
    #[inline]
    fn owns(stripe: &Stripe, me: u64) -> bool {
        let owner = stripe.owner.load(Ordering::Relaxed);
        owner == me
            || (owner == 0
                && stripe
                    .owner
                    .compare_exchange(0, me, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok())
    }

    /// Whether a bucket tagged `t` is left alone by a record tagged `mine`: `Some(true)` when
    /// it is of a newer window (the record is stale, and dropped), `Some(false)` when it is of
    /// this window and a later epoch (the record, from a clock read behind another one, counts
    /// there), `None` when it is older (to rotate).
    fn keeps(t: u64, mine: u64) -> Option<bool> {
        if t == EMPTY {
            return None;
        }
        let ahead = ((t >> EPOCH_BITS).wrapping_sub(mine >> EPOCH_BITS)) & GEN_MASK;
        if ahead != 0 && ahead < GEN_MASK / 2 {
            return Some(true);
        }
        let later = (t & EPOCH_MASK).wrapping_sub(mine & EPOCH_MASK) & EPOCH_MASK;
        (ahead == 0 && later < EPOCH_MASK / 2).then_some(false)
    }

    /// Adds the record to its bucket in a stripe that this thread alone writes: plain loads
    /// and stores, no atomic read-modify-write (which cost as much as the rest of the
    /// record), and a rotation that no other writer can meet.
    #[inline]
    fn add_own(stripe: &Stripe, epoch: u64, mine: u64, failure: bool, slow: bool) -> bool {
        let b = &stripe.buckets[(epoch % BUCKETS) as usize];
        let t = b.tag.load(Ordering::Relaxed);
        if t != mine {
            match Self::keeps(t, mine) {
                Some(true) => return true,
                Some(false) => {}
                None => {
                    b.calls.store(0, Ordering::Relaxed);
                    b.failures.store(0, Ordering::Relaxed);
                    b.slow.store(0, Ordering::Relaxed);
                    b.tag.store(mine, Ordering::Release);
                }
            }
        }
        let bump = |c: &AtomicU32| c.store(c.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
        bump(&b.calls);
        if failure {
            bump(&b.failures);
        }
        if slow {
            bump(&b.slow);
        }
        true
    }

    /// Adds the record to its bucket in the shared stripe; `false` when the bucket is being
    /// rotated by another thread (the record is lost).
    fn add_shared(stripe: &Stripe, epoch: u64, mine: u64, failure: bool, slow: bool) -> bool {
        let b = &stripe.buckets[(epoch % BUCKETS) as usize];
        let mut t = b.tag.load(Ordering::Acquire);
        while t != mine {
            if t == ROTATING {
                return false;
            }
            match Self::keeps(t, mine) {
                Some(true) => return true,
                Some(false) => break,
                None => {}
            }
            match b
                .tag
                .compare_exchange(t, ROTATING, Ordering::Acquire, Ordering::Acquire)
            {
                Ok(_) => {
                    b.calls.store(0, Ordering::Relaxed);
                    b.failures.store(0, Ordering::Relaxed);
                    b.slow.store(0, Ordering::Relaxed);
                    b.tag.store(mine, Ordering::Release);
                    break;
                }
                Err(actual) => t = actual,
            }
        }
        b.calls.fetch_add(1, Ordering::Relaxed);
        if failure {
            b.failures.fetch_add(1, Ordering::Relaxed);
        }
        if slow {
            b.slow.fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    /// The sum of the buckets of `generation` that are live in `epoch`: epochs
    /// `epoch - 9 ..= epoch`, each in its slot.
    fn sum(&self, epoch: u64, generation: u64) -> Counts {
        let (mut calls, mut failures, mut slow) = (0u64, 0u64, 0u64);
        for ep in epoch.saturating_sub(BUCKETS - 1)..=epoch {
            let (c, f, s) = self.bucket_sum(ep, generation);
            calls += c;
            failures += f;
            slow += s;
        }
        let cap = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        Counts {
            calls: cap(calls),
            failures: cap(failures).min(cap(calls)),
            slow: cap(slow).min(cap(calls)),
        }
    }

    /// The counts of epoch `ep` of `generation`, over every stripe.
    fn bucket_sum(&self, ep: u64, generation: u64) -> (u64, u64, u64) {
        let (mut calls, mut failures, mut slow) = (0u64, 0u64, 0u64);
        for stripe in self.stripes.iter().chain([&*self.shared]) {
            let b = &stripe.buckets[(ep % BUCKETS) as usize];
            if b.tag.load(Ordering::Acquire) == tag(generation, ep) {
                calls += u64::from(b.calls.load(Ordering::Relaxed));
                failures += u64::from(b.failures.load(Ordering::Relaxed));
                slow += u64::from(b.slow.load(Ordering::Relaxed));
            }
        }
        (calls, failures, slow)
    }

    /// A window of `window_nanos` for `generation`, with `stripes` stripes, holding the calls
    /// of `old` still inside it at `now`, to bucket resolution (for a reload, under the
    /// breaker's lock; a record racing it may be missed): each bucket of `old` live at `now`
    /// that ends after the start of the new window's oldest live bucket is kept whole,
    /// counted in the new bucket where it starts, or in the oldest live one if it starts
    /// before that. Lengthened, the window keeps every call; shortened, a kept bucket's calls
    /// expire with the new bucket they were counted in.
    pub(crate) fn carried(
        old: &TimeWindow,
        window_nanos: u64,
        generation: u64,
        stripes: usize,
        now: u64,
    ) -> Self {
        let new = Self::new(window_nanos, generation, stripes);
        let (w, w2) = (old.width, new.width);
        let (e, e2) = (now / w, now / w2);
        let oldest = e2.saturating_sub(BUCKETS - 1);
        let old_generation = old.generation.load(Ordering::Acquire);
        for ep in e.saturating_sub(BUCKETS - 1)..=e {
            let (calls, failures, slow) = old.bucket_sum(ep, old_generation);
            if calls == 0 || ep.saturating_add(1).saturating_mul(w) <= oldest.saturating_mul(w2) {
                continue;
            }
            let at = (ep.saturating_mul(w) / w2).max(oldest);
            let b = &new.shared.buckets[(at % BUCKETS) as usize];
            if b.tag.load(Ordering::Relaxed) != tag(generation, at) {
                b.tag.store(tag(generation, at), Ordering::Release);
            }
            let add = |c: &AtomicU32, n: u64| {
                let n = u32::try_from(n).unwrap_or(u32::MAX);
                c.store(c.load(Ordering::Relaxed).saturating_add(n), Ordering::Relaxed);
            };
            add(&b.calls, calls);
            add(&b.failures, failures);
            add(&b.slow, slow);
        }
        new
    }

    /// Forgets the settled mark: after a reload, the next success decides again (a new
    /// `min_calls` may not be reached any more).
    pub(crate) fn unsettle(&self) {
        self.settled.store(EMPTY, Ordering::Relaxed);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    const W: u64 = 10_000; // a window of 10 µs: buckets of 1 µs

    fn counts(calls: u32, failures: u32, slow: u32) -> Counts {
        Counts {
            calls,
            failures,
            slow,
        }
    }

    #[test]
    fn counts_the_last_ten_buckets_exactly() {
        let w = TimeWindow::new(W, 1, 4);
        w.record(0, 1, Some(0), true, false);
        w.record(999, 1, Some(1), false, true);
        w.record(5_000, 1, Some(2), false, false);
        assert_eq!(w.counts(9_999), counts(3, 1, 1));
        // At 10_000 the first bucket (0..1000) expires.
        assert_eq!(w.counts(10_000), counts(1, 0, 0));
        assert_eq!(w.counts(14_999), counts(1, 0, 0));
        assert_eq!(w.counts(15_000), counts(0, 0, 0));
    }

    #[test]
    fn a_bucket_is_reused_after_it_expired() {
        let w = TimeWindow::new(W, 1, 1);
        w.record(500, 1, Some(0), true, false);
        // 10 µs later: the same slot, a new epoch.
        assert_eq!(w.record(10_500, 1, Some(0), false, false), Some(counts(1, 0, 0)));
        assert_eq!(w.counts(10_900), counts(1, 0, 0));
    }

    #[test]
    fn a_reset_empties_it_and_drops_stale_records() {
        let w = TimeWindow::new(W, 1, 2);
        w.record(0, 1, Some(0), true, false);
        w.reset(2);
        assert_eq!(w.counts(1), counts(0, 0, 0));
        assert_eq!(
            w.record(2, 1, Some(0), true, false),
            None,
            "a permit of generation 1 is stale"
        );
        assert_eq!(w.record(3, 2, Some(0), false, false), Some(counts(1, 0, 0)));
    }

    #[test]
    fn a_settled_epoch_skips_the_sum_for_successes_only() {
        let w = TimeWindow::new(W, 1, 2);
        assert_eq!(w.record(0, 1, Some(0), false, false), Some(counts(1, 0, 0)));
        w.settle(0, 1);
        assert_eq!(
            w.record(1, 1, Some(1), false, false),
            None,
            "a success in a settled epoch"
        );
        assert_eq!(
            w.record(2, 1, Some(0), true, false),
            Some(counts(3, 1, 0)),
            "a failure sums"
        );
        assert_eq!(
            w.record(3, 1, Some(0), false, true),
            Some(counts(4, 1, 1)),
            "a slow call sums"
        );
        assert_eq!(
            w.record(1_000, 1, Some(0), false, false),
            Some(counts(5, 1, 1)),
            "a new epoch sums"
        );
    }

    #[test]
    fn a_record_behind_another_threads_clock_counts_in_the_newer_bucket() {
        let w = TimeWindow::new(W, 1, 1);
        w.record(10_500, 1, Some(0), false, false); // epoch 10, slot 0
        w.record(500, 1, Some(0), true, false); // epoch 0, slot 0: a clock read 10 µs behind
        assert_eq!(w.counts(10_600), counts(2, 1, 0));
    }

    #[test]
    fn stripes_are_summed() {
        let w = TimeWindow::new(W, 1, 8);
        for s in 0..8 {
            w.record(100, 1, Some(s), s % 2 == 0, false);
        }
        assert_eq!(w.counts(100), counts(8, 4, 0));
    }

    /// Threads on stripes of their own lose nothing, and nor do threads whose stripe another
    /// thread owns (they add to the shared stripe) once its bucket is rotated.
    #[test]
    fn concurrent_records_are_exact_between_rotations() {
        let w = std::sync::Arc::new(TimeWindow::new(u64::MAX / 4, 1, 4));
        w.record(1, 1, None, false, false); // the shared stripe's bucket is rotated
        let handles: Vec<_> = (0..8)
            .map(|slot| {
                let w = w.clone();
                std::thread::spawn(move || {
                    for i in 0..100_000 {
                        w.record(1, 1, Some(slot), i % 10 == 0, false);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(w.counts(1), counts(800_001, 80_000, 0));
        let owned = w
            .stripes
            .iter()
            .filter(|s| s.owner.load(Ordering::Relaxed) != 0)
            .count();
        assert_eq!(
            owned, 4,
            "slots 0..8 on 4 stripes: four owners, four on the shared stripe"
        );
    }

    #[test]
    fn a_thread_writes_its_own_stripe_others_the_shared_one() {
        let w = TimeWindow::new(W, 1, 2);
        w.record(0, 1, Some(0), false, false);
        w.record(0, 1, Some(2), true, false); // stripe 0 again: owned by slot 0
        w.record(0, 1, Some(1), false, false);
        assert_eq!(w.stripes[0].buckets[0].calls.load(Ordering::Relaxed), 1);
        assert_eq!(w.stripes[1].buckets[0].calls.load(Ordering::Relaxed), 1);
        assert_eq!(w.shared.buckets[0].failures.load(Ordering::Relaxed), 1);
        assert_eq!(w.counts(0), counts(3, 1, 0));
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use loom::thread;

    use super::*;
    use crate::breaker::sync::Arc;

    fn racing(slots: [Option<usize>; 2], records: [(u64, u64); 2]) -> Arc<TimeWindow> {
        let w = Arc::new(TimeWindow::new(10_000, 1, 2));
        w.record(500, 1, None, false, false); // epoch 0, slot 0 of the shared stripe
        let handles: Vec<_> = records
            .into_iter()
            .zip(slots)
            .map(|((at, generation), slot)| {
                let w = w.clone();
                thread::spawn(move || {
                    w.record(at, generation, slot, true, false);
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        w
    }

    /// Two threads of the shared stripe race to rotate the slot of epoch 0 into epoch 10: one
    /// of the two records may be lost, never both, and nothing of epoch 0 survives.
    #[test]
    fn loom_time_window_racing_rotation_on_the_shared_stripe_loses_at_most_one() {
        loom::model(|| {
            let w = racing([None, None], [(10_500, 1), (10_600, 1)]);
            let c = w.counts(10_700);
            assert!((1..=2).contains(&c.calls), "{c:?}");
            assert_eq!(c.failures, c.calls, "only the two failures, nothing of epoch 0");
        });
    }

    /// A thread on its own stripe and one on the shared stripe rotate at once: exact.
    #[test]
    fn loom_time_window_an_owned_stripe_and_the_shared_one_are_exact() {
        loom::model(|| {
            let w = racing([Some(0), None], [(10_500, 1), (10_600, 1)]);
            assert_eq!(
                w.counts(10_700),
                Counts {
                    calls: 2,
                    failures: 2,
                    slow: 0
                }
            );
        });
    }

    /// A record of a permit from before a reset never counts in the new window, whatever the
    /// interleaving.
    #[test]
    fn loom_time_window_stale_record_racing_a_reset_never_counts() {
        loom::model(|| {
            let w = Arc::new(TimeWindow::new(10_000, 1, 1));
            let stale = {
                let w = w.clone();
                thread::spawn(move || {
                    w.record(700, 1, None, true, false);
                })
            };
            w.reset(2);
            stale.join().unwrap();
            assert_eq!(w.counts(800), Counts::default());
            w.record(900, 2, Some(0), false, false);
            assert_eq!(
                w.counts(900),
                Counts {
                    calls: 1,
                    failures: 0,
                    slow: 0
                }
            );
        });
    }
}
