//! Lanes: where permits hold the breaker, so that threads admitting calls on one breaker
//! write different reference counts in different cache lines.
//!
//! A permit must own a reference to the breaker (the tower response future is `'static`), so
//! admitting a call increments a reference count and recording it decrements one. Were that
//! the `Arc<Shared>`'s count, two threads would pass its cache line, which also holds the
//! state word every call reads, back and forth on every call. Each thread instead takes the
//! lane of its slot (`thread_slot() & (lanes - 1)`); the shared line is then only read.

#[cfg(not(loom))]
use super::Shared;
use super::{Lane, sync::Arc};

/// How many lanes a breaker gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lanes {
    /// One per core up to 8, rounded down to a power of two: for breakers that calls on
    /// several threads share.
    Auto,
    /// Permits take the breaker's own lane (its handles' count): no extra memory, for the
    /// breakers of a keyed registry.
    One,
}

/// How many lanes (and time-window stripes) a breaker gets.
pub(super) fn count(lanes: Lanes) -> usize {
    #[cfg(not(loom))]
    if lanes == Lanes::Auto {
        return auto_lanes();
    }
    let _ = lanes;
    1
}

/// Under loom: always one lane.
#[cfg(loom)]
pub(super) fn spread(_root: &mut Arc<Lane>, _lanes: Lanes) {}

/// Gives `root` its permits' lanes (none for one lane). Each lane's allocation is placed in
/// 128-byte blocks (a cache line and its prefetch pair) that no other lane, nor the root lane,
/// its lane table or the shared state, touches: lanes are allocated until enough land apart,
/// and the rest are freed; the root lane is moved off the shared state's blocks the same way.
/// (`#[repr(align(64))]` would guarantee it too, but would make every lane, the root lane of a
/// keyed registry's breakers included, 128 bytes.)
#[cfg(not(loom))]
pub(super) fn spread(root: &mut Arc<Lane>, lanes: Lanes) {
    let n = match lanes {
        Lanes::One => return,
        Lanes::Auto => auto_lanes(),
    };
    if n <= 1 {
        return;
    }
    let shared = root.shared.clone();
    let apart = |a: (usize, usize), b: (usize, usize)| a.1 < b.0 || b.1 < a.0;
    let lane = || {
        Arc::new(Lane {
            shared: shared.clone(),
            lanes: Box::default(),
        })
    };
    let mut spares = Vec::new();
    // The root lane too: allocated just after the shared state, it may sit in one of its blocks.
    let shared_blocks = blocks(Arc::as_ptr(&shared).addr(), size_of::<Shared>());
    while !apart(blocks(Arc::as_ptr(root).addr(), size_of::<Lane>()), shared_blocks) && spares.len() < 64 {
        spares.push(std::mem::replace(root, lane()));
    }
    let mut chosen: Vec<Arc<Lane>> = Vec::with_capacity(n);
    let mut taken = vec![
        shared_blocks,
        blocks(Arc::as_ptr(root).addr(), size_of::<Lane>()),
        blocks(chosen.as_ptr().addr(), n * size_of::<Arc<Lane>>()),
    ];
    while chosen.len() < n {
        let lane = lane();
        let at = blocks(Arc::as_ptr(&lane).addr(), size_of::<Lane>());
        // Give up on placement after many tries (an allocator that packs them regardless).
        if spares.len() >= 64 * n || taken.iter().all(|&t| apart(at, t)) {
            taken.push(at);
            chosen.push(lane);
        } else {
            spares.push(lane);
        }
    }
    drop(spares);
    Arc::get_mut(root)
        .expect("the root lane is not shared before the breaker is built")
        .lanes = chosen.into_boxed_slice();
}

/// The first and last 128-byte block of an `Arc`'s allocation whose data is `len` bytes at
/// `data` (the two reference counts are the 16 bytes before it).
#[cfg(not(loom))]
fn blocks(data: usize, len: usize) -> (usize, usize) {
    (data.saturating_sub(16) / 128, (data + len.max(1) - 1) / 128)
}

#[cfg(not(loom))]
fn auto_lanes() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    // `available_parallelism` reads cgroup files on Linux: once per process.
    static LANES: AtomicUsize = AtomicUsize::new(0);
    let n = LANES.load(Ordering::Relaxed);
    if n != 0 {
        return n;
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let n = 1 << cores.clamp(1, 8).ilog2();
    LANES.store(n, Ordering::Relaxed);
    n
}

