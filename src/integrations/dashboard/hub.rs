//! What the dashboard knows: the watched breakers and keyed registries, the counts their
//! listeners keep, the sampled history and the last transitions, and the channel the event
//! streams read. Everything here is bounded: a history of `history` samples per watched
//! breaker (and per key shown), `transitions` records per breaker (and as many operators'
//! actions), `top_keys` keys per registry, and a broadcast channel of [`EVENT_CAPACITY`]
//! frames.

use std::{
    collections::{HashMap, VecDeque},
    fmt,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use tokio::{sync::broadcast, time::Instant};

use super::{sse, view};
use crate::breaker::{CircuitBreaker, Event, Lane, Origin, Override, Reason, Snapshot, State};

/// Frames buffered for the slowest event stream; a stream that falls further behind skips
/// the transitions it missed (the next periodic snapshot carries them).
pub(crate) const EVENT_CAPACITY: usize = 256;

/// The dashboard's settings, validated by its builder.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) title: String,
    pub(crate) sample_every: Duration,
    /// Samples kept per breaker.
    pub(crate) history: usize,
    pub(crate) top_keys: usize,
    pub(crate) transitions: usize,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One state change, as the dashboard keeps it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Transition {
    /// Its rank among the breaker's transitions and actions.
    pub(crate) seq: u64,
    pub(crate) at: Instant,
    pub(crate) unix_ms: u64,
    pub(crate) from: State,
    pub(crate) to: State,
    pub(crate) reason: Reason,
    pub(crate) open_for: Option<Duration>,
    /// Whether the breaker was in shadow mode: an `Open` here refused nothing.
    pub(crate) shadow: bool,
}

/// What an operator did to a breaker: an override, or a reload of its settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Act {
    /// `force_open`, `disable`, `reset` or a shadow switch.
    Override(Override),
    /// New settings applied to the live breaker; whether it is in shadow mode after them.
    Reload { shadow: bool },
}

impl Act {
    /// `force_open`, `disable`, `reset`, `shadow_on`, `shadow_off` or `reload`.
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Act::Override(action) => action.as_str(),
            Act::Reload { .. } => "reload",
        }
    }
}

/// One operator's action, as the dashboard keeps it.
#[derive(Clone, Debug)]
pub(crate) struct Action {
    /// Its rank among the breaker's transitions and actions.
    pub(crate) seq: u64,
    pub(crate) at: Instant,
    pub(crate) unix_ms: u64,
    pub(crate) act: Act,
    /// The replica it comes from; `None`: this process.
    pub(crate) remote: Option<Arc<str>>,
}

/// One sample of a breaker, every `sample_every`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sample {
    pub(crate) state: State,
    pub(crate) failure_rate: Option<f32>,
    pub(crate) slow_call_rate: Option<f32>,
    pub(crate) calls_per_sec: Option<f32>,
    pub(crate) rejections_per_sec: Option<f32>,
}

/// What the sampler derives from a breaker's counts: rates over the last interval, and the
/// history (always for a watched breaker; for a key, only while it is among the top keys).
#[derive(Debug, Default)]
pub(crate) struct Track {
    last_calls: u64,
    last_rejected: u64,
    pub(crate) calls_per_sec: Option<f64>,
    pub(crate) rejections_per_sec: Option<f64>,
    pub(crate) history: Option<VecDeque<Sample>>,
}

impl Track {
    /// Reads the counters and turns their growth over `dt` into rates.
    fn update(&mut self, stats: &Stats, dt: Option<Duration>) {
        let calls = stats.calls.load(Ordering::Relaxed);
        let rejected = stats.rejected.load(Ordering::Relaxed);
        if let Some(dt) = dt.filter(|d| !d.is_zero()) {
            let secs = dt.as_secs_f64();
            self.calls_per_sec = Some(round3(calls.saturating_sub(self.last_calls) as f64 / secs));
            self.rejections_per_sec = Some(round3(rejected.saturating_sub(self.last_rejected) as f64 / secs));
        }
        self.last_calls = calls;
        self.last_rejected = rejected;
    }

