//! tower-http's `ClassifyResponse` classifiers driving a breaker, over real sockets.
#![cfg(all(feature = "tower-http", feature = "hyper-util"))]

mod support;

use support::{Fault, FaultServer, client, get, record_outcomes};
use tower::{ServiceBuilder, ServiceExt};
use tower_breaker::{
    CircuitBreaker, CircuitBreakerLayer, Outcome, State, integrations::tower_http::FromClassifyResponse,
};
use tower_http::classify::{GrpcErrorsAsFailures, ServerErrorsAsFailures, StatusInRangeAsFailures};

#[tokio::test]
async fn status_in_range_as_failures_counts_4xx() {
    let server = FaultServer::start(Fault::Status(200)).await;
    server.script([Fault::Status(200), Fault::Status(404), Fault::Status(503)]);
    let (builder, seen) = record_outcomes(CircuitBreaker::builder("th").consecutive_failures(2));
    let breaker = builder.build().unwrap();
    let svc = ServiceBuilder::new()
        .layer(
            CircuitBreakerLayer::new(breaker.clone())
                .classify(FromClassifyResponse::new(StatusInRangeAsFailures::new(400..=599))),
        )
        .service(client());
    for _ in 0..3 {
        svc.clone().oneshot(get(server.uri("/"))).await.unwrap();
    }
    assert_eq!(
        *seen.lock().unwrap(),
        [Outcome::Success, Outcome::Failure, Outcome::Failure]
    );
    assert_eq!(breaker.state(), State::Open);
}

#[tokio::test]
async fn server_errors_as_failures_and_connect_errors() {
    let server = FaultServer::start(Fault::Status(200)).await;
    server.script([Fault::Status(404), Fault::Status(529)]);
    let (builder, seen) = record_outcomes(CircuitBreaker::builder("th").consecutive_failures(10));
    let breaker = builder.build().unwrap();
    let svc = ServiceBuilder::new()
        .layer(
            CircuitBreakerLayer::new(breaker.clone())
                .classify(FromClassifyResponse::new(ServerErrorsAsFailures::new())),
        )
        .service(client());
    for _ in 0..2 {
        svc.clone().oneshot(get(server.uri("/"))).await.unwrap();
    }
    let refused = format!("http://{}/", support::closed_addr().await)
        .parse()
        .unwrap();
    assert!(svc.clone().oneshot(get(refused)).await.is_err());
    assert_eq!(
        *seen.lock().unwrap(),
        [Outcome::Success, Outcome::Failure, Outcome::Failure]
    );
}

#[tokio::test]
async fn requires_eos_uses_the_configured_outcome() {
    // A 200 without grpc-status: GrpcErrorsAsFailures needs the trailers to decide.
    let server = FaultServer::start(Fault::Status(200)).await;
    let (builder, seen) = record_outcomes(CircuitBreaker::builder("grpc").consecutive_failures(10));
    let breaker = builder.build().unwrap();
    for outcome in [Outcome::Success, Outcome::Ignore] {
        let svc = ServiceBuilder::new()
            .layer(
                CircuitBreakerLayer::new(breaker.clone())
                    .classify(FromClassifyResponse::new(GrpcErrorsAsFailures::new()).requires_eos(outcome)),
            )
            .service(client());
        svc.oneshot(get(server.uri("/"))).await.unwrap();
    }
    assert_eq!(*seen.lock().unwrap(), [Outcome::Success, Outcome::Ignore]);
}
