//! The tower service: readiness modes, admission stability, permit release, compositions with
//! tower's Retry and Buffer. All timing under paused tokio time.

#[path = "support/capture.rs"]
mod capture;
use capture::Capture;

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use futures::FutureExt;
use tokio::time::advance;
use tower::{Layer, Service, ServiceExt};
use tower_breaker::{
    BoxError, CircuitBreaker, CircuitBreakerLayer, CircuitOpen, Outcome, Readiness, State, is_circuit_open,
    is_dead_buffer,
};

const S: Duration = Duration::from_secs(1);

/// An inner service that counts readiness polls and calls, answering from a script.
#[derive(Clone, Default)]
struct Probe {
    polls: Arc<AtomicUsize>,
    calls: Arc<AtomicUsize>,
    /// `true`: calls fail.
    failing: Arc<std::sync::atomic::AtomicBool>,
    /// `true`: calls never complete.
    hang: bool,
}

impl Probe {
    fn polls(&self) -> usize {
        self.polls.load(Ordering::SeqCst)
    }
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
    fn set_failing(&self, f: bool) {
        self.failing.store(f, Ordering::SeqCst);
    }
}

impl Service<u32> for Probe {
    type Response = u32;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<u32, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: u32) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.hang {
            return Box::pin(futures::future::pending());
        }
        let failing = self.failing.load(Ordering::SeqCst);
        Box::pin(async move {
            if failing {
                Err("upstream failed".into())
            } else {
                Ok(req)
            }
        })
    }
}

fn breaker(n: u32) -> CircuitBreaker {
    CircuitBreaker::builder("svc")
        .consecutive_failures(n)
        .open_duration(10 * S)
        .build()
        .unwrap()
}

fn open(b: &CircuitBreaker) {
    b.trip(10 * S);
    assert_eq!(b.state(), State::Open);
}

fn poll_ready<S: Service<u32>>(svc: &mut S) -> Poll<Result<(), S::Error>> {
    let waker = futures::task::noop_waker();
    svc.poll_ready(&mut Context::from_waker(&waker))
}

// ---------- FailFast ----------