    fn push(&mut self, snapshot: &Snapshot, cap: usize) {
        let history = self
            .history
            .get_or_insert_with(|| VecDeque::with_capacity(cap.min(64)));
        if history.len() == cap {
            history.pop_front();
        }
        history.push_back(Sample {
            state: snapshot.state,
            failure_rate: snapshot.failure_rate.map(|r| r as f32),
            slow_call_rate: snapshot.slow_call_rate.map(|r| r as f32),
            calls_per_sec: self.calls_per_sec.map(|r| r as f32),
            rejections_per_sec: self.rejections_per_sec.map(|r| r as f32),
        });
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The counts an instrumented breaker's listener keeps. A call costs one relaxed atomic
/// increment here; a transition takes a lock and, when an event stream is open, formats one
/// frame.
pub(crate) struct Stats {
    /// The key, for a keyed registry's breaker.
    pub(crate) key: Option<Box<str>>,
    /// Calls admitted and finished (an outcome recorded, or the permit released).
    calls: AtomicU64,
    rejected: AtomicU64,
    /// The last transitions, newest last.
    pub(crate) transitions: Mutex<VecDeque<Transition>>,
    /// The last operators' actions (overrides, reloads), newest last.
    pub(crate) actions: Mutex<VecDeque<Action>>,
    /// Transitions and actions so far: orders them (an action comes before the transition
    /// it causes, often in the same millisecond).
    seq: AtomicU64,
    cap: usize,
    /// For keys: the sampler's view (for watched breakers it lives in [`Watched`]).
    pub(crate) track: Mutex<Track>,
    hub: Weak<Hub>,
}

impl fmt::Debug for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stats")
            .field("key", &self.key)
            .field("calls", &self.calls)
            .field("rejected", &self.rejected)
            .finish_non_exhaustive()
    }
}

impl Stats {
    pub(crate) fn on_event(&self, event: &Event<'_>) {
        match *event {
            // A would-be rejection (shadow mode) is a call that went out, unrecorded.
            Event::Recorded { .. } | Event::Released { .. } | Event::WouldReject { .. } => {
                self.calls.fetch_add(1, Ordering::Relaxed);
            }
            Event::Rejected { .. } => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
            }
            // An operator's action: its transition, if any, follows as its own event.
            Event::Override { name, action, origin } => {
                let remote = match origin {
                    Origin::Local => None,
                    Origin::Remote(replica) => Some(replica.into()),
                };
                self.action(name, Act::Override(action), remote);
            }
            Event::Transition {
                name,
                from,
                to,
                reason,
                open_for,
                shadow,
            } => self.transition(name, from, to, reason, open_for, shadow),
            // A reload is this process's (a keyed registry's reload reaches every key).
            Event::Reconfigured { name, shadow } => self.action(name, Act::Reload { shadow }, None),
        }
    }

    #[cold]
    fn action(&self, name: &str, act: Act, remote: Option<Arc<str>>) {
        let a = Action {
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            at: Instant::now(),
            unix_ms: unix_ms(),
            act,
            remote,
        };
        {
            let mut log = lock(&self.actions);
            if log.len() == self.cap {
                log.pop_front();
            }
            log.push_back(a.clone());
        }
        if let Some(hub) = self.hub.upgrade() {
            if hub.events.receiver_count() > 0 {
                let frame = sse::action_frame(name, self.key.as_deref(), &a);
                // Err only when every stream closed meanwhile.
                let _ = hub.events.send(frame);
            }
        }
    }

    #[cold]
    fn transition(
        &self,
        name: &str,
        from: State,
        to: State,
        reason: Reason,
        open_for: Option<Duration>,
        shadow: bool,
    ) {
        let t = Transition {
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            at: Instant::now(),
            unix_ms: unix_ms(),
            from,
            to,
            reason,
            open_for,
            shadow,
        };
        {
            let mut log = lock(&self.transitions);
            if log.len() == self.cap {
                log.pop_front();
            }
            log.push_back(t);
        }
        if let Some(hub) = self.hub.upgrade() {
            if hub.events.receiver_count() > 0 {
                let frame = sse::transition_frame(name, self.key.as_deref(), &t);
                // Err only when every stream closed meanwhile.
                let _ = hub.events.send(frame);
            }
        }
    }

    /// The last transitions, newest first.
    pub(crate) fn transitions(&self) -> Vec<Transition> {
        lock(&self.transitions).iter().rev().copied().collect()
    }

    /// The last operators' actions, newest first.
    pub(crate) fn actions(&self) -> Vec<Action> {
        lock(&self.actions).iter().rev().cloned().collect()
    }
}

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A breaker registered with `watch`: held weakly, like the Prometheus collector does.
pub(crate) struct Watched {
    pub(crate) breaker: Weak<Lane>,
    pub(crate) name: Arc<str>,
    pub(crate) stats: Option<Arc<Stats>>,
    pub(crate) track: Track,
}