/// This thread's slot: a number given to each thread the first time it takes a permit from a
/// breaker with several lanes, in turn, so that threads spread over the lanes.
#[cfg(not(loom))]
#[inline(always)]
pub(super) fn thread_slot() -> usize {
    use std::cell::Cell;
    std::thread_local! {
        static SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    let slot = SLOT.get();
    if slot != usize::MAX {
        return slot;
    }
    assign_slot(&SLOT)
}

#[cfg(not(loom))]
#[cold]
fn assign_slot(key: &'static std::thread::LocalKey<std::cell::Cell<usize>>) -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let slot = NEXT.fetch_add(1, Ordering::Relaxed) & (usize::MAX >> 1);
    key.set(slot);
    slot
}

#[cfg(loom)]
#[inline(always)]
pub(super) fn thread_slot() -> usize {
    0
}

/// This thread's own slot, for a stripe that one thread alone writes; `None` under loom,
/// where every thread has slot 0.
#[inline(always)]
pub(super) fn thread_id() -> Option<usize> {
    #[cfg(not(loom))]
    return Some(thread_slot());
    #[cfg(loom)]
    None
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::{CircuitBreaker, Outcome};

    fn build(lanes: Lanes) -> CircuitBreaker {
        let builder = CircuitBreaker::builder("lanes").consecutive_failures(5);
        builder.build_with(builder.config().unwrap(), lanes)
    }

    fn blocks_of(lane: &Arc<Lane>) -> (usize, usize) {
        blocks(Arc::as_ptr(lane).addr(), size_of::<Lane>())
    }

    #[test]
    fn lanes_are_a_power_of_two_in_blocks_of_their_own() {
        let b = build(Lanes::Auto);
        let lanes = &b.root.lanes;
        let n = auto_lanes();
        assert!(n.is_power_of_two() && n <= 8);
        assert_eq!(lanes.len(), if n > 1 { n } else { 0 });
        let mut all: Vec<_> = lanes.iter().map(blocks_of).collect();
        all.push(blocks_of(&b.root));
        all.push(blocks(Arc::as_ptr(b.shared()).addr(), size_of::<Shared>()));
        for (i, x) in all.iter().enumerate() {
            for y in &all[i + 1..] {
                assert!(x.1 < y.0 || y.1 < x.0, "{x:?} and {y:?} share a block");
            }
        }
    }

    #[test]
    fn permits_take_their_threads_lane() {
        let b = build(Lanes::Auto);
        if b.root.lanes.is_empty() {
            return; // one core
        }
        let slots: Vec<usize> = (0..2)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || {
                    let lane = &b.root.lanes[thread_slot() & (b.root.lanes.len() - 1)];
                    let before = Arc::strong_count(lane);
                    let permit = b.try_acquire().unwrap();
                    assert_eq!(Arc::strong_count(lane), before + 1);
                    permit.record(Outcome::Success);
                    assert_eq!(Arc::strong_count(lane), before);
                    thread_slot()
                })
                .join()
                .unwrap()
            })
            .collect();
        assert_ne!(slots[0], slots[1], "each thread has a slot of its own");
        assert_eq!(Arc::strong_count(&b.root), 1, "permits do not hold the root lane");
    }

    #[test]
    fn one_lane_permits_hold_the_root_lane() {
        let b = build(Lanes::One);
        assert!(b.root.lanes.is_empty());
        let permit = b.try_acquire().unwrap();
        assert_eq!(Arc::strong_count(&b.root), 2);
        drop(permit);
        assert_eq!(Arc::strong_count(&b.root), 1);
    }

    #[test]
    fn the_state_is_freed_with_the_last_handle_or_permit() {
        for lanes in [Lanes::Auto, Lanes::One] {
            let b = build(lanes);
            let state = Arc::downgrade(b.shared());
            let permit = b.try_acquire().unwrap();
            let refused = {
                let open = build(lanes);
                open.force_open();
                open.try_acquire().unwrap_err()
            };
            drop(b);
            assert!(state.upgrade().is_some(), "a permit keeps the state alive");
            permit.record(Outcome::Failure);
            assert!(state.upgrade().is_none(), "no cycle: freed with the last permit");
            assert_eq!(
                refused.name(),
                "lanes",
                "a refusal holds no reference to its breaker"
            );
        }
    }
}
