//! The breaker core: state machine, windows, trip rules, permits, backoff, events, snapshot.
//!
//! Independent of tower: the [service](crate::service), the fallback and
//! the HTTP adapters are all built on this one acquire → run → record API.
//!
//! ```
//! use std::time::Duration;
//! use tower_breaker::{CircuitBreaker, Outcome, State};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let breaker = CircuitBreaker::builder("openai")
//!     .consecutive_failures(3)
//!     .open_duration(Duration::from_secs(30))
//!     .build()?;
//!
//! for _ in 0..3 {
//!     let permit = breaker.try_acquire()?; // a call goes out ...
//!     permit.record(Outcome::Failure); // ... and fails
//! }
//! assert_eq!(breaker.state(), State::Open);
//! let refused = breaker.try_acquire().unwrap_err();
//! assert_eq!(refused.retry_after(), Some(Duration::from_secs(30)));
//!
//! tokio::time::advance(Duration::from_secs(30)).await;
//! let probe = breaker.try_acquire()?; // the open period ended: one probe goes through
//! assert_eq!(breaker.state(), State::HalfOpen);
//! probe.record(Outcome::Success);
//! assert_eq!(breaker.state(), State::Closed);
//! # Ok(()) }
//! ```
//!
//! # Concurrency
//!
//! The state lives in one packed word (`generation << 3 | state`) that every call reads
//! without a lock. While closed, a call takes no lock and, unless a slow-call rule or a time
//! window needs the time, reads no clock: the consecutive rule is one atomic word tagged with
//! the generation, the count window is lock-free and writes nothing while it is full of
//! successes (see `window.rs`), the time window is lock-free, striped by lane (see
//! `window/time.rs`). Transitions and half-open admission take a short `std` mutex; listeners
//! run after it is released. Every transition bumps the generation, and every permit carries
//! the generation it was issued in, so an outcome from before the last change never causes a
//! transition.
//!
//! An open breaker refuses on the coarse clock, far from its deadline, and on the precise one
//! near it (see `clock.rs`, and [Time](crate#time) in the crate docs); a refusal holds no
//! reference to the breaker (see [Refusals](crate#refusals)).
//!
//! A permit owns a reference to the breaker (the tower response future is `'static`), so every
//! call increments and decrements a reference count. So that threads sharing a breaker do not
//! pass one cache line back and forth for that, a breaker has a few lanes (the core count
//! rounded down to a power of two, at most 8), each a reference counted in a cache line that
//! no other lane and not the state word uses, and a permit takes its thread's lane: on 2
//! workers, 64 tasks sharing one breaker make as many calls per CPU-second as one task does.
//! A permit is two words (its lane, and its generation, probe flag and start stamp in one),
//! so that it moves in registers.
//! A keyed registry's breakers have one lane (memory per key), as does any breaker under loom.

mod backoff;
mod builder;
mod clock;
mod error;
mod event;
mod ids;
mod lane;
mod name;
mod permit;
mod probes;
mod snapshot;
mod state;
pub(crate) mod sync;
mod waiters;
mod window;

#[cfg(all(test, loom))]
mod loom_tests;

use std::{fmt, task::Waker, time::Duration};

use tokio::time::Instant;

pub use backoff::Backoff;
pub use builder::Builder;
pub use error::{BoxError, CircuitOpen, ConfigError};
pub use event::{Event, Reason};
pub(crate) use lane::Lanes;
pub use permit::Permit;
pub use snapshot::Snapshot;
pub use state::State;
pub(crate) use waiters::WaitKey;
use waiters::Waiters;

use crate::classify::Outcome;
pub(crate) use builder::Config;
use builder::Window;
use clock::Clock;
use event::Listener;
use probes::Probes;
use state::{pack, unpack};
use sync::{Arc, AtomicBool, AtomicU64, Mutex, Ordering};
use window::{CountWindow, Counts, time::TimeWindow};

/// A circuit breaker: a cheap `Clone` handle over shared state.
///
/// Build one with [`CircuitBreaker::builder`]; ask it for a [`Permit`] before each call and
/// record the call's [`Outcome`] on the permit.
#[derive(Clone)]
pub struct CircuitBreaker {
    /// The breaker's own lane: every handle holds it, and it holds the permits' lanes.
    pub(crate) root: Arc<Lane>,
}

/// What a [`Permit`] holds to record its outcome: a reference to the shared state, in an
/// allocation of its own, so that admitting a call writes a reference count that only the
/// threads of one lane write (not the `Arc<Shared>`'s, next to the state word every call
/// reads). There is no cycle: the root lane holds the others, they hold only `Shared`.
pub(crate) struct Lane {
    shared: Arc<Shared>,
    /// On the root lane: the lanes permits take, by thread (`thread_slot() & (len - 1)`; a
    /// power of two long); empty when permits take the root lane itself (one lane).
    lanes: Box<[Arc<Lane>]>,
}

