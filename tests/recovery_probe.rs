//! Out-of-band recovery probes (`Builder::recovery_probe`): a user's future runs when the open
//! period ends, and only its success lets live calls in, as half-open probes.
//!
//! Paused time throughout, but for the last test, where the probe is a real hyper-util `GET`
//! to a local hyper server (pause, advance, resume around the sockets: on a paused clock tokio
//! would jump to the probe's timeout while a socket is busy).

mod support;

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tower::{Service, ServiceExt};
use tower_breaker::{
    Backoff, Builder, CircuitBreaker, CircuitBreakerLayer, Event, Layer, Outcome, Readiness, Reason, State,
    keyed::KeyedRegistry,
};

const OPEN: Duration = Duration::from_secs(30);
const TIMEOUT: Duration = Duration::from_secs(5);

/// What one run of a [`Probe`] does.
#[derive(Clone, Copy, Debug)]
enum Answer {
    Ok,
    Err,
    /// Never completes.
    Hang,
    /// Answers after this long (tokio time).
    After(Duration, bool),
}

/// A scripted probe that counts its runs, how many run at once, and the runs dropped before
/// they finished.
#[derive(Clone)]
struct Probe {
    script: Arc<Mutex<VecDeque<Answer>>>,
    default: Answer,
    runs: Arc<AtomicUsize>,
    running: Arc<AtomicUsize>,
    most_at_once: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
}

/// One run in progress: counts itself out, and as dropped unless it finished.
struct Run {
    probe: Probe,
    finished: bool,
}

