//! Unit tests of the registry's internals: the threads' caches, the eviction protocol, make-room.

use super::*;
use crate::Outcome;
use tokio::time::advance;

/// Set by the stress test: a cached lookup yields between its first look at the mark and
/// its permit, so that evictions land in that window often.
pub(super) static WIDEN_RACE: AtomicBool = AtomicBool::new(false);

fn locked(registry: &KeyedRegistry<String>) -> u64 {
    registry
        .inner
        .shards
        .iter()
        .map(|s| s.locked_lookups.load(Ordering::Relaxed))
        .sum()
}

/// Whether `breaker` is the breaker the table holds for `key` now.
fn in_table(registry: &KeyedRegistry<String>, key: &str, breaker: &CircuitBreaker) -> bool {
    let inner = &*registry.inner;
    let hash = inner.hasher.hash_one(key);
    let shard = &inner.shards[(hash >> 32) as usize & inner.shard_mask];
    shard
        .read()
        .find(hash, |e| e.key == key)
        .is_some_and(|e| LaneArc::ptr_eq(&e.breaker.root, &breaker.root))
}

#[test]
fn a_hot_key_is_served_from_the_threads_cache_without_the_shards_lock() {
    let registry =
        KeyedRegistry::<String>::new(CircuitBreaker::builder("up").consecutive_failures(5)).unwrap();
    // A miss fills the cache one time in eight: within a few dozen lookups.
    for _ in 0..100 {
        registry.try_acquire("a").unwrap().record(Outcome::Success);
    }
    let before = locked(&registry);
    for _ in 0..1_000 {
        registry.try_acquire("a").unwrap().record(Outcome::Success);
        drop(registry.get("a").unwrap());
    }
    assert_eq!(
        locked(&registry),
        before,
        "no lookup of a cached key took the lock"
    );
    // Another thread has a cache of its own, empty at first.
    let other = registry.clone();
    std::thread::spawn(move || other.try_acquire("a").unwrap().record(Outcome::Success))
        .join()
        .unwrap();
    assert_eq!(locked(&registry), before + 1);
    // Not cached: an open breaker's refusal goes through the lock (and the breaker decides).
    registry.get("a").unwrap().force_open();
    assert!(registry.try_acquire("a").is_err());
    assert_eq!(locked(&registry), before + 2);
}

/// Two hot keys of one cache set, in a cache that a spread of other keys filled: both settle
/// in the set and are served without the lock. (A fill that found its set full gave up the way
/// its draw picked; the draw that let it fill has its low bits clear, so it was always way 0,
/// and the two keys took it from each other at every fill, forever: after a uniform pass a
/// hot-key lookup at 100k keys cost 21.7-24.9 ns instead of 17.8.)
#[test]
fn two_hot_keys_of_one_set_both_stay_cached_after_other_keys_filled_it() {
    use super::super::cache::SETS;
    let registry =
        KeyedRegistry::<String>::new(CircuitBreaker::builder("up").consecutive_failures(5)).unwrap();
    for _ in 0..10 {
        for i in 0..1_000 {
            registry
                .try_acquire(format!("k{i}").as_str())
                .unwrap()
                .record(Outcome::Success);
        }
    }
    let set = |key: &str| registry.inner.hasher.hash_one(key) as usize & (SETS - 1);
    let x = "hot-0".to_string();
    let y = (1..)
        .map(|i| format!("hot-{i}"))
        .find(|y| set(y) == set(&x))
        .unwrap();
    for _ in 0..1_000 {
        for key in [&x, &y] {
            registry
                .try_acquire(key.as_str())
                .unwrap()
                .record(Outcome::Success);
        }
    }
    let before = locked(&registry);
    for _ in 0..1_000 {
        for key in [&x, &y] {
            registry
                .try_acquire(key.as_str())
                .unwrap()
                .record(Outcome::Success);
        }
    }
    assert_eq!(
        locked(&registry) - before,
        0,
        "both hot keys are served from the cache"
    );
}

