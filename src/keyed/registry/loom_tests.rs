//! loom models of the protocol between a cached lookup and an eviction (see `cache.rs`): a
//! lookup that takes hold of a breaker through its thread's cache, racing an eviction of its
//! entry, either sees the entry's mark (and lets go) or is seen by the eviction (which keeps
//! the entry). Under loom both barriers are `SeqCst` fences (`barrier.rs`).
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test --release --lib --no-default-features --target-dir target/loom loom`

use std::sync::Arc;

use loom::sync::atomic::{AtomicBool, AtomicUsize};
use loom::thread;

use super::entry::reap;
use super::*;

/// A table holding one entry for `"k"`, and the entry's shared part as a cache holds it.
fn one_entry() -> (Table<String>, Arc<Live>) {
    let breaker = CircuitBreaker::builder("loom")
        .consecutive_failures(5)
        .build()
        .unwrap();
    let live = Arc::new(Live {
        breaker: breaker.clone(),
        used: sync::AtomicBool::new(false),
        dead: sync::AtomicBool::new(false),
    });
    let mut table = HashTable::new();
    table.insert_unique(
        0,
        Entry {
            key: "k".to_string(),
            breaker,
            used: std::sync::atomic::AtomicBool::new(true),
            live: live.clone(),
        },
        |_| 0,
    );
    (table, live)
}

/// The registry's own code (`Live::take`, `Entry::mark`, `reap`): a handle or a permit taken
/// through the cache is never on a breaker that left the table, and a kept entry is unmarked.
/// (loom's `Arc` counts are sequentially consistent, so this model checks the code paths; the
/// next one checks the barriers against `std`'s weaker count orderings.)
#[test]
fn loom_a_cached_lookup_never_holds_a_breaker_its_eviction_removed() {
    for permit in [false, true] {
        loom::model(move || {
            let (mut table, live) = one_entry();
            // What the lookup takes stays held until the eviction is over (it is returned).
            let lookup = thread::spawn(move || {
                if permit {
                    live.take(CircuitBreaker::try_acquire_closed).map(Ok)
                } else {
                    live.take(|b| Some(b.clone())).map(Err)
                }
            });
            table.iter().for_each(Entry::mark);
            let removed = reap(&mut table, 1, |_| {}) == 1;
            let took = lookup.join().unwrap();
            assert!(
                !(removed && took.is_some()),
                "a permit or a handle on a breaker that left the table"
            );
            if let Some(kept) = table.iter().next() {
                assert!(!kept.is_marked(), "a kept entry is unmarked");
            }
        });
    }
}

/// The protocol's steps with `std::sync::Arc`'s orderings for the count (a clone is a relaxed
/// increment, `strong_count` a relaxed load): the two barriers alone order the lookup's
/// increment and read of the mark against the eviction's mark and read of the count.
fn protocol(fenced: bool) {
    loom::model(move || {
        let count = Arc::new(AtomicUsize::new(1)); // the registry's own hold
        let dead = Arc::new(AtomicBool::new(false));
        let lookup = {
            let (count, dead) = (count.clone(), dead.clone());
            thread::spawn(move || {
                count.fetch_add(1, Ordering::Relaxed); // the permit's clone
                if fenced {
                    barrier::light();
                }
                !dead.load(Ordering::Relaxed) // kept, if alive
            })
        };
        dead.store(true, Ordering::Relaxed); // the mark
        if fenced {
            assert!(barrier::heavy());
        }
        let removed = count.load(Ordering::Relaxed) == 1; // nobody else holds it
        let kept = lookup.join().unwrap();
        assert!(!(removed && kept), "a permit on a breaker that left the table");
    });
}

#[test]
fn loom_the_barrier_pair_orders_the_count_and_the_mark() {
    protocol(true);
}

/// The model can tell: without the barriers, loom finds the lost permit.
#[test]
#[should_panic(expected = "a permit on a breaker that left the table")]
fn loom_without_the_barriers_a_permit_can_outlive_its_entry() {
    protocol(false);
}
