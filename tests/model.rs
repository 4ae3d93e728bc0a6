//! The breaker against a small reference model written from DESIGN.md's semantics: random
//! configurations, random sequences of acquisitions, outcomes, cancellations, time steps,
//! trips and manual changes; after every step the breaker and the model must agree on the
//! state, on each admission or rejection (with its `retry_after`), on the snapshot (counts,
//! consecutive run, probes in flight, `retry_after`, `open_for`), and on every event published
//! to listeners, in order: transitions (with reason and `open_for`), rejections (with the
//! rejecting state), recorded outcomes (with the slow flag) and released permits.
//!
//! Rules covered: consecutive failures, failure rate and slow calls over count and time
//! windows with `min_calls` (capped at a count window), `Outcome::Trip` and `trip()` /
//! `trip_remote()` (the max-deadline rule and the `max_open_duration` clamp, from every state),
//! fixed and exponential backoff, half-open permits, successes and max wait, generations
//! (stale outcomes), forced-open, disabled, reset, and cancellation (dropped permits).
//!
//! The rate rules as DESIGN and issue 13 pin them: trip iff `bad as f64 / calls as f64 >=
//! threshold`. Thresholds are drawn as ratios of small integers `k/n` (`n` up to the window;
//! the `f64` of the decimal a user writes for that ratio, from the model's own long
//! division), as random floats in `(0, 1]`, and as 1; count windows reach 100 calls, and
//! batches of calls fill them, so that a rule that rounds differently is caught at the exact
//! boundary. Slow calls are timed to the nanosecond (time moves by single nanoseconds too).
//! The half-open wait for a decision runs from the admission of the oldest probe in flight;
//! with no probe in flight there is none (issue 14 point 3).
//!
//! Jitter is random, so the model cannot predict the wait: with jitter on, it checks the wait
//! the breaker announced (the transition's `open_for`) against the bounds
//! `wait × (1 ± jitter)`, capped at the backoff's maximum, and then uses it.
//!
//! Cases: `PROPTEST_CASES` (default 256). The long run:
//! `PROPTEST_CASES=100000 cargo test --release --test model`.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Duration,
};

use proptest::prelude::*;
use tokio::time::Instant;
use tower_breaker::{Backoff, CircuitBreaker, Event, Origin, Outcome, Override, Permit, Reason, State};

#[derive(Clone, Debug)]
enum WindowCfg {
    Count(u32),
    Time(Duration),
}

#[derive(Clone, Debug)]
struct Cfg {
    consecutive: Option<u32>,
    rate: Option<f64>,
    slow: Option<(Duration, f64)>,
    window: Option<WindowCfg>,
    min_calls: u32,
    /// Without jitter: the model's waits.
    backoff: Backoff,
    backoff_max: Duration,
    jitter: f64,
    max_open: Duration,
    permits: u32,
    successes: u32,
    max_wait: Duration,
}

#[derive(Clone, Debug)]
enum Op {
    Acquire,
    Record(usize, Outcome),
    Drop(usize),
    Advance(Duration),
    /// One nanosecond.
    Nudge,
    AdvanceToDeadline,
    /// To the instant a half-open breaker's wait for a decision runs out (inclusive).
    AdvanceToProbeDeadline,
    /// A batch of calls, to fill large windows and reach a rate's boundary: the breaker is
    /// `reset` first or not, `clear` passes (a time window's length empties it); each `fast`
    /// outcome is a call admitted and recorded at once; then one call is admitted per `held`
    /// outcome, `hold` passes, and they are recorded in turn.
    Batch {
        reset: bool,
        clear: Duration,
        fast: Vec<Outcome>,
        held: Vec<Outcome>,
        hold: Duration,
    },
    /// Records the most recently admitted permit.
    RecordNewest(Outcome),
    Trip(Duration),
    TripRemote(Duration),
    ForceOpen,
    Disable,
    Reset,
    /// A hot reload ([`CircuitBreaker::reconfigure`]) to another configuration.
    Reconfigure(Cfg),
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The `f64` a user gets writing the decimal of `k/n`: the model's own long division to 40
/// digits, parsed (correctly rounded, so the nearest `f64` to `k/n`).
fn decimal(k: u32, n: u32) -> f64 {
    let mut s = format!("{}.", k / n);
    let mut r = k % n;
    for _ in 0..40 {
        r *= 10;
        s.push(char::from(b'0' + (r / n) as u8));
        r %= n;
    }
    s.parse().unwrap()
}

/// A rate threshold for windows of up to `max_n` calls: mostly a ratio `k/n` with `n` up
/// to `max_n` (often `n = max_n`, a full count window), else a random float in `(0, 1]`, or 1.
fn threshold(max_n: u32) -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => (1..=max_n).prop_map(move |k| decimal(k, max_n)),
        3 => (1..=max_n).prop_flat_map(|n| (1..=n).prop_map(move |k| decimal(k, n))),
        2 => f64::MIN_POSITIVE..=1.0f64,
        1 => Just(1.0),
    ]
}

