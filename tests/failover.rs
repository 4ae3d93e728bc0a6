//! `Failover` chains and nested `Fallback`s: every open/closed combination, `AllUnavailable`,
//! `on_failure` across members, `max_attempts`, cancellation, and composition with tower's
//! `Retry` and `Timeout` inside each member.

use std::{
    error::Error,
    future::poll_fn,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::Poll,
    time::Duration,
};

use tower::{
    Service, ServiceBuilder, ServiceExt, retry::Policy as RetryPolicy, service_fn, timeout::TimeoutLayer,
    util::BoxCloneService,
};
use tower_breaker::{
    AllUnavailable, BoxError, CircuitBreaker, CircuitBreakerLayer, CircuitOpen, Failover, Fallback, Layer,
    Outcome, Readiness, State,
    fallback::{AllOpen, CloneRequest, FallbackError, Policy, Provenance, Route, SkipReason, Skipped},
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

const NAMES: [&str; 3] = ["openai", "anthropic", "mistral"];

/// Three guarded members; bit `i` of `open` opens member `i`.
fn three(open: u8) -> (Vec<CircuitBreaker>, Vec<Arc<AtomicUsize>>, Vec<Svc>) {
    let mut breakers = Vec::new();
    let mut calls = Vec::new();
    let mut svcs = Vec::new();
    for (i, name) in NAMES.into_iter().enumerate() {
        let b = breaker(name);
        if open & (1 << i) != 0 {
            b.trip(Duration::from_secs(10 * (i as u64 + 1)));
        }
        let (c, s) = upstream(name, false);
        svcs.push(guarded(&b, s));
        breakers.push(b);
        calls.push(c);
    }
    (breakers, calls, svcs)
}

fn check_combination(open: u8, result: Result<String, BoxError>, calls: &[Arc<AtomicUsize>], what: &str) {
    let first_closed = (0..3).find(|i| open & (1 << i) == 0);
    let counts: Vec<usize> = calls.iter().map(|c| c.load(Ordering::SeqCst)).collect();
    match first_closed {
        Some(i) => {
            assert_eq!(
                result.unwrap(),
                format!("{}: q", NAMES[i]),
                "{what} open={open:03b}"
            );
            let mut expected = vec![0; 3];
            expected[i] = 1;
            assert_eq!(
                counts, expected,
                "{what} open={open:03b}: only the first closed member is called"
            );
        }
        None => {
            let err = result.unwrap_err();
            let all = err
                .downcast_ref::<AllUnavailable>()
                .unwrap_or_else(|| panic!("{what}: {err}"));
            let names: Vec<_> = all.members().iter().map(Skipped::member).collect();
            assert_eq!(names, NAMES, "{what}");
            assert_eq!(all.retry_after(), Some(Duration::from_secs(10)), "{what}");
            assert!(is_circuit_open(&err), "{what}");
            assert_eq!(counts, [0, 0, 0], "{what}: nobody is called");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn chains_of_three_in_every_open_closed_combination() {
    for open in 0..8u8 {
        // A flat Failover.
        let (_, calls, svcs) = three(open);
        let chain = Failover::new(NAMES.into_iter().zip(svcs));
        let result = chain.oneshot("q".to_owned()).await;
        check_combination(open, result, &calls, "failover");

        // Nested Fallbacks: a -> (b -> c).
        let (_, calls, mut svcs) = three(open);
        let c = svcs.pop().unwrap();
        let b = svcs.pop().unwrap();
        let a = svcs.pop().unwrap();
        let chain = Fallback::new(a, Fallback::new(b, c).names(NAMES[1], NAMES[2])).names(NAMES[0], "rest");
        let result = chain.oneshot("q".to_owned()).await;
        check_combination(open, result, &calls, "nested right");

        // Nested Fallbacks: (a -> b) -> c.
        let (_, calls, mut svcs) = three(open);
        let c = svcs.pop().unwrap();
        let b = svcs.pop().unwrap();
        let a = svcs.pop().unwrap();
        let chain = Fallback::new(Fallback::new(a, b).names(NAMES[0], NAMES[1]), c).names("first", NAMES[2]);
        let result = chain.oneshot("q".to_owned()).await;
        check_combination(open, result, &calls, "nested left");
    }
}

#[tokio::test(start_paused = true)]
async fn all_unavailable_carries_the_smallest_retry_after_and_every_reason() {
    let (a, b, c) = (breaker("openai"), breaker("anthropic"), breaker("mistral"));
    a.trip(Duration::from_secs(30));
    b.force_open(); // no known wait
    c.trip(Duration::from_secs(4));
    let mut chain = Failover::new([
        ("openai", guarded(&a, upstream("openai", false).1)),
        ("anthropic", guarded(&b, upstream("anthropic", false).1)),
        ("mistral", guarded(&c, upstream("mistral", false).1)),
    ]);
    let err = match poll_ready_now(&mut chain).await {
        Poll::Ready(Err(e)) => e,
        other => panic!("expected to fail fast, got {other:?}"),
    };
    let all = err.downcast_ref::<AllUnavailable>().unwrap();
    assert_eq!(all.retry_after(), Some(Duration::from_secs(4)));
    let reasons: Vec<_> = all
        .members()
        .iter()
        .map(|m| {
            let open = m.circuit_open().unwrap();
            (m.member(), open.state(), open.retry_after())
        })
        .collect();
    assert_eq!(
        reasons,
        [
            ("openai", State::Open, Some(Duration::from_secs(30))),
            ("anthropic", State::ForcedOpen, None),
            ("mistral", State::Open, Some(Duration::from_secs(4))),
        ]
    );
    assert_eq!(
        err.to_string(),
        r#"every member is unavailable ("openai", "anthropic", "mistral"); retry in 4s"#
    );
    // `is_circuit_open` and `CircuitOpen::find` see the member that recovers first.
    assert!(is_circuit_open(&err));
    assert_eq!(CircuitOpen::find(&*err).unwrap().name(), "mistral");

    tokio::time::advance(Duration::from_secs(4)).await;
    assert_eq!(
        chain.ready().await.unwrap().call("q".into()).await.unwrap(),
        "mistral: q"
    );
}

#[tokio::test(start_paused = true)]
async fn all_unavailable_flattens_nested_chains() {
    let (a, b, c) = (breaker("a"), breaker("b"), breaker("c"));
    a.trip(Duration::from_secs(3));
    b.trip(Duration::from_secs(2));
    c.trip(Duration::from_secs(9));
    let inner = Failover::new([
        ("a", guarded(&a, upstream("a", false).1)),
        ("b", guarded(&b, upstream("b", false).1)),
    ]);
    let err = Fallback::new(inner, guarded(&c, upstream("c", false).1))
        .names("providers", "c")
        .oneshot("q".into())
        .await
        .unwrap_err();
    let all = err.downcast_ref::<AllUnavailable>().unwrap();
    let names: Vec<_> = all.members().iter().map(Skipped::member).collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert_eq!(all.retry_after(), Some(Duration::from_secs(2)));
}

#[tokio::test(start_paused = true)]
async fn half_open_probe_capacity_exhausted_routes_to_the_next_member() {
    let a = breaker("openai");
    a.trip(Duration::from_secs(1));
    tokio::time::advance(Duration::from_secs(1)).await;
    let hung = BoxCloneService::new(service_fn(|_: String| {
        std::future::pending::<Result<String, BoxError>>()
    }));
    let (calls_b, b) = upstream("anthropic", false);
    let mut chain = Failover::new([("openai", guarded(&a, hung)), ("anthropic", b)]);
    let mut other = chain.clone();

    let probe = chain.ready().await.unwrap().call("probe".into());
    assert_eq!(a.snapshot().probes_in_flight, 1);
    let res = other.ready().await.unwrap().call("q".into()).await.unwrap();
    assert_eq!(res, "anthropic: q");
    assert_eq!(calls_b.load(Ordering::SeqCst), 1);
    drop(probe);
    assert_eq!(a.snapshot().probes_in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn on_failure_walks_the_chain_skipping_open_members() {
    let (a, b) = (breaker("openai"), breaker("anthropic"));
    b.force_open();
    let (calls_a, sa) = upstream("openai", true);
    let (calls_b, sb) = upstream("anthropic", false);
    let (calls_c, sc) = upstream("mistral", false);
    let chain = Failover::new([
        ("openai", guarded(&a, sa)),
        ("anthropic", guarded(&b, sb)),
        ("mistral", sc),
    ])
    .on_failure(CloneRequest::new());
    let res = chain.oneshot("q".into()).await.unwrap();
    assert_eq!(res, "mistral: q");
    let counts: Vec<_> = [calls_a, calls_b, calls_c]
        .iter()
        .map(|c| c.load(Ordering::SeqCst))
        .collect();
    assert_eq!(counts, [1, 0, 1]);
}

#[tokio::test(start_paused = true)]
async fn max_attempts_bounds_the_calls_and_the_last_error_names_the_others() {
    let (calls_a, sa) = upstream("openai", true);
    let (calls_b, sb) = upstream("anthropic", true);
    let (calls_c, sc) = upstream("mistral", false);
    let chain = Failover::new([("openai", sa), ("anthropic", sb), ("mistral", sc)])
        .max_attempts(2)
        .unwrap()
        .on_failure(CloneRequest::new());
    let err = chain.oneshot("q".into()).await.unwrap_err();
    let failed = err.downcast_ref::<FallbackError>().unwrap();
    assert_eq!(failed.member(), "anthropic");
    assert!(failed.error().is::<Upstream>());
    assert_eq!(failed.skipped().len(), 1);
    assert_eq!(failed.skipped()[0].member(), "openai");
    assert!(matches!(failed.skipped()[0].reason(), SkipReason::Failed(_)));
    let source = err.source().unwrap().downcast_ref::<Skipped>().unwrap();
    assert_eq!(source.member(), "openai");
    assert!(
        source.source().unwrap().is::<Upstream>(),
        "the primary's own error is next in the chain"
    );
    let counts: Vec<_> = [calls_a, calls_b, calls_c]
        .iter()
        .map(|c| c.load(Ordering::SeqCst))
        .collect();
    assert_eq!(counts, [1, 1, 0]);

    assert!(
        Failover::new([("a", upstream("a", false).1)])
            .max_attempts(0)
            .is_err()
    );
}

#[tokio::test(start_paused = true)]
async fn a_failure_answer_stands_when_no_other_member_can_take_the_request() {
    let answer = |status: u16| {
        BoxCloneService::new(service_fn(move |_: String| async move {
            Ok::<_, BoxError>(http::Response::builder().status(status).body(()).unwrap())
        }))
    };
    let b = breaker("anthropic");
    b.force_open();
    let classify = |r: Result<&http::Response<()>, &BoxError>| match r {
        Ok(res) if res.status().is_server_error() => Outcome::Failure,
        Ok(_) => Outcome::Success,
        Err(_) => Outcome::Failure,
    };
    let chain = Failover::new([
        ("openai", answer(503)),
        (
            "anthropic",
            BoxCloneService::new(CircuitBreakerLayer::new(b.clone()).layer(answer(200))),
        ),
    ])
    .on_failure(CloneRequest::new().classify(classify));
    let res = chain.oneshot("q".into()).await.unwrap();
    assert_eq!(res.status(), 503, "the primary's own answer, not an error");
    let p = res.extensions().get::<Provenance>().unwrap();
    assert_eq!(p.served_by(), "openai");
    assert_eq!(p.skipped()[0].member(), "anthropic");
    assert!(p.skipped()[0].circuit_open().is_some());
}

/// Issue 14 point 5: later members in `RejectOnCall` mode with open circuits say ready and
/// refuse the call; the answer of the member that was called stands, never `AllUnavailable`.
#[tokio::test(start_paused = true)]
async fn a_failure_answer_stands_when_the_next_members_reject_on_call() {
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
    let (b, c) = (breaker("anthropic"), breaker("mistral"));
    b.trip(Duration::from_secs(20));
    c.force_open();

    let chain = Failover::new([
        ("openai", answer(500)),
        ("anthropic", rejecting(&b, answer(200))),
        ("mistral", rejecting(&c, answer(200))),
    ])
    .on_failure(CloneRequest::new().classify(is_5xx));
    let res = chain
        .oneshot("q".into())
        .await
        .expect("the 500 stands, not AllUnavailable");
    assert_eq!(res.status(), 500);
    let p = res.extensions().get::<Provenance>().unwrap();
    assert_eq!(p.served_by(), "openai");
    let skipped: Vec<_> = p
        .skipped()
        .iter()
        .map(|s| (s.member(), s.circuit_open().is_some()))
        .collect();
    assert_eq!(skipped, [("anthropic", true), ("mistral", true)]);

    // The last member rejecting on call (no copy is made for it): same.
    let chain = Failover::new([("openai", answer(503)), ("anthropic", rejecting(&b, answer(200)))])
        .on_failure(CloneRequest::new().classify(is_5xx));
    assert_eq!(chain.oneshot("q".into()).await.unwrap().status(), 503);

    // A failed call (an error) stands too, as a `FallbackError`, not an open circuit.
    let (calls_a, sa) = upstream("openai", true);
    let (calls_b, sb) = upstream("anthropic", false);
    let (calls_c, sc) = upstream("mistral", false);
    let chain = Failover::new([
        ("openai", sa),
        ("anthropic", rejecting(&b, sb)),
        ("mistral", rejecting(&c, sc)),
    ])
    .on_failure(CloneRequest::new());
    let err = chain.oneshot("q".into()).await.unwrap_err();
    assert!(
        !err.is::<AllUnavailable>(),
        "a member was called and answered: {err}"
    );
    let failed = err
        .downcast_ref::<FallbackError>()
        .unwrap_or_else(|| panic!("{err}"));
    assert_eq!(failed.member(), "openai");
    assert!(failed.error().is::<Upstream>());
    let skipped: Vec<_> = failed.skipped().iter().map(Skipped::member).collect();
    assert_eq!(skipped, ["anthropic", "mistral"]);
    assert!(!is_circuit_open(&err), "{err}");
    assert!(CircuitOpen::find(&*err).is_none());
    let counts: Vec<_> = [calls_a, calls_b, calls_c]
        .iter()
        .map(|c| c.load(Ordering::SeqCst))
        .collect();
    assert_eq!(counts, [1, 0, 0]);

    // An answer after a refusal: the refusal is recorded, the next member serves.
    let (_, sa) = upstream("openai", true);
    let (_, sc) = upstream("mistral", false);
    let chain = Failover::new([
        ("openai", sa),
        ("anthropic", rejecting(&b, upstream("anthropic", false).1)),
        ("mistral", sc),
    ])
    .on_failure(CloneRequest::new());
    assert_eq!(chain.oneshot("q".into()).await.unwrap(), "mistral: q");
}

#[tokio::test(start_paused = true)]
async fn provenance_and_callback_name_the_member_and_the_skipped() {
    let a = breaker("openai");
    a.trip(Duration::from_secs(3));
    let http = |name: &'static str| {
        BoxCloneService::new(service_fn(move |_: String| async move {
            Ok::<_, BoxError>(http::Response::new(name))
        }))
    };
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    let chain = Failover::new([
        (
            "openai",
            BoxCloneService::new(CircuitBreakerLayer::new(a.clone()).layer(http("openai"))),
        ),
        ("cache", http("cache")),
    ])
    .on_fallback(move |p: &Provenance| {
        s.lock()
            .unwrap()
            .push((p.served_by().to_owned(), p.skipped().len()))
    });
    let res = chain.oneshot("q".into()).await.unwrap();
    assert_eq!(*res.body(), "cache");
    let p = res.extensions().get::<Provenance>().unwrap();
    assert_eq!(p.served_by(), "cache");
    assert_eq!(p.skipped()[0].member(), "openai");
    assert_eq!(
        p.skipped()[0].circuit_open().unwrap().retry_after(),
        Some(Duration::from_secs(3))
    );
    assert_eq!(*seen.lock().unwrap(), [("cache".to_owned(), 1)]);
}

#[tokio::test(start_paused = true)]
async fn cancelled_failover_call_releases_every_permit() {
    let (a, b, c) = (breaker("a"), breaker("b"), breaker("c"));
    for br in [&a, &b, &c] {
        br.trip(Duration::from_secs(1));
    }
    tokio::time::advance(Duration::from_secs(1)).await;
    let hung = BoxCloneService::new(service_fn(|_: String| {
        std::future::pending::<Result<String, BoxError>>()
    }));
    let mut chain = Failover::new([
        ("a", guarded(&a, upstream("a", true).1)),
        ("b", guarded(&b, upstream("b", true).1)),
        ("c", guarded(&c, hung)),
    ])
    .on_failure(CloneRequest::new());
    let mut fut = Box::pin(chain.ready().await.unwrap().call("q".into()));
    assert!(futures::poll!(fut.as_mut()).is_pending());
    // a and b failed their probes (reopened); c's probe is in flight inside the future.
    assert_eq!((a.state(), b.state()), (State::Open, State::Open));
    assert_eq!(c.snapshot().probes_in_flight, 1);
    drop(fut);
    for br in [&a, &b, &c] {
        assert_eq!(br.snapshot().probes_in_flight, 0, "{}", br.name());
    }
    assert!(c.try_acquire().is_ok(), "c admits a new probe");
}

/// Retries errors a few times, but never an open circuit.
#[derive(Clone)]
struct RetryErrors(usize);

impl RetryPolicy<String, String, BoxError> for RetryErrors {
    type Future = std::future::Ready<()>;
    fn retry(&mut self, _: &mut String, result: &mut Result<String, BoxError>) -> Option<Self::Future> {
        match result {
            Err(e) if self.0 > 0 && !is_circuit_open(e) => {
                self.0 -= 1;
                Some(std::future::ready(()))
            }
            _ => None,
        }
    }
    fn clone_request(&mut self, req: &String) -> Option<String> {
        Some(req.clone())
    }
}

/// A member as users stack it: `Retry` over the breaker over a per-attempt `Timeout`.
fn stacked(breaker: &CircuitBreaker, inner: Svc) -> Svc {
    BoxCloneService::new(
        ServiceBuilder::new()
            .retry(RetryErrors(2))
            .layer(CircuitBreakerLayer::new(breaker.clone()))
            .layer(TimeoutLayer::new(Duration::from_secs(5)))
            .service(inner),
    )
}

#[tokio::test(start_paused = true)]
async fn composes_with_retry_and_timeout_inside_each_member() {
    let a = CircuitBreaker::builder("openai")
        .consecutive_failures(3)
        .build()
        .unwrap();
    let b = breaker("anthropic");
    let calls_a = Arc::new(AtomicUsize::new(0));
    let c = calls_a.clone();
    // The primary hangs: each attempt ends in the member's own timeout.
    let slow = BoxCloneService::new(service_fn(move |_: String| {
        c.fetch_add(1, Ordering::SeqCst);
        std::future::pending::<Result<String, BoxError>>()
    }));
    let (calls_b, fast) = upstream("anthropic", false);
    let mut chain = Failover::new([("openai", stacked(&a, slow)), ("anthropic", stacked(&b, fast))])
        .on_failure(CloneRequest::new());

    // First request: three timed-out attempts inside the primary (the third trips its
    // breaker), then the secondary answers.
    let start = tokio::time::Instant::now();
    let res = chain.ready().await.unwrap().call("q1".into()).await.unwrap();
    assert_eq!(res, "anthropic: q1");
    assert_eq!(start.elapsed(), Duration::from_secs(15));
    assert_eq!(calls_a.load(Ordering::SeqCst), 3);
    assert_eq!(a.state(), State::Open);

    // Next requests skip the open primary at once: no timeout, no retry.
    let start = tokio::time::Instant::now();
    let res = chain.ready().await.unwrap().call("q2".into()).await.unwrap();
    assert_eq!(res, "anthropic: q2");
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(calls_a.load(Ordering::SeqCst), 3);
    assert_eq!(calls_b.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn spill_over_passes_busy_members() {
    let (busy, mut handle) = tower_test::mock::pair::<String, String>();
    handle.allow(0);
    let busy = BoxCloneService::new(tower::util::MapErrLayer::new(Into::<BoxError>::into).layer(busy));
    let (_, ok) = upstream("cache", false);
    let mut waiting = Failover::new([("busy", busy.clone()), ("cache", ok.clone())]);
    assert!(poll_ready_now(&mut waiting).await.is_pending());

    let mut spilling = Failover::new([("busy", busy), ("cache", ok)]).spill_over(true);
    assert!(matches!(poll_ready_now(&mut spilling).await, Poll::Ready(Ok(()))));
    assert_eq!(spilling.call("q".into()).await.unwrap(), "cache: q");
}

#[tokio::test(start_paused = true)]
async fn empty_failover_is_all_unavailable() {
    let chain: Failover<Svc> = Failover::new(Vec::<(&str, Svc)>::new());
    let err = chain.oneshot("q".into()).await.unwrap_err();
    let all = err.downcast_ref::<AllUnavailable>().unwrap();
    assert!(all.members().is_empty());
    assert_eq!(all.retry_after(), None);
}

#[tokio::test(start_paused = true)]
async fn repeated_poll_ready_keeps_one_admission_until_call() {
    let a = CircuitBreaker::builder("openai")
        .consecutive_failures(1)
        .half_open_permits(1)
        .build()
        .unwrap();
    a.trip(Duration::from_secs(1));
    tokio::time::advance(Duration::from_secs(1)).await;
    let (calls_a, sa) = upstream("openai", false);
    let (calls_b, sb) = upstream("anthropic", false);
    let mut chain = Failover::new([("openai", guarded(&a, sa)), ("anthropic", sb)]);
    for _ in 0..3 {
        assert!(matches!(poll_ready_now(&mut chain).await, Poll::Ready(Ok(()))));
    }
    assert_eq!(
        a.snapshot().probes_in_flight,
        1,
        "one probe, kept across poll_ready calls"
    );
    assert_eq!(chain.call("q".into()).await.unwrap(), "openai: q");
    assert_eq!(
        (calls_a.load(Ordering::SeqCst), calls_b.load(Ordering::SeqCst)),
        (1, 0)
    );
    assert_eq!(a.state(), State::Closed);
}

// ---------- routes: a policy that says where the request goes ----------

type HttpSvc = BoxCloneService<String, http::Response<&'static str>, BoxError>;

/// A member answering `body`, counting its calls, behind `breaker`.
fn answering(breaker: &CircuitBreaker, body: &'static str) -> (Arc<AtomicUsize>, HttpSvc) {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let svc = service_fn(move |_: String| {
        c.fetch_add(1, Ordering::SeqCst);
        async move { Ok::<_, BoxError>(http::Response::new(body)) }
    });
    let svc = CircuitBreakerLayer::new(breaker.clone()).layer(svc);
    (calls, BoxCloneService::new(svc))
}

/// Routes by the answer: "too long" to the long-context members, "refused" back to the
/// caller, "busy" to the next member; errors to the next member.
#[derive(Clone)]
struct ByAnswer {
    long: Vec<Arc<str>>,
}

impl Policy<String, http::Response<&'static str>, BoxError> for ByAnswer {
    fn clone_request(&mut self, req: &String) -> Option<String> {
        Some(req.clone())
    }

    fn should_fall_back(&mut self, result: Result<&http::Response<&'static str>, &BoxError>) -> bool {
        !self.route(result).is_to_caller()
    }

    fn route(&mut self, result: Result<&http::Response<&'static str>, &BoxError>) -> Route<'_> {
        match result.map(|r| *r.body()) {
            Err(_) => Route::to_next().because("error"),
            Ok(body) if body.ends_with("too long") => Route::to_any_of(&self.long).because("context"),
            Ok(body) if body.ends_with("busy") => Route::to_next().because("overloaded"),
            Ok(_) => Route::to_caller(),
        }
    }
}

fn by_answer(long: &[&str]) -> ByAnswer {
    ByAnswer {
        long: long.iter().map(|&n| Arc::from(n)).collect(),
    }
}

#[tokio::test(start_paused = true)]
async fn a_route_to_named_members_passes_the_others_and_labels_the_provenance() {
    let (small, mid, large1, large2) = (
        breaker("small"),
        breaker("mid"),
        breaker("large1"),
        breaker("large2"),
    );
    large1.trip(Duration::from_secs(5));
    let (small_calls, s) = answering(&small, "small: too long");
    let (mid_calls, m) = answering(&mid, "mid: ok");
    let (_, l1) = answering(&large1, "large1: ok");
    let (large2_calls, l2) = answering(&large2, "large2: ok");
    let chain = Failover::new([("small", s), ("mid", m), ("large1", l1), ("large2", l2)])
        .on_failure(by_answer(&["large1", "large2"]));

    let res = chain.oneshot("q".into()).await.unwrap();
    assert_eq!(*res.body(), "large2: ok");
    assert_eq!(small_calls.load(Ordering::SeqCst), 1);
    assert_eq!(mid_calls.load(Ordering::SeqCst), 0, "not named: passed over");
    assert_eq!(large2_calls.load(Ordering::SeqCst), 1);
    let p = res.extensions().get::<Provenance>().unwrap();
    assert_eq!(p.served_by(), "large2");
    let skipped: Vec<_> = p.skipped().iter().map(|s| (s.member(), s.because())).collect();
    assert_eq!(skipped, [("small", Some("context")), ("large1", None)]);
    assert!(matches!(p.skipped()[0].reason(), SkipReason::FailureResponse));
    assert!(
        p.skipped()[1].circuit_open().is_some(),
        "the open named member was skipped"
    );
    assert_eq!(
        p.to_string(),
        r#"served by "large2" (member "small" answered with a failure (context); member "large1" skipped: circuit "large1" is open; retry in 5s)"#
    );
}

#[tokio::test(start_paused = true)]
async fn a_route_to_the_caller_or_to_no_later_named_member_returns_the_answer() {
    // "refused": back to the caller, the next member is never called.
    let (a, b) = (breaker("a"), breaker("b"));
    let (_, sa) = answering(&a, "a: refused");
    let (b_calls, sb) = answering(&b, "b: ok");
    let chain = Failover::new([("a", sa), ("b", sb)]).on_failure(by_answer(&[]));
    let res = chain.oneshot("q".into()).await.unwrap();
    assert_eq!(*res.body(), "a: refused");
    assert_eq!(b_calls.load(Ordering::SeqCst), 0);
    assert!(!res.extensions().get::<Provenance>().unwrap().fell_back());

    // "too long" with the only long member *before* this one: no loop, the answer stands.
    let (long, small, mid) = (breaker("long"), breaker("small"), breaker("mid"));
    long.force_open();
    let (_, sl) = answering(&long, "long: ok");
    let (_, ss) = answering(&small, "small: too long");
    let (mid_calls, sm) = answering(&mid, "mid: ok");
    let chain = Failover::new([("long", sl), ("small", ss), ("mid", sm)]).on_failure(by_answer(&["long"]));
    let res = chain.oneshot("q".into()).await.unwrap();
    assert_eq!(*res.body(), "small: too long");
    assert_eq!(mid_calls.load(Ordering::SeqCst), 0);
    let p = res.extensions().get::<Provenance>().unwrap();
    assert_eq!(p.served_by(), "small");
    assert_eq!(p.skipped()[0].member(), "long");

    // The named members all open: the answer that moved stands, with them skipped.
    let (small, large) = (breaker("small"), breaker("large"));
    large.trip(Duration::from_secs(5));
    let (_, ss) = answering(&small, "small: too long");
    let (_, sl) = answering(&large, "large: ok");
    let chain = Failover::new([("small", ss), ("large", sl)]).on_failure(by_answer(&["large"]));
    let res = chain.oneshot("q".into()).await.unwrap();
    assert_eq!(*res.body(), "small: too long");
    let p = res.extensions().get::<Provenance>().unwrap();
    assert_eq!(p.served_by(), "small");
    assert_eq!(p.skipped()[0].member(), "large");
}

#[tokio::test(start_paused = true)]
async fn a_route_to_the_next_member_labels_each_hop() {
    let (a, b, c) = (breaker("a"), breaker("b"), breaker("c"));
    let (_, sa) = answering(&a, "a: busy");
    let (_, sb) = answering(&b, "b: too long");
    let (_, sc) = answering(&c, "c: ok");
    let chain = Failover::new([("a", sa), ("b", sb), ("c", sc)]).on_failure(by_answer(&["c"]));
    let res = chain.oneshot("q".into()).await.unwrap();
    assert_eq!(*res.body(), "c: ok");
    let p = res.extensions().get::<Provenance>().unwrap();
    let hops: Vec<_> = p.skipped().iter().map(|s| (s.member(), s.because())).collect();
    assert_eq!(hops, [("a", Some("overloaded")), ("b", Some("context"))]);
}

#[tokio::test(start_paused = true)]
async fn fallback_follows_a_route_to_its_secondary_only_when_it_is_named() {
    let run = |long: &'static [&'static str]| async move {
        let (p, s) = (breaker("small"), breaker("large"));
        let (_, sp) = answering(&p, "small: too long");
        let (calls, ss) = answering(&s, "large: ok");
        let svc = Fallback::new(sp, ss)
            .names("small", "large")
            .on_failure(by_answer(long));
        (
            svc.oneshot("q".into()).await.unwrap(),
            calls.load(Ordering::SeqCst),
        )
    };
    let (res, calls) = run(&["large"]).await;
    assert_eq!((*res.body(), calls), ("large: ok", 1));
    let p = res.extensions().get::<Provenance>().unwrap();
    assert_eq!(p.skipped()[0].because(), Some("context"));
    let (res, calls) = run(&["elsewhere"]).await;
    assert_eq!((*res.body(), calls), ("small: too long", 0));
}

// ---------- every member open: AllOpen ----------

/// A member that trips on its first failure, tripped now, open for `open`.
fn tripped(name: &'static str, open: Duration) -> CircuitBreaker {
    let b = CircuitBreaker::builder(name)
        .consecutive_failures(1)
        .open_duration(open)
        .build()
        .unwrap();
    b.try_acquire().unwrap().record(Outcome::Failure);
    b
}

#[tokio::test(start_paused = true)]
async fn probe_soonest_sends_the_request_to_the_member_whose_open_period_ends_soonest() {
    let s = Duration::from_secs(1);
    let breakers = [tripped("a", 20 * s), tripped("b", 5 * s), tripped("c", 10 * s)];
    let members: Vec<_> = breakers
        .iter()
        .map(|b| (b.name().to_owned(), answering(b, "ok").1))
        .collect();
    let chain = Failover::new(members.clone()).when_all_open(AllOpen::ProbeSoonest);

    let res = chain.clone().oneshot("q".into()).await.unwrap();
    let p = res.extensions().get::<Provenance>().unwrap();
    assert_eq!(p.served_by(), "b");
    assert!(p.probed_early());
    let others: Vec<_> = p.skipped().iter().map(Skipped::member).collect();
    assert_eq!(others, ["a", "c"], "the probed member is not listed as skipped");
    assert!(p.to_string().contains("an early probe"), "{p}");
    assert_eq!(breakers[1].state(), State::Closed, "the probe succeeded");
    assert_eq!(breakers[0].state(), State::Open);

    // The default is unchanged: every member open fails fast.
    let (a, b) = (tripped("a", 20 * s), tripped("b", 5 * s));
    let chain = Failover::new([("a", answering(&a, "ok").1), ("b", answering(&b, "ok").1)]);
    let err = chain.oneshot("q".into()).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<AllUnavailable>().unwrap().retry_after(),
        Some(5 * s)
    );
    assert_eq!(b.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn probe_soonest_one_probe_per_member_then_all_unavailable() {
    let s = Duration::from_secs(1);
    let (a, b) = (tripped("a", 20 * s), tripped("b", 5 * s));
    let hang = |breaker: &CircuitBreaker| -> HttpSvc {
        BoxCloneService::new(
            CircuitBreakerLayer::new(breaker.clone()).layer(service_fn(|_: String| {
                std::future::pending::<Result<http::Response<&'static str>, BoxError>>()
            })),
        )
    };
    let chain = Failover::new([("a", hang(&a)), ("b", hang(&b))]).when_all_open(AllOpen::ProbeSoonest);

    // The first request takes b's probe (soonest), the second a's; both hang.
    let mut first = chain.clone();
    let first = first.ready().await.unwrap().call("1".into());
    assert_eq!(b.state(), State::HalfOpen);
    let mut second = chain.clone();
    let second = second.ready().await.unwrap().call("2".into());
    assert_eq!(a.state(), State::HalfOpen);
    // Every member is now half-open with its probe in flight: nothing more goes through.
    let err = chain.clone().oneshot("3".into()).await.unwrap_err();
    let all = err.downcast_ref::<AllUnavailable>().unwrap();
    assert!(
        all.members()
            .iter()
            .all(|m| m.circuit_open().unwrap().state() == State::HalfOpen)
    );
    // Cancelled probes give their slots back.
    drop((first, second));
    assert_eq!(a.snapshot().probes_in_flight + b.snapshot().probes_in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn probe_soonest_never_bypasses_an_operator_or_a_servers_wait() {
    let s = Duration::from_secs(1);
    // Forced open (soonest: it has no deadline at all) and a server's 3 s wait: the member
    // open for 30 s on its own is the one probed.
    let forced = tripped("forced", s);
    forced.force_open();
    let waited = tripped("waited", 30 * s);
    waited.reset();
    waited.trip(3 * s);
    let own = tripped("own", 30 * s);
    let (forced_calls, f) = answering(&forced, "ok");
    let (waited_calls, w) = answering(&waited, "ok");
    let (_, o) = answering(&own, "ok");
    let chain =
        Failover::new([("forced", f), ("waited", w), ("own", o)]).when_all_open(AllOpen::ProbeSoonest);
    let res = chain.clone().oneshot("q".into()).await.unwrap();
    assert_eq!(res.extensions().get::<Provenance>().unwrap().served_by(), "own");
    assert_eq!(
        forced_calls.load(Ordering::SeqCst) + waited_calls.load(Ordering::SeqCst),
        0
    );
    assert_eq!(forced.state(), State::ForcedOpen);

    // Only a forced member and a server's wait: refused, as without the policy.
    let chain = Failover::new([
        ("forced", answering(&forced, "ok").1),
        ("waited", answering(&waited, "ok").1),
    ])
    .when_all_open(AllOpen::ProbeSoonest);
    let err = chain.oneshot("q".into()).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<AllUnavailable>().unwrap().retry_after(),
        Some(3 * s)
    );
}

#[tokio::test(start_paused = true)]
async fn probe_soonest_reaches_into_a_nested_chain_and_a_failed_probe_reopens() {
    let s = Duration::from_secs(1);
    let (a, b, c) = (tripped("a", 20 * s), tripped("b", 5 * s), tripped("c", 10 * s));
    let (b_calls, failing_b) = upstream("b", true);
    let (_, sa) = upstream("a", false);
    let inner = Failover::new([("a", guarded(&a, sa)), ("b", guarded(&b, failing_b))]);
    let inner: Svc = BoxCloneService::new(inner);
    let (_, sc) = upstream("c", false);
    let chain =
        Failover::new([("inner", inner), ("c", guarded(&c, sc))]).when_all_open(AllOpen::ProbeSoonest);

    // b (inside the inner chain) ends soonest: its probe is the request, and it fails.
    let err = chain.clone().oneshot("q".into()).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"member "inner" failed: member "b" failed: upstream error: b"#
    );
    assert_eq!(b_calls.load(Ordering::SeqCst), 1);
    assert_eq!(b.state(), State::Open, "the failed probe reopened b");

    // Next request: b's new open period (a backoff of 5 s again) is the soonest once more.
    tokio::time::advance(s).await;
    let _ = chain.clone().oneshot("q".into()).await;
    assert_eq!(b_calls.load(Ordering::SeqCst), 2);
}

/// A member that answers "ok" (or fails, `fail`) after `delay`, behind `breaker`.
fn slow(breaker: &CircuitBreaker, delay: Duration, fail: bool) -> (Arc<AtomicUsize>, HttpSvc) {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let name = breaker.name().to_owned();
    let svc = service_fn(move |_: String| {
        c.fetch_add(1, Ordering::SeqCst);
        let name = name.clone();
        async move {
            tokio::time::sleep(delay).await;
            if fail {
                Err::<http::Response<&'static str>, BoxError>(format!("upstream error: {name}").into())
            } else {
                Ok(http::Response::new("ok"))
            }
        }
    });
    let svc = CircuitBreakerLayer::new(breaker.clone()).layer(svc);
    (calls, BoxCloneService::new(svc))
}

#[tokio::test(start_paused = true)]
async fn probe_soonest_on_failure_a_member_back_since_the_failed_probe_is_not_listed_as_skipped() {
    let s = Duration::from_secs(1);
    // Every member open; b's period ends soonest, c's next, a's last.
    let (a, b, c) = (tripped("a", 20 * s), tripped("b", 5 * s), tripped("c", 8 * s));
    let (_, sa) = answering(&a, "a: ok");
    let (b_calls, sb) = slow(&b, 10 * s, true);
    let (c_calls, sc) = answering(&c, "c: ok");
    let chain = Failover::new([("a", sa), ("b", sb), ("c", sc)])
        .when_all_open(AllOpen::ProbeSoonest)
        .on_failure(CloneRequest::new());

    // b's early probe fails 10 s later; by then c's open period has ended: c serves. Its
    // refusal recorded at `poll_ready` is stale: the record lists a (open) and b (failed).
    let res = chain.clone().oneshot("q".into()).await.unwrap();
    let p = res.extensions().get::<Provenance>().unwrap();
    assert_eq!(
        (p.served_by(), p.probed_early(), *res.body()),
        ("c", false, "c: ok")
    );
    let skipped: Vec<_> = p.skipped().iter().map(|s| (s.member(), s.reason())).collect();
    assert!(
        matches!(
            skipped.as_slice(),
            [("a", SkipReason::CircuitOpen(_)), ("b", SkipReason::Failed(_))]
        ),
        "{skipped:?}"
    );
    assert_eq!(
        (b_calls.load(Ordering::SeqCst), c_calls.load(Ordering::SeqCst)),
        (1, 1)
    );
    assert_eq!(
        (a.state(), b.state(), c.state()),
        (State::Open, State::Open, State::Closed)
    );

    // c still open when b's probe fails: b's error stands, and c is listed once (its refusal
    // of now), not twice (the one from `poll_ready` and the one of now).
    let (a, b, c) = (tripped("a", 20 * s), tripped("b", 5 * s), tripped("c", 15 * s));
    let (_, sa) = answering(&a, "a: ok");
    let (_, sb) = slow(&b, 10 * s, true);
    let (c_calls, sc) = answering(&c, "c: ok");
    let chain = Failover::new([("a", sa), ("b", sb), ("c", sc)])
        .when_all_open(AllOpen::ProbeSoonest)
        .on_failure(CloneRequest::new());
    let err = chain.oneshot("q".into()).await.unwrap_err();
    let failed = err.downcast_ref::<FallbackError>().unwrap();
    assert_eq!(
        (failed.member(), failed.error().to_string().as_str()),
        ("b", "upstream error: b")
    );
    let skipped: Vec<_> = failed
        .skipped()
        .iter()
        .map(|s| (s.member(), s.circuit_open().and_then(CircuitOpen::retry_after)))
        .collect();
    assert_eq!(skipped, [("a", Some(10 * s)), ("c", Some(5 * s))]);
    assert_eq!(c_calls.load(Ordering::SeqCst), 0);
}