#[tokio::test(start_paused = true)]
async fn fail_fast_errors_in_poll_ready_without_polling_inner() {
    let inner = Probe::default();
    let b = breaker(3);
    let mut svc = CircuitBreakerLayer::new(b.clone()).layer(inner.clone());
    open(&b);
    let err = svc.ready().await.err().expect("open: readiness fails");
    assert!(is_circuit_open(&err));
    assert_eq!(
        err.downcast_ref::<CircuitOpen>().unwrap().retry_after(),
        Some(10 * S)
    );
    assert_eq!((inner.polls(), inner.calls()), (0, 0));
    // Transient: the same instance re-checks and recovers.
    advance(10 * S).await;
    assert_eq!(svc.ready().await.unwrap().call(7).await.unwrap(), 7);
    assert_eq!(b.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn failures_through_the_service_trip_the_breaker() {
    let inner = Probe::default();
    inner.set_failing(true);
    let b = breaker(2);
    let mut svc = CircuitBreakerLayer::new(b.clone()).layer(inner.clone());
    for _ in 0..2 {
        let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
        assert!(!is_circuit_open(&err), "the inner error passes through: {err}");
    }
    assert!(svc.ready().await.is_err());
    assert_eq!(inner.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn custom_classifier_decides_what_counts() {
    let inner = Probe::default();
    let b = breaker(1);
    // Responses above 100 are failures; errors are ignored.
    let classify = |r: Result<&u32, &BoxError>| match r {
        Ok(v) if *v > 100 => Outcome::Failure,
        Ok(_) => Outcome::Success,
        Err(_) => Outcome::Ignore,
    };
    let mut svc = CircuitBreakerLayer::new(b.clone())
        .classify(classify)
        .layer(inner.clone());
    inner.set_failing(true);
    let _ = svc.ready().await.unwrap().call(1).await;
    assert_eq!(b.state(), State::Closed, "errors ignored");
    inner.set_failing(false);
    svc.ready().await.unwrap().call(101).await.unwrap();
    assert_eq!(b.state(), State::Open, "a response classified as failure");
}

// ---------- RejectOnCall ----------

#[tokio::test(start_paused = true)]
async fn reject_on_call_is_ready_and_fails_the_call_without_inner() {
    let inner = Probe::default();
    let b = breaker(3);
    let mut svc = CircuitBreakerLayer::new(b.clone())
        .readiness(Readiness::RejectOnCall)
        .layer(inner.clone());
    open(&b);
    let fut = svc.ready().await.expect("ready while open").call(1);
    let err = fut.now_or_never().expect("already resolved").unwrap_err();
    assert!(err.is::<CircuitOpen>());
    assert_eq!((inner.polls(), inner.calls()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn reject_on_call_keeps_its_rejection_until_call() {
    let inner = Probe::default();
    let b = breaker(3);
    let mut svc = CircuitBreakerLayer::new(b.clone())
        .readiness(Readiness::RejectOnCall)
        .layer(inner.clone());
    open(&b);
    assert!(matches!(poll_ready(&mut svc), Poll::Ready(Ok(()))));
    b.reset();
    assert!(matches!(poll_ready(&mut svc), Poll::Ready(Ok(()))));
    assert!(
        svc.call(1).await.unwrap_err().is::<CircuitOpen>(),
        "the decision made at readiness stands"
    );
    assert_eq!(
        svc.ready().await.unwrap().call(2).await.unwrap(),
        2,
        "the next readiness re-checks"
    );
}

// ---------- Wait ----------

#[tokio::test(start_paused = true)]
async fn wait_is_pending_until_the_half_open_deadline() {
    let inner = Probe::default();
    let b = breaker(3);
    let svc = CircuitBreakerLayer::new(b.clone())
        .readiness(Readiness::Wait)
        .layer(inner.clone());
    open(&b);
    let start = tokio::time::Instant::now();
    let task = tokio::spawn(async move {
        let mut svc = svc;
        let v = svc.ready().await.unwrap().call(5).await.unwrap();
        (v, tokio::time::Instant::now())
    });
    advance(10 * S - Duration::from_millis(1)).await;
    assert!(!task.is_finished());
    assert_eq!(inner.polls(), 0, "inner not polled while open");
    let (v, at) = task.await.unwrap();
    assert_eq!(v, 5);
    assert_eq!(at - start, 10 * S, "woken at the half-open deadline");
    assert_eq!(b.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn wait_wakes_on_a_manual_change() {
    let inner = Probe::default();
    let b = breaker(3);
    let svc = CircuitBreakerLayer::new(b.clone())
        .readiness(Readiness::Wait)
        .layer(inner.clone());
    b.force_open();
    let task = tokio::spawn(async move {
        let mut svc = svc;
        svc.ready().await.unwrap().call(5).await.unwrap()
    });
    advance(Duration::from_secs(3600)).await;
    assert!(!task.is_finished(), "forced open has no deadline");
    b.reset();
    assert_eq!(task.await.unwrap(), 5);
}

#[tokio::test(start_paused = true)]
async fn wait_wakes_when_a_probe_slot_frees() {
    let b = breaker(1);
    let hanging = Probe {
        hang: true,
        ..Probe::default()
    };
    let mut first = CircuitBreakerLayer::new(b.clone())
        .readiness(Readiness::Wait)
        .layer(hanging);
    let second = CircuitBreakerLayer::new(b.clone())
        .readiness(Readiness::Wait)
        .layer(Probe::default());
    open(&b);
    advance(10 * S).await;
    let probe_call = first.ready().await.unwrap().call(1); // takes the only probe slot
    let task = tokio::spawn(async move {
        let mut svc = second;
        svc.ready().await.unwrap().call(2).await.unwrap()
    });
    tokio::task::yield_now().await;
    assert!(!task.is_finished(), "half-open is full");
    drop(probe_call); // the caller gives up: slot released
    assert_eq!(task.await.unwrap(), 2);
}

/// A waker that counts its wake-ups; its `Arc`'s strong count tells whether anyone kept it.
#[derive(Default)]
struct Counted(AtomicUsize);

impl std::task::Wake for Counted {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Issue 14 point 4: 10,000 waiters that give up (their service instances are dropped) leave
/// no waker registered, neither in the breaker nor in a timer; the waiters that stay are still
/// woken, at the half-open deadline and then by the probe's success.
#[tokio::test(start_paused = true)]
async fn abandoned_waiters_leave_no_waker_behind() {
    let b = breaker(3);
    let svc = CircuitBreakerLayer::new(b.clone())
        .readiness(Readiness::Wait)
        .layer(Probe::default());
    open(&b); // for 10 s: each waiter also arms a sleep until then
    let stay: Vec<_> = (0..3).map(|i| tokio::spawn(svc.clone().oneshot(i))).collect();
    tokio::task::yield_now().await;
    let mut gone = Vec::new();
    for _ in 0..10_000 {
        let w = Arc::new(Counted::default());
        let mut s = svc.clone();
        let waker = std::task::Waker::from(w.clone());
        assert!(s.poll_ready(&mut Context::from_waker(&waker)).is_pending());
        drop((s, waker)); // the caller gives up
        gone.push(w);
    }
    assert!(
        gone.iter().all(|w| Arc::strong_count(w) == 1),
        "no waker of an abandoned waiter is kept"
    );
    // Waiters that give up through a timeout in tasks of their own.
    let timed: Vec<_> = (0..1_000)
        .map(|_| tokio::spawn(tokio::time::timeout(S, svc.clone().oneshot(9))))
        .collect();
    advance(S).await;
    for t in timed {
        assert!(t.await.unwrap().is_err(), "timed out");
    }
    advance(9 * S).await; // the half-open deadline
    for (i, t) in stay.into_iter().enumerate() {
        assert_eq!(
            t.await.unwrap().unwrap(),
            i as u32,
            "a remaining waiter is served"
        );
    }
    assert_eq!(b.state(), State::Closed);
    assert!(gone.iter().all(|w| w.0.load(Ordering::SeqCst) == 0));
}

#[tokio::test(start_paused = true)]
async fn remaining_waiters_wake_on_a_manual_change_after_others_gave_up() {
    let b = breaker(3);
    let svc = CircuitBreakerLayer::new(b.clone())
        .readiness(Readiness::Wait)
        .layer(Probe::default());
    b.force_open();
    let stay: Vec<_> = (0..3).map(|i| tokio::spawn(svc.clone().oneshot(i))).collect();
    let timed: Vec<_> = (0..1_000)
        .map(|_| tokio::spawn(tokio::time::timeout(S, svc.clone().oneshot(9))))
        .collect();
    advance(S).await;
    for t in timed {
        assert!(t.await.unwrap().is_err(), "timed out");
    }
    b.reset();
    for (i, t) in stay.into_iter().enumerate() {
        assert_eq!(t.await.unwrap().unwrap(), i as u32);
    }
}

// ---------- admission rules ----------

#[tokio::test(start_paused = true)]
async fn repeated_poll_ready_keeps_one_admission() {
    let b = breaker(1);
    let mut svc = CircuitBreakerLayer::new(b.clone()).layer(Probe::default());
    open(&b);
    advance(10 * S).await;
    for _ in 0..5 {
        assert!(matches!(poll_ready(&mut svc), Poll::Ready(Ok(()))));
    }
    assert_eq!(
        b.snapshot().probes_in_flight,
        1,
        "one probe permit, however often polled"
    );
    svc.call(1).await.unwrap();
    assert_eq!(b.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn cancelled_response_future_releases_its_permit() {
    let b = breaker(1);
    let mut svc = CircuitBreakerLayer::new(b.clone()).layer(Probe {
        hang: true,
        ..Probe::default()
    });
    open(&b);
    advance(10 * S).await;
    let fut = svc.ready().await.unwrap().call(1);
    assert_eq!(b.snapshot().probes_in_flight, 1);
    drop(fut);
    assert_eq!(b.snapshot().probes_in_flight, 0);
    assert_eq!(b.state(), State::HalfOpen, "cancellation is neutral");
}

#[tokio::test(start_paused = true)]
async fn service_dropped_after_readiness_releases_its_permit() {
    let b = breaker(1);
    let mut svc = CircuitBreakerLayer::new(b.clone()).layer(Probe::default());
    open(&b);
    advance(10 * S).await;
    svc.ready().await.unwrap();
    assert_eq!(b.snapshot().probes_in_flight, 1);
    drop(svc);
    assert_eq!(b.snapshot().probes_in_flight, 0);
    assert!(b.try_acquire().unwrap().is_probe());
}

#[tokio::test(start_paused = true)]
async fn clones_share_the_breaker_but_not_the_admission() {
    let b = breaker(1);
    let mut a = CircuitBreakerLayer::new(b.clone()).layer(Probe::default());
    open(&b);
    advance(10 * S).await;
    assert!(matches!(poll_ready(&mut a), Poll::Ready(Ok(()))));
    let mut c = a.clone();
    let err = c
        .ready()
        .await
        .err()
        .expect("the clone has no permit and half-open is full");
    assert_eq!(
        err.downcast_ref::<CircuitOpen>().unwrap().state(),
        State::HalfOpen
    );
    a.call(1).await.unwrap();
    assert_eq!(
        c.ready().await.unwrap().call(2).await.unwrap(),
        2,
        "the clone sees the closed breaker"
    );
}

#[tokio::test(start_paused = true)]
async fn inner_readiness_errors_propagate_and_release() {
    #[derive(Clone)]
    struct Broken;
    impl Service<u32> for Broken {
        type Response = u32;
        type Error = BoxError;
        type Future = std::future::Ready<Result<u32, BoxError>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Err("pool closed".into()))
        }
        fn call(&mut self, r: u32) -> Self::Future {
            std::future::ready(Ok(r))
        }
    }
    let b = breaker(1);
    let mut svc = CircuitBreakerLayer::new(b.clone()).layer(Broken);
    open(&b);
    advance(10 * S).await;
    let err = svc.ready().await.err().unwrap();
    assert_eq!(err.to_string(), "pool closed");
    assert_eq!(b.snapshot().probes_in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn per_service_layer_gives_each_service_its_own_breaker() {
    let layer =
        CircuitBreakerLayer::per_service(CircuitBreaker::builder("ep").consecutive_failures(1)).unwrap();
    let failing = Probe::default();
    failing.set_failing(true);
    let mut a = layer.layer(failing);
    let mut b = layer.layer(Probe::default());
    let _ = a.ready().await.unwrap().call(1).await;
    assert!(a.ready().await.is_err(), "a tripped");
    assert_eq!(
        b.ready().await.unwrap().call(2).await.unwrap(),
        2,
        "b has its own breaker"
    );
    assert!(CircuitBreakerLayer::per_service(CircuitBreaker::builder("bad")).is_err());
}

// ---------- compositions ----------

#[derive(Clone)]
struct RetryAll(usize);

impl<Req: Clone, Res> tower::retry::Policy<Req, Res, BoxError> for RetryAll {
    type Future = std::future::Ready<()>;
    fn retry(&mut self, _: &mut Req, result: &mut Result<Res, BoxError>) -> Option<Self::Future> {
        if result.is_err() && self.0 > 0 {
            self.0 -= 1;
            Some(std::future::ready(()))
        } else {
            None
        }
    }
    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

#[tokio::test(start_paused = true)]
async fn retry_above_a_fail_fast_breaker_stops_at_the_open_circuit() {
    let inner = Probe::default();
    inner.set_failing(true);
    let b = breaker(3);
    let svc = tower::ServiceBuilder::new()
        .layer(tower::retry::RetryLayer::new(RetryAll(10)))
        .layer(CircuitBreakerLayer::new(b.clone()))
        .service(inner.clone());
    let err = svc.oneshot(1).await.unwrap_err();
    assert!(
        is_circuit_open(&err),
        "the retry ended on the open circuit: {err}"
    );
    assert_eq!(inner.calls(), 3, "no call reached the upstream once open");
}

#[tokio::test(start_paused = true)]
async fn buffer_above_reject_on_call_keeps_serving_after_the_circuit_closes() {
    let inner = Probe::default();
    let b = breaker(1);
    let svc = CircuitBreakerLayer::new(b.clone())
        .readiness(Readiness::RejectOnCall)
        .layer(inner.clone());
    let mut buffered = tower::buffer::Buffer::new(svc, 8);
    inner.set_failing(true);
    assert!(!is_circuit_open(
        &buffered.ready().await.unwrap().call(1).await.unwrap_err()
    ));
    let err = buffered.ready().await.unwrap().call(2).await.unwrap_err();
    assert!(is_circuit_open(&err), "open: rejected through the buffer: {err}");
    inner.set_failing(false);
    advance(10 * S).await;
    assert_eq!(
        buffered.ready().await.unwrap().call(3).await.unwrap(),
        3,
        "the buffer's worker survived"
    );
    assert_eq!(b.state(), State::Closed);
    assert_eq!(buffered.ready().await.unwrap().call(4).await.unwrap(), 4);
}

#[tokio::test(start_paused = true)]
async fn fail_fast_above_a_buffer_keeps_serving_too() {
    // breaker(buffer(client)): the documented place for a Buffer in FailFast mode.
    let inner = Probe::default();
    let b = breaker(1);
    let buffered = tower::buffer::Buffer::<u32, _>::new(inner.clone(), 8);
    let mut svc = CircuitBreakerLayer::new(b.clone()).layer(buffered);
    inner.set_failing(true);
    let _ = svc.ready().await.unwrap().call(1).await;
    assert!(svc.ready().await.is_err());
    inner.set_failing(false);
    advance(10 * S).await;
    assert_eq!(svc.ready().await.unwrap().call(3).await.unwrap(), 3);
}

/// Issue 15 point 1: `Buffer` above a `FailFast` breaker. The buffer's worker takes the
/// breaker's `poll_ready` refusal as final and stops for good; the error says so
/// (`is_dead_buffer`), is not an open circuit (`is_circuit_open` false, `CircuitOpen::find`
/// `None`), an ERROR names the fix once, and a refusal shown after its open period never says
/// "retry in 1ms". (The only test of this binary that meets a dead buffer: the ERROR is logged
/// once per process.)
#[tokio::test(start_paused = true)]
async fn buffer_above_fail_fast_is_reported_as_a_dead_buffer() {
    use tower_breaker::classify::ErrorClass;

    let capture = Capture::start();
    let errors = || {
        let events = capture.0.lock().unwrap();
        events
            .iter()
            .filter(|(level, _)| *level == tracing::Level::ERROR)
            .map(|(_, fields)| fields.clone())
            .collect::<Vec<_>>()
    };

    let inner = Probe::default();
    let b = breaker(1);
    let mut buffered =
        tower::buffer::Buffer::new(CircuitBreakerLayer::new(b.clone()).layer(inner.clone()), 8);
    inner.set_failing(true);
    let err = buffered.ready().await.unwrap().call(1).await.unwrap_err();
    assert!(!is_dead_buffer(&err), "a real failure: {err}");
    assert_eq!(b.state(), State::Open);

    // The worker polls the breaker for the next request: refused, and it stops.
    let err = buffered.ready().await.unwrap().call(2).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"buffered service failed: circuit "svc" is open; retry in 10s"#
    );
    assert!(is_dead_buffer(&err), "{err}");
    assert!(is_dead_buffer(&*err), "`&dyn Error` too");
    assert!(
        !is_circuit_open(&err),
        "not transient: this buffer never serves again"
    );
    assert!(CircuitOpen::find(&*err).is_none());
    assert_eq!(ErrorClass::of(&*err), ErrorClass::Other);
    let logged = errors();
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert!(logged[0].contains(r#"breaker="svc""#), "{logged:?}");
    assert!(
        logged[0].contains("Put the breaker above the buffer"),
        "{logged:?}"
    );
    assert!(logged[0].contains("Readiness::RejectOnCall"), "{logged:?}");

    // The upstream recovers and the open period ends: the buffer is still dead, and its error
    // says the open period has ended rather than "retry in 1ms".
    inner.set_failing(false);
    advance(10 * S).await;
    let Err(err) = buffered.ready().await.map(|_| ()) else {
        panic!("a dead buffer is never ready again");
    };
    assert!(is_dead_buffer(&err));
    assert_eq!(
        err.to_string(),
        r#"buffered service failed: circuit "svc" was open; its open period has ended"#
    );
    assert_eq!(b.state(), State::Open, "no probe ever reaches the breaker");
    assert_eq!(inner.calls(), 1);
    assert_eq!(errors().len(), 1, "the ERROR is logged once");

    // The same stack the right way round serves again after the open period.
    let mut right = CircuitBreakerLayer::new(b.clone()).layer(tower::buffer::Buffer::new(inner.clone(), 8));
    assert_eq!(right.ready().await.unwrap().call(3).await.unwrap(), 3);
    assert_eq!(b.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn timeout_inside_counts_as_a_failure() {
    let b = breaker(1);
    let svc = tower::ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(b.clone()))
        .timeout(S)
        .service(Probe {
            hang: true,
            ..Probe::default()
        });
    let err = svc.oneshot(1).await.unwrap_err();
    assert!(err.is::<tower::timeout::error::Elapsed>());
    assert_eq!(b.state(), State::Open);
}
