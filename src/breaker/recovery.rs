//! Out-of-band recovery probes (see [Recovery probes](crate#recovery-probes)): a user's future
//! (a `GET /v1/models` on the provider, say) that runs when the open period ends; only its
//! success lets live calls in, as half-open probes.
//!
//! One task per breaker, spawned on the tokio runtime current when the breaker opens (or, if
//! there was none, the runtime of the first call after the deadline). It holds a `Weak`
//! reference to the breaker and upgrades it only between awaits; the breaker aborts it when it
//! leaves `Open` (a verdict that lets calls in, a manual control, an early probe) and when it
//! is dropped. The task sleeps until the open deadline, *claims* the probe (the deadline moves
//! to the probe's timeout, so that calls meanwhile are refused on the hot path, which never
//! looks at any of this), runs the probe bounded by its timeout, and applies the verdict under
//! the lock, only if the breaker is still in the generation the probe was claimed in.
//!
//! A call that finds the deadline passed before the task woke claims the probe itself (the
//! task runs it when it wakes), and one that finds the probe's own deadline passed with no
//! verdict applies the timeout, so neither depends on the task being punctual. A claimed probe
//! whose task never started it (a runtime no longer driven) is given up: the task is replaced
//! on the caller's runtime, or, with none, the breaker goes half-open as without a probe.
//!
//! Everything here runs on the cold paths: transitions (`transition.rs`), `acquire_slow` past
//! the deadline, trips while open, snapshots.
//!
//! Under loom there is no runtime to spawn on: the breaker goes half-open as without a probe.
#![cfg_attr(loom, allow(dead_code))]

use std::{fmt, future::Future, pin::Pin, sync::Arc as StdArc, time::Duration};

use super::{BoxError, Locked, Pending, Reason, Shared, State, sync::Ordering};

/// The user's probe, type-erased (the cold path: one box per probe run).
type ProbeFuture = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;
type ProbeFn = StdArc<dyn Fn() -> ProbeFuture + Send + Sync>;

/// A recovery probe as configured: the user's function and the bound on each run.
#[derive(Clone)]
pub(crate) struct RecoveryProbe {
    run: ProbeFn,
    pub(crate) timeout: Duration,
}

impl RecoveryProbe {
    pub(crate) fn new<F, Fut, E>(probe: F, timeout: Duration) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError>,
    {
        let run = move || -> ProbeFuture {
            let probe = probe();
            Box::pin(async move { probe.await.map_err(Into::into) })
        };
        Self {
            run: StdArc::new(run),
            timeout,
        }
    }
}

impl fmt::Debug for RecoveryProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecoveryProbe")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The recovery probe's state, under the breaker's lock.
#[derive(Debug, Default)]
pub(super) struct Recovery {
    /// The breaker's task, if one is alive (at most one).
    task: Option<Task>,
    /// How many tasks this breaker spawned: the next one's id.
    spawned: u64,
    /// The probe claimed in the current open period, until its verdict.
    probing: Option<Probing>,
    /// The latest deadline a server imposed (`Trip`, a remote trip) while the probe ran, in
    /// nanoseconds since the epoch (0: none): the verdict never ends the open period before it.
    server_until: u64,
}

#[derive(Debug)]
struct Task {
    id: u64,
    #[cfg(not(loom))]
    abort: tokio::task::AbortHandle,
}

#[derive(Clone, Copy, Debug)]
struct Probing {
    /// The generation it was claimed in: its verdict applies only in it.
    generation: u64,
    /// When it times out (nanoseconds since the epoch): the open deadline while it runs.
    deadline: u64,
    /// Whether its task called the user's function.
    started: bool,
}

impl Recovery {
    /// Whether a probe is claimed or running ([`Snapshot::recovery_probe`](super::Snapshot::recovery_probe)).
    pub(super) const fn in_flight(&self) -> bool {
        self.probing.is_some()
    }

    /// A server imposed `until` while the breaker was open: kept for the verdict of a probe in
    /// flight, even when it does not extend the current deadline (the probe's timeout).
    pub(super) fn saw_trip(&mut self, until: u64) {
        if self.probing.is_some() {
            self.server_until = self.server_until.max(until);
        }
    }

    fn task_is(&self, id: u64) -> bool {
        self.task.as_ref().is_some_and(|t| t.id == id)
    }

    /// Ends the task, if any (its probe future is dropped where it runs).
    fn stop_task(&mut self) {
        if let Some(task) = self.task.take() {
            #[cfg(not(loom))]
            task.abort.abort();
            #[cfg(loom)]
            let _ = task;
        }
    }
}