fn cfg() -> impl Strategy<Value = Cfg> {
    prop_oneof![
        3 => (1u32..8).prop_map(WindowCfg::Count),
        3 => (8u32..=100).prop_map(WindowCfg::Count),
        2 => (2u64..10).prop_map(|s| WindowCfg::Time(ms(s * 1000))),
    ]
    .prop_flat_map(cfg_for)
}

fn cfg_for(window: WindowCfg) -> impl Strategy<Value = Cfg> {
    // Thresholds' denominators reach the window's size (100 for a time window).
    let max_n = match window {
        WindowCfg::Count(n) => n,
        WindowCfg::Time(_) => 100,
    };
    (
        proptest::option::of(1u32..5),
        proptest::option::of(threshold(max_n)),
        proptest::option::of((prop_oneof![Just(ms(500)), Just(ms(1000))], threshold(max_n))),
        Just(window),
        prop_oneof![3 => 1u32..6, 1 => 1..=max_n],
        // (backoff without jitter, its maximum, jitter)
        (
            prop_oneof![
                (1u64..5).prop_map(|s| (Backoff::fixed(ms(s * 1000)), ms(s * 1000))),
                Just((Backoff::exponential(ms(1000), 2.0, ms(8000)), ms(8000))),
                (prop_oneof![Just(1.0), Just(1.5), Just(3.0)], 1u64..4, 1u64..20).prop_map(|(f, b, m)| {
                    let max = ms(b * 500).max(ms(m * 1000));
                    (Backoff::exponential(ms(b * 500), f, max), max)
                }),
            ],
            prop_oneof![6 => Just(0.0), 1 => Just(0.1), 1 => Just(0.5), 1 => Just(1.0)],
        ),
        (1u64..20).prop_map(|s| ms(s * 1000)),
        1u32..3,
        1u32..3,
        (1u64..10).prop_map(|s| ms(s * 1000)),
    )
        .prop_map(
            |(
                consecutive,
                rate,
                slow,
                window,
                min_calls,
                ((backoff, backoff_max), jitter),
                max_open,
                permits,
                successes,
                max_wait,
            )| {
                let consecutive = if rate.is_none() && slow.is_none() {
                    consecutive.or(Some(2))
                } else {
                    consecutive
                };
                let window = (rate.is_some() || slow.is_some()).then_some(window);
                Cfg {
                    consecutive,
                    rate,
                    slow,
                    window,
                    min_calls,
                    backoff,
                    backoff_max,
                    jitter,
                    max_open,
                    permits,
                    successes,
                    max_wait,
                }
            },
        )
}