/// Lists a registry's breakers: `(key, breaker)` for each, then the overflow breaker with no
/// key. Type-erases the registry's key type.
pub(crate) type ForEach =
    Box<dyn Fn(&mut dyn FnMut(Option<&dyn fmt::Display>, &CircuitBreaker)) + Send + Sync>;

/// A keyed registry registered with `watch_keyed`.
pub(crate) struct WatchedRegistry {
    pub(crate) name: String,
    pub(crate) for_each: ForEach,
    pub(crate) len: Box<dyn Fn() -> usize + Send + Sync>,
    pub(crate) max_keys: usize,
    /// Keys in the registry at the last sample.
    pub(crate) keys: usize,
    /// The top keys at the last sample, best first.
    pub(crate) top: Vec<TopKey>,
}

/// A key shown on the page.
pub(crate) struct TopKey {
    pub(crate) key: String,
    pub(crate) breaker: Weak<Lane>,
    pub(crate) stats: Option<Arc<Stats>>,
}

#[derive(Default)]
pub(crate) struct Registered {
    pub(crate) breakers: Vec<Watched>,
    pub(crate) registries: Vec<WatchedRegistry>,
    last_sample: Option<Instant>,
}

/// Instrumented breakers by name, so that `watch` and the registries find their counts.
type Index = HashMap<Arc<str>, Weak<Stats>>;

/// The shared state behind a `Dashboard` and its services.
pub(crate) struct Hub {
    pub(crate) settings: Settings,
    pub(crate) events: broadcast::Sender<Bytes>,
    /// Lock order: `registered`, then a keyed registry's shard, then `index` or a key's
    /// `track`. A registry creates a key's breaker (and so calls `instrument_keyed`, which
    /// takes `index`) under its shard's write lock, so `index` is never held while a shard
    /// lock is awaited.
    pub(crate) registered: Mutex<Registered>,
    index: Mutex<Index>,
    sampler: AtomicBool,
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = lock(&self.registered);
        f.debug_struct("Dashboard")
            .field("title", &self.settings.title)
            .field("breakers", &r.breakers.len())
            .field("registries", &r.registries.len())
            .finish_non_exhaustive()
    }
}

impl Hub {
    pub(crate) fn new(settings: Settings) -> Arc<Self> {
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let hub = Arc::new(Self {
            settings,
            events,
            registered: Mutex::default(),
            index: Mutex::default(),
            sampler: AtomicBool::new(false),
        });
        hub.ensure_sampler();
        hub
    }

    /// Counts for a breaker about to be built with this name (and key).
    pub(crate) fn stats(self: &Arc<Self>, name: &Arc<str>, key: Option<Box<str>>) -> Arc<Stats> {
        let stats = Arc::new(Stats {
            key,
            calls: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            transitions: Mutex::new(VecDeque::new()),
            actions: Mutex::new(VecDeque::new()),
            seq: AtomicU64::new(0),
            cap: self.settings.transitions,
            track: Mutex::default(),
            hub: Arc::downgrade(self),
        });
        lock(&self.index).insert(name.clone(), Arc::downgrade(&stats));
        stats
    }

    pub(crate) fn watch(&self, breaker: &CircuitBreaker) {
        let name: Arc<str> = breaker.name().into();
        let mut r = lock(&self.registered);
        let stats = self.find(&name);
        r.breakers.push(Watched {
            breaker: Arc::downgrade(&breaker.root),
            name,
            stats,
            track: Track::default(),
        });
    }

    pub(crate) fn find(&self, name: &str) -> Option<Arc<Stats>> {
        lock(&self.index).get(name).and_then(Weak::upgrade)
    }

    pub(crate) fn watch_registry(&self, registry: WatchedRegistry) {
        lock(&self.registered).registries.push(registry);
    }

