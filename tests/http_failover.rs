//! `on_http_failure` over real sockets: hyper servers on 127.0.0.1 and hyper-util's legacy
//! client, one breaker per member. A 5xx, a 429, a timeout and a refused connection each send
//! the request on to the next member, and so does a member whose keyed (or `RejectOnCall`)
//! breaker refuses the call; without the preset, they do not.
//!
//! Time: tests without a timeout run on the real clock (nothing waits on it); the timeout test
//! runs paused, with the timeout the only timer, so tokio jumps straight to it.
#![cfg(feature = "hyper-util")]

mod support;

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use support::{Fault, FaultServer, client, closed_addr};
use tower::{ServiceBuilder, ServiceExt, util::BoxCloneService};
use tower_breaker::{
    BoxError, CircuitBreaker, CircuitBreakerLayer, CircuitOpen, Failover, Fallback, HttpClassifier, Layer,
    Readiness, State,
    fallback::{Provenance, SkipReason},
    keyed::{Header, KeyedCircuitBreakerLayer, KeyedRegistry},
};

type Body = Full<Bytes>;
type Member = BoxCloneService<Request<Body>, Response<Incoming>, BoxError>;

fn breaker(name: &str) -> CircuitBreaker {
    CircuitBreaker::builder(name)
        .consecutive_failures(3)
        .open_duration(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Points a request (whose URI is a path) at `addr`, keeping the path.
fn rebase(addr: SocketAddr) -> impl Fn(Request<Body>) -> Request<Body> + Clone {
    move |mut req: Request<Body>| {
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        *req.uri_mut() = Uri::try_from(format!("http://{addr}{path}")).unwrap();
        req
    }
}

/// `breaker → [timeout] → client`, aimed at `addr`.
fn member(breaker: &CircuitBreaker, addr: SocketAddr, timeout: Option<Duration>) -> Member {
    let layer = CircuitBreakerLayer::new(breaker.clone()).classify(HttpClassifier::default());
    let to_addr = ServiceBuilder::new().map_request(rebase(addr)).service(client());
    match timeout {
        Some(t) => BoxCloneService::new(ServiceBuilder::new().layer(layer).timeout(t).service(to_addr)),
        None => BoxCloneService::new(layer.layer(to_addr)),
    }
}

fn chat() -> Request<Body> {
    Request::post("/v1/chat/completions")
        .header("x-model", "gpt-4o")
        .body(Full::new(Bytes::from_static(br#"{"model":"gpt-4o"}"#)))
        .unwrap()
}

async fn body(res: Response<Incoming>) -> Bytes {
    res.into_body().collect().await.unwrap().to_bytes()
}

/// A healthy backup: 200 to everything.
async fn backup() -> (FaultServer, CircuitBreaker, Member) {
    let server = FaultServer::start(Fault::Status(200)).await;
    let b = breaker("backup");
    let m = member(&b, server.addr(), None);
    (server, b, m)
}

fn served_by(res: &Response<Incoming>) -> Provenance {
    res.extensions()
        .get::<Provenance>()
        .expect("a provenance")
        .clone()
}

#[tokio::test]
async fn a_5xx_fails_over_to_the_next_member() {
    let primary = FaultServer::start(Fault::Status(500)).await;
    let (backup, _, b) = backup().await;
    let openai = breaker("openai");
    let chain =
        Failover::new([("openai", member(&openai, primary.addr(), None)), ("backup", b)]).on_http_failure();

    for round in 1..=3 {
        let res = chain.clone().oneshot(chat()).await.unwrap();
        assert_eq!(res.status(), 200, "round {round}");
        let p = served_by(&res);
        assert_eq!(p.served_by(), "backup");
        assert_eq!(p.skipped()[0].member(), "openai");
        assert!(
            matches!(p.skipped()[0].reason(), SkipReason::FailureResponse),
            "{p}"
        );
        assert_eq!(body(res).await, "");
    }
    assert_eq!(
        (primary.hits(), backup.hits()),
        (3, 3),
        "each request reached both"
    );
    assert_eq!(
        openai.state(),
        State::Open,
        "three 500s: the primary's breaker opened"
    );

    // Open now: the primary is skipped at readiness, not called.
    let res = chain.oneshot(chat()).await.unwrap();
    assert!(served_by(&res).skipped()[0].circuit_open().is_some());
    assert_eq!((primary.hits(), backup.hits()), (3, 4));
}

#[tokio::test]
async fn without_the_preset_a_5xx_is_the_callers() {
    let primary = FaultServer::start(Fault::Status(500)).await;
    let (backup, _, b) = backup().await;
    let chain = Failover::new([
        ("openai", member(&breaker("openai"), primary.addr(), None)),
        ("backup", b),
    ]);
    let res = chain.oneshot(chat()).await.unwrap();
    assert_eq!(res.status(), 500, "the default moves on only at an open circuit");
    assert_eq!((primary.hits(), backup.hits()), (1, 0));
}

#[tokio::test]
async fn a_429_fails_over_with_or_without_retry_after() {
    let primary = FaultServer::start(Fault::Status(200)).await;
    primary.script([Fault::Status(429), Fault::retry_after(429, "20")]);
    let (backup, _, b) = backup().await;
    let openai = breaker("openai");
    let chain =
        Failover::new([("openai", member(&openai, primary.addr(), None)), ("backup", b)]).on_http_failure();

    // A bare 429: a failure, the request moves on.
    let res = chain.clone().oneshot(chat()).await.unwrap();
    assert_eq!(served_by(&res).served_by(), "backup");
    assert_eq!(openai.state(), State::Closed);

    // A 429 with `Retry-After: 20`: moves on, and the primary's breaker opens for 20 s.
    let res = chain.clone().oneshot(chat()).await.unwrap();
    assert_eq!(served_by(&res).served_by(), "backup");
    assert_eq!(openai.state(), State::Open);
    let wait = openai.try_acquire().unwrap_err().retry_after().unwrap();
    assert!(
        wait > Duration::from_secs(19) && wait <= Duration::from_secs(20),
        "{wait:?}"
    );
    assert_eq!((primary.hits(), backup.hits()), (2, 2));
}

/// The timeout is the only timer while the primary hangs: the paused clock jumps to it. The
/// backup has no timeout, so nothing else can fire while its real socket works.
#[tokio::test(start_paused = true)]
async fn a_timeout_fails_over_to_the_next_member() {
    let primary = FaultServer::start(Fault::Hang).await;
    let (backup, _, b) = backup().await;
    let openai = breaker("openai");
    let chain = Failover::new([
        (
            "openai",
            member(&openai, primary.addr(), Some(Duration::from_secs(5))),
        ),
        ("backup", b),
    ])
    .on_http_failure();

    let start = tokio::time::Instant::now();
    let res = chain.oneshot(chat()).await.unwrap();
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(5),
        "one timeout, then the backup at once"
    );
    assert_eq!(res.status(), 200);
    let p = served_by(&res);
    assert_eq!(p.served_by(), "backup");
    match p.skipped()[0].reason() {
        SkipReason::Failed(e) => assert!(e.is::<tower::timeout::error::Elapsed>(), "{e}"),
        other => panic!("expected the timeout, got {other:?}"),
    }
    assert_eq!(openai.snapshot().consecutive_failures, 1, "the timeout counted");
    assert_eq!(backup.hits(), 1);
}

#[tokio::test]
async fn a_refused_connection_fails_over_to_the_next_member() {
    let (backup, _, b) = backup().await;
    let openai = breaker("openai");
    let chain = Failover::new([
        ("openai", member(&openai, closed_addr().await, None)),
        ("backup", b),
    ])
    .on_http_failure();

    let res = chain.oneshot(chat()).await.unwrap();
    assert_eq!(res.status(), 200);
    let p = served_by(&res);
    assert_eq!(p.served_by(), "backup");
    match p.skipped()[0].reason() {
        SkipReason::Failed(e) => {
            let client = e
                .downcast_ref::<hyper_util::client::legacy::Error>()
                .unwrap_or_else(|| panic!("a client error: {e}"));
            assert!(client.is_connect(), "{e:?}");
        }
        other => panic!("expected the connect error, got {other:?}"),
    }
    assert_eq!(openai.snapshot().consecutive_failures, 1);
    assert_eq!(backup.hits(), 1);
}

#[tokio::test]
async fn a_member_refusing_at_call_time_fails_over() {
    let primary = FaultServer::start(Fault::Status(200)).await;
    let (backup, _, b) = backup().await;

    // A keyed member: one breaker per model, chosen in `call`; gpt-4o's is open.
    let registry = KeyedRegistry::new(CircuitBreaker::builder("openai").consecutive_failures(3)).unwrap();
    registry.get("gpt-4o").unwrap().force_open();
    let keyed: Member = BoxCloneService::new(
        ServiceBuilder::new()
            .layer(
                KeyedCircuitBreakerLayer::new(registry.clone(), Header::new("x-model"))
                    .classify(HttpClassifier::default()),
            )
            .map_request(rebase(primary.addr()))
            .service(client()),
    );

    // The default routes only at readiness: the keyed refusal reaches the caller.
    let err = Failover::new([("openai", keyed.clone()), ("backup", b.clone())])
        .oneshot(chat())
        .await
        .unwrap_err();
    assert!(err.is::<CircuitOpen>(), "{err}");

    // The preset sends the request on.
    let chain = Failover::new([("openai", keyed), ("backup", b.clone())]).on_http_failure();
    let res = chain.clone().oneshot(chat()).await.unwrap();
    let p = served_by(&res);
    assert_eq!(p.served_by(), "backup");
    assert_eq!(p.skipped()[0].circuit_open().unwrap().name(), "openai:gpt-4o");
    assert_eq!(
        (primary.hits(), backup.hits()),
        (0, 1),
        "the refused call sent nothing"
    );

    // Another model's breaker is closed: the primary serves it.
    let mut mini = chat();
    mini.headers_mut()
        .insert("x-model", "gpt-4o-mini".parse().unwrap());
    let res = chain.oneshot(mini).await.unwrap();
    assert_eq!(served_by(&res).served_by(), "openai");
    assert_eq!((primary.hits(), backup.hits()), (1, 1));

    // A `RejectOnCall` member whose circuit is open: the same.
    let open = breaker("anthropic");
    open.force_open();
    let rejecting: Member = BoxCloneService::new(
        CircuitBreakerLayer::new(open)
            .classify(HttpClassifier::default())
            .readiness(Readiness::RejectOnCall)
            .layer(
                ServiceBuilder::new()
                    .map_request(rebase(primary.addr()))
                    .service(client()),
            ),
    );
    let res = Failover::new([("anthropic", rejecting), ("backup", b)])
        .on_http_failure()
        .oneshot(chat())
        .await
        .unwrap();
    assert_eq!(served_by(&res).served_by(), "backup");
    assert_eq!((primary.hits(), backup.hits()), (1, 2));
}

#[tokio::test]
async fn fallback_on_http_failure_fails_over_too() {
    let primary = FaultServer::start(Fault::Status(503)).await;
    let (backup, _, b) = backup().await;
    let svc = Fallback::new(member(&breaker("openai"), primary.addr(), None), b)
        .names("openai", "backup")
        .on_http_failure();
    let res = svc.clone().oneshot(chat()).await.unwrap();
    assert_eq!(served_by(&res).served_by(), "backup");

    // Nowhere to go (the backup is open): the primary's 503 stands, as an answer.
    let open = breaker("backup");
    open.force_open();
    let svc = Fallback::new(
        member(&breaker("openai"), primary.addr(), None),
        member(&open, backup.addr(), None),
    )
    .on_http_failure();
    let res = svc.oneshot(chat()).await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!((primary.hits(), backup.hits()), (2, 1));
}