/// A batch that brings the window to a rate rule's boundary: `m` calls (a full count window,
/// or up to 100 in an emptied time window) of which `bad` (failures, or slow successes) are
/// the fewest that reach the rule's threshold, or one fewer.
fn boundary_batch(cfg: &Cfg) -> BoxedStrategy<Op> {
    let (sizes, clear) = match cfg.window {
        Some(WindowCfg::Count(n)) => (n..=n, Duration::ZERO),
        Some(WindowCfg::Time(w)) => (1..=100, w),
        None => return Just(Op::Nudge).boxed(),
    };
    let rules: Vec<(bool, f64)> = (cfg.rate.map(|r| (false, r)).into_iter())
        .chain(cfg.slow.map(|(_, r)| (true, r)))
        .collect();
    if rules.is_empty() {
        return Just(Op::Nudge).boxed();
    }
    let hold = cfg
        .slow
        .map_or(Duration::ZERO, |(t, _)| t + Duration::from_nanos(1));
    // Failures come last, in runs the consecutive rule does not trip on (where it can).
    let run = cfg
        .consecutive
        .map_or(usize::MAX, |n| (n as usize).saturating_sub(1).max(1));
    // Mostly from a reset: a breaker that some earlier step opened admits no batch.
    let reset = prop_oneof![3 => Just(true), 1 => Just(false)];
    (proptest::sample::select(rules), sizes, any::<bool>(), reset)
        .prop_map(move |((slow, t), m, at, reset)| {
            // The boundary, from the pinned rule (the oracle checks the breaker's decision).
            let least = (0..=m).find(|&j| j as f64 / m as f64 >= t).unwrap_or(m);
            let bad = if at { least } else { least.saturating_sub(1) } as usize;
            if slow {
                Op::Batch {
                    reset,
                    clear,
                    fast: vec![Outcome::Success; m as usize - bad],
                    held: vec![Outcome::Success; bad],
                    hold,
                }
            } else {
                let mut tail = Vec::new();
                let mut spare = m as usize - bad;
                for i in 1..=bad {
                    tail.push(Outcome::Failure);
                    if i % run == 0 && i < bad && spare > 0 {
                        tail.push(Outcome::Success);
                        spare -= 1;
                    }
                }
                Op::Batch {
                    reset,
                    clear,
                    fast: [vec![Outcome::Success; spare], tail].concat(),
                    held: Vec::new(),
                    hold: Duration::ZERO,
                }
            }
        })
        .boxed()
}

fn cfg_and_ops() -> impl Strategy<Value = (Cfg, Vec<Op>)> {
    cfg().prop_flat_map(|cfg| {
        let ops = proptest::collection::vec(prop_oneof![20 => op(), 5 => boundary_batch(&cfg)], 1..120);
        (Just(cfg), ops)
    })
}

fn outcome_of_batch() -> impl Strategy<Value = Outcome> {
    prop_oneof![Just(Outcome::Success), Just(Outcome::Failure)]
}

fn op() -> impl Strategy<Value = Op> {
    let outcome = prop_oneof![
        4 => Just(Outcome::Success),
        4 => Just(Outcome::Failure),
        1 => Just(Outcome::Ignore),
        1 => (0u64..30).prop_map(|s| Outcome::Trip(ms(s * 500))),
    ];
    let hold = prop_oneof![
        Just(Duration::ZERO),
        Just(ms(1)),
        Just(ms(500)),
        Just(ms(500) + Duration::from_nanos(1)),
        Just(ms(1000)),
        Just(ms(1000) + Duration::from_nanos(1)),
    ];
    prop_oneof![
        10 => Just(Op::Acquire),
        10 => (0usize..8, outcome.clone()).prop_map(|(i, o)| Op::Record(i, o)),
        2 => outcome.prop_map(Op::RecordNewest),
        2 => (0usize..8).prop_map(Op::Drop),
        6 => (0u64..3000).prop_map(|n| Op::Advance(ms(n))),
        1 => Just(Op::Nudge),
        2 => (
            prop_oneof![3 => 1usize..10, 1 => 10usize..=100]
                .prop_flat_map(|n| proptest::collection::vec(outcome_of_batch(), n)),
            proptest::collection::vec(outcome_of_batch(), 0..10),
            hold
        )
            .prop_map(|(fast, held, hold)| Op::Batch {
                reset: false,
                clear: Duration::ZERO,
                fast,
                held,
                hold,
            }),
        2 => Just(Op::AdvanceToDeadline),
        1 => Just(Op::AdvanceToProbeDeadline),
        1 => (0u64..30).prop_map(|s| Op::Trip(ms(s * 500))),
        1 => (0u64..30).prop_map(|s| Op::TripRemote(ms(s * 500))),
        1 => Just(Op::ForceOpen),
        1 => Just(Op::Disable),
        1 => Just(Op::Reset),
        2 => cfg().prop_map(Op::Reconfigure),
    ]
}

// ---------------------------------------------------------------- the model

/// An event as a listener sees it, owned.
#[derive(Clone, Debug, PartialEq)]
enum Ev {
    Transition(State, State, Reason, Option<Duration>),
    Rejected(State),
    Recorded(Outcome, bool),
    Released,
    /// An operator's action, from this process.
    Override(Override),
    Reconfigured,
}