/// How a probe run ended.
#[derive(Debug)]
enum Verdict {
    Succeeded,
    Failed(BoxError),
    TimedOut,
}

/// What the task does next.
enum Step {
    Exit,
    /// Sleep until this instant (the open deadline), then look again.
    Sleep(tokio::time::Instant),
    /// Run the probe, bounded by the instant; its verdict applies in the generation.
    Run(ProbeFn, tokio::time::Instant, u64),
}

impl Shared {
    /// Under the lock, from every transition: a new open period gets a task (the current
    /// one's, when the probe's own failure reopened it); leaving `Open` ends the task.
    pub(super) fn recovery_transition(&self, l: &mut Locked, from: State, to: State) {
        if self.recovery.is_none() {
            return;
        }
        let r = &mut l.recovery;
        r.probing = None;
        r.server_until = 0;
        if to != State::Open {
            r.stop_task();
        } else if from != State::Open || r.task.is_none() {
            r.stop_task();
            self.spawn_recovery(r);
        }
    }

    /// Under the lock, for a call that found the breaker `Open` past its deadline: whether the
    /// recovery probe keeps it open (the call is refused), else it goes half-open as a breaker
    /// without a probe does (no probe configured, or no runtime to run one on).
    pub(super) fn recovery_holds(&self, l: &mut Locked, now: u64, pending: &mut Pending) -> bool {
        let Some(probe) = &self.recovery else {
            return false;
        };
        if let Some(p) = l.recovery.probing {
            if p.started {
                // Its deadline passed with no verdict: a timeout, whoever sees it first.
                self.conclude(l, Verdict::TimedOut, now, pending);
                return true;
            }
            // Claimed, never started: its task is not being run (a runtime no longer driven).
            l.recovery.stop_task();
            l.recovery.probing = None;
        }
        if l.recovery.task.is_none() {
            self.spawn_recovery(&mut l.recovery); // on this call's runtime
        }
        if l.recovery.task.is_none() {
            return false;
        }
        self.claim(l, now, probe.timeout);
        true
    }

    /// Claims the probe of this open period: calls are refused until its timeout, on the hot
    /// path (the open deadline moves there).
    fn claim(&self, l: &mut Locked, now: u64, timeout: Duration) {
        let deadline = Self::deadline(now, timeout);
        l.recovery.probing = Some(Probing {
            generation: l.generation,
            deadline,
            started: false,
        });
        l.recovery.server_until = 0;
        self.hot.open_until.store(deadline, Ordering::Release);
        tracing::debug!(breaker = %self.name, timeout = ?timeout, "circuit breaker recovery probe due");
    }

    /// The task's next step.
    fn recovery_step(&self, id: u64) -> Step {
        let Some(probe) = &self.recovery else {
            return Step::Exit;
        };
        let now = self.clock.now();
        let mut l = self.locked.lock();
        if !l.recovery.task_is(id) {
            return Step::Exit;
        }
        if l.state != State::Open {
            l.recovery.task = None;
            return Step::Exit;
        }
        let until = self.hot.open_until.load(Ordering::Acquire);
        if l.recovery.probing.is_none() {
            if now < until {
                return Step::Sleep(self.clock.instant_at(until));
            }
            self.claim(&mut l, now, probe.timeout);
        }
        match &mut l.recovery.probing {
            Some(p) if !p.started => {
                p.started = true;
                Step::Run(probe.run.clone(), self.clock.instant_at(p.deadline), p.generation)
            }
            _ => Step::Sleep(self.clock.instant_at(until)),
        }
    }

    /// The task's probe ended: applies the verdict if the probe is still the current one.
    fn recovery_verdict(&self, id: u64, generation: u64, verdict: Verdict) {
        let now = self.clock.now();
        let mut pending = None;
        {
            let mut l = self.locked.lock();
            let current = l.recovery.task_is(id)
                && l.state == State::Open
                && l.generation == generation
                && l.recovery
                    .probing
                    .is_some_and(|p| p.started && p.generation == generation);
            if current {
                self.conclude(&mut l, verdict, now, &mut pending);
            }
        }
        self.publish(pending);
    }