/// What every call reads: the state word and the open deadline.
#[derive(Debug)]
struct Hot {
    word: AtomicU64,
    /// `generation(low 32 bits) << 32 | consecutive failures`, when that rule is set.
    consecutive: AtomicU64,
    /// Nanoseconds since `epoch` at which an open breaker lets a probe through.
    open_until: AtomicU64,
}

pub(crate) struct Shared {
    /// Not padded: with several lanes, calls write only their lane's reference count, not this
    /// `Arc`'s (which shares the first cache line), so this line is written only by transitions
    /// and failures; with one lane (a keyed registry's breakers) every call writes the root
    /// lane's count, as before. Padding cost 1.3 KB a breaker, which a keyed registry
    /// multiplies by its keys.
    hot: Hot,
    count_window: Option<Box<CountWindow>>,
    time_window: Option<Box<TimeWindow>>,
    locked: Mutex<Locked>,
    clock: Clock,
    config: Config,
    listeners: Box<[Listener]>,
    name: std::sync::Arc<str>,
    /// The name as refusals carry it (a copy when short).
    refusal_name: name::Name,
    /// Tells breakers apart (refusals compare by it).
    id: u64,
    /// Shadow mode: refusals become would-be rejections (see [Shadow mode](crate#shadow-mode)).
    /// Read only on the paths that would refuse, never on the closed path.
    shadow: AtomicBool,
    /// Calls let through in shadow mode that the breaker would have refused.
    would_reject: AtomicU64,
}

/// What changes only under the lock.
#[derive(Debug)]
struct Locked {
    generation: u64,
    state: State,
    opened_for: Duration,
    /// How many times the breaker opened since it last closed (the backoff's attempt).
    opened: u32,
    /// Half-open: the probes in flight, by admission.
    probes: Probes,
    probe_successes: u32,
    /// `Readiness::Wait` services waiting for a change.
    waiters: Waiters,
    /// Why the breaker entered its current state (`None` before its first transition).
    reason: Option<Reason>,
    /// Whether the open deadline is a server's wait (a `Trip`, a remote trip), which
    /// `try_probe_early` keeps; cleared by every transition.
    server_wait: bool,
}

/// Events gathered under the lock, published after it is released.
type Pending = Option<(State, State, Reason, Option<Duration>)>;

const FIRST_GENERATION: u64 = 1;

/// Permits, the consecutive run, the count window's slots and its counts carry the
/// generation's low 16 bits. An outcome is stale when its tag differs from the current
/// generation's; a permit held across exactly a multiple of 2^16 (65,536) transitions would
/// pass for current (each transition out of closed lasts at least an open period).
pub(crate) const GEN_MASK: u64 = (1 << 16) - 1;

/// Start stamps are nanoseconds modulo 2^47 (39 hours): a call longer than that reads short.
pub(crate) const STAMP_MASK: u64 = (1 << 47) - 1;

impl CircuitBreaker {
    /// Starts a builder. `name` shows in errors, events and metrics.
    pub fn builder(name: impl Into<std::sync::Arc<str>>) -> Builder {
        Builder::new(name.into())
    }

    pub(crate) fn from_config(
        name: std::sync::Arc<str>,
        config: Config,
        listeners: Vec<Listener>,
        lanes: Lanes,
    ) -> Self {
        let clock = Clock::new(clock::forced());
        let shadow = config.shadow;
        let generation = FIRST_GENERATION;
        let count_window = match config.window {
            Window::Count(n) => Some(Box::new(CountWindow::new(n, generation))),
            _ => None,
        };
        let time_window = match config.window {
            Window::Time(d) => Some(Box::new(TimeWindow::new(
                saturating_nanos(d),
                generation,
                lane::count(lanes),
            ))),
            _ => None,
        };
        let shared = Shared {
            hot: Hot {
                word: AtomicU64::new(pack(generation, State::Closed)),
                consecutive: AtomicU64::new(consecutive_word(generation, 0)),
                open_until: AtomicU64::new(0),
            },
            count_window,
            time_window,
            locked: Mutex::new(Locked {
                generation,
                state: State::Closed,
                opened_for: Duration::ZERO,
                opened: 0,
                probes: Probes::default(),
                probe_successes: 0,
                waiters: Waiters::default(),
                reason: None,
                server_wait: false,
            }),
            clock,
            config,
            listeners: listeners.into_boxed_slice(),
            refusal_name: name::Name::new(&name),
            id: next_id(),
            shadow: AtomicBool::new(shadow),
            would_reject: AtomicU64::new(0),
            name,
        };
        let id = shared.id;
        let shared = Arc::new(shared);
        ids::register(id, &shared);
        let mut root = Arc::new(Lane {
            shared,
            lanes: Box::default(),
        });
        lane::spread(&mut root, lanes);
        Self { root }
    }