impl Ev {
    fn of(e: &Event<'_>) -> Self {
        match *e {
            Event::Transition {
                from,
                to,
                reason,
                open_for,
                ..
            } => Ev::Transition(from, to, reason, open_for),
            Event::Rejected { state, .. } => Ev::Rejected(state),
            Event::Recorded { outcome, slow, .. } => Ev::Recorded(outcome, slow),
            Event::Released { .. } => Ev::Released,
            Event::Override {
                action,
                origin: Origin::Local,
                ..
            } => Ev::Override(action),
            Event::Reconfigured { .. } => Ev::Reconfigured,
            _ => unreachable!("a new event kind: model it"),
        }
    }
}

type Log = Arc<Mutex<Vec<Ev>>>;

#[derive(Clone, Copy, Debug)]
struct MPermit {
    generation: u64,
    probe: bool,
    disabled: bool,
    start: Instant,
    /// Whether it carries its admission stamp: a probe always does, a closed call when a
    /// slow-call rule timed it at admission (else its stamp is 0).
    timed: bool,
}

struct Model {
    cfg: Cfg,
    epoch: Instant,
    state: State,
    generation: u64,
    open_until: Instant,
    opened: u32,
    /// The admissions of the half-open probes in flight.
    probes: Vec<Instant>,
    probe_successes: u32,
    consecutive: u32,
    count: VecDeque<(bool, bool)>,
    /// (bucket epoch, failure, slow)
    timed: Vec<(u64, bool, bool)>,
    head: u64,
    /// The length of the current open period (the snapshot's `open_for`).
    opened_for: Duration,
    /// Since when calls are timed (a slow-call rule is on); `None`: not timed.
    timed_since: Option<Instant>,
    log: Vec<Ev>,
    /// The breaker's events, to read a jittered wait from.
    real: Log,
    /// Jittered waits outside their bounds.
    violations: Vec<String>,
}

impl Model {
    fn new(cfg: Cfg, now: Instant, real: Log) -> Self {
        let cfg_slow = cfg.slow.is_some();
        Self {
            cfg,
            epoch: now,
            state: State::Closed,
            generation: 0,
            open_until: now,
            opened: 0,
            probes: Vec::new(),
            probe_successes: 0,
            consecutive: 0,
            count: VecDeque::new(),
            timed: Vec::new(),
            head: 0,
            opened_for: Duration::ZERO,
            timed_since: cfg_slow.then_some(now),
            log: Vec::new(),
            real,
            violations: Vec::new(),
        }
    }

    fn min_calls(&self) -> u32 {
        match self.cfg.window {
            Some(WindowCfg::Count(n)) => self.cfg.min_calls.min(n),
            _ => self.cfg.min_calls,
        }
    }

    fn bucket(&self, now: Instant) -> u64 {
        let Some(WindowCfg::Time(w)) = self.cfg.window else {
            unreachable!()
        };
        let width = (w.as_nanos() as u64 / 10).max(1);
        (now - self.epoch).as_nanos() as u64 / width
    }

    fn counts(&mut self, now: Instant) -> (u32, u32, u32) {
        let entries: Vec<(bool, bool)> = match self.cfg.window {
            None => return (0, 0, 0),
            Some(WindowCfg::Count(_)) => self.count.iter().copied().collect(),
            Some(WindowCfg::Time(_)) => {
                self.head = self.head.max(self.bucket(now));
                let head = self.head;
                self.timed.retain(|(e, _, _)| e + 10 > head);
                self.timed.iter().map(|&(_, f, s)| (f, s)).collect()
            }
        };
        let calls = entries.len() as u32;
        let failures = entries.iter().filter(|e| e.0).count() as u32;
        let slow = entries.iter().filter(|e| e.1).count() as u32;
        (calls, failures, slow)
    }

    /// The wait of the next opening: the backoff's value, or with jitter the breaker's (the
    /// transition it is publishing now), checked against the jitter's bounds.
    fn next_wait(&mut self) -> Duration {
        let d = self.cfg.backoff.delay(self.opened);
        let jitter = self.cfg.jitter;
        if jitter == 0.0 {
            return d;
        }
        let real = self.real.lock().unwrap().get(self.log.len()).cloned();
        let Some(Ev::Transition(_, State::Open, _, Some(got))) = real else {
            self.violations.push(format!(
                "expected an opening at event {}, got {real:?}",
                self.log.len()
            ));
            return d;
        };
        let tolerance = 1e-6;
        let lo = d.as_secs_f64() * (1.0 - jitter) - tolerance;
        let hi = (d.as_secs_f64() * (1.0 + jitter)).min(self.cfg.backoff_max.as_secs_f64()) + tolerance;
        if !(lo..=hi).contains(&got.as_secs_f64()) {
            self.violations.push(format!(
                "jittered wait {got:?} outside {lo}..={hi} (wait {d:?}, jitter {jitter})"
            ));
        }
        got
    }