impl Drop for Run {
    fn drop(&mut self) {
        self.probe.running.fetch_sub(1, Ordering::SeqCst);
        if !self.finished {
            self.probe.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Probe {
    fn new(default: Answer) -> Self {
        Self {
            script: Arc::default(),
            default,
            runs: Arc::default(),
            running: Arc::default(),
            most_at_once: Arc::default(),
            dropped: Arc::default(),
        }
    }

    fn script(self, answers: impl IntoIterator<Item = Answer>) -> Self {
        self.script.lock().unwrap().extend(answers);
        self
    }

    fn runs(&self) -> usize {
        self.runs.load(Ordering::SeqCst)
    }

    fn dropped(&self) -> usize {
        self.dropped.load(Ordering::SeqCst)
    }

    async fn run(self) -> Result<(), std::io::Error> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_at_once.fetch_max(now, Ordering::SeqCst);
        let answer = self.script.lock().unwrap().pop_front().unwrap_or(self.default);
        let mut run = Run {
            probe: self,
            finished: false,
        };
        let ok = match answer {
            Answer::Ok => true,
            Answer::Err => false,
            Answer::Hang => std::future::pending().await,
            Answer::After(wait, ok) => {
                tokio::time::sleep(wait).await;
                ok
            }
        };
        run.finished = true;
        if ok {
            Ok(())
        } else {
            Err(std::io::Error::other("the upstream is still down"))
        }
    }

    /// Sets this probe on `builder`, with `timeout`.
    fn on(&self, builder: Builder, timeout: Duration) -> Builder {
        let probe = self.clone();
        builder.recovery_probe(move || probe.clone().run(), timeout)
    }
}

type Transitions = Arc<Mutex<Vec<(State, State, Reason, Option<Duration>)>>>;

/// Builds the breaker, with a listener that keeps its transitions.
fn watched(builder: Builder) -> (CircuitBreaker, Transitions) {
    let seen = Transitions::default();
    let sink = seen.clone();
    let builder = builder.on_event(move |e| {
        if let Event::Transition {
            from,
            to,
            reason,
            open_for,
            ..
        } = *e
        {
            sink.lock().unwrap().push((from, to, reason, open_for));
        }
    });
    (builder.build().unwrap(), seen)
}

/// A breaker that opens on one failure, for `OPEN`, with `probe` (timeout `TIMEOUT`).
fn breaker_with(probe: &Probe, builder: Builder) -> (CircuitBreaker, Transitions) {
    watched(probe.on(builder, TIMEOUT))
}

fn builder() -> Builder {
    CircuitBreaker::builder("upstream")
        .consecutive_failures(1)
        .open_duration(OPEN)
}

fn breaker(probe: &Probe) -> CircuitBreaker {
    breaker_with(probe, builder()).0
}

fn trip(breaker: &CircuitBreaker) {
    breaker.try_acquire().unwrap().record(Outcome::Failure);
    assert_eq!(breaker.state(), State::Open);
}

/// Lets spawned tasks (the probe's) run: no time passes.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

async fn advance(d: Duration) {
    tokio::time::advance(d).await;
    settle().await;
}

fn retry_after(breaker: &CircuitBreaker) -> Option<Duration> {
    breaker.try_acquire().unwrap_err().retry_after()
}

#[tokio::test(start_paused = true)]
async fn the_probe_does_not_run_before_the_deadline() {
    let probe = Probe::new(Answer::Ok);
    let breaker = breaker(&probe);
    trip(&breaker);
    advance(OPEN - Duration::from_millis(1)).await;
    assert_eq!(probe.runs(), 0);
    assert!(!breaker.snapshot().recovery_probe);
    assert_eq!(retry_after(&breaker), Some(Duration::from_millis(1)));

    advance(Duration::from_millis(1)).await;
    assert_eq!(
        probe.runs(),
        1,
        "it runs at the deadline, with no call to start it"
    );
    assert_eq!(breaker.state(), State::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn it_runs_once_at_the_deadline_whatever_the_callers() {
    let probe = Probe::new(Answer::After(Duration::from_secs(3), true));
    let breaker = breaker(&probe);
    trip(&breaker);
    let callers: Vec<_> = (0..32)
        .map(|_| {
            let breaker = breaker.clone();
            tokio::spawn(async move {
                let mut refused = 0;
                while breaker.state() != State::HalfOpen {
                    assert!(breaker.try_acquire().is_err(), "no live call before the verdict");
                    refused += 1;
                    tokio::task::yield_now().await;
                }
                refused
            })
        })
        .collect();
    tokio::time::advance(OPEN).await;
    // Calls that arrive before the probe's task wakes are refused too.
    for _ in 0..100 {
        assert!(breaker.try_acquire().is_err());
    }
    for _ in 0..3 {
        advance(Duration::from_secs(1)).await;
    }
    assert_eq!(breaker.state(), State::HalfOpen);
    for caller in callers {
        assert!(caller.await.unwrap() > 0);
    }
    assert_eq!(probe.runs(), 1);
    assert_eq!(probe.most_at_once.load(Ordering::SeqCst), 1);
}

/// No runtime where the breaker opened (here another thread): no task then; the first call
/// after the deadline starts the probe on its own runtime, and is refused.
#[tokio::test(start_paused = true)]
async fn with_no_runtime_at_the_trip_the_first_call_after_the_deadline_starts_it() {
    let probe = Probe::new(Answer::Ok);
    let breaker = breaker(&probe);
    let tasks = tokio::runtime::Handle::current().metrics();
    let before = tasks.num_alive_tasks();
    std::thread::scope(|s| {
        s.spawn(|| trip(&breaker));
    });
    assert_eq!(tasks.num_alive_tasks(), before, "no runtime at the trip: no task");
    // That thread read the unpaused clock: a second covers how far it ran ahead.
    advance(OPEN + Duration::from_secs(1)).await;
    assert_eq!(probe.runs(), 0, "nothing ran it yet");
    let refused = breaker.try_acquire().unwrap_err();
    assert_eq!(refused.retry_after(), Some(TIMEOUT));
    assert!(breaker.snapshot().recovery_probe);
    settle().await;
    assert_eq!((probe.runs(), breaker.state()), (1, State::HalfOpen));
}

/// The runtime where the breaker opened shuts down (its task with it): the first call after
/// the deadline hands the probe to its own runtime.
#[test]
fn a_runtime_shut_down_since_the_trip_hands_the_probe_over() {
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
    };
    let probe = Probe::new(Answer::Ok);
    let first = runtime();
    let breaker = first.block_on(async {
        let b = breaker(&probe);
        trip(&b);
        settle().await; // its task sleeps until the deadline
        b
    });
    drop(first);
    runtime().block_on(async {
        // This runtime's paused clock starts a little later than the first's.
        advance(OPEN + Duration::from_secs(1)).await;
        assert_eq!(probe.runs(), 0);
        assert_eq!(breaker.try_acquire().unwrap_err().retry_after(), Some(TIMEOUT));
        settle().await;
        assert_eq!((probe.runs(), breaker.state()), (1, State::HalfOpen));
    });
}

#[tokio::test(start_paused = true)]
async fn while_it_runs_calls_are_refused_until_its_timeout() {
    let probe = Probe::new(Answer::After(Duration::from_secs(2), true));
    let breaker = breaker(&probe);
    trip(&breaker);
    advance(OPEN).await;
    let snapshot = breaker.snapshot();
    assert!(snapshot.recovery_probe);
    assert_eq!(snapshot.state, State::Open);
    assert_eq!(
        snapshot.retry_after,
        Some(TIMEOUT),
        "the probe's verdict is due by its timeout"
    );
    let refused = breaker.try_acquire().unwrap_err();
    assert_eq!(refused.retry_after(), Some(TIMEOUT));
    assert_eq!(refused.state(), State::Open);

    advance(Duration::from_secs(1)).await;
    assert_eq!(retry_after(&breaker), Some(TIMEOUT - Duration::from_secs(1)));
    advance(Duration::from_secs(1)).await;
    assert_eq!(breaker.state(), State::HalfOpen);
    assert!(!breaker.snapshot().recovery_probe);
}

#[tokio::test(start_paused = true)]
async fn a_success_lets_live_calls_in_as_probes_and_does_not_close() {
    let probe = Probe::new(Answer::Ok);
    let (breaker, seen) = breaker_with(&probe, builder().half_open_successes(2));
    trip(&breaker);
    advance(OPEN).await;
    assert_eq!(breaker.state(), State::HalfOpen, "half-open, not closed");
    assert_eq!(breaker.snapshot().reason, Some(Reason::RecoveryProbeSucceeded));

    let live = breaker.try_acquire().unwrap();
    assert!(live.is_probe(), "the next live call is a half-open probe");
    assert!(
        breaker.try_acquire().is_err(),
        "one probe at a time (half_open_permits(1))"
    );
    live.record(Outcome::Success);
    assert_eq!(
        breaker.state(),
        State::HalfOpen,
        "the recovery probe counted for nothing"
    );
    breaker.try_acquire().unwrap().record(Outcome::Success);
    assert_eq!(breaker.state(), State::Closed);
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        [
            (
                State::Closed,
                State::Open,
                Reason::ConsecutiveFailures,
                Some(OPEN)
            ),
            (State::Open, State::HalfOpen, Reason::RecoveryProbeSucceeded, None),
            (State::HalfOpen, State::Closed, Reason::ProbesSucceeded, None),
        ]
    );
    assert_eq!(probe.runs(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_live_probe_that_fails_reopens_and_the_recovery_probe_runs_again() {
    let probe = Probe::new(Answer::Ok);
    let breaker = breaker(&probe);
    trip(&breaker);
    advance(OPEN).await;
    breaker.try_acquire().unwrap().record(Outcome::Failure);
    assert_eq!(breaker.state(), State::Open);
    advance(OPEN).await;
    assert_eq!(probe.runs(), 2);
    assert_eq!(breaker.state(), State::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn a_failure_reopens_with_the_next_backoff_value() {
    let s = Duration::from_secs;
    let probe = Probe::new(Answer::Ok).script([Answer::Err, Answer::Err]);
    let backoff = Backoff::exponential(s(10), 2.0, s(80));
    let (breaker, seen) = breaker_with(&probe, builder().open_backoff(backoff));
    trip(&breaker);
    advance(s(10)).await;
    assert_eq!(probe.runs(), 1);
    assert_eq!(breaker.state(), State::Open);
    let snapshot = breaker.snapshot();
    assert_eq!(snapshot.reason, Some(Reason::RecoveryProbeFailed));
    assert_eq!(snapshot.open_for, Some(s(20)));
    assert!(!snapshot.recovery_probe);
    assert_eq!(retry_after(&breaker), Some(s(20)));

    advance(s(20)).await;
    assert_eq!(probe.runs(), 2);
    assert_eq!(retry_after(&breaker), Some(s(40)));
    advance(s(40) - Duration::from_millis(1)).await;
    assert_eq!(probe.runs(), 2);
    advance(Duration::from_millis(1)).await;
    assert_eq!((probe.runs(), breaker.state()), (3, State::HalfOpen));
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        [
            (
                State::Closed,
                State::Open,
                Reason::ConsecutiveFailures,
                Some(s(10))
            ),
            (State::Open, State::Open, Reason::RecoveryProbeFailed, Some(s(20))),
            (State::Open, State::Open, Reason::RecoveryProbeFailed, Some(s(40))),
            (State::Open, State::HalfOpen, Reason::RecoveryProbeSucceeded, None),
        ]
    );
    // Closing resets the backoff, as without a probe.
    breaker.try_acquire().unwrap().record(Outcome::Success);
    trip(&breaker);
    assert_eq!(retry_after(&breaker), Some(s(10)));
}

#[tokio::test(start_paused = true)]
async fn a_probe_that_panics_has_failed() {
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    let breaker = builder()
        .recovery_probe(
            move || {
                let first = counted.fetch_add(1, Ordering::SeqCst) == 0;
                async move {
                    assert!(!first, "a probe that panics (on purpose, in this test)");
                    Ok::<(), std::io::Error>(())
                }
            },
            TIMEOUT,
        )
        .build()
        .unwrap();
    trip(&breaker);
    advance(OPEN).await;
    assert_eq!(breaker.snapshot().reason, Some(Reason::RecoveryProbeFailed));
    assert_eq!(
        retry_after(&breaker),
        Some(OPEN),
        "at once, not after its timeout"
    );
    advance(OPEN).await;
    assert_eq!(runs.load(Ordering::SeqCst), 2, "the same task probes again");
    assert_eq!(breaker.state(), State::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn a_probe_that_never_completes_times_out_and_reopens() {
    let probe = Probe::new(Answer::Ok).script([Answer::Hang]);
    let (breaker, seen) = breaker_with(
        &probe,
        builder().open_backoff(Backoff::exponential(OPEN, 2.0, OPEN * 4)),
    );
    trip(&breaker);
    advance(OPEN).await;
    assert!(breaker.snapshot().recovery_probe);
    advance(TIMEOUT - Duration::from_millis(1)).await;
    assert_eq!(breaker.state(), State::Open);
    assert!(breaker.snapshot().recovery_probe);
    advance(Duration::from_millis(1)).await;
    assert_eq!(probe.dropped(), 1, "the hung probe was dropped");
    let snapshot = breaker.snapshot();
    assert_eq!(snapshot.reason, Some(Reason::RecoveryProbeTimedOut));
    assert!(!snapshot.recovery_probe);
    assert_eq!(retry_after(&breaker), Some(OPEN * 2));
    assert_eq!(
        seen.lock().unwrap().last(),
        Some(&(
            State::Open,
            State::Open,
            Reason::RecoveryProbeTimedOut,
            Some(OPEN * 2)
        ))
    );
    advance(OPEN * 2).await;
    assert_eq!((probe.runs(), breaker.state()), (2, State::HalfOpen));
}

/// A call that finds the probe's timeout passed applies it, whether or not the task did yet.
#[tokio::test(start_paused = true)]
async fn a_call_past_the_timeout_applies_it() {
    let probe = Probe::new(Answer::Ok).script([Answer::Hang]);
    let breaker = breaker(&probe);
    trip(&breaker);
    advance(OPEN).await;
    assert!(breaker.snapshot().recovery_probe);
    tokio::time::advance(TIMEOUT).await; // no settling: the call comes first
    let refused = breaker.try_acquire().unwrap_err();
    assert_eq!(refused.retry_after(), Some(OPEN));
    assert_eq!(breaker.snapshot().reason, Some(Reason::RecoveryProbeTimedOut));
    settle().await;
    assert_eq!(breaker.snapshot().reason, Some(Reason::RecoveryProbeTimedOut));
    assert_eq!(
        retry_after(&breaker),
        Some(OPEN),
        "the task's own timeout changed nothing"
    );
    advance(OPEN).await;
    assert_eq!((probe.runs(), breaker.state()), (2, State::HalfOpen));
}

#[tokio::test(start_paused = true)]
async fn a_server_wait_during_a_successful_probe_keeps_its_deadline() {
    let s = Duration::from_secs;
    let probe = Probe::new(Answer::After(s(2), true));
    let breaker = breaker(&probe);
    trip(&breaker);
    advance(OPEN).await;
    advance(s(1)).await;
    breaker.trip(s(60)); // e.g. a 429 with Retry-After: 60 on another path
    advance(s(1)).await;
    assert_eq!(probe.runs(), 1);
    assert_eq!(
        breaker.state(),
        State::Open,
        "the success does not cut the server's wait"
    );
    assert!(!breaker.snapshot().recovery_probe);
    assert_eq!(retry_after(&breaker), Some(s(59)));
    assert_eq!(breaker.snapshot().reason, Some(Reason::ConsecutiveFailures));

    advance(s(59)).await; // at the server's deadline, a new probe
    assert_eq!(probe.runs(), 2);
    advance(s(2)).await;
    assert_eq!(breaker.state(), State::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn a_server_wait_before_the_deadline_moves_the_probe_to_its_end() {
    let s = Duration::from_secs;
    let probe = Probe::new(Answer::Ok);
    let breaker = breaker(&probe);
    trip(&breaker);
    advance(s(10)).await;
    breaker.trip(s(60)); // until 70 s, not 30 s
    advance(s(50)).await;
    assert_eq!(probe.runs(), 0, "not at the first deadline");
    assert!(!breaker.snapshot().recovery_probe);
    advance(s(10)).await;
    assert_eq!((probe.runs(), breaker.state()), (1, State::HalfOpen));
}

#[tokio::test(start_paused = true)]
async fn a_server_wait_during_a_failed_probe_outlasts_a_shorter_backoff() {
    let s = Duration::from_secs;
    let probe = Probe::new(Answer::Ok).script([Answer::After(s(2), false)]);
    // A long timeout: the server's 10 s wait ends before the probe's deadline.
    let (breaker, seen) = watched(probe.on(builder().open_duration(s(1)), s(30)));
    trip(&breaker);
    advance(s(1)).await; // the probe starts
    advance(s(1)).await;
    breaker.trip_remote(s(10)); // until 12 s: before the probe's own deadline (31 s)
    advance(s(1)).await; // the probe fails at 3 s: the backoff alone would say 4 s
    assert_eq!(breaker.snapshot().reason, Some(Reason::RecoveryProbeFailed));
    assert_eq!(retry_after(&breaker), Some(s(9)), "the server's deadline rules");
    assert_eq!(
        seen.lock().unwrap().last(),
        Some(&(State::Open, State::Open, Reason::RecoveryProbeFailed, Some(s(9))))
    );
    assert!(
        breaker.try_probe_early().unwrap_err().retry_after() == Some(s(9)),
        "a server's wait is not cut short"
    );
    advance(s(9)).await;
    assert_eq!((probe.runs(), breaker.state()), (2, State::HalfOpen));
}

#[tokio::test(start_paused = true)]
async fn dropping_the_breaker_stops_a_running_probe() {
    let probe = Probe::new(Answer::Hang);
    let breaker = breaker(&probe);
    let tasks = tokio::runtime::Handle::current().metrics();
    let before = tasks.num_alive_tasks();
    trip(&breaker);
    assert_eq!(tasks.num_alive_tasks(), before + 1, "one task for the breaker");
    advance(OPEN).await;
    assert_eq!((probe.runs(), probe.dropped()), (1, 0));
    drop(breaker);
    settle().await;
    assert_eq!(
        probe.dropped(),
        1,
        "the probe's future was dropped with the breaker"
    );
    assert_eq!(tasks.num_alive_tasks(), before, "and its task ended");
}

#[tokio::test(start_paused = true)]
async fn dropping_the_breaker_stops_a_waiting_task() {
    let probe = Probe::new(Answer::Ok);
    let breaker = breaker(&probe);
    let tasks = tokio::runtime::Handle::current().metrics();
    let before = tasks.num_alive_tasks();
    trip(&breaker);
    drop(breaker);
    settle().await;
    assert_eq!(tasks.num_alive_tasks(), before);
    advance(OPEN * 2).await;
    assert_eq!(probe.runs(), 0);
}

#[tokio::test(start_paused = true)]
async fn manual_controls_during_the_probe_win() {
    type Control = fn(&CircuitBreaker);
    let controls: [(Control, State, Reason); 3] = [
        (CircuitBreaker::reset, State::Closed, Reason::Reset),
        (CircuitBreaker::force_open, State::ForcedOpen, Reason::Forced),
        (CircuitBreaker::disable, State::Disabled, Reason::Disabled),
    ];
    for (control, state, reason) in controls {
        for ok in [true, false] {
            let probe = Probe::new(Answer::After(Duration::from_secs(2), ok));
            let breaker = breaker(&probe);
            trip(&breaker);
            advance(OPEN + Duration::from_secs(1)).await;
            assert!(breaker.snapshot().recovery_probe);
            control(&breaker);
            settle().await;
            assert_eq!(probe.dropped(), 1, "{reason}: the probe in flight is dropped");
            advance(TIMEOUT * 2).await;
            let snapshot = breaker.snapshot();
            assert_eq!(
                (snapshot.state, snapshot.reason),
                (state, Some(reason)),
                "ok: {ok}"
            );
            assert!(!snapshot.recovery_probe);
            assert_eq!(probe.runs(), 1);
            // A later outage gets its probe again.
            breaker.reset();
            trip(&breaker);
            advance(OPEN).await;
            assert_eq!(probe.runs(), 2, "{reason}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_reset_before_the_deadline_ends_the_wait() {
    let probe = Probe::new(Answer::Ok);
    let breaker = breaker(&probe);
    trip(&breaker);
    advance(OPEN / 2).await;
    breaker.reset();
    advance(OPEN).await;
    assert_eq!((probe.runs(), breaker.state()), (0, State::Closed));
}

#[tokio::test(start_paused = true)]
async fn try_probe_early_still_lets_a_call_through() {
    // Before the deadline: the caller is the probe, and the recovery probe never runs.
    let probe = Probe::new(Answer::Ok);
    let breaker = breaker(&probe);
    trip(&breaker);
    let early = breaker.try_probe_early().unwrap();
    assert!(early.is_probe());
    assert_eq!(breaker.snapshot().reason, Some(Reason::EarlyProbe));
    advance(OPEN * 2).await;
    assert_eq!(probe.runs(), 0);
    early.record(Outcome::Success);
    assert_eq!(breaker.state(), State::Closed);

    // While the recovery probe runs: it is dropped, the caller is the probe.
    let probe = Probe::new(Answer::Hang);
    let breaker = self::breaker(&probe);
    trip(&breaker);
    advance(OPEN).await;
    let early = breaker.try_probe_early().unwrap();
    assert!(early.is_probe());
    settle().await;
    assert_eq!(probe.dropped(), 1);
    early.record(Outcome::Failure);
    assert_eq!(breaker.state(), State::Open);
    advance(OPEN).await;
    assert_eq!(probe.runs(), 2, "the reopened breaker probes again");
}

#[tokio::test(start_paused = true)]
async fn in_shadow_mode_the_probe_gates_the_notional_half_open() {
    let probe = Probe::new(Answer::After(Duration::from_secs(2), true));
    let breaker = breaker_with(&probe, builder().shadow(true)).0;
    trip(&breaker);
    advance(OPEN).await;
    assert!(breaker.snapshot().recovery_probe);
    // Calls pass (would-be rejections), and are not taken for probes.
    let passed = breaker.try_acquire().unwrap();
    assert!(!passed.is_probe());
    passed.record(Outcome::Failure);
    assert_eq!(breaker.state(), State::Open);
    advance(Duration::from_secs(2)).await;
    assert_eq!(breaker.state(), State::HalfOpen);
    assert_eq!(breaker.snapshot().would_reject, 1);
    assert!(breaker.try_acquire().unwrap().is_probe());
}

/// A `Readiness::Wait` service waits through the probe (no busy loop at the deadline) and is
/// admitted, as a half-open probe, when it succeeds.
#[tokio::test(start_paused = true)]
async fn a_waiting_service_is_admitted_after_the_probe_succeeds() {
    let probe = Probe::new(Answer::After(Duration::from_secs(2), true));
    let breaker = breaker(&probe);
    trip(&breaker);
    let svc = CircuitBreakerLayer::new(breaker.clone())
        .readiness(Readiness::Wait)
        .layer(tower::service_fn(|_: ()| async { Ok::<_, std::io::Error>(()) }));
    let admitted = Arc::new(AtomicBool::new(false));
    let flag = admitted.clone();
    let waiter = tokio::spawn(async move {
        let mut svc = svc;
        svc.ready().await.unwrap();
        flag.store(true, Ordering::SeqCst);
        svc.call(()).await.unwrap();
    });
    advance(OPEN).await;
    advance(Duration::from_secs(1)).await;
    assert!(!admitted.load(Ordering::SeqCst), "not while the probe runs");
    advance(Duration::from_secs(1)).await;
    waiter.await.unwrap();
    assert!(admitted.load(Ordering::SeqCst));
    assert_eq!(breaker.state(), State::Closed, "its call was the half-open probe");
}

#[tokio::test(start_paused = true)]
async fn each_key_of_a_registry_gets_a_probe() {
    let template_probe = Probe::new(Answer::Ok);
    let own_probe = Probe::new(Answer::Err);
    let own = own_probe.clone();
    let registry = KeyedRegistry::<String>::builder(template_probe.on(builder(), TIMEOUT))
        .map_builder(move |b, key| if key == "b" { own.on(b, TIMEOUT) } else { b })
        .build()
        .unwrap();
    let (a, b, c) = (
        registry.get("a").unwrap(),
        registry.get("b").unwrap(),
        registry.get("c").unwrap(),
    );
    trip(&a);
    trip(&b);
    trip(&c);
    advance(OPEN).await;
    assert_eq!(
        template_probe.runs(),
        2,
        "a and c: the template's probe, once each"
    );
    assert_eq!(own_probe.runs(), 1, "b: its own");
    assert_eq!((a.state(), c.state()), (State::HalfOpen, State::HalfOpen));
    assert_eq!(b.snapshot().reason, Some(Reason::RecoveryProbeFailed));
}

#[tokio::test(start_paused = true)]
async fn a_zero_timeout_is_a_config_error() {
    let err = Probe::new(Answer::Ok)
        .on(builder(), Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err.setting(), "recovery_probe");
    assert_eq!(err.breaker(), Some("upstream"));
}

#[test]
fn reasons_have_stable_names() {
    assert_eq!(
        Reason::RecoveryProbeSucceeded.as_str(),
        "recovery_probe_succeeded"
    );
    assert_eq!(Reason::RecoveryProbeFailed.as_str(), "recovery_probe_failed");
    assert_eq!(Reason::RecoveryProbeTimedOut.as_str(), "recovery_probe_timed_out");
}

/// The probe is a hyper-util `GET /v1/models` to a local hyper server that answers 500, then
/// 200. Time moves with pause, advance, resume (the crate's `test-util` feature, on for its
/// tests, has the breaker read tokio's clock).
#[tokio::test]
async fn a_real_http_probe_fails_then_succeeds() {
    use support::{Fault, FaultServer, client, get};

    let server = FaultServer::start(Fault::Status(200)).await;
    server.script([Fault::Status(500)]);
    let uri = server.uri("/v1/models");
    let http = client();
    let (tx, mut transitions) = tokio::sync::mpsc::unbounded_channel();
    let breaker = CircuitBreaker::builder("models")
        .consecutive_failures(1)
        .open_duration(OPEN)
        .recovery_probe(
            move || {
                let (http, uri) = (http.clone(), uri.clone());
                async move {
                    let response = http.request(get(uri)).await?;
                    if response.status().is_success() {
                        Ok::<(), support::BoxError>(())
                    } else {
                        Err(format!("GET /v1/models: {}", response.status()).into())
                    }
                }
            },
            // Far beyond a local answer: a probe that reaches it would fail the test.
            Duration::from_secs(60),
        )
        .on_event(move |e| {
            if let Event::Transition { to, reason, .. } = *e {
                let _ = tx.send((to, reason));
            }
        })
        .build()
        .unwrap();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(60), transitions.recv())
            .await
            .expect("a transition")
            .unwrap()
    };

    trip(&breaker);
    assert_eq!(next().await, (State::Open, Reason::ConsecutiveFailures));
    let move_clock = async |d| {
        tokio::time::pause();
        tokio::time::advance(d).await;
        tokio::time::resume();
    };
    move_clock(OPEN).await;
    assert_eq!(next().await, (State::Open, Reason::RecoveryProbeFailed));
    assert_eq!(server.hits(), 1);
    assert!(breaker.try_acquire().is_err());

    move_clock(OPEN).await;
    assert_eq!(next().await, (State::HalfOpen, Reason::RecoveryProbeSucceeded));
    assert_eq!(server.hits(), 2, "no live call reached the server");
    let live = breaker.try_acquire().unwrap();
    assert!(live.is_probe());
    live.record(Outcome::Success);
    assert_eq!(breaker.state(), State::Closed);
}