#[tokio::test(start_paused = true)]
async fn an_evicted_keys_cached_entry_is_never_used_again() {
    let registry = KeyedRegistry::<String>::builder(CircuitBreaker::builder("up").consecutive_failures(5))
        .idle_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let old = registry.get("a").unwrap();
    for _ in 0..100 {
        registry.try_acquire("a").unwrap().record(Outcome::Success);
    }
    let cached = locked(&registry);
    drop(old.clone());
    let old_root = LaneArc::downgrade(&old.root);
    drop(old);
    // Two sweeps without a use: the key goes (its cached entry stays in this thread's
    // cache, marked dead).
    advance(Duration::from_secs(10)).await;
    assert_eq!(registry.evict_idle(), 0);
    advance(Duration::from_secs(10)).await;
    assert_eq!(registry.evict_idle(), 1);
    assert!(registry.is_empty());
    assert!(
        old_root.upgrade().is_some(),
        "the cache still holds the evicted breaker"
    );
    // The next lookup skips the dead entry, takes the lock and builds a new breaker.
    let new = registry.get("a").unwrap();
    assert!(locked(&registry) > cached);
    assert!(!LaneArc::ptr_eq(&new.root, &old_root.upgrade().unwrap()));
    assert!(in_table(&registry, "a", &new));
    assert_eq!(registry.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_eviction_keeps_a_breaker_that_a_cached_lookup_holds() {
    // One shard of 8: each new key in the full shard evicts one closed breaker.
    let registry = KeyedRegistry::<String>::builder(CircuitBreaker::builder("up").consecutive_failures(5))
        .max_keys(8)
        .idle_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for _ in 0..100 {
        drop(registry.get("hot").unwrap());
    }
    let before = locked(&registry);
    let held = registry.get("hot").unwrap();
    let permit = registry.try_acquire("hot").unwrap();
    assert_eq!(locked(&registry), before, "both from this thread's cache");
    for i in 0..64 {
        drop(registry.get(format!("cold-{i}").as_str()).unwrap());
    }
    assert!(in_table(&registry, "hot", &held), "held, so never made room for");
    for _ in 0..2 {
        advance(Duration::from_secs(10)).await;
        registry.evict_idle();
    }
    assert!(in_table(&registry, "hot", &held), "held, so never swept");
    drop(held);
    for _ in 0..2 {
        advance(Duration::from_secs(10)).await;
        registry.evict_idle();
    }
    assert!(
        registry.get("hot").is_ok() && registry.len() == 1,
        "the permit still holds it"
    );
    permit.record(Outcome::Failure);
    for _ in 0..2 {
        advance(Duration::from_secs(10)).await;
        registry.evict_idle();
    }
    assert!(registry.is_empty(), "no longer held: swept as any idle breaker");
}

/// The protocol under real threads: lookups through their caches race a thread whose new
/// keys evict the hot ones (a shard of 8, one eviction per new key). Every handle a lookup
/// returns must be the one its key has in the table while the handle is held, and every
/// permit's outcome must land in a breaker of the table. `loom_tests.rs` checks the same
/// two steps exhaustively.
#[test]
fn cached_lookups_racing_evictions_never_hold_a_breaker_that_left_the_table() {
    use std::sync::atomic::AtomicUsize;
    // `Reject`: a key that finds no room is refused, rather than served by the overflow
    // breaker (which is not in the table either, by design).
    let registry =
        KeyedRegistry::<String>::builder(CircuitBreaker::builder("race").consecutive_failures(1_000_000))
            .max_keys(8)
            .when_full(WhenFull::Reject)
            .build()
            .unwrap();
    let hot = ["h0", "h1", "h2", "h3"];
    WIDEN_RACE.store(true, Ordering::Relaxed);
    let running = Arc::new(AtomicUsize::new(2));
    let evictor = {
        let (registry, running) = (registry.clone(), running.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while running.load(Ordering::Relaxed) > 0 {
                drop(registry.get(format!("cold-{i}").as_str()));
                i += 1;
            }
            i
        })
    };
    let readers: Vec<_> = (0..2)
        .map(|t| {
            let (registry, running) = (registry.clone(), running.clone());
            std::thread::spawn(move || {
                let (mut stray, mut refused) = (0, 0);
                for i in 0..20_000 {
                    let key = hot[(i + t) % hot.len()];
                    let Ok(breaker) = registry.get(key) else {
                        refused += 1;
                        continue;
                    };
                    if !in_table(&registry, key, &breaker) {
                        stray += 1;
                    }
                    drop(breaker);
                    // A permit holds its breaker in the table the same way.
                    if let Ok(permit) = registry.try_acquire(key) {
                        permit.record(Outcome::Failure);
                    }
                }
                running.fetch_sub(1, Ordering::Relaxed);
                assert!(
                    refused < 20_000 / 2,
                    "most lookups found their key ({refused} refused)"
                );
                stray
            })
        })
        .collect();
    let strays: usize = readers.into_iter().map(|r| r.join().unwrap()).sum();
    let evictions = evictor.join().unwrap();
    WIDEN_RACE.store(false, Ordering::Relaxed);
    assert!(
        evictions > 100,
        "the evictor ran alongside ({evictions} new keys)"
    );
    assert_eq!(strays, 0, "a handle on a breaker that had left the table");
}

#[tokio::test(start_paused = true)]
async fn a_full_shard_is_scanned_once_per_deadline_not_once_per_new_key() {
    let registry = KeyedRegistry::<String>::builder(CircuitBreaker::builder("up").consecutive_failures(1))
        .max_keys(64)
        .idle_timeout(Duration::from_secs(10))
        .when_full(WhenFull::Reject)
        .build()
        .unwrap();
    assert_eq!(registry.inner.shards.len(), 1);
    let shard = &registry.inner.shards[0];
    let scans = || shard.failed_scans.load(Ordering::Relaxed);
    for i in 0..64 {
        registry
            .get(format!("k{i}").as_str())
            .unwrap()
            .trip(Duration::from_secs(20 + i));
    }
    advance(Duration::from_secs(10)).await; // the next new key sweeps: nobody used them
    for i in 0..10_000 {
        assert!(registry.get(format!("new-{i}").as_str()).is_err());
    }
    assert_eq!(scans(), 1, "one scan, then refusals without one");
    assert_eq!(
        shard.full_until.load(Ordering::Relaxed),
        Duration::from_secs(20).as_nanos() as u64,
        "until the earliest deadline"
    );
    advance(Duration::from_secs(10)).await; // k0's open period ends
    // k0 makes room; the newcomer's upstream is down too.
    registry
        .get("x")
        .expect("k0 made room")
        .trip(Duration::from_secs(100));
    for i in 0..10_000 {
        assert!(registry.get(format!("new-{i}").as_str()).is_err());
    }
    assert_eq!(scans(), 2);
    assert_eq!(registry.len(), 64);
}

/// An open breaker is evicted in the moment between its deadline and its recovery probe's
/// task waking up (here: the task's runtime is not driven meanwhile). A thread's cache keeps
/// the evicted breaker allocated; its task must not outlive the eviction: the probe of a key
/// that left the registry never runs (it would hit the upstream and announce verdicts for a
/// breaker no lookup can reach, beside the new breaker of the key and its own probe).
#[test]
fn an_evicted_breakers_recovery_probe_never_runs() {
    use std::sync::atomic::AtomicUsize;
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
    };
    let (main, tasks) = (runtime(), runtime());
    let runs = Arc::new(AtomicUsize::new(0));
    let registry = main.block_on(async {
        let runs = runs.clone();
        let template = CircuitBreaker::builder("up")
            .consecutive_failures(1)
            .open_duration(Duration::from_secs(10))
            .recovery_probe(
                move || {
                    runs.fetch_add(1, Ordering::Relaxed);
                    async { Err::<(), _>("still down") }
                },
                Duration::from_secs(1),
            );
        KeyedRegistry::<String>::builder(template)
            .idle_timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    });
    main.block_on(async {
        for _ in 0..100 {
            registry.try_acquire("a").unwrap().record(Outcome::Success);
        }
        let cached = locked(&registry);
        // The trip spawns the probe's task on `tasks`, which nothing drives for now.
        {
            let _tasks = tasks.enter();
            registry.try_acquire("a").unwrap().record(Outcome::Failure);
        }
        assert_eq!(locked(&registry), cached, "served from this thread's cache");
        let old = LaneArc::downgrade(&registry.get("a").unwrap().root);
        // Two sweeps without a use, past the deadline: open past its deadline, unused, it goes.
        advance(Duration::from_secs(10)).await;
        assert_eq!(registry.evict_idle(), 0);
        advance(Duration::from_secs(10)).await;
        assert_eq!(registry.evict_idle(), 1);
        assert!(
            old.upgrade().is_some(),
            "the cache still holds the evicted breaker"
        );
    });
    // The task's runtime runs again, well past the deadline.
    tasks.block_on(async {
        tokio::time::advance(Duration::from_secs(60)).await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    });
    assert_eq!(runs.load(Ordering::Relaxed), 0, "the evicted breaker's probe ran");
}