    fn transition(&mut self, to: State, reason: Reason, now: Instant) {
        let from = self.state;
        self.generation += 1;
        self.state = to;
        let mut open_for = None;
        match to {
            State::Open if !matches!(reason, Reason::ServerWait | Reason::Remote) => {
                let d = self.next_wait();
                self.open_until = now + d;
                self.opened_for = d;
                self.opened += 1;
                open_for = Some(d);
            }
            State::Open => open_for = Some(self.opened_for),
            State::HalfOpen => {
                self.probes.clear();
                self.probe_successes = 0;
            }
            State::Closed => {
                self.opened = 0;
                self.clear();
            }
            _ => {}
        }
        self.log.push(Ev::Transition(from, to, reason, open_for));
    }

    fn clear(&mut self) {
        self.consecutive = 0;
        self.count.clear();
        self.timed.clear();
    }

    /// `Ok(probe, disabled)` or `Err((state, retry_after))`.
    fn acquire(&mut self, now: Instant) -> Result<MPermit, (State, Option<Duration>)> {
        if self.state == State::Open && now >= self.open_until {
            self.transition(State::HalfOpen, Reason::OpenElapsed, now);
        }
        if self.state == State::HalfOpen && self.probe_deadline().is_some_and(|due| now >= due) {
            self.transition(State::Open, Reason::ProbeTimedOut, now);
        }
        let timing = self.timed_since.is_some();
        let permit = |probe, disabled| MPermit {
            generation: self.generation,
            probe,
            disabled,
            start: now,
            timed: probe || timing,
        };
        match self.state {
            State::Closed => Ok(permit(false, false)),
            State::Disabled => Ok(permit(false, true)),
            State::HalfOpen if (self.probes.len() as u32) < self.cfg.permits => {
                self.probes.push(now);
                Ok(permit(true, false))
            }
            State::Open => {
                self.log.push(Ev::Rejected(State::Open));
                Err((State::Open, Some(self.open_until - now)))
            }
            s => {
                self.log.push(Ev::Rejected(s));
                Err((s, None))
            }
        }
    }

    fn trip(&mut self, wait: Duration, reason: Reason, now: Instant) {
        let wait = wait.min(self.cfg.max_open);
        let until = now + wait;
        match self.state {
            State::ForcedOpen | State::Disabled => {}
            State::Open => {
                if until > self.open_until {
                    self.open_until = until;
                    self.opened_for = wait;
                }
            }
            _ => {
                self.open_until = until;
                self.opened_for = wait;
                self.transition(State::Open, reason, now);
            }
        }
    }

    /// A call is judged slow only when its duration is known (see `MPermit::timed`): a
    /// call admitted untimed before a reload switched the slow-call rule on is not.
    fn slow(&self, p: &MPermit, now: Instant) -> bool {
        // The permit's stamp: nanoseconds since the epoch, or 0 when admitted untimed; a
        // stamp of 0 reads as untimed once calls are timed from a later instant (a call
        // admitted at the breaker's very first nanosecond, an edge the docs do not promise).
        let stamp = if p.timed {
            (p.start - self.epoch).as_nanos()
        } else {
            0
        };
        let known = self
            .timed_since
            .is_some_and(|since| stamp != 0 || since == self.epoch);
        known && self.cfg.slow.is_some_and(|(t, _)| now - p.start > t)
    }

