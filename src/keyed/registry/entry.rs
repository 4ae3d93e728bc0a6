//! A key's entry in its shard's table, the part of it the threads' caches share, and the
//! two halves of the protocol that keeps a cached lookup off an evicted breaker (see
//! `cache.rs`).

use super::*;

/// A key and its breaker, in its shard's table (inline: a lookup that misses this thread's
/// cache reads the key and the breaker without one more pointer to follow).
pub(super) struct Entry<K> {
    pub(super) key: K,
    pub(super) breaker: CircuitBreaker,
    /// Set by every locked lookup (only if clear: read-mostly), cleared by each idle sweep: a
    /// key whose bit (and its [`Live`] one) is still clear at a sweep was not used since the
    /// previous one.
    pub(super) used: AtomicBool,
    /// What the threads' caches share of the entry (see `cache.rs`). It holds a second
    /// handle of the breaker, so the breaker is held outside the registry when its count
    /// exceeds [`REGISTRY_HOLDS`].
    pub(super) live: Arc<Live>,
}

/// The handles of a breaker that the registry itself holds: its entry's and its [`Live`]'s.
pub(super) const REGISTRY_HOLDS: usize = 2;

/// The part of an entry that the threads' caches share: the breaker, its mark, and a `used`
/// bit of its own (cache hits set it, and never touch the table).
pub(in crate::keyed) struct Live {
    pub(super) breaker: CircuitBreaker,
    pub(super) used: sync::AtomicBool,
    /// Set by an eviction, under the shard's write lock, before it checks that nobody holds
    /// the breaker (and cleared again if somebody does); left set once the entry is removed.
    /// A cached lookup reads it after taking its permit (see `cache.rs` for the protocol).
    pub(super) dead: sync::AtomicBool,
}

impl Live {
    /// Whether the entry was evicted (or is being evicted): a cached lookup must not use it.
    #[inline(always)]
    pub(in crate::keyed) fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Relaxed)
    }

    /// `take(breaker)` if the entry is alive: the lookup's half of the protocol in
    /// `cache.rs`. `take` clones the breaker's handle or takes a closed permit (either
    /// increments its reference count) and runs no listener; what it took is let go again,
    /// unrecorded and unannounced ([`Taken`]), if the entry turns out dead.
    #[inline(always)]
    pub(super) fn take<T: Taken>(&self, take: impl FnOnce(&CircuitBreaker) -> Option<T>) -> Option<T> {
        if self.is_dead() {
            return None;
        }
        touch(&self.used);
        #[cfg(all(test, not(loom)))]
        if tests::WIDEN_RACE.load(Ordering::Relaxed) {
            std::thread::yield_now(); // an eviction may mark the entry now
        }
        let taken = take(&self.breaker)?;
        // Orders the count's increment before the mark's read, against the eviction's heavy
        // barrier between its marks and its reads of the counts.
        barrier::light();
        if self.is_dead() {
            discard(taken);
            return None;
        }
        Some(taken)
    }
}

/// Sets `used` if it is clear (read-mostly: no write to a shared line per lookup).
#[inline(always)]
fn touch(used: &sync::AtomicBool) {
    if !used.load(Ordering::Relaxed) {
        used.store(true, Ordering::Relaxed);
    }
}

impl<K> Entry<K> {
    #[inline]
    pub(super) fn touch(&self) {
        if !self.used.load(Ordering::Relaxed) {
            self.used.store(true, Ordering::Relaxed);
        }
    }

    /// Whether a lookup (locked or cached) used the entry since the last sweep.
    pub(super) fn was_used(&self) -> bool {
        self.used.load(Ordering::Relaxed) || self.live.used.load(Ordering::Relaxed)
    }

    /// Starts a new sweep period.
    pub(super) fn clear_used(&self) {
        self.used.store(false, Ordering::Relaxed);
        self.live.used.store(false, Ordering::Relaxed);
    }

    /// Whether something outside the registry holds the breaker: a permit in flight, a
    /// refusal, a handle from `get`.
    pub(super) fn held(&self) -> bool {
        LaneArc::strong_count(&self.breaker.root) > REGISTRY_HOLDS
    }

    /// Marks the entry for removal by [`reap`] (under the shard's write lock).
    pub(super) fn mark(&self) {
        self.live.dead.store(true, Ordering::Relaxed);
    }

    pub(super) fn is_marked(&self) -> bool {
        self.live.is_dead()
    }

    pub(super) fn unmark(&self) {
        self.live.dead.store(false, Ordering::Relaxed);
    }
}

/// What a cached lookup takes from a breaker: a handle or a closed permit.
pub(super) trait Taken {
    /// Lets it go, from a breaker that turned out evicted: it stood for no call, so no
    /// listener hears of it.
    fn let_go(self);
}

impl Taken for CircuitBreaker {
    fn let_go(self) {}
}

impl Taken for Permit {
    fn let_go(self) {
        self.discard_closed();
    }
}

/// Drops what a cached lookup took from a breaker that turned out evicted (a closed permit,
/// released unrecorded and unannounced; a handle). Out of line and by value, so that the hot
/// path keeps the permit in registers (a drop in place made it go through the stack, and
/// reloading it there cost a store-forwarding stall: 3 ns a lookup).
#[cold]
#[inline(never)]
fn discard<T: Taken>(taken: T) {
    taken.let_go();
}

/// Removes the entries of `table` that were marked (`marked` of them), unless something took
/// hold of their breaker meanwhile: the eviction's half of the protocol in `cache.rs` (mark,
/// heavy barrier, read the count). A marked entry that stays is unmarked. `keep` runs on every
/// entry that stays. Under the shard's write lock; returns how many entries were removed.
pub(super) fn reap<K>(table: &mut Table<K>, marked: usize, mut keep: impl FnMut(&Entry<K>)) -> usize {
    // Orders the marks before the counts' reads, against a cached lookup's light barrier
    // between its permit (the count's increment) and its read of the mark. Without it (the
    // system call failed), nothing marked goes.
    let fenced = marked > 0 && barrier::heavy();
    let before = table.len();
    table.retain(|e| {
        if e.is_marked() {
            if fenced && !e.held() {
                // Removed: a thread's cache may keep the breaker allocated (dead), so its
                // recovery probe's task ends here, not at its drop.
                e.breaker.stop_recovery_probe();
                return false;
            }
            e.unmark();
        }
        keep(e);
        true
    });
    before - table.len()
}