    #[inline(always)]
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.root.shared
    }

    /// The lane a permit taken on this thread holds.
    #[inline(always)]
    fn lane(&self) -> Arc<Lane> {
        let lanes = &self.root.lanes;
        if lanes.is_empty() {
            return self.root.clone();
        }
        lanes[lane::thread_slot() & (lanes.len() - 1)].clone()
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.shared().name
    }

    /// The current state. Transitions out of `Open` happen lazily, on the first
    /// [`try_acquire`](Self::try_acquire) after the open period, so an open breaker whose
    /// period ended still reads `Open` until a call arrives
    /// ([`Snapshot::retry_after`] is then zero).
    pub fn state(&self) -> State {
        unpack(self.shared().hot.word.load(Ordering::Acquire)).1
    }

    /// Asks to make a call. `Ok(permit)`: make it and record its outcome on the permit.
    /// `Err(CircuitOpen)`: don't; the circuit is open.
    #[inline(always)]
    pub fn try_acquire(&self) -> Result<Permit, CircuitOpen> {
        self.acquire_with(|refused| refused)
    }

    /// [`try_acquire`](Self::try_acquire) with the refusal boxed where it is built: the error
    /// of `FailFast`'s `poll_ready`. The result is two words, so it comes back in registers
    /// (with a refusal by value it is 72 bytes, returned through memory): the closed path
    /// through the layer went from 23.1 to 20.7 ns here.
    #[inline(always)]
    pub(crate) fn try_acquire_boxed(&self) -> Result<Permit, Box<CircuitOpen>> {
        self.acquire_with(Box::new)
    }

    /// The one admission path of [`try_acquire`](Self::try_acquire) and
    /// [`try_acquire_boxed`](Self::try_acquire_boxed): `wrap` turns a refusal into the error
    /// where it is built.
    #[inline(always)]
    fn acquire_with<E>(&self, wrap: impl FnOnce(CircuitOpen) -> E) -> Result<Permit, E> {
        let shared = &**self.shared();
        let (generation, state) = unpack(shared.hot.word.load(Ordering::Acquire));
        match state {
            State::Closed => Ok(Permit::new(self.lane(), generation, false, shared.call_start())),
            State::Disabled => Ok(Permit::passthrough()),
            State::Open => {
                let until = shared.hot.open_until.load(Ordering::Acquire);
                // The coarse clock decides far from the deadline, the precise one near it.
                match shared.clock.before(until) {
                    Some(now) if now >= until => self.acquire_slow(now).map_err(wrap),
                    _ => self.reject(generation, state, until, wrap),
                }
            }
            State::HalfOpen | State::ForcedOpen => self.acquire_slow(shared.clock.now()).map_err(wrap),
        }
    }

    /// A permit if the breaker is closed, else `None`: the closed path of
    /// [`try_acquire`](Self::try_acquire), which runs no listener and takes no lock (a keyed
    /// registry takes it under its shard's shared lock).
    #[inline(always)]
    pub(crate) fn try_acquire_closed(&self) -> Option<Permit> {
        let shared = &**self.shared();
        let (generation, state) = unpack(shared.hot.word.load(Ordering::Acquire));
        (state == State::Closed).then(|| Permit::new(self.lane(), generation, false, shared.call_start()))
    }

    #[cold]
    fn acquire_slow(&self, now: u64) -> Result<Permit, CircuitOpen> {
        let shared = &**self.shared();
        let mut pending: Pending = None;
        let result = {
            let mut l = shared.locked.lock();
            if l.state == State::Open && now >= shared.hot.open_until.load(Ordering::Acquire) {
                shared.transition(&mut l, State::HalfOpen, Reason::OpenElapsed, now, &mut pending);
            }
            if l.state == State::HalfOpen && shared.probe_deadline(&l).is_some_and(|deadline| now >= deadline)
            {
                shared.transition(&mut l, State::Open, Reason::ProbeTimedOut, now, &mut pending);
            }
            match l.state {
                State::Closed => Ok(Permit::new(self.lane(), l.generation, false, shared.call_start())),
                State::Disabled => Ok(Permit::passthrough()),
                State::HalfOpen if l.probes.len() < shared.config.half_open_permits => {
                    // A probe's start stamp is its admission, which its release removes.
                    l.probes.admit(now);
                    Ok(Permit::new(self.lane(), l.generation, true, now))
                }
                State::Open => Err((
                    l.generation,
                    State::Open,
                    shared.hot.open_until.load(Ordering::Acquire),
                )),
                state => Err((l.generation, state, NO_DEADLINE)),
            }
        };
        shared.publish(pending);
        result.or_else(|(generation, state, until)| self.reject(generation, state, until, |refused| refused))
    }

    /// Refuses a call, or, in shadow mode, lets it through as a would-be rejection.
    /// `wrap` makes the error where the refusal is built (a boxed one then moves as a pointer).
    #[cold]
    fn reject<E>(
        &self,
        generation: u64,
        state: State,
        until: u64,
        wrap: impl FnOnce(CircuitOpen) -> E,
    ) -> Result<Permit, E> {
        if self.shared().shadow.load(Ordering::Relaxed) {
            return Ok(self.would_reject(state));
        }
        Err(wrap(self.refusal(generation, state, until)))
    }

    /// Shadow mode: counts, traces and announces a call the breaker would have refused in
    /// `state`, and lets it through on a permit that records nothing (a notionally open
    /// breaker, as an open one, judges no call but its probes).
    #[cold]
    fn would_reject(&self, state: State) -> Permit {
        let shared = &**self.shared();
        shared.would_reject.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(breaker = %shared.name, state = %state, shadow = true, "circuit breaker would have rejected a call");
        if !shared.listeners.is_empty() {
            shared.emit(&Event::WouldReject {
                name: &shared.name,
                state,
            });
        }
        Permit::passthrough()
    }

    /// Traces a refusal and tells the listeners.
    #[inline(always)]
    fn announce_refusal(&self, state: State) {
        let shared = &**self.shared();
        tracing::debug!(breaker = %shared.name, state = %state, "circuit breaker rejected a call");
        if !shared.listeners.is_empty() {
            shared.emit(&Event::Rejected {
                name: &shared.name,
                state,
            });
        }
    }

    #[inline(always)]
    fn refusal(&self, generation: u64, state: State, until: u64) -> CircuitOpen {
        let shared = &**self.shared();
        self.announce_refusal(state);
        CircuitOpen::new(
            shared.refusal_name.clone(),
            shared.clock.epoch(),
            until,
            shared.id,
            state,
            generation,
        )
    }

    /// Counts, rates, state and the time until half-open, read now.
    pub fn snapshot(&self) -> Snapshot {
        let shared = &**self.shared();
        let now = shared.clock.now();
        let l = shared.locked.lock();
        let counts = match (&shared.count_window, &shared.time_window) {
            (Some(w), _) => Some(w.counts()),
            (None, Some(w)) => Some(w.counts(now)),
            (None, None) => None,
        };
        let consecutive = shared.hot.consecutive.load(Ordering::Acquire);
        let rate = |n: u32, c: &Counts| (c.calls > 0).then(|| f64::from(n) / f64::from(c.calls));
        Snapshot {
            name: shared.name.to_string(),
            state: l.state,
            consecutive_failures: consecutive as u32,
            calls: counts.map_or(0, |c| c.calls),
            failures: counts.map_or(0, |c| c.failures),
            slow_calls: counts.map_or(0, |c| c.slow),
            failure_rate: counts.and_then(|c| rate(c.failures, &c)),
            slow_call_rate: counts.and_then(|c| rate(c.slow, &c)),
            probes_in_flight: if l.state == State::HalfOpen {
                l.probes.len()
            } else {
                0
            },
            retry_after: (l.state == State::Open).then(|| {
                Duration::from_nanos(shared.hot.open_until.load(Ordering::Acquire).saturating_sub(now))
            }),
            open_for: (l.state == State::Open).then_some(l.opened_for),
            reason: l.reason,
            shadow: shared.shadow.load(Ordering::Relaxed),
            would_reject: shared.would_reject.load(Ordering::Relaxed),
        }
    }

    /// Opens the breaker until [`reset`](Self::reset), whatever the calls do.
    pub fn force_open(&self) {
        self.manual(State::ForcedOpen, Reason::Forced);
    }

    /// Switches the breaker off until [`reset`](Self::reset): everything is admitted, nothing
    /// is recorded.
    pub fn disable(&self) {
        self.manual(State::Disabled, Reason::Disabled);
    }

    /// Closes the breaker and clears its statistics and backoff, whatever its state.
    pub fn reset(&self) {
        self.manual(State::Closed, Reason::Reset);
    }

    /// Switches shadow mode on or off at runtime (see [Shadow mode](crate#shadow-mode)).
    ///
    /// In shadow mode the breaker runs its state machine and publishes every event, but never
    /// refuses a call: a call it would refuse passes, counted in
    /// [`Snapshot::would_reject`] and announced as [`Event::WouldReject`]. Switched off while
    /// notionally open, it refuses from the next call; switched on, it lets calls through
    /// from the next call. The state, the open deadline and the windows are kept.
    ///
    /// ```
    /// use tower_breaker::{CircuitBreaker, Outcome, State};
    ///
    /// let breaker = CircuitBreaker::builder("openai").consecutive_failures(1).shadow(true).build().unwrap();
    /// breaker.try_acquire().unwrap().record(Outcome::Failure);
    /// assert_eq!(breaker.state(), State::Open); // notionally
    /// assert!(breaker.try_acquire().is_ok()); // passes, as a would-be rejection
    /// assert_eq!(breaker.snapshot().would_reject, 1);
    ///
    /// breaker.set_shadow(false); // enforce
    /// assert!(breaker.try_acquire().is_err());
    /// ```
    pub fn set_shadow(&self, shadow: bool) {
        let shared = &**self.shared();
        if shared.shadow.swap(shadow, Ordering::Relaxed) != shadow {
            tracing::info!(breaker = %shared.name, shadow, "circuit breaker shadow mode switched");
        }
    }

    /// Whether the breaker is in shadow mode (see [`set_shadow`](Self::set_shadow)).
    pub fn is_shadow(&self) -> bool {
        self.shared().shadow.load(Ordering::Relaxed)
    }

    fn manual(&self, to: State, reason: Reason) {
        let shared = &**self.shared();
        let mut pending = None;
        {
            let mut l = shared.locked.lock();
            if l.state != to {
                shared.transition(&mut l, to, reason, shared.clock.now(), &mut pending);
            } else if to == State::Closed {
                // Not a change of state, but a fresh start: calls admitted before it are stale.
                l.generation += 1;
                shared
                    .hot
                    .word
                    .store(pack(l.generation, State::Closed), Ordering::Release);
                shared.clear_statistics(&mut l);
            }
        }
        shared.publish(pending);
    }

    /// Opens the breaker now for `wait` (clamped to `max_open_duration`), as if a call had
    /// returned [`Outcome::Trip`]: a longer wait already in force stays. Forced-open and
    /// disabled breakers are left alone.
    pub fn trip(&self, wait: Duration) {
        self.shared().trip(wait);
    }

    /// Like [`trip`](Self::trip), for a trip learned from another replica: the transition's
    /// reason is [`Reason::Remote`], so a sync component can tell it from local trips and not
    /// echo it back.
    pub fn trip_remote(&self, wait: Duration) {
        self.shared().trip_for(wait, Reason::Remote);
    }

    /// Like [`try_acquire`](Self::try_acquire), but an open breaker lets this call through
    /// now, as its half-open probe, instead of refusing it until its open period ends.
    ///
    /// For a caller with nowhere else to go (every provider of a failover chain open, say):
    /// the breaker moves to `HalfOpen` at once (the transition's reason is
    /// [`Reason::EarlyProbe`]) and the permit is its probe, recorded as any probe is: a
    /// success closes the breaker (with `half_open_successes(1)`), a failure opens it again
    /// with the backoff's next period.
    ///
    /// Only an open period the breaker chose itself is cut short (a trip rule, a failed or
    /// timed-out probe). An open period a server asked for, or extended ([`Outcome::Trip`],
    /// e.g. a `Retry-After`, a quota error; or a trip from another replica,
    /// [`Reason::Remote`]), is kept, and so are [`force_open`](Self::force_open) and
    /// [`disable`](Self::disable): in those states, and in `Closed` and `HalfOpen`, this is
    /// `try_acquire`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_breaker::{CircuitBreaker, Outcome, State};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let breaker = CircuitBreaker::builder("openai").consecutive_failures(1).build().unwrap();
    /// breaker.try_acquire().unwrap().record(Outcome::Failure); // open for 30 s
    /// assert!(breaker.try_acquire().is_err());
    ///
    /// let probe = breaker.try_probe_early().unwrap(); // now, not in 30 s
    /// assert!(probe.is_probe());
    /// assert_eq!(breaker.state(), State::HalfOpen);
    /// probe.record(Outcome::Success);
    /// assert_eq!(breaker.state(), State::Closed);
    /// # }
    /// ```
    pub fn try_probe_early(&self) -> Result<Permit, CircuitOpen> {
        let shared = &**self.shared();
        let now = shared.clock.now();
        let mut pending = None;
        let probe = {
            let mut l = shared.locked.lock();
            // Half-open starts with no probe in flight and at least one permit: this is one.
            // A probe's start stamp is its admission, which its release removes.
            shared.end_open_early(&mut l, None, now, &mut pending).then(|| {
                l.probes.admit(now);
                Permit::new(self.lane(), l.generation, true, now)
            })
        };
        shared.publish(pending);
        match probe {
            Some(permit) => Ok(permit),
            None => self.try_acquire(),
        }
    }

    /// For a waiting service: registers `waker` in the service's slot (`key`, taken on the
    /// first wait) to be woken when the breaker may admit again (a transition or a released
    /// probe). Returns `false` when the breaker may admit already, so the caller must try
    /// again at once; the slot is freed then.
    pub(crate) fn wait_for_change(
        &self,
        refused: &CircuitOpen,
        key: &mut Option<WaitKey>,
        waker: &Waker,
    ) -> bool {
        let shared = &**self.shared();
        let mut l = shared.locked.lock();
        let may_admit = l.generation & GEN_MASK != refused.generation()
            || (l.state == State::HalfOpen && l.probes.len() < shared.config.half_open_permits)
            || (l.state == State::Open
                && shared.clock.now() >= shared.hot.open_until.load(Ordering::Acquire));
        if may_admit {
            if let Some(key) = key.take() {
                l.waiters.remove(key);
            }
            return false;
        }
        l.waiters.register(key, waker);
        true
    }

    /// A waiting service was admitted, or dropped while waiting: frees its slot and waker.
    pub(crate) fn stop_waiting(&self, key: WaitKey) {
        self.shared().locked.lock().waiters.remove(key);
    }

    /// How many wakers of waiting services are registered (for tests).
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> (usize, usize) {
        let l = self.shared().locked.lock();
        (l.waiters.registered(), l.waiters.slots())
    }

    /// When the breaker will next change by itself: the end of the open period, or of the
    /// half-open wait for a decision.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let shared = &**self.shared();
        let l = shared.locked.lock();
        match l.state {
            State::Open => Some(
                shared
                    .clock
                    .instant_at(shared.hot.open_until.load(Ordering::Acquire)),
            ),
            State::HalfOpen => shared.probe_deadline(&l).map(|at| shared.clock.instant_at(at)),
            _ => None,
        }
    }
}

