//! Where a breaker reads the time: nanoseconds since its epoch (its creation), from one of two
//! clocks chosen when it is built.
//!
//! - **Fast** (Linux, in production): the precise reading is `std::time::Instant`
//!   (`CLOCK_MONOTONIC`), and a *coarse* reading, `CLOCK_MONOTONIC_COARSE` through `rustix`
//!   (about 6 ns against 17–22 ns), serves where a lower bound is enough. The coarse clock
//!   runs on the precise clock's timeline, never ahead of it, and trails it by at most one
//!   kernel tick (4 ms at 250 Hz) plus the timer interrupt's latency. An open breaker refuses
//!   a call without the precise clock while `coarse + margin < deadline`; within `margin` of
//!   its deadline it reads the precise clock. So the transition to half-open is never later
//!   than the precise clock says. The margin is four ticks (16 ms at 250 Hz), and it widens
//!   to twice the largest lag seen when a trip reads both clocks.
//! - **Pausable**: `tokio::time::Instant`, which `tokio::time::pause()` and `advance()` move,
//!   for both readings (the margin is zero). Chosen for a breaker built where tokio's clock is
//!   paused or was moved by hand (two back-to-back reads are equal only while it is paused; a
//!   clock moved and resumed runs apart from `std`'s), and re-checked at every trip, so a
//!   breaker built before `pause()` switches once it trips under a paused clock (it never
//!   switches back). The crate's `test-util` feature forces it for every breaker, as tokio's
//!   feature of that name does for its own clock; it is also the only clock where no coarse
//!   clock exists (not Linux) and under loom.
//!
//! Slow-call durations always use the precise reading (nanoseconds).

use std::time::Duration;

use tokio::time::Instant;

/// A breaker's clock.
#[derive(Debug)]
pub(crate) struct Clock {
    /// The epoch, on tokio's clock (which is `std`'s unless paused or moved).
    epoch: Instant,
    fast: fast::Fast,
}

impl Clock {
    /// A clock with its epoch now: the pausable clock when `force_pausable` (the `test-util`
    /// feature), where tokio's clock is paused or was moved, or where no coarse clock exists;
    /// the fast clock otherwise.
    pub(crate) fn new(force_pausable: bool) -> Self {
        let epoch = Instant::now();
        Self {
            epoch,
            fast: fast::Fast::new(force_pausable || tokio_clock_is_mocked()),
        }
    }

    /// The breaker's epoch.
    pub(crate) const fn epoch(&self) -> Instant {
        self.epoch
    }

    /// Whether this clock reads tokio's pausable clock.
    #[cfg(test)]
    pub(crate) fn is_pausable(&self) -> bool {
        self.fast.is_off()
    }

    /// Nanoseconds since the epoch, read from the precise (or pausable) clock; saturates at
    /// `u64::MAX` (584 years).
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        if !self.fast.is_off() {
            return nanos(std::time::Instant::now().saturating_duration_since(self.epoch.into_std()));
        }
        self.nanos(Instant::now())
    }

    /// A lower bound of [`now`](Self::now), at most [`margin`](Self::margin) below it: the
    /// coarse clock, or the pausable clock itself (then exact).
    #[inline]
    pub(crate) fn coarse(&self) -> u64 {
        if !self.fast.is_off() {
            return self.fast.coarse();
        }
        self.nanos(Instant::now())
    }

    /// How far [`coarse`](Self::coarse) may trail [`now`](Self::now): zero on the pausable clock.
    #[cfg(test)]
    pub(crate) fn margin(&self) -> u64 {
        if !self.fast.is_off() {
            return fast::margin();
        }
        0
    }

    /// `None` while it is certainly before `deadline` (nanoseconds since the epoch); once it
    /// may not be, the precise time (`Some(now)`, which may still be before the deadline).
    /// Far from the deadline this reads only the coarse clock.
    #[inline]
    pub(crate) fn before(&self, deadline: u64) -> Option<u64> {
        if !self.fast.is_off() {
            if self.fast.coarse().saturating_add(fast::margin()) < deadline {
                return None;
            }
            return Some(self.now());
        }
        Some(self.nanos(Instant::now()))
    }

    /// At a trip (rare): switches to the pausable clock if tokio's clock is now paused or was
    /// moved (`true`: read the time again), and widens the coarse clock's margin if it trails
    /// by more than was allowed for.
    pub(crate) fn recheck(&self) -> bool {
        self.fast.recheck()
    }

    /// `t` in nanoseconds since the epoch (0 before it).
    pub(crate) fn nanos(&self, t: Instant) -> u64 {
        nanos(t.saturating_duration_since(self.epoch))
    }

    /// The instant `nanos` after the epoch. Where the platform's `Instant` cannot reach that
    /// far (Linux's can: 584 years is nothing to it), the distance is halved until it fits:
    /// still far out, never a panic.
    pub(crate) fn instant_at(&self, nanos: u64) -> Instant {
        let mut after = Duration::from_nanos(nanos);
        loop {
            match self.epoch.checked_add(after) {
                Some(t) => return t,
                None => after /= 2,
            }
        }
    }
}