    /// The documented rules of a hot reload (the crate docs' "Hot reload").
    fn reconfigure(&mut self, cfg: Cfg, now: Instant) {
        self.log.push(Ev::Reconfigured);
        // The window: kept as is in the same shape; a count window keeps its latest calls;
        // a time window the buckets still inside the new one, each counted whole where it
        // starts (or in the oldest live bucket); another kind starts empty.
        match (&self.cfg.window, &cfg.window) {
            (Some(WindowCfg::Count(a)), Some(WindowCfg::Count(b))) if a == b => {}
            (Some(WindowCfg::Time(a)), Some(WindowCfg::Time(b))) if a == b => {}
            (Some(WindowCfg::Count(_)), Some(WindowCfg::Count(b))) => {
                while self.count.len() > *b as usize {
                    self.count.pop_front();
                }
            }
            (Some(WindowCfg::Time(_)), Some(WindowCfg::Time(d))) => {
                self.counts(now); // drops the expired entries
                let w = self.width();
                let w2 = (d.as_nanos() as u64 / 10).max(1);
                let at = (now - self.epoch).as_nanos() as u64;
                let oldest = (at / w2).saturating_sub(9);
                self.timed = self
                    .timed
                    .iter()
                    .filter(|(e, _, _)| (e + 1) * w > oldest * w2)
                    .map(|&(e, f, s)| ((e * w / w2).max(oldest), f, s))
                    .collect();
                self.head = at / w2;
            }
            _ => {
                self.count.clear();
                self.timed.clear();
                self.head = 0;
            }
        }
        if cfg.consecutive.is_some() != self.cfg.consecutive.is_some() {
            self.consecutive = 0;
        }
        self.timed_since = match (cfg.slow.is_some(), self.timed_since) {
            (false, _) => None,
            (true, None) => Some(now),
            (true, since) => since,
        };
        self.cfg = cfg;
        if self.state != State::Closed {
            return;
        }
        // A closed breaker's statistics are judged by the new rules at once.
        if self.cfg.consecutive.is_some_and(|n| self.consecutive >= n) {
            return self.transition(State::Open, Reason::ConsecutiveFailures, now);
        }
        if self.cfg.window.is_some() {
            let (calls, failures, slow) = self.counts(now);
            if calls >= self.min_calls() && calls > 0 {
                let reached = |bad: u32, threshold: f64| bad as f64 / calls as f64 >= threshold;
                if self.cfg.rate.is_some_and(|r| reached(failures, r)) {
                    self.transition(State::Open, Reason::FailureRate, now);
                } else if self.cfg.slow.is_some_and(|(_, r)| reached(slow, r)) {
                    self.transition(State::Open, Reason::SlowCalls, now);
                }
            }
        }
    }

    fn width(&self) -> u64 {
        let Some(WindowCfg::Time(w)) = self.cfg.window else {
            unreachable!()
        };
        (w.as_nanos() as u64 / 10).max(1)
    }

    fn record(&mut self, p: MPermit, outcome: Outcome, now: Instant) {
        if p.disabled {
            return;
        }
        let slow = self.slow(&p, now);
        self.log.push(Ev::Recorded(outcome, slow));
        if let Outcome::Trip(d) = outcome {
            if p.probe {
                self.free_slot(p);
            }
            return self.trip(d, Reason::ServerWait, now);
        }
        if p.probe {
            if p.generation != self.generation || self.state != State::HalfOpen {
                return;
            }
            self.remove_probe(p.start);
            match (outcome, slow) {
                (Outcome::Success, false) => {
                    self.probe_successes += 1;
                    if self.probe_successes >= self.cfg.successes {
                        self.transition(State::Closed, Reason::ProbesSucceeded, now);
                    }
                }
                (Outcome::Success, true) => self.transition(State::Open, Reason::SlowCalls, now),
                (Outcome::Failure, _) => self.transition(State::Open, Reason::ProbeFailed, now),
                _ => {}
            }
            return;
        }
        let failure = match outcome {
            Outcome::Success => false,
            Outcome::Failure => true,
            _ => return,
        };
        if p.generation != self.generation {
            return;
        }
        let mut reason = None;
        if let Some(n) = self.cfg.consecutive {
            self.consecutive = if failure { self.consecutive + 1 } else { 0 };
            if failure && self.consecutive >= n {
                reason = Some(Reason::ConsecutiveFailures);
            }
        }
        match self.cfg.window {
            Some(WindowCfg::Count(n)) => {
                self.count.push_back((failure, slow));
                if self.count.len() > n as usize {
                    self.count.pop_front();
                }
            }
            Some(WindowCfg::Time(_)) => {
                let e = self.bucket(now).max(self.head);
                self.timed.push((e, failure, slow));
            }
            None => {}
        }
        if reason.is_none() && self.cfg.window.is_some() {
            let (calls, failures, slow) = self.counts(now);
            if calls >= self.min_calls() {
                // The pinned rule: the quotient the snapshot reports, against the threshold.
                let reached = |bad: u32, threshold: f64| bad as f64 / calls as f64 >= threshold;
                if self.cfg.rate.is_some_and(|r| reached(failures, r)) {
                    reason = Some(Reason::FailureRate);
                } else if self.cfg.slow.is_some_and(|(_, r)| reached(slow, r)) {
                    reason = Some(Reason::SlowCalls);
                }
            }
        }
        if let Some(r) = reason {
            self.transition(State::Open, r, now);
        }
    }

