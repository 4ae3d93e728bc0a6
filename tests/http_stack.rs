//! The whole client stack over real sockets: `Fallback → Retry → CircuitBreaker → Timeout →
//! Client`, the primary's upstream failing, the secondary's healthy.
#![cfg(all(feature = "hyper-util", feature = "retry"))]

mod support;

use std::time::Duration;

use support::{Fault, FaultServer, client, get};
use tower::{ServiceBuilder, ServiceExt};
use tower_breaker::{
    CircuitBreaker, CircuitBreakerLayer, Fallback, HttpClassifier, Outcome, State,
    fallback::{CloneRequest, Provenance},
    is_circuit_open,
    retry::RetryPolicy,
};

const NEVER: Duration = Duration::from_secs(300);

fn primary(
    breaker: &CircuitBreaker,
) -> impl tower::Service<
    http::Request<http_body_util::Full<bytes::Bytes>>,
    Response = http::Response<hyper::body::Incoming>,
    Error = tower_breaker::BoxError,
> + Clone {
    ServiceBuilder::new()
        .retry(RetryPolicy::new().no_backoff().max_retries(10))
        .layer(CircuitBreakerLayer::new(breaker.clone()).classify(HttpClassifier::default()))
        .timeout(NEVER)
        .service(client())
}

fn secondary() -> impl tower::Service<
    http::Request<http_body_util::Full<bytes::Bytes>>,
    Response = http::Response<hyper::body::Incoming>,
    Error = tower_breaker::BoxError,
> + Clone {
    ServiceBuilder::new().timeout(NEVER).service(client())
}

/// The servers differ by port; the request's URI names the primary's, so the secondary is a
/// client that rewrites it.
fn to(
    server: &FaultServer,
) -> impl Fn(
    http::Request<http_body_util::Full<bytes::Bytes>>,
) -> http::Request<http_body_util::Full<bytes::Bytes>>
+ Clone {
    let authority = server.addr().to_string();
    move |mut req| {
        *req.uri_mut() = format!("http://{authority}{}", req.uri().path()).parse().unwrap();
        req
    }
}

#[tokio::test]
async fn retries_end_at_the_open_circuit_then_the_fallback_serves() {
    let bad = FaultServer::start(Fault::Status(500)).await;
    let good = FaultServer::start(Fault::Status(200)).await;
    let breaker = CircuitBreaker::builder("primary")
        .consecutive_failures(3)
        .build()
        .unwrap();
    // Fall back on what counts against the breaker, and on the breaker's own rejection.
    let policy = CloneRequest::new().classify(HttpClassifier::new().circuit_open_error(Outcome::Failure));
    let stack = Fallback::new(
        primary(&breaker),
        ServiceBuilder::new().map_request(to(&good)).service(secondary()),
    )
    .names("primary", "secondary")
    .on_failure(policy);

    // 1st request: three attempts fail, the breaker opens, the retry stops at the open
    // circuit, and the request falls back.
    let res = stack.clone().oneshot(get(bad.uri("/v1"))).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(bad.hits(), 3);
    assert_eq!(good.hits(), 1);
    assert_eq!(breaker.state(), State::Open);
    assert_eq!(
        res.extensions().get::<Provenance>().unwrap().served_by(),
        "secondary"
    );

    // 2nd request: the primary's readiness fails fast; it is skipped without a call.
    let res = stack.clone().oneshot(get(bad.uri("/v1"))).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(bad.hits(), 3, "the open primary was not called");
    assert_eq!(good.hits(), 2);
    let provenance = res.extensions().get::<Provenance>().unwrap();
    assert_eq!(provenance.skipped()[0].member(), "primary");
    assert!(provenance.skipped()[0].circuit_open().is_some());
}

#[tokio::test]
async fn without_on_failure_only_an_open_primary_is_skipped() {
    let bad = FaultServer::start(Fault::Status(502)).await;
    let good = FaultServer::start(Fault::Status(200)).await;
    let breaker = CircuitBreaker::builder("primary")
        .consecutive_failures(3)
        .build()
        .unwrap();
    let stack = Fallback::new(
        primary(&breaker),
        ServiceBuilder::new().map_request(to(&good)).service(secondary()),
    );

    // The call was handed to the primary: its retries end in CircuitOpen, returned as is.
    let err = stack.clone().oneshot(get(bad.uri("/"))).await.unwrap_err();
    assert!(is_circuit_open(&err), "{err}");
    assert_eq!((bad.hits(), good.hits()), (3, 0));
    // From now on the primary is open at readiness: the secondary serves.
    let res = stack.clone().oneshot(get(bad.uri("/"))).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!((bad.hits(), good.hits()), (3, 1));
}
