//! `Fallback` and `FallbackLayer`: routing on an open circuit, `on_failure` policies,
//! backpressure and spill-over, errors, provenance, and permits under cancellation.

use std::{
    error::Error,
    future::poll_fn,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    task::Poll,
    time::Duration,
};

use tower::{Service, ServiceBuilder, ServiceExt, service_fn, util::BoxCloneService};
use tower_breaker::{
    AllUnavailable, BoxError, CircuitBreaker, CircuitBreakerLayer, CircuitOpen, Event, Fallback,
    FallbackLayer, Layer, Outcome, Readiness, Reason, State,
    fallback::{AllOpen, CloneRequest, CloneWith, FallbackError, Provenance, SkipReason, Skipped},
    is_circuit_open,
};

type Svc<Res = String> = BoxCloneService<String, Res, BoxError>;

#[derive(Debug)]
struct Upstream(&'static str);
impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "upstream error: {}", self.0)
    }
}
impl Error for Upstream {}

/// A service that counts its calls and answers `"{name}: {req}"`, or fails when `fail`.
fn upstream(name: &'static str, fail: bool) -> (Arc<AtomicUsize>, Svc) {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let svc = service_fn(move |req: String| {
        c.fetch_add(1, Ordering::SeqCst);
        async move {
            if fail {
                Err::<String, BoxError>(Box::new(Upstream(name)))
            } else {
                Ok(format!("{name}: {req}"))
            }
        }
    });
    (calls, BoxCloneService::new(svc))
}

/// A service whose calls never complete (a hung upstream), counting calls.
fn hung() -> (Arc<AtomicUsize>, Svc) {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let svc = service_fn(move |_: String| {
        c.fetch_add(1, Ordering::SeqCst);
        std::future::pending::<Result<String, BoxError>>()
    });
    (calls, BoxCloneService::new(svc))
}

fn breaker(name: &'static str) -> CircuitBreaker {
    CircuitBreaker::builder(name)
        .consecutive_failures(2)
        .open_duration(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn guarded(breaker: &CircuitBreaker, inner: Svc) -> Svc {
    BoxCloneService::new(CircuitBreakerLayer::new(breaker.clone()).layer(inner))
}

/// `inner` behind `breaker` in `RejectOnCall` mode: ready while open, refused at call time.
fn rejecting<Res: Send + 'static>(
    breaker: &CircuitBreaker,
    inner: BoxCloneService<String, Res, BoxError>,
) -> BoxCloneService<String, Res, BoxError> {
    BoxCloneService::new(
        CircuitBreakerLayer::new(breaker.clone())
            .readiness(Readiness::RejectOnCall)
            .layer(inner),
    )
}

async fn poll_ready_now<S: Service<String>>(svc: &mut S) -> Poll<Result<(), S::Error>> {
    poll_fn(|cx| Poll::Ready(svc.poll_ready(cx))).await
}

#[tokio::test(start_paused = true)]
async fn primary_inner_is_called_zero_times_while_open() {
    let b = breaker("openai");
    let (primary_calls, primary) = upstream("openai", true);
    let (secondary_calls, secondary) = upstream("anthropic", false);
    let mut svc = Fallback::new(guarded(&b, primary), secondary);

    // Two real failures trip the breaker; without a policy they are the caller's errors.
    for _ in 0..2 {
        let err = svc.ready().await.unwrap().call("q".into()).await.unwrap_err();
        assert!(err.is::<Upstream>(), "{err}");
    }
    assert_eq!(b.state(), State::Open);
    assert_eq!(primary_calls.load(Ordering::SeqCst), 2);

    for i in 0..5 {
        let res = svc.ready().await.unwrap().call(format!("q{i}")).await.unwrap();
        assert_eq!(res, format!("anthropic: q{i}"));
    }
    assert_eq!(
        primary_calls.load(Ordering::SeqCst),
        2,
        "the open primary was not called"
    );
    assert_eq!(secondary_calls.load(Ordering::SeqCst), 5);

    // After the open period the primary gets a probe again.
    tokio::time::advance(Duration::from_secs(10)).await;
    let _ = svc.ready().await.unwrap().call("probe".into()).await;
    assert_eq!(primary_calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn closed_primary_serves_and_secondary_is_never_polled() {
    let (_, primary) = upstream("openai", false);
    let counting = CountReady::new(upstream("cache", false).1);
    let readies = counting.readies.clone();
    let mut svc = Fallback::new(primary, counting);
    for _ in 0..3 {
        assert_eq!(
            svc.ready().await.unwrap().call("q".into()).await.unwrap(),
            "openai: q"
        );
    }
    assert_eq!(
        readies.load(Ordering::SeqCst),
        0,
        "secondary polled only when needed"
    );
}

/// Counts `poll_ready` calls on the wrapped service.
#[derive(Clone)]
struct CountReady<S> {
    inner: S,
    readies: Arc<AtomicUsize>,
}
impl<S> CountReady<S> {
    fn new(inner: S) -> Self {
        Self {
            inner,
            readies: Arc::default(),
        }
    }
}
impl<S: Service<R>, R> Service<R> for CountReady<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;
    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<(), S::Error>> {
        self.readies.fetch_add(1, Ordering::SeqCst);
        self.inner.poll_ready(cx)
    }
    fn call(&mut self, req: R) -> S::Future {
        self.inner.call(req)
    }
}

#[tokio::test(start_paused = true)]
async fn half_open_probe_capacity_exhausted_routes_to_secondary() {
    let b = breaker("openai");
    b.trip(Duration::from_secs(10));
    tokio::time::advance(Duration::from_secs(10)).await;

    let (primary_calls, primary) = hung();
    let (_, secondary) = upstream("cache", false);
    let mut first = Fallback::new(guarded(&b, primary), secondary).names("openai", "cache");
    let mut second = first.clone();

    // The first request takes the only probe and hangs on the primary.
    let probe = first.ready().await.unwrap().call("a".into());
    assert_eq!(b.state(), State::HalfOpen);
    assert_eq!(b.snapshot().probes_in_flight, 1);

    // The next one finds the probe capacity exhausted and goes to the secondary at once.
    let res = second.ready().await.unwrap().call("b".into()).await.unwrap();
    assert_eq!(res, "cache: b");
    assert_eq!(primary_calls.load(Ordering::SeqCst), 1);

    drop(probe);
    assert_eq!(
        b.snapshot().probes_in_flight,
        0,
        "the cancelled probe was released"
    );
}

#[tokio::test(start_paused = true)]
async fn on_failure_with_cloning_policy_falls_back_after_a_failed_call() {
    let (primary_calls, primary) = upstream("openai", true);
    let (secondary_calls, secondary) = upstream("anthropic", false);
    let seen = Arc::new(Mutex::new(Vec::<Provenance>::new()));
    let s = seen.clone();
    let svc = Fallback::new(primary, secondary)
        .names("openai", "anthropic")
        .on_fallback(move |p| s.lock().unwrap().push(p.clone()))
        .on_failure(CloneRequest::new());

    let res = svc.oneshot("hello".into()).await.unwrap();
    assert_eq!(res, "anthropic: hello");
    assert_eq!(primary_calls.load(Ordering::SeqCst), 1);
    assert_eq!(secondary_calls.load(Ordering::SeqCst), 1);

    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].served_by(), "anthropic");
    assert_eq!(seen[0].skipped()[0].member(), "openai");
    match seen[0].skipped()[0].reason() {
        SkipReason::Failed(e) => assert!(e.is::<Upstream>()),
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn on_failure_falls_back_on_a_response_classified_as_failure() {
    let answer = |status: u16, body: &'static str| {
        BoxCloneService::new(service_fn(move |_: String| async move {
            Ok::<_, BoxError>(
                http::Response::builder()
                    .status(status)
                    .body(body.to_owned())
                    .unwrap(),
            )
        }))
    };
    let classify = |r: Result<&http::Response<String>, &BoxError>| match r {
        Ok(res) if res.status().is_server_error() => Outcome::Failure,
        Ok(_) => Outcome::Success,
        Err(_) => Outcome::Failure,
    };
    let svc = Fallback::new(answer(529, "overloaded"), answer(200, "fine"))
        .names("anthropic", "openai")
        .on_failure(CloneRequest::new().classify(classify));
    let res = svc.oneshot("q".into()).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.body(), "fine");
    let provenance = res.extensions().get::<Provenance>().unwrap();
    assert_eq!(provenance.served_by(), "openai");
    assert!(matches!(
        provenance.skipped()[0].reason(),
        SkipReason::FailureResponse
    ));

    // A classifier that accepts 5xx: no fallback, the primary's answer is returned.
    let svc = Fallback::new(answer(529, "overloaded"), answer(200, "fine")).on_failure(
        CloneRequest::new().classify(|_: Result<&http::Response<String>, &BoxError>| Outcome::Success),
    );
    let res = svc.oneshot("q".into()).await.unwrap();
    assert_eq!(res.status(), 529);
    assert!(!res.extensions().get::<Provenance>().unwrap().fell_back());
}