    /// A permit dropped unrecorded.
    fn release(&mut self, p: MPermit) {
        if !p.disabled {
            self.log.push(Ev::Released);
        }
        self.free_slot(p);
    }

    fn free_slot(&mut self, p: MPermit) {
        if p.probe && p.generation == self.generation && self.state == State::HalfOpen {
            self.remove_probe(p.start);
        }
    }

    fn remove_probe(&mut self, admitted: Instant) {
        let i = self
            .probes
            .iter()
            .position(|&a| a == admitted)
            .expect("a probe in flight");
        self.probes.swap_remove(i);
    }

    /// Half-open gives up `max_wait` after the admission of the oldest probe in flight.
    fn probe_deadline(&self) -> Option<Instant> {
        self.probes.iter().min().map(|&oldest| oldest + self.cfg.max_wait)
    }

    fn manual(&mut self, to: State, reason: Reason, now: Instant) {
        // Announced first, whether or not it changes the state.
        self.log.push(Ev::Override(match to {
            State::ForcedOpen => Override::ForceOpen,
            State::Disabled => Override::Disable,
            _ => Override::Reset,
        }));
        if self.state != to {
            self.transition(to, reason, now);
        } else if to == State::Closed {
            self.generation += 1;
            self.clear();
        }
    }
}

// ---------------------------------------------------------------- the run

fn build(cfg: &Cfg, log: Log) -> CircuitBreaker {
    builder(cfg)
        .on_event(move |e| log.lock().unwrap().push(Ev::of(e)))
        .build()
        .expect("valid config")
}

fn builder(cfg: &Cfg) -> tower_breaker::Builder {
    let mut b = CircuitBreaker::builder("model")
        .min_calls(cfg.min_calls)
        .open_backoff(cfg.backoff.with_jitter(cfg.jitter))
        .max_open_duration(cfg.max_open)
        .half_open_permits(cfg.permits)
        .half_open_successes(cfg.successes)
        .half_open_max_wait(cfg.max_wait);
    if let Some(n) = cfg.consecutive {
        b = b.consecutive_failures(n);
    }
    if let Some(r) = cfg.rate {
        b = b.failure_rate(r);
    }
    if let Some((t, r)) = cfg.slow {
        b = b.slow_calls(t, r);
    }
    match cfg.window {
        Some(WindowCfg::Count(n)) => b = b.count_window(n),
        Some(WindowCfg::Time(d)) => b = b.time_window(d),
        None => {}
    }
    b
}

