//! An asymmetric fence for the protocol of `cache.rs`: a cached lookup (the hot path) issues a
//! [`light`] one, an eviction (rare, under a shard's write lock) a [`heavy`] one, and a pair
//! orders as two `SeqCst` fences would.
//!
//! On Linux, `heavy` is `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)` (through `rustix`):
//! the kernel runs a full memory barrier on every CPU running a thread of this process, so a
//! lookup needs only to keep the compiler from reordering its accesses (`light` is a compiler
//! fence). This is the technique of liburcu, folly's `asymmetricHeavyBarrier` and `seize`'s
//! `fast-barrier`. Measured on the project's machine: a `SeqCst` fence after the permit's
//! reference count increment cost 6 ns of a 24 ns lookup; the compiler fence costs nothing.
//! Where the system call is missing or refused (another OS, a seccomp filter, a kernel older
//! than 4.14), both sides are `SeqCst` fences. So they are under loom, whose model of the
//! protocol (`registry/loom_tests.rs`) checks the fence pair.

use std::sync::atomic::{AtomicU8, Ordering};
#[cfg(not(loom))]
use std::sync::atomic::{compiler_fence, fence};

/// Not decided yet (no registry was built).
const UNKNOWN: u8 = 0;
/// `heavy` is the system call, `light` a compiler fence.
const OS: u8 = 1;
/// Both are `SeqCst` fences.
const FENCES: u8 = 2;

static STRATEGY: AtomicU8 = AtomicU8::new(UNKNOWN);

/// Decides the strategy, once per process: every registry calls it when it is built, so the
/// decision happens before any lookup or eviction can use it, and it never changes.
pub(super) fn init() {
    if STRATEGY.load(Ordering::Relaxed) != UNKNOWN {
        return;
    }
    let strategy = if os::register() { OS } else { FENCES };
    // Racing first registries decide alike; the first decision stands.
    let _ = STRATEGY.compare_exchange(UNKNOWN, strategy, Ordering::Relaxed, Ordering::Relaxed);
}

/// The lookup's side.
#[cfg(not(loom))]
#[inline(always)]
pub(super) fn light() {
    if STRATEGY.load(Ordering::Relaxed) == OS {
        compiler_fence(Ordering::SeqCst);
    } else {
        fence(Ordering::SeqCst);
    }
}

/// The eviction's side. `false` if the barrier could not be issued: the eviction must then
/// not rely on it (it keeps its entries).
#[cfg(not(loom))]
pub(super) fn heavy() -> bool {
    if STRATEGY.load(Ordering::Relaxed) == OS {
        os::barrier()
    } else {
        fence(Ordering::SeqCst);
        true
    }
}

/// Under loom: a `SeqCst` fence.
#[cfg(loom)]
pub(super) fn light() {
    loom::sync::atomic::fence(Ordering::SeqCst);
}

/// Under loom: a `SeqCst` fence.
#[cfg(loom)]
pub(super) fn heavy() -> bool {
    loom::sync::atomic::fence(Ordering::SeqCst);
    true
}

/// Whether lookups use the compiler fence (for tests and the benchmark's report).
#[cfg(all(test, not(loom)))]
pub(super) fn is_asymmetric() -> bool {
    STRATEGY.load(Ordering::Relaxed) == OS
}

#[cfg(any(target_os = "linux", target_os = "android"))]
mod os {
    use rustix::thread::{MembarrierCommand, membarrier, membarrier_query};

    /// Registers the process for private expedited barriers, if the kernel offers them.
    pub(super) fn register() -> bool {
        let offered = membarrier_query();
        offered.contains_command(MembarrierCommand::PrivateExpedited)
            && offered.contains_command(MembarrierCommand::RegisterPrivateExpedited)
            && membarrier(MembarrierCommand::RegisterPrivateExpedited).is_ok()
    }

    #[cfg(not(loom))]
    pub(super) fn barrier() -> bool {
        membarrier(MembarrierCommand::PrivateExpedited).is_ok()
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
mod os {
    pub(super) fn register() -> bool {
        false
    }

    #[cfg(not(loom))]
    pub(super) fn barrier() -> bool {
        false
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn lookups_use_the_compiler_fence_where_the_kernel_offers_the_barrier() {
        init();
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            use rustix::thread::{MembarrierCommand, membarrier_query};
            let offered = membarrier_query().contains_command(MembarrierCommand::PrivateExpedited);
            assert_eq!(is_asymmetric(), offered);
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        assert!(!is_asymmetric());
        assert!(heavy(), "a registered process may issue the barrier");
        light();
    }
}