/// A number no other breaker of this process has.
fn next_id() -> u64 {
    // Plain `std`: an identity, not part of the protocol loom checks.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) & error::ID_MASK
}

const fn consecutive_word(generation: u64, count: u32) -> u64 {
    ((generation & GEN_MASK) << 32) | count as u64
}

/// `open_until` of a rejection that has no deadline (forced open, half-open full).
pub(crate) const NO_DEADLINE: u64 = u64::MAX;

/// The latest deadline an open breaker can have: one short of [`NO_DEADLINE`], so that a
/// saturated deadline (a wait of centuries) is never mistaken for none. Deadlines are
/// nanoseconds since the breaker's creation in a `u64`: about 584 years.
pub(crate) const LAST_DEADLINE: u64 = NO_DEADLINE - 1;

pub(crate) use clock::nanos as saturating_nanos;

impl Shared {
    /// The deadline `wait` after `now` (nanoseconds since the epoch); saturates at
    /// [`LAST_DEADLINE`] (whatever the wait: `Duration::MAX` is fine).
    fn deadline(now: u64, wait: Duration) -> u64 {
        now.saturating_add(saturating_nanos(wait)).min(LAST_DEADLINE)
    }

    /// When half-open gives up on its probes in flight and reopens, in nanoseconds since the
    /// epoch: `half_open_max_wait` after the admission of the oldest probe in flight. `None`
    /// with no probe in flight (half-open waits for the next caller, who becomes the probe),
    /// or when the wait reaches past what the clock can hold (it never gives up then).
    fn probe_deadline(&self, l: &Locked) -> Option<u64> {
        let oldest = l.probes.oldest()?;
        oldest
            .checked_add(saturating_nanos(self.config.half_open_max_wait))
            .filter(|&at| at <= LAST_DEADLINE)
    }