fn run(cfg: Cfg, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async move {
        let log = Arc::new(Mutex::new(Vec::new()));
        let breaker = build(&cfg, log.clone());
        let mut model = Model::new(cfg, Instant::now(), log.clone());
        let mut permits: Vec<(Permit, MPermit)> = Vec::new();
        // A batch runs as its steps, each checked.
        let steps = ops.into_iter().flat_map(|op| match op {
            Op::Batch {
                reset,
                clear,
                fast,
                held,
                hold,
            } => {
                let mut steps = if reset { vec![Op::Reset] } else { Vec::new() };
                steps.push(Op::Advance(clear));
                for o in fast {
                    steps.extend([Op::Acquire, Op::RecordNewest(o)]);
                }
                steps.extend(held.iter().map(|_| Op::Acquire));
                steps.push(Op::Advance(hold));
                steps.extend(held.into_iter().map(Op::RecordNewest));
                steps
            }
            op => vec![op],
        });
        let mut checked = 0;
        for (step, op) in steps.enumerate() {
            let now = Instant::now();
            match op {
                Op::Acquire => {
                    let real = breaker.try_acquire();
                    let expected = model.acquire(now);
                    match (real, expected) {
                        (Ok(p), Ok(m)) => {
                            prop_assert_eq!(p.is_probe(), m.probe, "step {}: probe", step);
                            permits.push((p, m));
                        }
                        (Err(e), Err((state, retry))) => {
                            prop_assert_eq!(e.state(), state, "step {}: rejecting state", step);
                            prop_assert_eq!(e.retry_after(), retry, "step {}: retry_after", step);
                        }
                        (real, expected) => prop_assert!(
                            false,
                            "step {}: breaker {:?} vs model {:?}",
                            step,
                            real.map(|p| p.is_probe()),
                            expected.map(|m| m.probe)
                        ),
                    }
                }
                Op::Record(i, outcome) if i < permits.len() => {
                    let (p, m) = permits.remove(i);
                    p.record(outcome);
                    model.record(m, outcome, now);
                }
                Op::Drop(i) if i < permits.len() => {
                    let (p, m) = permits.remove(i);
                    drop(p);
                    model.release(m);
                }
                Op::RecordNewest(outcome) => {
                    if let Some((p, m)) = permits.pop() {
                        p.record(outcome);
                        model.record(m, outcome, now);
                    }
                }
                Op::Record(..) | Op::Drop(_) => {}
                Op::Batch { .. } => unreachable!("run as its steps"),
                Op::Advance(d) => tokio::time::advance(d).await,
                Op::Nudge => tokio::time::advance(Duration::from_nanos(1)).await,
                Op::AdvanceToDeadline => {
                    if model.state == State::Open && model.open_until > now {
                        tokio::time::advance(model.open_until - now).await;
                    }
                }
                Op::AdvanceToProbeDeadline => {
                    if let Some(due) = model.probe_deadline() {
                        if model.state == State::HalfOpen && due > now {
                            tokio::time::advance(due - now).await;
                        }
                    }
                }
                Op::Trip(d) => {
                    breaker.trip(d);
                    model.trip(d, Reason::ServerWait, now);
                }
                Op::TripRemote(d) => {
                    breaker.trip_remote(d);
                    model.trip(d, Reason::Remote, now);
                }
                Op::ForceOpen => {
                    breaker.force_open();
                    model.manual(State::ForcedOpen, Reason::Forced, now);
                }
                Op::Disable => {
                    breaker.disable();
                    model.manual(State::Disabled, Reason::Disabled, now);
                }
                Op::Reset => {
                    breaker.reset();
                    model.manual(State::Closed, Reason::Reset, now);
                }
                Op::Reconfigure(cfg) => match breaker.reconfigure(builder(&cfg)) {
                    Ok(()) => model.reconfigure(cfg, now),
                    // Out of window shapes (16 in a breaker's life): nothing changed.
                    Err(e) => prop_assert_eq!(e.setting(), "window", "step {}", step),
                },
            }
            let now = Instant::now();
            prop_assert_eq!(breaker.state(), model.state, "step {}: state", step);
            let snap = breaker.snapshot();
            let (calls, failures, slow) = model.counts(now);
            prop_assert_eq!(
                (snap.calls, snap.failures, snap.slow_calls),
                (calls, failures, slow),
                "step {}",
                step
            );
            if model.cfg.consecutive.is_some() && model.state == State::Closed {
                prop_assert_eq!(snap.consecutive_failures, model.consecutive, "step {}: run", step);
            }
            let open = model.state == State::Open;
            prop_assert_eq!(
                (snap.probes_in_flight, snap.retry_after, snap.open_for),
                (
                    if model.state == State::HalfOpen {
                        model.probes.len() as u32
                    } else {
                        0
                    },
                    open.then(|| model.open_until.saturating_duration_since(now)),
                    open.then_some(model.opened_for),
                ),
                "step {}: snapshot (probes, retry_after, open_for)",
                step
            );
            prop_assert!(
                model.violations.is_empty(),
                "step {}: {:?}",
                step,
                model.violations
            );
            // Events so far agree (those of earlier steps were compared then).
            let real = log.lock().unwrap();
            prop_assert_eq!(&real[checked..], &model.log[checked..], "step {}: events", step);
            checked = real.len();
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { max_shrink_iters: 2000, ..ProptestConfig::default() })]

    #[test]
    fn breaker_matches_the_reference_model((cfg, ops) in cfg_and_ops()) {
        run(cfg, ops)?;
    }
}