    /// Applies a verdict of the current probe, under the lock.
    fn conclude(&self, l: &mut Locked, verdict: Verdict, now: u64, pending: &mut Pending) {
        let server_until = std::mem::take(&mut l.recovery.server_until);
        l.recovery.probing = None;
        let reason = match verdict {
            Verdict::Succeeded if server_until > now => {
                // A server asked for a pause while the probe ran: its deadline rules, and a
                // new probe runs then.
                self.hot.open_until.store(server_until, Ordering::Release);
                l.server_wait = true;
                tracing::debug!(
                    breaker = %self.name,
                    "circuit breaker recovery probe succeeded; the breaker stays open until the server's deadline"
                );
                return;
            }
            Verdict::Succeeded => {
                l.recovery.task = None; // this task: it ends with this verdict
                return self.transition(l, State::HalfOpen, Reason::RecoveryProbeSucceeded, now, pending);
            }
            Verdict::Failed(error) => {
                // The error is the user's (a client's error may name the URL it called): its
                // text only at DEBUG.
                tracing::debug!(breaker = %self.name, error = %error, "circuit breaker recovery probe error");
                tracing::info!(breaker = %self.name, "circuit breaker recovery probe failed");
                Reason::RecoveryProbeFailed
            }
            Verdict::TimedOut => {
                tracing::info!(breaker = %self.name, "circuit breaker recovery probe timed out");
                Reason::RecoveryProbeTimedOut
            }
        };
        self.transition(l, State::Open, reason, now, pending);
        if server_until > self.hot.open_until.load(Ordering::Acquire) {
            // The backoff's next value ends before the server's deadline: the latter rules.
            self.hot.open_until.store(server_until, Ordering::Release);
            l.server_wait = true;
            let wait = Duration::from_nanos(server_until - now);
            l.opened_for = wait;
            if let Some((.., open_for)) = pending {
                *open_for = Some(wait);
            }
        }
    }

    /// At the breaker's drop (and its eviction from a keyed registry): ends its task.
    pub(super) fn stop_recovery(&self) {
        if self.recovery.is_some() {
            self.locked.lock().recovery.stop_task();
        }
    }

    /// Spawns the breaker's task on the current runtime; with none, leaves `r.task` empty.
    #[cfg(not(loom))]
    fn spawn_recovery(&self, r: &mut Recovery) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::debug!(
                breaker = %self.name,
                "no tokio runtime: the recovery probe waits for a call after the open period"
            );
            return;
        };
        // The breaker's own `Arc`, through its entry in the table of live breakers.
        let Some(shared) = super::ids::find(self.id) else {
            return;
        };
        let weak = std::sync::Arc::downgrade(&shared);
        drop(shared); // not the last: the caller holds the breaker
        r.spawned += 1;
        let id = r.spawned;
        let task = runtime.spawn(run(weak, id));
        r.task = Some(Task {
            id,
            abort: task.abort_handle(),
        });
    }

    /// Under loom, no runtime: the breaker goes half-open as without a probe.
    #[cfg(loom)]
    fn spawn_recovery(&self, _r: &mut Recovery) {}
}

impl super::CircuitBreaker {
    /// Ends the recovery probe's task, if any: for a keyed registry's breaker evicted while
    /// open (a thread's cache may keep it allocated, dead; its probe must not run on).
    pub(crate) fn stop_recovery_probe(&self) {
        self.shared().stop_recovery();
    }
}

/// The breaker's task: sleeps until the open deadline, runs the probe, applies its verdict,
/// and again while the breaker stays open.
#[cfg(not(loom))]
async fn run(breaker: std::sync::Weak<Shared>, id: u64) {
    // Made at the first poll (a task dropped unpolled, by a runtime shut down, has none), so
    // that it never runs under the lock of the spawn.
    let _slot = FreeSlot {
        breaker: breaker.clone(),
        id,
    };
    loop {
        let step = match breaker.upgrade() {
            Some(shared) => shared.recovery_step(id),
            None => return,
        };
        match step {
            Step::Exit => return,
            Step::Sleep(at) => tokio::time::sleep_until(at).await,
            Step::Run(probe, deadline, generation) => {
                let verdict = match tokio::time::timeout_at(deadline, run_probe(&*probe)).await {
                    Ok(Ok(())) => Verdict::Succeeded,
                    Ok(Err(error)) => Verdict::Failed(error),
                    Err(_) => Verdict::TimedOut,
                };
                match breaker.upgrade() {
                    Some(shared) => shared.recovery_verdict(id, generation, verdict),
                    None => return,
                }
            }
        }
    }
}

/// Runs the user's probe once; a panic (in the function or its future) is a failure, and the
/// task goes on.
#[cfg(not(loom))]
async fn run_probe(probe: &(dyn Fn() -> ProbeFuture + Send + Sync)) -> Result<(), BoxError> {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::task::Poll;

    let panicked = || -> BoxError { "the recovery probe panicked".into() };
    // Unwind safety: after a panic the probe (function or future) is not used again.
    let Ok(mut future) = catch_unwind(AssertUnwindSafe(probe)) else {
        return Err(panicked());
    };
    std::future::poll_fn(
        |cx| match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(poll) => poll,
            Err(_) => Poll::Ready(Err(panicked())),
        },
    )
    .await
}