#[tokio::test(start_paused = true)]
async fn on_failure_with_declining_policy_returns_the_primary_error() {
    let (_, primary) = upstream("openai", true);
    let (secondary_calls, secondary) = upstream("anthropic", false);
    let declined = Arc::new(AtomicUsize::new(0));
    let d = declined.clone();
    let svc = Fallback::new(primary, secondary).on_failure(CloneWith::new(move |_: &String| {
        d.fetch_add(1, Ordering::SeqCst);
        None
    }));
    let err = svc.oneshot("q".into()).await.unwrap_err();
    assert!(err.is::<Upstream>(), "the primary's own error, unwrapped: {err}");
    assert_eq!(declined.load(Ordering::SeqCst), 1, "the policy was asked");
    assert_eq!(secondary_calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn reject_on_call_primary_falls_back_only_with_a_policy() {
    let b = breaker("openai");
    b.force_open();
    let (primary_calls, primary) = upstream("openai", false);
    let primary = BoxCloneService::new(
        CircuitBreakerLayer::new(b.clone())
            .readiness(Readiness::RejectOnCall)
            .layer(primary),
    );
    let (_, secondary) = upstream("cache", false);

    // Without a policy the request was handed to the primary and cannot come back.
    let err = Fallback::new(primary.clone(), secondary.clone())
        .oneshot("q".into())
        .await
        .unwrap_err();
    assert!(err.is::<CircuitOpen>(), "{err}");

    let res = Fallback::new(primary, secondary)
        .on_failure(CloneRequest::new())
        .oneshot("q".into())
        .await
        .unwrap();
    assert_eq!(res, "cache: q");
    assert_eq!(primary_calls.load(Ordering::SeqCst), 0);
}

/// Issue 14 point 5: the primary answered (a 500, or an error), the policy sends the request
/// on, and the secondary is a `RejectOnCall` breaker whose circuit is open: its `poll_ready`
/// says ready, its call is refused. The primary's answer must stand, not the refusal.
#[tokio::test(start_paused = true)]
async fn on_failure_keeps_the_failed_answer_when_the_secondary_rejects_on_call() {
    let answer = |status: u16| {
        BoxCloneService::new(service_fn(move |_: String| async move {
            Ok::<_, BoxError>(http::Response::builder().status(status).body(()).unwrap())
        }))
    };
    let is_5xx = |r: Result<&http::Response<()>, &BoxError>| match r {
        Ok(res) if res.status().is_server_error() => Outcome::Failure,
        Ok(_) => Outcome::Success,
        Err(_) => Outcome::Failure,
    };
    let b = breaker("anthropic");
    b.trip(Duration::from_secs(20));

    // A response classified as a failure: returned as is.
    let res = Fallback::new(answer(500), rejecting(&b, answer(200)))
        .names("openai", "anthropic")
        .on_failure(CloneRequest::new().classify(is_5xx))
        .oneshot("q".into())
        .await
        .expect("the primary's 500 stands, not the secondary's CircuitOpen");
    assert_eq!(res.status(), 500);
    let p = res.extensions().get::<Provenance>().unwrap();
    assert_eq!(p.served_by(), "openai");
    assert_eq!(p.skipped().len(), 1);
    assert_eq!(p.skipped()[0].member(), "anthropic");
    assert_eq!(p.skipped()[0].circuit_open().unwrap().name(), "anthropic");

    // An error: the caller gets it (with the secondary's refusal alongside), and it is not
    // an open circuit: the request was sent and failed.
    let (primary_calls, primary) = upstream("openai", true);
    let (secondary_calls, secondary) = upstream("anthropic", false);
    let err = Fallback::new(primary, rejecting(&b, secondary))
        .names("openai", "anthropic")
        .on_failure(CloneRequest::new())
        .oneshot("q".into())
        .await
        .unwrap_err();
    let failed = err
        .downcast_ref::<FallbackError>()
        .unwrap_or_else(|| panic!("{err}"));
    assert_eq!(failed.member(), "openai");
    assert!(failed.error().is::<Upstream>(), "{err}");
    assert_eq!(failed.skipped()[0].circuit_open().unwrap().name(), "anthropic");
    assert!(
        !is_circuit_open(&err),
        "the primary was called and answered: {err}"
    );
    assert!(CircuitOpen::find(&*err).is_none());
    assert_eq!(primary_calls.load(Ordering::SeqCst), 1);
    assert_eq!(secondary_calls.load(Ordering::SeqCst), 0);
}

/// Issue 15 point 1: a `Buffer` above a `FailFast` breaker dies at the first refusal. Its
/// error is not an open circuit: the fallback reports the dead member instead of routing
/// around it forever as if its circuit were open.
#[tokio::test(start_paused = true)]
async fn a_dead_buffer_is_reported_not_routed_around_forever() {
    let b = breaker("openai");
    let (primary_calls, primary) = upstream("openai", false);
    let buffered: Svc = BoxCloneService::new(tower::buffer::Buffer::new(guarded(&b, primary), 8));
    let (secondary_calls, secondary) = upstream("cache", false);
    let svc = Fallback::new(buffered, secondary).names("openai", "cache");
    b.force_open();

    // The buffer's worker polls the breaker, is refused, and stops.
    let err = svc.clone().oneshot("q".into()).await.unwrap_err();
    assert!(tower_breaker::is_dead_buffer(&err), "{err}");
    b.reset(); // the upstream is back; the dead buffer is not

    let err = svc.oneshot("q".into()).await.unwrap_err();
    assert!(tower_breaker::is_dead_buffer(&err), "{err}");
    assert!(!is_circuit_open(&err), "{err}");
    assert_eq!(primary_calls.load(Ordering::SeqCst), 0);
    assert_eq!(secondary_calls.load(Ordering::SeqCst), 0, "not routed as if open");
}

#[tokio::test(start_paused = true)]
async fn failing_secondary_error_carries_the_primary_reason_as_source() {
    let b = breaker("openai");
    b.trip(Duration::from_secs(12));
    let (_, primary) = upstream("openai", false);
    let (_, secondary) = upstream("anthropic", true);
    let err = Fallback::new(guarded(&b, primary), secondary)
        .names("openai", "anthropic")
        .oneshot("q".into())
        .await
        .unwrap_err();

    let failed = err.downcast_ref::<FallbackError>().expect("a FallbackError");
    assert_eq!(failed.member(), "anthropic");
    assert!(failed.error().is::<Upstream>());
    let source = err.source().unwrap().downcast_ref::<Skipped>().unwrap();
    assert_eq!(source.member(), "openai");
    let open = source.circuit_open().unwrap();
    assert_eq!(open.name(), "openai");
    assert_eq!(open.retry_after(), Some(Duration::from_secs(12)));
    assert_eq!(
        err.to_string(),
        r#"member "anthropic" failed: upstream error: anthropic"#
    );
    assert!(
        !is_circuit_open(&err),
        "the request was sent (to the secondary) and failed"
    );
}

#[tokio::test(start_paused = true)]
async fn both_open_fails_fast_with_all_unavailable() {
    let (a, b) = (breaker("openai"), breaker("anthropic"));
    a.trip(Duration::from_secs(30));
    b.trip(Duration::from_secs(7));
    let (calls_a, pa) = upstream("openai", false);
    let (calls_b, pb) = upstream("anthropic", false);
    let mut svc = Fallback::new(guarded(&a, pa), guarded(&b, pb)).names("openai", "anthropic");

    let err = match poll_ready_now(&mut svc).await {
        Poll::Ready(Err(e)) => e,
        other => panic!("expected an immediate error, got {other:?}"),
    };
    let all = err.downcast_ref::<AllUnavailable>().unwrap();
    assert_eq!(all.retry_after(), Some(Duration::from_secs(7)));
    let names: Vec<_> = all.members().iter().map(Skipped::member).collect();
    assert_eq!(names, ["openai", "anthropic"]);
    assert!(is_circuit_open(&err));
    assert_eq!(CircuitOpen::find(&*err).unwrap().name(), "anthropic");
    assert_eq!(calls_a.load(Ordering::SeqCst) + calls_b.load(Ordering::SeqCst), 0);

    // The same instance recovers once a member's circuit lets a probe through.
    tokio::time::advance(Duration::from_secs(7)).await;
    assert_eq!(
        svc.ready().await.unwrap().call("q".into()).await.unwrap(),
        "anthropic: q"
    );
}

#[tokio::test(start_paused = true)]
async fn a_pending_primary_is_waited_for_unless_spill_over() {
    let (mut primary, mut handle) = tower_test::mock::pair::<String, String>();
    handle.allow(0); // the primary is busy
    let _ = &mut primary;
    let (_, secondary) = upstream("cache", false);

    let mut svc = Fallback::new(primary.clone(), secondary.clone());
    assert!(
        poll_ready_now(&mut svc).await.is_pending(),
        "backpressure is waited for"
    );

    let mut svc = Fallback::new(primary, secondary)
        .spill_over(true)
        .names("openai", "cache");
    assert!(matches!(poll_ready_now(&mut svc).await, Poll::Ready(Ok(()))));
    let res = svc.call("q".into()).await.unwrap();
    assert_eq!(res, "cache: q");

    // Once the primary has capacity again it takes the next request.
    handle.allow(1);
    let fut = svc.ready().await.unwrap().call("r".into());
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req, "r");
    send.send_response("openai: r".to_owned());
    assert_eq!(fut.await.unwrap(), "openai: r");
}

#[tokio::test(start_paused = true)]
async fn other_primary_readiness_errors_propagate() {
    let (primary, mut handle) = tower_test::mock::pair::<String, String>();
    handle.send_error(Upstream("connection pool closed"));
    let (calls, secondary) = upstream("cache", false);
    let err = Fallback::new(primary, secondary)
        .oneshot("q".into())
        .await
        .unwrap_err();
    assert!(err.is::<Upstream>(), "{err}");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn provenance_in_http_extensions_and_callback_merges_nested_chains() {
    let http_upstream = |name: &'static str| {
        BoxCloneService::new(service_fn(move |_: String| async move {
            Ok::<_, BoxError>(http::Response::new(name.to_owned()))
        }))
    };
    let (a, b) = (breaker("openai"), breaker("anthropic"));
    a.force_open();
    b.trip(Duration::from_secs(5));
    let guard = |br: &CircuitBreaker, s: Svc<http::Response<String>>| {
        BoxCloneService::new(CircuitBreakerLayer::new(br.clone()).layer(s))
    };
    let callbacks = Arc::new(Mutex::new(Vec::<String>::new()));
    let c = callbacks.clone();
    let inner = Fallback::new(guard(&b, http_upstream("anthropic")), http_upstream("cache"))
        .names("anthropic", "cache");
    let svc = Fallback::new(guard(&a, http_upstream("openai")), inner)
        .names("openai", "fallbacks")
        .on_fallback(move |p| c.lock().unwrap().push(p.to_string()));

    let res = svc.oneshot("q".into()).await.unwrap();
    assert_eq!(res.body(), "cache");
    let p = res.extensions().get::<Provenance>().unwrap();
    assert_eq!(p.served_by(), "cache");
    let skipped: Vec<_> = p
        .skipped()
        .iter()
        .map(|s| (s.member(), s.circuit_open().unwrap().state()))
        .collect();
    assert_eq!(
        skipped,
        [("openai", State::ForcedOpen), ("anthropic", State::Open)]
    );
    assert_eq!(
        callbacks.lock().unwrap().as_slice(),
        [
            r#"served by "cache" (member "openai" skipped: circuit "openai" is forced open; member "anthropic" skipped: circuit "anthropic" is open; retry in 5s)"#
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn primary_served_response_records_provenance_without_callback() {
    let called = Arc::new(AtomicUsize::new(0));
    let c = called.clone();
    let svc = Fallback::new(
        service_fn(|_: String| async { Ok::<_, BoxError>(http::Response::new("primary")) }),
        service_fn(|_: String| async { Ok::<_, BoxError>(http::Response::new("secondary")) }),
    )
    .on_fallback(move |_| {
        c.fetch_add(1, Ordering::SeqCst);
    });
    let res = svc.oneshot("q".into()).await.unwrap();
    let p = res.extensions().get::<Provenance>().unwrap();
    assert_eq!(p.served_by(), "primary");
    assert!(!p.fell_back());
    assert_eq!(called.load(Ordering::SeqCst), 0, "no fallback, no callback");
}

#[tokio::test(start_paused = true)]
async fn cancelled_call_mid_fallback_releases_every_permit() {
    // Both circuits are half-open with one probe each: every admission is a probe permit.
    let (a, b) = (breaker("openai"), breaker("anthropic"));
    a.trip(Duration::from_secs(1));
    b.trip(Duration::from_secs(1));
    tokio::time::advance(Duration::from_secs(1)).await;

    let (_, primary) = upstream("openai", true);
    let (secondary_calls, secondary) = hung();
    let mut svc = Fallback::new(guarded(&a, primary), guarded(&b, secondary)).on_failure(CloneRequest::new());

    let mut fut = Box::pin(svc.ready().await.unwrap().call("q".into()));
    // Drive it: the primary probe fails (recorded), the secondary's probe is taken and its call hangs.
    assert!(futures::poll!(fut.as_mut()).is_pending());
    assert_eq!(secondary_calls.load(Ordering::SeqCst), 1);
    assert_eq!(a.state(), State::Open, "the primary's failed probe reopened it");
    assert_eq!(b.snapshot().probes_in_flight, 1);

    drop(fut);
    assert_eq!(
        b.snapshot().probes_in_flight,
        0,
        "the secondary's probe was released"
    );
    assert!(b.try_acquire().is_ok(), "a new probe is admitted");

    // Cancelled between readiness and call, and while readied for a fallback route.
    let (c, d) = (breaker("c"), breaker("d"));
    c.force_open();
    d.trip(Duration::from_secs(1));
    tokio::time::advance(Duration::from_secs(1)).await;
    let mut svc = Fallback::new(guarded(&c, upstream("c", false).1), guarded(&d, hung().1));
    svc.ready().await.unwrap();
    assert_eq!(
        d.snapshot().probes_in_flight,
        1,
        "the secondary holds its probe until call"
    );
    drop(svc);
    assert_eq!(d.snapshot().probes_in_flight, 0);
    assert!(d.try_acquire().is_ok());
}

#[tokio::test(start_paused = true)]
async fn cancelled_while_the_secondary_is_being_readied_releases_its_admission() {
    let (a, b) = (breaker("openai"), breaker("anthropic"));
    b.trip(Duration::from_secs(1));
    tokio::time::advance(Duration::from_secs(1)).await;
    let (_, primary) = upstream("openai", true);
    // The secondary's inner service is never ready: its breaker admits a probe, then waits.
    let (inner, mut handle) = tower_test::mock::pair::<String, String>();
    handle.allow(0);
    let secondary = BoxCloneService::new(tower::util::MapErrLayer::new(Into::<BoxError>::into).layer(inner));
    let mut svc = Fallback::new(guarded(&a, primary), guarded(&b, secondary)).on_failure(CloneRequest::new());
    let mut fut = Box::pin(svc.ready().await.unwrap().call("q".into()));
    assert!(futures::poll!(fut.as_mut()).is_pending());
    assert_eq!(b.snapshot().probes_in_flight, 1);
    drop(fut);
    assert_eq!(b.snapshot().probes_in_flight, 0);
    assert_eq!(a.snapshot().probes_in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn layer_builds_the_same_fallback() {
    let b = breaker("search");
    b.force_open();
    let (_, cache) = upstream("cache", false);
    let (calls, live) = upstream("live", false);
    let svc = ServiceBuilder::new()
        .layer(FallbackLayer::new(cache).names("search", "cache"))
        .layer(CircuitBreakerLayer::new(b.clone()))
        .service(live);
    assert_eq!(svc.oneshot("q".into()).await.unwrap(), "cache: q");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[test]
fn services_and_futures_are_send_with_boxed_members() {
    // BoxCloneService is Send but not Sync: the fallbacks must not need Sync members.
    fn send_service<S>(_: &S)
    where
        S: Service<String> + Send,
        S::Future: Send,
    {
    }
    let (_, p) = upstream("a", false);
    let (_, s) = upstream("b", false);
    send_service(&Fallback::new(p.clone(), s.clone()).on_fallback(|_| {}));
    send_service(&Fallback::new(p.clone(), s.clone()).on_failure(CloneRequest::new()));
    send_service(&tower_breaker::Failover::new([
        ("a", p.clone()),
        ("b", s.clone()),
    ]));
    send_service(&tower_breaker::Failover::new([("a", p), ("b", s)]).on_failure(CloneRequest::new()));
    fn error_types<E: Error + Send + Sync + 'static>() {}
    error_types::<AllUnavailable>();
    error_types::<FallbackError>();
    error_types::<Skipped>();
}

#[tokio::test(start_paused = true)]
async fn spill_over_waits_for_a_busy_primary_when_the_secondary_is_open() {
    let (primary, mut handle) = tower_test::mock::pair::<String, String>();
    handle.allow(0);
    let b = breaker("cache");
    b.force_open();
    let (calls, secondary) = upstream("cache", false);
    let mut svc = Fallback::new(primary, guarded(&b, secondary)).spill_over(true);
    assert!(
        poll_ready_now(&mut svc).await.is_pending(),
        "waits for the primary, no error"
    );
    handle.allow(1);
    let fut = svc.ready().await.unwrap().call("q".into());
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response("primary: q".to_owned());
    assert_eq!(fut.await.unwrap(), "primary: q");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

// ---------- both open: when_all_open ----------

type Transitions = Arc<Mutex<Vec<(State, State, Reason)>>>;
type HttpSvc = BoxCloneService<String, http::Response<&'static str>, BoxError>;
type HttpHandle = tower_test::mock::Handle<String, http::Response<&'static str>>;

/// A breaker that trips on its first failure, tripped now: open for `open`, a period of its
/// own choosing. With the log of its transitions.
fn tripped(name: &'static str, open: Duration) -> (CircuitBreaker, Transitions) {
    let log = Transitions::default();
    let l = log.clone();
    let b = CircuitBreaker::builder(name)
        .consecutive_failures(1)
        .open_duration(open)
        .on_event(move |e| {
            if let Event::Transition { from, to, reason, .. } = *e {
                l.lock().unwrap().push((from, to, reason));
            }
        })
        .build()
        .unwrap();
    b.try_acquire().unwrap().record(Outcome::Failure);
    log.lock().unwrap().clear();
    (b, log)
}

/// `breaker` over a service that answers `body` (or fails, when `fail`), counting its calls.
fn http_member(breaker: &CircuitBreaker, body: &'static str, fail: bool) -> (Arc<AtomicUsize>, HttpSvc) {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let inner = service_fn(move |_: String| {
        c.fetch_add(1, Ordering::SeqCst);
        async move {
            if fail {
                Err::<_, BoxError>(Box::new(Upstream(body)))
            } else {
                Ok(http::Response::new(body))
            }
        }
    });
    (
        calls,
        BoxCloneService::new(CircuitBreakerLayer::new(breaker.clone()).layer(inner)),
    )
}

/// `breaker` over a mock upstream whose answers the test sends (so a call can be held open).
fn http_mock(breaker: &CircuitBreaker) -> (HttpSvc, HttpHandle) {
    let (inner, handle) = tower_test::mock::pair::<String, http::Response<&'static str>>();
    let inner = tower::util::MapErrLayer::new(Into::<BoxError>::into).layer(inner);
    (
        BoxCloneService::new(CircuitBreakerLayer::new(breaker.clone()).layer(inner)),
        handle,
    )
}

fn members_of(p: &Provenance) -> Vec<(&str, State)> {
    p.skipped()
        .iter()
        .map(|s| (s.member(), s.circuit_open().unwrap().state()))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn both_open_refuse_is_the_default_and_gives_the_same_error() {
    let s = Duration::from_secs(1);
    let (a, _) = tripped("openai", 30 * s);
    let (b, _) = tripped("anthropic", 10 * s);
    let (calls_a, pa) = http_member(&a, "openai", false);
    let (calls_b, pb) = http_member(&b, "anthropic", false);

    let default = Fallback::new(pa.clone(), pb.clone()).names("openai", "anthropic");
    let refuse = Fallback::new(pa, pb)
        .names("openai", "anthropic")
        .when_all_open(AllOpen::Refuse);
    let mut errors = Vec::new();
    for mut svc in [default, refuse] {
        let err = match poll_ready_now(&mut svc).await {
            Poll::Ready(Err(e)) => e,
            other => panic!("expected an immediate error, got {other:?}"),
        };
        let all = err.downcast_ref::<AllUnavailable>().unwrap();
        assert_eq!(all.retry_after(), Some(10 * s));
        let names: Vec<_> = all.members().iter().map(Skipped::member).collect();
        assert_eq!(names, ["openai", "anthropic"]);
        assert!(is_circuit_open(&err));
        errors.push(err.to_string());
    }
    assert_eq!(errors[0], errors[1], "Refuse is the default");
    assert_eq!(
        (a.state(), b.state()),
        (State::Open, State::Open),
        "no period cut short"
    );
    assert_eq!(calls_a.load(Ordering::SeqCst) + calls_b.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn probe_soonest_sends_the_request_to_the_secondary_when_its_period_ends_first() {
    let s = Duration::from_secs(1);
    let (a, a_log) = tripped("openai", 30 * s);
    let (b, b_log) = tripped("anthropic", 10 * s);
    let (calls_a, pa) = http_member(&a, "openai", false);
    let (pb, mut handle) = http_mock(&b);
    let callbacks = Arc::new(Mutex::new(Vec::<String>::new()));
    let c = callbacks.clone();
    let mut svc = Fallback::new(pa, pb)
        .names("openai", "anthropic")
        .when_all_open(AllOpen::ProbeSoonest)
        .on_fallback(move |p| c.lock().unwrap().push(p.to_string()));

    // At once, not in 10 s: the request is the secondary's half-open probe.
    assert!(matches!(poll_ready_now(&mut svc).await, Poll::Ready(Ok(()))));
    let fut = svc.call("q".into());
    assert_eq!(b.state(), State::HalfOpen);
    assert_eq!(b.snapshot().reason, Some(Reason::EarlyProbe));
    assert_eq!(b.snapshot().probes_in_flight, 1);
    assert_eq!(a.state(), State::Open, "the primary's period is not touched");

    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req, "q");
    send.send_response(http::Response::new("anthropic"));
    let res = fut.await.unwrap();
    assert_eq!(*res.body(), "anthropic");
    let p = res.extensions().get::<Provenance>().unwrap();
    assert_eq!(p.served_by(), "anthropic");
    assert!(p.probed_early());
    assert_eq!(members_of(p), [("openai", State::Open)]);
    assert_eq!(
        callbacks.lock().unwrap().as_slice(),
        [
            r#"served by "anthropic", an early probe, every member being open (member "openai" skipped: circuit "openai" is open; retry in 30s)"#
        ]
    );

    // The probe's success closed the secondary.
    assert_eq!(b.state(), State::Closed);
    assert_eq!(
        *b_log.lock().unwrap(),
        [
            (State::Open, State::HalfOpen, Reason::EarlyProbe),
            (State::HalfOpen, State::Closed, Reason::ProbesSucceeded),
        ]
    );
    assert_eq!(a.state(), State::Open);
    assert!(a_log.lock().unwrap().is_empty());
    assert_eq!(calls_a.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn probe_soonest_sends_the_request_to_the_primary_when_its_period_ends_first() {
    let s = Duration::from_secs(1);
    let (a, a_log) = tripped("openai", 5 * s);
    let (b, _) = tripped("anthropic", 20 * s);
    let (pa, mut handle) = http_mock(&a);
    let (calls_b, pb) = http_member(&b, "anthropic", false);
    let svc = Fallback::new(pa, pb)
        .names("openai", "anthropic")
        .when_all_open(AllOpen::ProbeSoonest);

    let mut first = svc.clone();
    let fut = first.ready().await.unwrap().call("q".into());
    assert_eq!(a.state(), State::HalfOpen);
    assert_eq!(a.snapshot().reason, Some(Reason::EarlyProbe));

    // While its probe is in flight the primary admits nothing else: the next request, every
    // member still refusing, is the secondary's early probe (one probe per member).
    let res = svc.clone().oneshot("r".into()).await.unwrap();
    let p = res.extensions().get::<Provenance>().unwrap();
    assert_eq!((p.served_by(), p.probed_early()), ("anthropic", true));
    assert_eq!(members_of(p), [("openai", State::HalfOpen)]);
    assert_eq!(b.state(), State::Closed);

    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(http::Response::new("openai"));
    let res = fut.await.unwrap();
    let p = res.extensions().get::<Provenance>().unwrap();
    assert_eq!((p.served_by(), p.probed_early()), ("openai", true));
    assert_eq!(members_of(p), [("anthropic", State::Open)]);
    assert_eq!(a.state(), State::Closed, "the probe succeeded");
    assert_eq!(
        *a_log.lock().unwrap(),
        [
            (State::Open, State::HalfOpen, Reason::EarlyProbe),
            (State::HalfOpen, State::Closed, Reason::ProbesSucceeded),
        ]
    );
    assert_eq!(calls_b.load(Ordering::SeqCst), 1, "only the second request");
}

#[tokio::test(start_paused = true)]
async fn probe_soonest_a_failed_probe_reopens_and_the_error_names_both() {
    let s = Duration::from_secs(1);
    let (a, a_log) = tripped("openai", 5 * s);
    let (b, _) = tripped("anthropic", 20 * s);
    let (calls_a, pa) = http_member(&a, "openai", true);
    let (calls_b, pb) = http_member(&b, "anthropic", false);
    let svc = Fallback::new(pa, pb)
        .names("openai", "anthropic")
        .when_all_open(AllOpen::ProbeSoonest);

    let err = svc.clone().oneshot("q".into()).await.unwrap_err();
    let fe = err
        .downcast_ref::<FallbackError>()
        .expect("the probe was sent, and failed");
    assert_eq!(fe.member(), "openai");
    assert!(fe.error().is::<Upstream>());
    let skipped: Vec<_> = fe.skipped().iter().map(Skipped::member).collect();
    assert_eq!(skipped, ["anthropic"]);
    assert!(!is_circuit_open(&err), "the request was sent");
    assert_eq!(a.state(), State::Open, "the failed probe reopened the primary");
    assert_eq!(
        *a_log.lock().unwrap(),
        [
            (State::Open, State::HalfOpen, Reason::EarlyProbe),
            (State::HalfOpen, State::Open, Reason::ProbeFailed),
        ]
    );
    assert_eq!(
        (calls_a.load(Ordering::SeqCst), calls_b.load(Ordering::SeqCst)),
        (1, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn probe_soonest_never_probes_a_servers_wait_or_a_forced_open_member() {
    let s = Duration::from_secs(1);

    // A server's 3 s wait ends sooner, but the secondary open 30 s on its own is probed.
    let waited = breaker("waited");
    waited.trip(3 * s);
    let (own, _) = tripped("own", 30 * s);
    let (waited_calls, w) = http_member(&waited, "waited", false);
    let (_, o) = http_member(&own, "own", false);
    let res = Fallback::new(w, o)
        .names("waited", "own")
        .when_all_open(AllOpen::ProbeSoonest)
        .oneshot("q".into())
        .await
        .unwrap();
    let p = res.extensions().get::<Provenance>().unwrap();
    assert_eq!((p.served_by(), p.probed_early()), ("own", true));
    assert_eq!(waited.state(), State::Open);
    assert_eq!(waited_calls.load(Ordering::SeqCst), 0);

    // A member forced open (no deadline at all, the soonest by `retry_after`) is never one.
    let forced = breaker("forced");
    forced.force_open();
    let (own, _) = tripped("own", 30 * s);
    let (forced_calls, f) = http_member(&forced, "forced", false);
    let (_, o) = http_member(&own, "own", false);
    let res = Fallback::new(f, o)
        .names("forced", "own")
        .when_all_open(AllOpen::ProbeSoonest)
        .oneshot("q".into())
        .await
        .unwrap();
    assert_eq!(res.extensions().get::<Provenance>().unwrap().served_by(), "own");
    assert_eq!(forced.state(), State::ForcedOpen);

    // Only a forced member and a server's wait: refused, as without the option.
    let (_, f) = http_member(&forced, "forced", false);
    let (_, w) = http_member(&waited, "waited", false);
    let mut svc = Fallback::new(f, w)
        .names("forced", "waited")
        .when_all_open(AllOpen::ProbeSoonest);
    let err = match poll_ready_now(&mut svc).await {
        Poll::Ready(Err(e)) => e,
        other => panic!("expected an immediate error, got {other:?}"),
    };
    assert_eq!(
        err.downcast_ref::<AllUnavailable>().unwrap().retry_after(),
        Some(3 * s)
    );
    assert_eq!((forced.state(), waited.state()), (State::ForcedOpen, State::Open));
    assert_eq!(waited.snapshot().reason, Some(Reason::ServerWait));
    assert_eq!(
        forced_calls.load(Ordering::SeqCst) + waited_calls.load(Ordering::SeqCst),
        0
    );
}

#[tokio::test(start_paused = true)]
async fn probe_soonest_with_one_member_open_routes_as_before() {
    let s = Duration::from_secs(1);

    // The primary open: the secondary serves as usual; the primary's period is not cut short.
    let (a, a_log) = tripped("openai", 30 * s);
    let b = breaker("anthropic");
    let (calls_a, pa) = http_member(&a, "openai", false);
    let (_, pb) = http_member(&b, "anthropic", false);
    let res = Fallback::new(pa, pb)
        .names("openai", "anthropic")
        .when_all_open(AllOpen::ProbeSoonest)
        .oneshot("q".into())
        .await
        .unwrap();
    let p = res.extensions().get::<Provenance>().unwrap();
    assert_eq!((p.served_by(), p.probed_early()), ("anthropic", false));
    assert_eq!(members_of(p), [("openai", State::Open)]);
    assert_eq!(a.state(), State::Open);
    assert!(a_log.lock().unwrap().is_empty());
    assert_eq!(calls_a.load(Ordering::SeqCst), 0);

    // The secondary open: the primary serves, and the secondary is not even polled.
    let a = breaker("openai");
    let (b, b_log) = tripped("anthropic", 30 * s);
    let (_, pa) = http_member(&a, "openai", false);
    let (calls_b, pb) = http_member(&b, "anthropic", false);
    let res = Fallback::new(pa, pb)
        .names("openai", "anthropic")
        .when_all_open(AllOpen::ProbeSoonest)
        .oneshot("q".into())
        .await
        .unwrap();
    let p = res.extensions().get::<Provenance>().unwrap();
    assert_eq!(
        (p.served_by(), p.probed_early(), p.fell_back()),
        ("openai", false, false)
    );
    assert_eq!(b.state(), State::Open);
    assert!(b_log.lock().unwrap().is_empty());
    assert_eq!(calls_b.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn probe_soonest_on_failure_a_failed_early_primary_moves_on_to_a_secondary_back_since() {
    let s = Duration::from_secs(1);
    let (a, _) = tripped("openai", 5 * s);
    let (b, _) = tripped("anthropic", 10 * s);
    let (pa, mut handle) = http_mock(&a);
    let (calls_b, pb) = http_member(&b, "anthropic", false);
    let svc = Fallback::new(pa, pb)
        .names("openai", "anthropic")
        .when_all_open(AllOpen::ProbeSoonest)
        .on_failure(CloneRequest::new());

    // The primary's probe hangs past the secondary's open period, then fails: the copy goes
    // to the secondary, now half-open, which serves. Its stale refusal is not in the record.
    let fut = tokio::spawn(svc.clone().oneshot("q".into()));
    let (_, send) = handle.next_request().await.unwrap();
    tokio::time::advance(10 * s).await;
    send.send_error(Upstream("openai"));
    let res = fut.await.unwrap().unwrap();
    let p = res.extensions().get::<Provenance>().unwrap();
    assert_eq!((p.served_by(), p.probed_early()), ("anthropic", false));
    let skipped: Vec<_> = p.skipped().iter().map(|s| (s.member(), s.reason())).collect();
    assert!(
        matches!(skipped.as_slice(), [("openai", SkipReason::Failed(_))]),
        "{skipped:?}"
    );
    assert_eq!((a.state(), b.state()), (State::Open, State::Closed));
    assert_eq!(calls_b.load(Ordering::SeqCst), 1);

    // The secondary still open when the probe fails: the primary's error stands, and the
    // secondary is listed once, with its refusal of now.
    let (a, _) = tripped("openai", 5 * s);
    let (b, _) = tripped("anthropic", 10 * s);
    let (pa, mut handle) = http_mock(&a);
    let (_, pb) = http_member(&b, "anthropic", false);
    let svc = Fallback::new(pa, pb)
        .names("openai", "anthropic")
        .when_all_open(AllOpen::ProbeSoonest)
        .on_failure(CloneRequest::new());
    let fut = tokio::spawn(svc.oneshot("q".into()));
    let (_, send) = handle.next_request().await.unwrap();
    tokio::time::advance(2 * s).await;
    send.send_error(Upstream("openai"));
    let err = fut.await.unwrap().unwrap_err();
    let fe = err.downcast_ref::<FallbackError>().unwrap();
    assert_eq!(fe.member(), "openai");
    let skipped: Vec<_> = fe
        .skipped()
        .iter()
        .map(|s| (s.member(), s.circuit_open().unwrap().retry_after()))
        .collect();
    assert_eq!(skipped, [("anthropic", Some(8 * s))]);
}

#[tokio::test(start_paused = true)]
async fn probe_soonest_reaches_into_a_nested_fallback() {
    let s = Duration::from_secs(1);
    let (a, _) = tripped("openai", 20 * s);
    let (b, _) = tripped("anthropic", 5 * s);
    let (c, _) = tripped("cache", 10 * s);
    let (_, pa) = http_member(&a, "openai", false);
    let (_, pb) = http_member(&b, "anthropic", false);
    let (_, pc) = http_member(&c, "cache", false);
    // The inner fallback refuses (the default); the outer one probes b, its soonest member.
    let inner = Fallback::new(pb, pc).names("anthropic", "cache");
    let res = Fallback::new(pa, inner)
        .names("openai", "fallbacks")
        .when_all_open(AllOpen::ProbeSoonest)
        .oneshot("q".into())
        .await
        .unwrap();
    let p = res.extensions().get::<Provenance>().unwrap();
    assert_eq!((p.served_by(), p.probed_early()), ("anthropic", true));
    assert_eq!(members_of(p), [("openai", State::Open)]);
    assert_eq!(
        (a.state(), b.state(), c.state()),
        (State::Open, State::Closed, State::Open)
    );
}

#[tokio::test(start_paused = true)]
async fn probe_soonest_a_busy_probed_member_keeps_its_admission_until_call() {
    let s = Duration::from_secs(1);
    let (a, _) = tripped("openai", 30 * s);
    let (b, _) = tripped("anthropic", 10 * s);
    let (_, pa) = http_member(&a, "openai", false);
    let (pb, mut handle) = http_mock(&b);
    handle.allow(0); // the secondary's upstream is busy
    let mut svc = Fallback::new(pa, pb)
        .names("openai", "anthropic")
        .when_all_open(AllOpen::ProbeSoonest);

    // Its breaker admitted the probe; the fallback waits for the upstream, polled again.
    assert!(poll_ready_now(&mut svc).await.is_pending());
    assert!(poll_ready_now(&mut svc).await.is_pending());
    assert_eq!(b.state(), State::HalfOpen);
    assert_eq!(b.snapshot().probes_in_flight, 1, "one admission, kept");
    assert_eq!(a.state(), State::Open);

    handle.allow(1);
    let fut = svc.ready().await.unwrap().call("q".into());
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(http::Response::new("anthropic"));
    let res = fut.await.unwrap();
    assert!(res.extensions().get::<Provenance>().unwrap().probed_early());
    assert_eq!(b.state(), State::Closed);

    // Readied and dropped uncalled: the probe's admission is released.
    let (b, _) = tripped("anthropic", 10 * s);
    let (_, pa) = http_member(&a, "openai", false);
    let (pb, mut handle) = http_mock(&b);
    handle.allow(0);
    let mut svc = Fallback::new(pa, pb).when_all_open(AllOpen::ProbeSoonest);
    assert!(poll_ready_now(&mut svc).await.is_pending());
    assert_eq!(b.snapshot().probes_in_flight, 1);
    drop(svc);
    assert_eq!(b.snapshot().probes_in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn layer_sets_when_all_open() {
    let s = Duration::from_secs(1);
    let (a, _) = tripped("search", 30 * s);
    let (b, _) = tripped("cache", 10 * s);
    let (_, cache) = http_member(&b, "cache", false);
    let (calls, live) = http_member(&a, "live", false);
    let layer = FallbackLayer::new(cache).names("search", "cache");
    let res = layer
        .clone()
        .when_all_open(AllOpen::ProbeSoonest)
        .layer(live.clone())
        .oneshot("q".into())
        .await
        .unwrap();
    let p = res.extensions().get::<Provenance>().unwrap();
    assert_eq!((p.served_by(), p.probed_early()), ("cache", true));
    assert_eq!(calls.load(Ordering::SeqCst), 0);

    // Without it (the default), the same two open members refuse.
    let (_, cache) = http_member(&tripped("cache", 10 * s).0, "cache", false);
    let err = FallbackLayer::new(cache)
        .layer(live)
        .oneshot("q".into())
        .await
        .unwrap_err();
    assert!(err.is::<AllUnavailable>(), "{err}");
}

mod http_stack {
    //! A real hyper server per provider and a real hyper-util client (real time: the waits
    //! here are network round trips on 127.0.0.1, never the thing under test).

    use std::{convert::Infallible, net::SocketAddr};

    use http::{Request, Response, Uri};
    use http_body_util::Full;
    use hyper::body::{Bytes, Incoming};
    use hyper_util::{
        client::legacy::{Client, connect::HttpConnector},
        rt::{TokioExecutor, TokioIo},
    };

    use super::*;

    async fn serve(status: u16, body: &'static str) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let h = h.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
                        h.fetch_add(1, Ordering::SeqCst);
                        async move {
                            Ok::<_, Infallible>(
                                Response::builder()
                                    .status(status)
                                    .body(Full::new(Bytes::from(body)))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        (addr, hits)
    }

    type Body = Full<Bytes>;
    type HttpMember = BoxCloneService<Request<Body>, Response<Incoming>, BoxError>;

    fn member(
        name: &'static str,
        addr: SocketAddr,
        client: &Client<HttpConnector, Body>,
    ) -> (CircuitBreaker, HttpMember) {
        let breaker = CircuitBreaker::builder(name)
            .consecutive_failures(2)
            .build()
            .unwrap();
        let classify = |r: Result<&Response<Incoming>, &hyper_util::client::legacy::Error>| match r {
            Ok(res) if res.status().is_server_error() => Outcome::Failure,
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        };
        let svc = ServiceBuilder::new()
            .layer(CircuitBreakerLayer::new(breaker.clone()).classify(classify))
            .map_request(move |mut req: Request<Body>| {
                let path = req.uri().path().to_owned();
                *req.uri_mut() = Uri::try_from(format!("http://{addr}{path}")).unwrap();
                req
            })
            .service(client.clone());
        (breaker, BoxCloneService::new(svc))
    }

    /// Requests are not `Clone`; this copies method, URI, headers and the (buffered) body.
    fn copy(req: &Request<Body>) -> Option<Request<Body>> {
        let mut copy = Request::builder()
            .method(req.method())
            .uri(req.uri())
            .body(req.body().clone())
            .ok()?;
        *copy.headers_mut() = req.headers().clone();
        Some(copy)
    }

    #[tokio::test]
    #[cfg_attr(miri, ignore = "real sockets: Miri has no setsockopt")]
    async fn real_http_failover_records_provenance_in_response_extensions() {
        let (down_addr, down_hits) = serve(503, "overloaded").await;
        let (up_addr, up_hits) = serve(200, "hello from anthropic").await;
        let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
        let (openai, a) = member("openai", down_addr, &client);
        let (_, b) = member("anthropic", up_addr, &client);
        let is_5xx = |r: Result<&Response<Incoming>, &BoxError>| match r {
            Ok(res) if res.status().is_server_error() => Outcome::Failure,
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        };
        let mut svc = Fallback::new(a, b)
            .names("openai", "anthropic")
            .on_failure(CloneWith::new(copy).classify(is_5xx));

        for round in 1..=3 {
            let req = Request::post("/v1/chat")
                .body(Full::new(Bytes::from_static(b"{}")))
                .unwrap();
            let res = svc.ready().await.unwrap().call(req).await.unwrap();
            assert_eq!(res.status(), 200, "round {round}");
            let provenance = res.extensions().get::<Provenance>().unwrap().clone();
            assert_eq!(provenance.served_by(), "anthropic");
            let reason = provenance.skipped()[0].reason();
            if round <= 2 {
                assert!(
                    matches!(reason, SkipReason::FailureResponse),
                    "round {round}: {reason:?}"
                );
            } else {
                assert!(
                    matches!(reason, SkipReason::CircuitOpen(_)),
                    "round {round}: {reason:?}"
                );
            }
            let body = http_body_util::BodyExt::collect(res.into_body())
                .await
                .unwrap()
                .to_bytes();
            assert_eq!(body, "hello from anthropic");
        }
        assert_eq!(openai.state(), State::Open);
        assert_eq!(
            down_hits.load(Ordering::SeqCst),
            2,
            "the open primary got no third request"
        );
        assert_eq!(up_hits.load(Ordering::SeqCst), 3);
    }
}