    /// A closed permit's start stamp: nanoseconds since the epoch (the permit keeps them
    /// modulo 2^47), or 0 when no rule needs call durations (no clock read then).
    #[inline]
    fn call_start(&self) -> u64 {
        if self.config.times_calls() {
            self.clock.now()
        } else {
            0
        }
    }

    /// The call's duration from its permit's start stamp (nanoseconds modulo 2^47), to the
    /// nanosecond, the resolution of the clock the breaker reads; `None` when calls are not
    /// timed. A call longer than 2^47 ns (39 hours) reads short.
    #[inline]
    fn elapsed_since(&self, start: u64) -> Option<Duration> {
        if !self.config.times_calls() {
            return None;
        }
        Some(Duration::from_nanos(
            self.clock.now().wrapping_sub(start) & STAMP_MASK,
        ))
    }

    /// Moves to `to` under the lock: new generation, fresh per-state bookkeeping, waiters woken.
    fn transition(&self, l: &mut Locked, to: State, reason: Reason, now: u64, pending: &mut Pending) {
        let from = l.state;
        l.generation += 1;
        l.state = to;
        l.reason = Some(reason);
        l.server_wait = false;
        let mut open_for = None;
        match to {
            State::Open => {
                let d = if matches!(reason, Reason::ServerWait | Reason::Remote) {
                    l.opened_for // set by the caller
                } else {
                    let d = self.config.backoff.next(l.opened);
                    l.opened = l.opened.saturating_add(1);
                    d
                };
                l.opened_for = d;
                // A trip is where a breaker built before `tokio::time::pause()` learns of it.
                let now = if self.clock.recheck() {
                    self.clock.now()
                } else {
                    now
                };
                self.hot
                    .open_until
                    .store(Self::deadline(now, d), Ordering::Release);
                open_for = Some(d);
            }
            State::HalfOpen => {
                l.probes.clear();
                l.probe_successes = 0;
            }
            State::Closed => {
                l.opened = 0;
                self.clear_statistics(l);
            }
            State::ForcedOpen | State::Disabled => {}
        }
        self.hot.word.store(pack(l.generation, to), Ordering::Release);
        l.waiters.wake_all();
        // Only the latest transition of one locked section is published; sections make at
        // most two (open → half-open → open on a timed-out probe), and both are traced.
        if let Some((f, t, r, d)) = pending.take() {
            self.announce(f, t, r, d);
        }
        *pending = Some((from, to, reason, open_for));
    }

