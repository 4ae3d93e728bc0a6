//! Eviction: which breakers may go (idle sweeps, making room for a new key), in what order.

use super::entry::reap;
use super::*;

/// How many times a new key's make-room pass looks again after cached lookups took hold of
/// every breaker it was removing.
const MAKE_ROOM_TRIES: usize = 4;

/// What a make-room pass did.
enum Room {
    /// It removed at least one entry.
    Made,
    /// Nothing may go before this instant (as `full_until`).
    Full(u64),
    /// What it was removing was taken hold of meanwhile (by cached lookups).
    Raced,
}

/// `full_until` of a shard whose protected breakers can only become evictable through a sweep
/// (they were used since the last one).
pub(super) const UNTIL_SWEEP: u64 = u64::MAX;

/// How long a full shard refuses new keys without looking again when what protects its
/// breakers has no deadline (a call in flight, a probe out, an operator's force-open or
/// disable): one scan per shard per this period at most.
pub(super) const RECHECK_NANOS: u64 = 100_000_000;

/// Whether a key's breaker may be evicted now.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Verdict {
    /// It may, in this tier.
    Evict(Tier),
    /// It may not, before this instant (ns since the registry's epoch; [`UNTIL_SWEEP`]: not
    /// before the next sweep). A breaker whose protection has no deadline is looked at again
    /// after [`RECHECK_NANOS`].
    Keep(u64),
}

/// Why a key's breaker may be evicted, best candidates first.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Tier {
    /// Closed, not used since the last sweep.
    ClosedUnused,
    /// Open past its deadline, or half-open with no probe in flight, and not used since the
    /// last sweep: nobody came back to probe.
    ElapsedUnused,
    /// Closed, used since the last sweep.
    Closed,
}

impl<K> Inner<K>
where
    K: Hash + Eq + Clone + fmt::Display + Send + Sync + 'static,
{
    /// Whether `entry`'s breaker may be evicted now, and if not, until when it stays
    /// protected. Reads the state word, and the deadline (a short lock) of an open breaker;
    /// allocates nothing, but for an unused half-open breaker (its probes in flight).
    fn verdict(&self, entry: &Entry<K>, now: Now) -> Verdict {
        let recheck = Verdict::Keep(now.recheck());
        // Held outside the registry (a permit in flight, a streaming body, a refusal not yet
        // dropped, a handle from `get`): kept, so that the outcome reaches the key's breaker
        // and a key never has two breakers. Nobody can take a new hold while the shard's
        // write lock is held, so the count cannot go up under us.
        if entry.held() {
            return recheck;
        }
        let used = entry.was_used();
        match entry.breaker.state() {
            State::Closed if used => Verdict::Evict(Tier::Closed),
            State::Closed => Verdict::Evict(Tier::ClosedUnused),
            // Used since the last sweep: only a sweep can make it evictable.
            State::Open | State::HalfOpen if used => Verdict::Keep(UNTIL_SWEEP),
            State::Open => match entry.breaker.next_deadline() {
                Some(deadline) if deadline <= now.instant => Verdict::Evict(Tier::ElapsedUnused),
                Some(deadline) => Verdict::Keep(self.nanos(deadline)),
                None => recheck, // it changed under us
            },
            State::HalfOpen if entry.breaker.snapshot().probes_in_flight == 0 => {
                Verdict::Evict(Tier::ElapsedUnused)
            }
            // A probe out, forced open, disabled: kept, with no deadline to wait for.
            _ => recheck,
        }
    }

    /// Whether `shard`'s sweep is due (its last one at least `idle_timeout` ago).
    pub(super) fn sweep_due(&self, shard: &Shard<K>, now: Now) -> bool {
        now.ms.saturating_sub(shard.last_sweep.load(Ordering::Relaxed)) >= self.idle_ms
    }

    /// Sweeps `shard` if its last sweep is at least `idle_timeout` old: removes the entries
    /// unused since then that may go, and clears the others' `used` bits.
    pub(super) fn sweep_if_due(&self, shard: &Shard<K>, table: &mut Table<K>, now: Now) -> usize {
        if !self.sweep_due(shard, now) {
            return 0;
        }
        shard.last_sweep.store(now.ms, Ordering::Relaxed);
        // The sweep changes what may be evicted: the next new key looks again.
        shard.full_until.store(0, Ordering::Release);
        let mut marked = 0;
        for e in table.iter() {
            if matches!(
                self.verdict(e, now),
                Verdict::Evict(Tier::ClosedUnused | Tier::ElapsedUnused)
            ) {
                e.mark();
                marked += 1;
            }
        }
        reap(table, marked, Entry::clear_used)
    }

    /// Makes room in a full shard: removes up to an eighth of its capacity (at least one),
    /// best candidates first, so the scan is paid once per many inserts. When nothing may go,
    /// returns the instant until which nothing can (for `full_until`).
    pub(super) fn make_room(&self, shard: &Shard<K>, table: &mut Table<K>, now: Now) -> Option<u64> {
        // A cached lookup may take hold of a breaker between the verdict and the removal (it
        // takes no lock): that breaker stays, and the scan is made again, a few times at most.
        for _ in 0..MAKE_ROOM_TRIES {
            match self.make_room_once(shard, table, now) {
                Room::Made => return None,
                Room::Full(until) => return Some(until),
                Room::Raced => {}
            }
        }
        Some(now.recheck())
    }

    /// One pass of [`make_room`](Self::make_room).
    fn make_room_once(&self, shard: &Shard<K>, table: &mut Table<K>, now: Now) -> Room {
        let mut count = [0usize; 3];
        let mut until = UNTIL_SWEEP;
        for e in table.iter() {
            match self.verdict(e, now) {
                Verdict::Evict(t) => count[t as usize] += 1,
                Verdict::Keep(t) => until = until.min(t),
            }
        }
        if count.iter().all(|&c| c == 0) {
            #[cfg(test)]
            shard.failed_scans.fetch_add(1, Ordering::Relaxed);
            return Room::Full(until);
        }
        shard.full_until.store(0, Ordering::Release);
        let mut budget = (shard.capacity / 8).max(1);
        let mut quota = [0usize; 3];
        for (q, c) in quota.iter_mut().zip(count) {
            *q = c.min(budget);
            budget -= *q;
        }
        let mut marked = 0;
        for e in table.iter() {
            if let Verdict::Evict(t) = self.verdict(e, now) {
                if quota[t as usize] > 0 {
                    quota[t as usize] -= 1;
                    e.mark();
                    marked += 1;
                }
            }
        }
        reap(table, marked, |_| {});
        // A breaker counted as evictable may have changed since it was counted.
        if table.len() >= shard.capacity {
            Room::Raced
        } else {
            Room::Made
        }
    }
}