/// Whether breakers read the pausable clock wherever they are built: the `test-util` feature.
/// (The crate's own tests turn it on; a unit test can turn it off on its thread.)
pub(crate) fn forced() -> bool {
    #[cfg(test)]
    if UNFORCED.get() {
        return false;
    }
    cfg!(feature = "test-util")
}

#[cfg(test)]
thread_local! {
    /// Set by a unit test that builds breakers on the fast clock despite `test-util`.
    pub(crate) static UNFORCED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// `d` in nanoseconds, saturating at `u64::MAX` (an `as u64` cast wraps: 2^64 ns would read 0).
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Whether tokio's clock is not `std`'s: paused (two back-to-back reads are equal, which they
/// never are on the running clock, 0 of 10^7 here), or moved by hand and resumed (it then runs
/// apart from `std::time::Instant`). A thread descheduled between the reads could make the
/// running clock look moved, so a reading is taken up to three times; a clock still in doubt
/// counts as moved (the pausable clock is always correct, only slower).
pub(crate) fn tokio_clock_is_mocked() -> bool {
    for _ in 0..3 {
        let a = Instant::now();
        let b = Instant::now();
        let s = std::time::Instant::now();
        if a == b {
            return true;
        }
        let b = b.into_std();
        if b > s {
            return true; // moved ahead: tokio's reading came first, yet it is later
        }
        if s - b < Duration::from_millis(1) {
            return false;
        }
    }
    true
}

#[cfg(all(any(target_os = "linux", target_os = "android"), not(loom)))]
mod fast {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use rustix::time::{ClockId, Timespec, clock_getres, clock_gettime};

    /// The fast clock's state: the coarse clock's reading at the epoch, and whether the breaker
    /// moved to the pausable clock (sticky). Plain `std` atomics, not the loom-swapped ones:
    /// this flag takes no part in the breaker's protocol, and under loom the fast clock does
    /// not exist.
    #[derive(Debug)]
    pub(super) struct Fast {
        /// `CLOCK_MONOTONIC` nanoseconds at the epoch, read just after it, so that the coarse
        /// reading since the epoch is never above the precise one.
        epoch_raw: u64,
        off: AtomicBool,
    }

    impl Fast {
        pub(super) fn new(off: bool) -> Self {
            let raw = raw(clock_gettime(ClockId::Monotonic));
            Self {
                epoch_raw: raw,
                off: AtomicBool::new(off || margin() == 0),
            }
        }

        #[inline(always)]
        pub(super) fn is_off(&self) -> bool {
            self.off.load(Ordering::Relaxed)
        }

        #[inline(always)]
        pub(super) fn coarse(&self) -> u64 {
            raw(clock_gettime(ClockId::MonotonicCoarse)).saturating_sub(self.epoch_raw)
        }

        pub(super) fn recheck(&self) -> bool {
            if self.is_off() {
                return false;
            }
            if super::tokio_clock_is_mocked() {
                self.off.store(true, Ordering::Relaxed);
                return true;
            }
            let coarse = raw(clock_gettime(ClockId::MonotonicCoarse));
            let precise = raw(clock_gettime(ClockId::Monotonic));
            observe_lag(precise.saturating_sub(coarse));
            false
        }
    }

    fn raw(t: Timespec) -> u64 {
        // CLOCK_MONOTONIC counts from boot: never negative, and 584 years fit.
        (t.tv_sec as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(t.tv_nsec as u64)
    }

    /// Four ticks of the coarse clock (its resolution), or twice the largest lag seen, or 0
    /// (no fast clock) where the coarse clock's resolution is 0 or above 100 ms.
    static MARGIN: AtomicU64 = AtomicU64::new(u64::MAX);

    #[inline(always)]
    pub(super) fn margin() -> u64 {
        let m = MARGIN.load(Ordering::Relaxed);
        if m != u64::MAX {
            return m;
        }
        init_margin()
    }

    #[cold]
    fn init_margin() -> u64 {
        let res = raw(clock_getres(ClockId::MonotonicCoarse));
        let m = if res == 0 || res > 100_000_000 { 0 } else { 4 * res };
        let _ = MARGIN.compare_exchange(u64::MAX, m, Ordering::Relaxed, Ordering::Relaxed);
        MARGIN.load(Ordering::Relaxed)
    }

    /// The coarse clock was seen `lag` behind the precise one: the margin becomes at least
    /// twice that.
    pub(super) fn observe_lag(lag: u64) {
        let m = margin();
        if m != 0 && lag.saturating_mul(2) > m {
            MARGIN.fetch_max(lag.saturating_mul(2), Ordering::Relaxed);
        }
    }
}

/// Where no coarse clock exists (not Linux), and under loom: always the pausable clock.
#[cfg(not(all(any(target_os = "linux", target_os = "android"), not(loom))))]
mod fast {
    #[derive(Debug)]
    pub(super) struct Fast;

    impl Fast {
        pub(super) const fn new(_off: bool) -> Self {
            Self
        }

        #[inline(always)]
        pub(super) const fn is_off(&self) -> bool {
            true
        }

        pub(super) fn coarse(&self) -> u64 {
            unreachable!("no coarse clock here")
        }

        pub(super) const fn recheck(&self) -> bool {
            false
        }
    }

    pub(super) const fn margin() -> u64 {
        0
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn the_running_clock_is_not_mocked() {
        assert!(!tokio_clock_is_mocked());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async { assert!(!tokio_clock_is_mocked()) });
    }

    #[tokio::test(start_paused = true)]
    async fn a_paused_clock_is_mocked_and_picks_the_pausable_clock() {
        assert!(tokio_clock_is_mocked());
        let clock = Clock::new(false);
        assert!(clock.is_pausable());
        assert_eq!(clock.margin(), 0);
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(clock.now(), 1_500_000_000, "exact under paused time");
        assert_eq!(clock.coarse(), 1_500_000_000);
        assert_eq!(clock.before(1_500_000_001), Some(1_500_000_000));
        assert_eq!(clock.before(1_500_000_000), Some(1_500_000_000));
    }

    #[tokio::test]
    async fn a_clock_moved_by_hand_and_resumed_is_mocked() {
        tokio::time::pause();
        tokio::time::advance(Duration::from_secs(3600)).await;
        tokio::time::resume();
        assert!(
            tokio_clock_is_mocked(),
            "tokio's clock runs an hour ahead of std's"
        );
        assert!(Clock::new(false).is_pausable());
    }

    #[test]
    fn forcing_picks_the_pausable_clock() {
        assert!(Clock::new(true).is_pausable());
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn the_fast_clock_is_picked_on_the_running_clock() {
        let clock = Clock::new(false);
        assert!(!clock.is_pausable());
        assert!(clock.margin() > 0);
    }

    /// The coarse reading is a lower bound of the precise one, within the margin.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn coarse_never_leads_and_trails_within_the_margin() {
        let clock = Clock::new(false);
        for _ in 0..100_000 {
            let before = clock.now();
            let coarse = clock.coarse();
            let after = clock.now();
            assert!(coarse <= after, "coarse {coarse} ahead of precise {after}");
            if after - before < 2_000 {
                // not descheduled between the reads
                assert!(
                    before <= coarse + clock.margin(),
                    "coarse {coarse} trails {before} by more than the margin"
                );
            }
        }
    }

    /// Whatever the machine's speed: a deadline the precise clock has reached is never
    /// reported as still ahead (`before` returns `None` only while it certainly is).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn before_never_says_before_once_the_precise_clock_passed_the_deadline() {
        let clock = Clock::new(false);
        let deadline = clock.now() + 2 * clock.margin();
        loop {
            let t0 = clock.now();
            match clock.before(deadline) {
                None => assert!(t0 < deadline, "said before at {t0}, deadline {deadline}"),
                Some(now) if now >= deadline => break,
                Some(_) => {}
            }
        }
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn a_fast_clock_switches_to_the_pausable_one_at_a_trip_under_a_paused_runtime() {
        let clock = Clock::new(false);
        assert!(!clock.is_pausable());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            assert!(clock.recheck(), "a trip under paused time switches");
            assert!(clock.is_pausable());
        });
        assert!(!clock.recheck());
        assert!(clock.is_pausable(), "for good");
    }

    /// A breaker on the fast clock opens for 40 ms: every refusal came before the deadline
    /// by the precise clock, and the first admission (a probe) not before it, whatever the
    /// machine's speed.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn a_breaker_on_the_fast_clock_half_opens_never_later_than_the_precise_clock_says() {
        use crate::{CircuitBreaker, Outcome};
        const OPEN: Duration = Duration::from_millis(40);
        UNFORCED.set(true);
        let b = CircuitBreaker::builder("fast")
            .consecutive_failures(1)
            .open_duration(OPEN)
            .build()
            .unwrap();
        UNFORCED.set(false);
        assert!(!b.shared().clock.is_pausable());
        let before_trip = std::time::Instant::now();
        b.try_acquire().unwrap().record(Outcome::Failure);
        let after_trip = std::time::Instant::now();
        let mut refused = 0u64;
        loop {
            let t0 = std::time::Instant::now();
            match b.try_acquire() {
                Err(open) => {
                    assert!(
                        t0 < after_trip + OPEN,
                        "refused {:?} after the trip",
                        t0 - after_trip
                    );
                    assert!(open.retry_after().unwrap() <= OPEN);
                    refused += 1;
                }
                Ok(probe) => {
                    assert!(probe.is_probe());
                    let t1 = std::time::Instant::now();
                    assert!(
                        t1 >= before_trip + OPEN,
                        "admitted {:?} after the trip",
                        t1 - before_trip
                    );
                    break;
                }
            }
        }
        assert!(refused > 0);
    }

    #[test]
    fn instants_and_nanos_round_trip() {
        let clock = Clock::new(true);
        let t = clock.instant_at(1_234_567);
        assert_eq!(clock.nanos(t), 1_234_567);
        assert_eq!(nanos(Duration::MAX), u64::MAX);
    }
}