/// Frees the breaker's task slot when the task ends, however it ends (returned, aborted, or
/// dropped with its runtime), so that the next call after the
/// deadline can start another.
#[cfg(not(loom))]
struct FreeSlot {
    breaker: std::sync::Weak<Shared>,
    id: u64,
}

#[cfg(not(loom))]
impl Drop for FreeSlot {
    fn drop(&mut self) {
        if let Some(shared) = self.breaker.upgrade() {
            let mut l = shared.locked.lock();
            if l.recovery.task_is(self.id) {
                l.recovery.task = None;
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::time::Duration;

    use super::Verdict;
    use crate::{CircuitBreaker, Outcome, Reason, State, breaker::sync::Ordering};

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::builder("recovery")
            .consecutive_failures(1)
            .recovery_probe(|| async { Ok::<(), std::io::Error>(()) }, Duration::from_secs(5))
            .build()
            .unwrap()
    }

    /// With no tokio runtime, at the trip or at the first call after the deadline, the breaker
    /// goes half-open as a breaker without a probe does, and nothing panics.
    #[test]
    fn with_no_runtime_the_breaker_goes_half_open_as_without_a_probe() {
        let b = breaker();
        b.try_acquire().unwrap().record(Outcome::Failure);
        assert!(b.shared().locked.lock().recovery.task.is_none());
        b.shared().hot.open_until.store(0, Ordering::Release); // the open period ended
        let probe = b.try_acquire().unwrap();
        assert!(probe.is_probe());
        assert_eq!(b.snapshot().reason, Some(Reason::OpenElapsed));
        probe.record(Outcome::Success);
        assert_eq!(b.state(), State::Closed);
    }

    /// A verdict that arrives after the breaker moved on (a manual control, a new outage)
    /// changes nothing, even if its task was not stopped in time.
    #[tokio::test(start_paused = true)]
    async fn a_stale_verdict_changes_nothing() {
        let b = breaker();
        b.try_acquire().unwrap().record(Outcome::Failure);
        let (id, generation) = {
            let mut l = b.shared().locked.lock();
            let generation = l.generation;
            let now = b.shared().clock.now();
            b.shared().claim(&mut l, now, Duration::from_secs(5));
            l.recovery.probing.as_mut().unwrap().started = true;
            (l.recovery.task.as_ref().unwrap().id, generation)
        };
        b.reset();
        b.shared().recovery_verdict(id, generation, Verdict::Succeeded);
        assert_eq!(
            (b.state(), b.snapshot().reason),
            (State::Closed, Some(Reason::Reset))
        );

        b.try_acquire().unwrap().record(Outcome::Failure); // a new outage, a new task
        b.shared().recovery_verdict(id, generation, Verdict::Succeeded);
        b.shared()
            .recovery_verdict(id, generation, Verdict::Failed("late".into()));
        let snapshot = b.snapshot();
        assert_eq!(
            (snapshot.state, snapshot.reason),
            (State::Open, Some(Reason::ConsecutiveFailures))
        );
        assert_eq!(snapshot.retry_after, Some(Duration::from_secs(30)));
    }

    /// A probe claimed but never started (its task's runtime is no longer driven) is given up
    /// at its deadline: the task is replaced on the caller's runtime.
    #[tokio::test(start_paused = true)]
    async fn a_task_that_never_starts_its_probe_is_replaced() {
        let b = breaker();
        b.try_acquire().unwrap().record(Outcome::Failure);
        let first = {
            let mut l = b.shared().locked.lock();
            let now = b.shared().clock.now();
            b.shared().claim(&mut l, now, Duration::from_secs(5));
            // Its task is stopped behind the breaker's back: it will never run.
            let task = l.recovery.task.as_ref().unwrap();
            task.abort.abort();
            task.id
        };
        tokio::task::yield_now().await;
        // Stopped before its first poll, it did not even free its slot.
        assert!(b.shared().locked.lock().recovery.task_is(first));
        tokio::time::advance(Duration::from_secs(5)).await; // the claimed probe's deadline
        assert!(b.try_acquire().is_err(), "a new task claims the probe");
        let l = b.shared().locked.lock();
        assert!(l.recovery.task.as_ref().is_some_and(|t| t.id != first));
        assert!(l.recovery.probing.is_some_and(|p| !p.started));
    }
}
