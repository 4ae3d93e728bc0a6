//! Connection-level failures with hyper-util's client under `CircuitBreaker → Timeout`:
//! connect refused, DNS failure, a server that accepts and never answers, a reset before the
//! response and mid-body. Each is classified and counted as a failure.
#![cfg(feature = "hyper-util")]

mod support;

use std::time::Duration;

use support::{Fault, FaultServer, black_hole, client, closed_addr, get, record_outcomes};
use tower::{ServiceBuilder, ServiceExt};
use tower_breaker::{
    BoxError, CircuitBreaker, CircuitBreakerLayer, HttpClassifier, Outcome, State, classify::ErrorClass,
    streaming::StreamingBreakerLayer,
};

type Outcomes = std::sync::Arc<std::sync::Mutex<Vec<Outcome>>>;

fn breaker() -> (CircuitBreaker, Outcomes) {
    let (b, seen) = record_outcomes(CircuitBreaker::builder("upstream").consecutive_failures(1));
    (b.build().unwrap(), seen)
}

async fn call(
    breaker: &CircuitBreaker,
    uri: http::Uri,
    timeout: Duration,
) -> Result<http::StatusCode, BoxError> {
    ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(breaker.clone()).classify(HttpClassifier::default()))
        .timeout(timeout)
        .service(client())
        .oneshot(get(uri))
        .await
        .map(|res| res.status())
}

const NEVER: Duration = Duration::from_secs(300);

#[tokio::test]
async fn connect_refused_is_a_connect_failure() {
    let (breaker, seen) = breaker();
    let uri = format!("http://{}/", closed_addr().await).parse().unwrap();
    let err = call(&breaker, uri, NEVER).await.unwrap_err();
    let hyper_err = err
        .downcast_ref::<hyper_util::client::legacy::Error>()
        .expect("a client error");
    assert!(hyper_err.is_connect(), "{err:?}");
    assert_eq!(ErrorClass::of(&*err), ErrorClass::Connect);
    assert_eq!(*seen.lock().unwrap(), [Outcome::Failure]);
    assert_eq!(breaker.state(), State::Open);
}

#[tokio::test]
async fn dns_failure_is_a_connect_failure() {
    let (breaker, seen) = breaker();
    let err = call(&breaker, "http://no-such-host.invalid/".parse().unwrap(), NEVER)
        .await
        .unwrap_err();
    assert_eq!(ErrorClass::of(&*err), ErrorClass::Connect, "{err:?}");
    assert_eq!(*seen.lock().unwrap(), [Outcome::Failure]);
    assert_eq!(breaker.state(), State::Open);
}

/// The only timer is the timeout, so the paused clock jumps straight to it.
#[tokio::test(start_paused = true)]
async fn a_server_that_accepts_and_never_answers_times_out() {
    let (breaker, seen) = breaker();
    let uri = format!("http://{}/", black_hole().await).parse().unwrap();
    let start = tokio::time::Instant::now();
    let err = call(&breaker, uri, Duration::from_secs(5)).await.unwrap_err();
    assert!(err.is::<tower::timeout::error::Elapsed>(), "{err:?}");
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    assert_eq!(ErrorClass::of(&*err), ErrorClass::Timeout);
    assert_eq!(*seen.lock().unwrap(), [Outcome::Failure]);
}

#[tokio::test(start_paused = true)]
async fn a_server_that_reads_and_never_answers_times_out() {
    let server = FaultServer::start(Fault::Hang).await;
    let (breaker, seen) = breaker();
    let err = call(&breaker, server.uri("/"), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(ErrorClass::of(&*err), ErrorClass::Timeout, "{err:?}");
    assert_eq!(*seen.lock().unwrap(), [Outcome::Failure]);
}

#[tokio::test]
async fn a_reset_before_the_response_is_a_failure() {
    let server = FaultServer::start(Fault::Reset).await;
    let (breaker, seen) = breaker();
    let err = call(&breaker, server.uri("/"), NEVER).await.unwrap_err();
    assert_eq!(ErrorClass::of(&*err), ErrorClass::Other, "{err:?}");
    assert_eq!(*seen.lock().unwrap(), [Outcome::Failure]);
}

#[tokio::test]
async fn a_reset_mid_body_is_a_failure_when_recorded_at_the_end() {
    let server = FaultServer::start(Fault::ResetMidBody {
        chunks: vec!["{\"partial\":"],
    })
    .await;
    let (breaker, seen) = breaker();
    let res = ServiceBuilder::new()
        .layer(StreamingBreakerLayer::new(breaker.clone()).classify(HttpClassifier::default()))
        .timeout(NEVER)
        .service(client())
        .oneshot(get(server.uri("/")))
        .await
        .unwrap();
    use http_body_util::BodyExt;
    assert!(res.into_body().collect().await.is_err());
    assert_eq!(*seen.lock().unwrap(), [Outcome::Failure]);
    assert_eq!(breaker.state(), State::Open);
}