    fn clear_statistics(&self, l: &mut Locked) {
        self.hot
            .consecutive
            .store(consecutive_word(l.generation, 0), Ordering::Release);
        if let Some(w) = &self.count_window {
            w.reset(l.generation);
        }
        if let Some(w) = &self.time_window {
            w.reset(l.generation);
        }
    }

    fn publish(&self, pending: Pending) {
        if let Some((from, to, reason, open_for)) = pending {
            self.announce(from, to, reason, open_for);
        }
    }

    fn announce(&self, from: State, to: State, reason: Reason, open_for: Option<Duration>) {
        let name = &*self.name;
        let shadow = self.shadow.load(Ordering::Relaxed);
        match to {
            State::Open | State::ForcedOpen => tracing::warn!(
                breaker = name, from = %from, reason = %reason, open_for = ?open_for, shadow,
                "circuit breaker opened"
            ),
            State::Closed => {
                tracing::info!(breaker = name, from = %from, reason = %reason, shadow, "circuit breaker closed")
            }
            _ => {
                tracing::info!(breaker = name, from = %from, to = %to, reason = %reason, shadow, "circuit breaker changed state")
            }
        }
        if !self.listeners.is_empty() {
            self.emit(&Event::Transition {
                name: &self.name,
                from,
                to,
                reason,
                open_for,
                shadow,
            });
        }
    }

