//! Each thread's cache of a registry's hot entries: a lookup of a key this thread used lately
//! takes no lock.
//!
//! A shard's `RwLock` costs two locked read-modify-writes per lookup: on the project's 2-vCPU
//! Xeon VM, 15 ns alone, and a hot-key lookup at 100,000 keys cost 25.4–27.8 ns against 12.5 ns
//! for one breaker's whole closed path. The epoch-based maps made for the field pay for their
//! own reclamation on every read instead (`papaya`'s guard, one locked swap; `scc`'s, a fence):
//! measured in the same loop, 24.9 and 24.4 ns against 25.4 ns for the sharded `RwLock`, no
//! gain worth a dependency. A thread's own cache needs neither: it owns what it holds (an
//! [`Arc`] of the entry's shared part, [`Live`], and a copy of the key), so reading it is safe
//! without a lock, and the only question left is whether the entry was evicted meanwhile,
//! which the protocol below answers with a barrier that costs a lookup nothing on Linux
//! (`barrier.rs`). Hot-key lookup at 100,000 keys: 17–20 ns, 1.2–1.55x one breaker.
//!
//! # The protocol: no permit on an evicted breaker
//!
//! An eviction (under the shard's write lock) marks the entry `dead`, then a heavy barrier,
//! then reads the breaker's reference count: above the registry's own holds (a permit, a
//! handle, a refusal), it clears the mark and keeps the entry. A cached lookup takes its
//! permit (which increments that count), then a light barrier, then reads the mark: set, it
//! drops the permit unrecorded (a closed permit's release changes no count) and takes the
//! locked path, which sees the table as it is. The barrier pair orders as two `SeqCst` fences:
//! either the eviction's comes first and the lookup sees the mark, or the lookup's does and
//! the eviction sees the count. So no permit, handle or refusal is ever kept on a breaker that
//! left the table, and a key never has two breakers. `registry/loom_tests.rs` models it (against
//! `std::sync::Arc`'s relaxed count orderings), and a stress test races real threads.
//!
//! # Bounds
//!
//! A set-associative table of [`SETS`] sets of [`WAYS`] entries: the four hashes of a set in
//! one 64-byte line, then its four entries (a key and a pointer each): 6 KiB per thread per
//! registry for `String` keys. A lookup that misses fills its set on one in [`FILL_ONE_IN`]
//! misses (a pseudo-random draw, so that no access pattern starves a key), so that a uniform
//! spread of keys, which a small cache cannot hold, rarely pays for a fill (a key's copy and a
//! reference count). An entry evicted from the registry stays allocated while a thread's cache
//! holds it (dead: every lookup skips it), at most `SETS * WAYS` entries per thread that
//! looked them up, until that slot is reused or the registry is dropped; its
//! [recovery probe](crate#recovery-probes)'s task, if it has one, ends at the eviction.

use std::{borrow::Borrow, cell::RefCell, sync::Arc};

use thread_local::ThreadLocal;

use super::registry::Live;

/// Sets in a thread's cache (a power of two).
pub(super) const SETS: usize = 32;
/// Entries per set.
pub(super) const WAYS: usize = 4;
/// A miss fills the cache once in this many draws (a power of two).
pub(super) const FILL_ONE_IN: u32 = 8;

/// One set: the hashes of its entries (one cache line), and the entries: a copy of the key
/// (a cached lookup compares keys in memory this thread owns) and the entry's shared part.
#[repr(align(64))]
struct Set<K> {
    hashes: [u64; WAYS],
    entries: [Option<(K, Arc<Live>)>; WAYS],
}

impl<K> Default for Set<K> {
    fn default() -> Self {
        Self {
            hashes: [0; WAYS],
            entries: Default::default(),
        }
    }
}

/// Every thread's cache of one registry, behind a trait object so that the registry's type
/// needs no `Send` bound on its key (a `ThreadLocal` holds only `Send` values).
pub(super) trait Caches<K>: Send + Sync {
    /// This thread's cache, if it has one.
    fn get(&self) -> Option<&RefCell<Cache<K>>>;
    /// This thread's cache, made if it has none.
    fn get_or_new(&self) -> &RefCell<Cache<K>>;
}

impl<K: Send + Sync> Caches<K> for ThreadLocal<RefCell<Cache<K>>> {
    #[inline]
    fn get(&self) -> Option<&RefCell<Cache<K>>> {
        ThreadLocal::get(self)
    }

    fn get_or_new(&self) -> &RefCell<Cache<K>> {
        self.get_or(|| RefCell::new(Cache::new()))
    }
}

/// One thread's cache of one registry's entries.
pub(super) struct Cache<K> {
    sets: Box<[Set<K>]>,
    /// A xorshift state: which misses fill, and which way a full set gives up.
    draw: u32,
}

impl<K> Cache<K> {
    pub(super) fn new() -> Self {
        Self {
            sets: (0..SETS).map(|_| Set::default()).collect(),
            draw: 0x9e37_79b9,
        }
    }

    /// The cached entry of `key`, whose hash is `hash`, if this thread cached it.
    #[inline(always)]
    pub(super) fn find<Q>(&self, hash: u64, key: &Q) -> Option<&Live>
    where
        K: Borrow<Q>,
        Q: ?Sized + Eq,
    {
        let set = &self.sets[hash as usize & (SETS - 1)];
        (0..WAYS).find_map(|way| {
            if set.hashes[way] != hash {
                return None;
            }
            match &set.entries[way] {
                Some((cached, live)) if cached.borrow() == key => Some(&**live),
                _ => None,
            }
        })
    }

    /// Whether this miss fills the cache (one in [`FILL_ONE_IN`]).
    #[inline]
    pub(super) fn draw(&mut self) -> bool {
        let mut x = self.draw;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.draw = x;
        x & (FILL_ONE_IN - 1) == 0
    }

    /// Caches `entry` (whose key hashes to `hash`): in the way that held the same hash, else a
    /// free or dead one, else a pseudo-random one. Returns what it replaced, for the caller to
    /// drop where no lock is held.
    pub(super) fn fill(&mut self, hash: u64, entry: (K, Arc<Live>)) -> Option<(K, Arc<Live>)> {
        // Not the draw's low bits: the draw that let this miss fill has them clear, so they
        // would always pick way 0, and two keys of one full set would take it from each other
        // at every fill.
        let pick = (self.draw >> 16) as usize % WAYS;
        let set = &mut self.sets[hash as usize & (SETS - 1)];
        let way = (0..WAYS)
            .find(|&way| set.hashes[way] == hash && set.entries[way].is_some())
            .or_else(|| {
                (0..WAYS).find(|&way| set.entries[way].as_ref().is_none_or(|(_, live)| live.is_dead()))
            })
            .unwrap_or(pick);
        set.hashes[way] = hash;
        set.entries[way].replace(entry)
    }
}
