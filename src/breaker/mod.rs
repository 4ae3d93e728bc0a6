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
//!
//! An optional recovery probe (see `recovery.rs`) runs on a tokio task of its own, holding a
//! weak reference to the breaker; it is looked at only in transitions and by a call that finds
//! the open period over, never on the closed path or an ordinary refusal.

mod admission;
mod backoff;
mod builder;
mod clock;
mod controls;
mod error;
mod event;
mod ids;
mod lane;
mod name;
mod outcome;
mod permit;
mod probes;
mod record;
mod recovery;
mod reload;
mod rules;
mod snapshot;
mod state;
pub(crate) mod sync;
mod transition;
mod waiters;
mod window;

#[cfg(all(test, loom))]
mod loom_tests;

use std::{fmt, time::Duration};

pub use backoff::Backoff;
pub use builder::Builder;
pub use error::{BoxError, CircuitOpen, ConfigError};
pub use event::{Event, Origin, Override, Reason};
pub(crate) use lane::Lanes;
pub use outcome::Outcome;
pub use permit::Permit;
pub use snapshot::Snapshot;
pub use state::State;
pub(crate) use waiters::WaitKey;
use waiters::Waiters;

pub(crate) use builder::Config;
use builder::Window;
use clock::Clock;
use event::Listener;
use probes::Probes;
use rules::Rules;
use state::{pack, unpack};
use sync::{Arc, AtomicBool, AtomicU32, AtomicU64, Mutex, Ordering};
use window::{CountWindow, WindowStore, time::TimeWindow};

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
    /// Which window the rate rules read: 0 for `Shared::window`, `n` for `reshaped[n - 1]`.
    /// Every reload that changes the window's shape adds one (see `reload.rs`). Here, in the
    /// cache line of the state word that every call reads already.
    shape: AtomicU32,
}

pub(crate) struct Shared {
    /// Not padded: with several lanes, calls write only their lane's reference count, not this
    /// `Arc`'s (which shares the first cache line), so this line is written only by transitions
    /// and failures; with one lane (a keyed registry's breakers) every call writes the root
    /// lane's count, as before. Padding cost 1.3 KB a breaker, which a keyed registry
    /// multiplies by its keys.
    hot: Hot,
    /// The trip rules' settings the closed path reads (a reload rewrites them).
    rules: Rules,
    /// The window the breaker was built with.
    window: WindowStore,
    /// The windows of the reloads that changed the window's shape (see `Hot::shape`).
    reshaped: std::sync::OnceLock<Box<reload::Reshaped>>,
    locked: Mutex<Locked>,
    clock: Clock,
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
    /// The out-of-band recovery probe, if one is set (see `recovery.rs`). Read only on the
    /// cold paths: transitions, and calls past the open deadline.
    recovery: Option<recovery::RecoveryProbe>,
}

/// What changes only under the lock.
#[derive(Debug)]
struct Locked {
    /// The settings, as last built or reloaded (the closed path reads `Shared::rules`).
    config: Config,
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
    /// The recovery probe's task and the probe in flight (see `recovery.rs`).
    recovery: recovery::Recovery,
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
        recovery: Option<recovery::RecoveryProbe>,
        lanes: Lanes,
    ) -> Self {
        let clock = Clock::new(clock::forced());
        let shadow = config.shadow.unwrap_or(false);
        let generation = FIRST_GENERATION;
        let window = match config.window {
            Window::None => WindowStore::None,
            Window::Count(n) => WindowStore::Count(Box::new(CountWindow::new(n, generation))),
            Window::Time(d) => WindowStore::Time(Box::new(TimeWindow::new(
                saturating_nanos(d),
                generation,
                lane::count(lanes),
            ))),
        };
        let shared = Shared {
            hot: Hot {
                word: AtomicU64::new(pack(generation, State::Closed)),
                consecutive: AtomicU64::new(consecutive_word(generation, 0)),
                open_until: AtomicU64::new(0),
                shape: AtomicU32::new(0),
            },
            rules: Rules::new(&config),
            window,
            reshaped: std::sync::OnceLock::new(),
            locked: Mutex::new(Locked {
                config,
                generation,
                state: State::Closed,
                opened_for: Duration::ZERO,
                opened: 0,
                probes: Probes::default(),
                probe_successes: 0,
                waiters: Waiters::default(),
                reason: None,
                server_wait: false,
                recovery: recovery::Recovery::default(),
            }),
            clock,
            listeners: listeners.into_boxed_slice(),
            refusal_name: name::Name::new(&name),
            id: next_id(),
            shadow: AtomicBool::new(shadow),
            would_reject: AtomicU64::new(0),
            recovery,
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
    /// ([`Snapshot::retry_after`] is then zero). With a
    /// [recovery probe](crate#recovery-probes), it stays `Open` until the probe succeeds,
    /// whether or not calls arrive.
    pub fn state(&self) -> State {
        unpack(self.shared().hot.word.load(Ordering::Acquire)).1
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

impl Drop for Shared {
    fn drop(&mut self) {
        self.stop_recovery();
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