    fn emit(&self, event: &Event<'_>) {
        for listener in &*self.listeners {
            listener(event);
        }
    }

    #[cold]
    fn emit_recorded(&self, outcome: Option<Outcome>, elapsed: Option<Duration>) {
        let name = &*self.name;
        match outcome {
            Some(outcome) => self.emit(&Event::Recorded {
                name,
                outcome,
                slow: self.is_slow(elapsed),
            }),
            None => self.emit(&Event::Released { name }),
        }
    }

    /// A closed permit dropped unrecorded: only listeners hear of it.
    pub(crate) fn release_closed(&self) {
        if !self.listeners.is_empty() {
            self.emit_recorded(None, None);
        }
    }

    /// Records the outcome of a call admitted while closed in `generation`.
    #[inline]
    fn record_closed(&self, generation: u64, outcome: Outcome, elapsed: Option<Duration>) {
        if !self.listeners.is_empty() {
            self.emit_recorded(Some(outcome), elapsed);
        }
        let failure = match outcome {
            Outcome::Success => false,
            Outcome::Failure => true,
            Outcome::Ignore => return,
            Outcome::Trip(wait) => return self.trip(wait),
        };
        if unpack(self.hot.word.load(Ordering::Acquire)).0 & GEN_MASK != generation {
            return; // admitted before the last change
        }
        let slow = self.is_slow(elapsed);
        let mut reason = None;
        if let Some(n) = self.config.consecutive {
            reason = self.count_consecutive(generation, failure, n);
        }
        if let Some(w) = &self.count_window {
            if let Some(counts) = w.record(generation, failure, slow) {
                reason = reason.or_else(|| self.rate_rule(&counts));
            }
        } else if let Some(w) = &self.time_window {
            // The coarse clock: a bucket boundary is late by at most its margin (exact on
            // the pausable clock).
            let at = self.clock.coarse();
            if let Some(counts) = w.record(at, generation, lane::thread_id(), failure, slow) {
                match self.rate_rule(&counts) {
                    Some(r) => reason = reason.or(Some(r)),
                    None if counts.calls >= self.config.min_calls => w.settle(at, generation),
                    None => {}
                }
            }
        }
        if let Some(reason) = reason {
            self.trip_closed(generation, reason);
        }
    }

    #[inline]
    fn is_slow(&self, elapsed: Option<Duration>) -> bool {
        matches!((self.config.slow, elapsed), (Some((threshold, _)), Some(e)) if e > threshold)
    }

    #[inline]
    fn count_consecutive(&self, generation: u64, failure: bool, n: u32) -> Option<Reason> {
        let tag = generation & GEN_MASK;
        let mut cur = self.hot.consecutive.load(Ordering::Acquire);
        loop {
            if cur >> 32 != tag || (!failure && cur as u32 == 0) {
                return None;
            }
            let count = if failure {
                (cur as u32).saturating_add(1)
            } else {
                0
            };
            match self.hot.consecutive.compare_exchange_weak(
                cur,
                consecutive_word(generation, count),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return (failure && count >= n).then_some(Reason::ConsecutiveFailures),
                Err(actual) => cur = actual,
            }
        }
    }

    /// The rate rules, pinned (issue 13): trip iff `bad as f64 / calls as f64 >= threshold`,
    /// the quotient [`snapshot`](CircuitBreaker::snapshot) reports, so that the breaker never
    /// disagrees with its own snapshot. The division of two integers below 2^53 is correctly
    /// rounded, as is the parse of a decimal literal: a threshold written as the ratio `k/n`
    /// (`0.07` for 7 of 100) is the same `f64` as the quotient of any window at that ratio, so
    /// equality trips. Rounding is monotonic, so a greater ratio never reads below the
    /// threshold; and two different ratios `j/m` and `k/n` in `0..=1` differ by at least
    /// `1/(m·n)`, which for any window (`m < 2^32` calls) and `n < 2^20` is more than the
    /// spacing of `f64`s there (at most 2^-53), so a smaller ratio never rounds up to the
    /// threshold. (The former `failures >= rate * calls` rounded the product instead:
    /// `0.07 * 100.0` is `7.000000000000001`, so 7 failures of 100 did not trip.)
    fn rate_rule(&self, c: &Counts) -> Option<Reason> {
        if c.calls < self.config.min_calls || c.calls == 0 {
            return None;
        }
        let rate = |bad: u32| f64::from(bad) / f64::from(c.calls);
        if self.config.failure_rate.is_some_and(|r| rate(c.failures) >= r) {
            return Some(Reason::FailureRate);
        }
        if self.config.slow.is_some_and(|(_, r)| rate(c.slow) >= r) {
            return Some(Reason::SlowCalls);
        }
        None
    }