    /// Starts the sampling task on the current tokio runtime, once; without a runtime, the
    /// next call (a request to the service, a registration) tries again.
    pub(crate) fn ensure_sampler(self: &Arc<Self>) {
        if self.sampler.load(Ordering::Acquire) {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.sampler.swap(true, Ordering::AcqRel) {
            return;
        }
        let hub = Arc::downgrade(self);
        let every = self.settings.sample_every;
        handle.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                // Ends once every handle to the dashboard is dropped.
                let Some(hub) = hub.upgrade() else { break };
                hub.sample(Instant::now());
            }
        });
    }

    /// Takes one sample of every watched breaker and ranks every registry's keys.
    pub(crate) fn sample(&self, now: Instant) {
        let cap = self.settings.history;
        let top_n = self.settings.top_keys;
        let mut r = lock(&self.registered);
        let dt = r.last_sample.map(|t| now.saturating_duration_since(t));
        r.last_sample = Some(now);
        lock(&self.index).retain(|_, s| s.strong_count() > 0);
        let Registered {
            breakers, registries, ..
        } = &mut *r;
        breakers.retain_mut(|w| {
            let Some(root) = w.breaker.upgrade() else {
                return false;
            };
            let breaker = CircuitBreaker { root };
            if w.stats.is_none() {
                w.stats = self.find(&w.name);
            }
            if let Some(s) = &w.stats {
                w.track.update(s, dt);
            }
            w.track.push(&breaker.snapshot(), cap);
            true
        });
        for reg in registries.iter_mut() {
            sample_registry(reg, &|name| self.find(name), dt, cap, top_n);
        }
    }

    /// The JSON the page reads, with every breaker's snapshot read now.
    pub(crate) fn view_json(&self) -> Vec<u8> {
        let view = view::View::read(self);
        serde_json::to_vec(&view).unwrap_or_else(|_| b"{}".to_vec())
    }
}

/// Whether a key refuses calls, for its rank among keys with as many rejections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Refusing {
    No,
    /// In shadow mode, in a state that would refuse calls: it lets them through.
    Notional,
    Yes,
}

/// A candidate for a registry's top keys: the key's breaker and how it ranks.
struct Candidate {
    rejections_per_sec: f64,
    /// Refusing calls, or (`Notional`) in shadow mode in a state that would refuse them.
    refusing: Refusing,
    key: String,
    breaker: CircuitBreaker,
    stats: Option<Arc<Stats>>,
}

impl Candidate {
    fn beats(&self, other: &Candidate) -> bool {
        (self.rejections_per_sec, self.refusing) > (other.rejections_per_sec, other.refusing)
    }
}

fn sample_registry(
    reg: &mut WatchedRegistry,
    find: &dyn Fn(&str) -> Option<Arc<Stats>>,
    dt: Option<Duration>,
    cap: usize,
    top_n: usize,
) {
    let mut top: Vec<Candidate> = Vec::with_capacity(top_n + 1);
    (reg.for_each)(&mut |key, breaker| {
        let s = find(breaker.name());
        let rejections_per_sec = match &s {
            Some(s) => {
                let mut track = lock(&s.track);
                track.update(s, dt);
                track.rejections_per_sec.unwrap_or(0.0)
            }
            None => 0.0,
        };
        // A breaker in shadow mode refuses nothing, whatever its (notional) state: among
        // equals it ranks after the refusing ones, before the others.
        let refusing = match (
            matches!(breaker.state(), State::Open | State::ForcedOpen | State::HalfOpen),
            breaker.is_shadow(),
        ) {
            (false, _) => Refusing::No,
            (true, true) => Refusing::Notional,
            (true, false) => Refusing::Yes,
        };
        if top_n == 0 {
            return;
        }
        let better_than_last = top.len() < top_n
            || top.last().is_some_and(|last| {
                (rejections_per_sec, refusing) > (last.rejections_per_sec, last.refusing)
            });
        if !better_than_last {
            return;
        }
        let candidate = Candidate {
            rejections_per_sec,
            refusing,
            key: key.map_or_else(|| "(overflow)".to_string(), ToString::to_string),
            breaker: breaker.clone(),
            stats: s,
        };
        let at = top.iter().position(|c| candidate.beats(c)).unwrap_or(top.len());
        top.insert(at, candidate);
        top.truncate(top_n);
    });
    reg.keys = (reg.len)();
    // Keys that left the top lose their history.
    for old in &reg.top {
        if let Some(old_stats) = &old.stats {
            let still = top
                .iter()
                .any(|c| c.stats.as_ref().is_some_and(|s| Arc::ptr_eq(s, old_stats)));
            if !still {
                lock(&old_stats.track).history = None;
            }
        }
    }
    reg.top = top
        .into_iter()
        .map(|c| {
            if let Some(s) = &c.stats {
                lock(&s.track).push(&c.breaker.snapshot(), cap);
            }
            TopKey {
                key: c.key,
                breaker: Arc::downgrade(&c.breaker.root),
                stats: c.stats,
            }
        })
        .collect();
}