/// A cached lookup whose entry is evicted between its first look at the mark and its permit
/// (the race the protocol resolves) lets the permit go: it never stood for a call, so the
/// breaker's listeners hear nothing of it (a `Released` event would count a cancelled call
/// in the metrics of a key that made none).
#[test]
fn a_permit_let_go_by_a_cached_lookup_that_lost_the_race_is_not_announced() {
    use std::sync::atomic::AtomicUsize;
    let events = Arc::new(AtomicUsize::new(0));
    let heard = events.clone();
    let registry =
        KeyedRegistry::<String>::new(CircuitBreaker::builder("up").consecutive_failures(5).on_event(
            move |_| {
                heard.fetch_add(1, Ordering::Relaxed);
            },
        ))
        .unwrap();
    drop(registry.get("a").unwrap());
    let live = {
        let inner = &*registry.inner;
        let hash = inner.hasher.hash_one("a");
        let shard = &inner.shards[(hash >> 32) as usize & inner.shard_mask];
        shard.read().find(hash, |e| e.key == "a").unwrap().live.clone()
    };
    let before = events.load(Ordering::Relaxed);
    let taken = live.take(|breaker| {
        live.dead.store(true, Ordering::Relaxed); // an eviction marks the entry now
        breaker.try_acquire_closed()
    });
    assert!(taken.is_none(), "the lookup saw the mark and let go");
    assert_eq!(
        events.load(Ordering::Relaxed),
        before,
        "no event for a call never made"
    );
}

/// A reload and the shadow switch reach a key served from a thread's cache (the cache shares
/// the table's breaker, it holds no copy of its settings): the reload opens it at once, and
/// the shadow switch lets its calls through again.
#[tokio::test(start_paused = true)]
async fn reconfigure_and_set_shadow_reach_a_cached_key() {
    let registry =
        KeyedRegistry::<String>::new(CircuitBreaker::builder("up").consecutive_failures(5)).unwrap();
    for _ in 0..100 {
        registry.try_acquire("a").unwrap().record(Outcome::Success);
    }
    for _ in 0..3 {
        registry.try_acquire("a").unwrap().record(Outcome::Failure);
    }
    let cached = locked(&registry);
    registry
        .reconfigure(CircuitBreaker::builder("up").consecutive_failures(3))
        .unwrap();
    assert_eq!(
        locked(&registry),
        cached,
        "the key is served from this thread's cache"
    );
    assert!(
        registry.try_acquire("a").is_err(),
        "opened by the reload, refused"
    );
    registry.set_shadow(true);
    let permit = registry.try_acquire("a").expect("shadow: let through");
    drop(permit);
    assert_eq!(registry.get("a").unwrap().snapshot().would_reject, 1);
}