    #[cold]
    fn trip_closed(&self, generation: u64, reason: Reason) {
        let mut pending = None;
        {
            let mut l = self.locked.lock();
            if l.generation & GEN_MASK == generation && l.state == State::Closed {
                self.transition(&mut l, State::Open, reason, self.clock.now(), &mut pending);
            }
        }
        self.publish(pending);
    }

    /// A server asked for a pause: open now, until the later of the current deadline and
    /// `now + min(wait, max_open_duration)`, whatever the generation.
    #[cold]
    fn trip(&self, wait: Duration) {
        self.trip_for(wait, Reason::ServerWait);
    }

    fn trip_for(&self, wait: Duration, reason: Reason) {
        let now = self.clock.now();
        let wait = wait.min(self.config.max_open);
        let mut pending = None;
        {
            let mut l = self.locked.lock();
            match l.state {
                State::ForcedOpen | State::Disabled => {}
                State::Open => {
                    let until = Self::deadline(now, wait);
                    if until > self.hot.open_until.load(Ordering::Acquire) {
                        self.hot.open_until.store(until, Ordering::Release);
                        l.opened_for = wait;
                        l.server_wait = true;
                    }
                }
                State::Closed | State::HalfOpen => {
                    l.opened_for = wait;
                    self.transition(&mut l, State::Open, reason, now, &mut pending);
                    l.server_wait = true;
                }
            }
        }
        self.publish(pending);
    }

    /// Ends an open period early (to `HalfOpen`, [`Reason::EarlyProbe`]) when the breaker is
    /// `Open` (in `generation`, if given) until a deadline of its own, not a server's wait.
    fn end_open_early(
        &self,
        l: &mut Locked,
        generation: Option<u64>,
        now: u64,
        pending: &mut Pending,
    ) -> bool {
        // A refusal carries the generation's low bits (`GEN_MASK`).
        if l.state != State::Open || l.server_wait || generation.is_some_and(|g| g != l.generation & GEN_MASK)
        {
            return false;
        }
        self.transition(l, State::HalfOpen, Reason::EarlyProbe, now, pending);
        true
    }

    /// For a refusal's holder: ends the open period that refused in `generation` early, so the
    /// next `try_acquire` is admitted as a probe (see [`CircuitBreaker::try_probe_early`]).
    /// Whether it did.
    pub(crate) fn open_early(&self, generation: u64) -> bool {
        let mut pending = None;
        let ended = {
            let mut l = self.locked.lock();
            self.end_open_early(&mut l, Some(generation), self.clock.now(), &mut pending)
        };
        self.publish(pending);
        ended
    }

    /// Records the outcome of a half-open probe admitted at `admitted` (nanoseconds since the
    /// epoch modulo 2^47); `None`: dropped unrecorded, released.
    fn record_probe(
        &self,
        generation: u64,
        admitted: u64,
        outcome: Option<Outcome>,
        elapsed: Option<Duration>,
    ) {
        if !self.listeners.is_empty() {
            self.emit_recorded(outcome, elapsed);
        }
        if let Some(Outcome::Trip(wait)) = outcome {
            self.release_probe(generation, admitted, None);
            return self.trip(wait);
        }
        let slow = self.is_slow(elapsed);
        self.release_probe(generation, admitted, outcome.map(|o| (o, slow)));
    }

    fn release_probe(&self, generation: u64, admitted: u64, outcome: Option<(Outcome, bool)>) {
        let now = self.clock.now();
        let mut pending = None;
        {
            let mut l = self.locked.lock();
            if l.generation & GEN_MASK != generation || l.state != State::HalfOpen {
                return; // the probe's half-open period is over; its slot went with it
            }
            l.probes.release(admitted, now);
            match outcome {
                Some((Outcome::Success, false)) => {
                    l.probe_successes += 1;
                    if l.probe_successes >= self.config.half_open_successes {
                        self.transition(&mut l, State::Closed, Reason::ProbesSucceeded, now, &mut pending);
                    }
                }
                Some((Outcome::Success, true)) => {
                    self.transition(&mut l, State::Open, Reason::SlowCalls, now, &mut pending)
                }
                Some((Outcome::Failure, _)) => {
                    self.transition(&mut l, State::Open, Reason::ProbeFailed, now, &mut pending)
                }
                _ => {} // ignored or dropped: the permit goes back
            }
            if pending.is_none() {
                l.waiters.wake_all(); // a slot is free
            }
        }
        self.publish(pending);
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        ids::unregister(self.id);
    }
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.shared().name)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}
