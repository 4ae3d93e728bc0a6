//! `CircuitBreakerMiddleware` on a reqwest-middleware client, with reqwest-retry, against a
//! real hyper server with scripted faults.
//!
//! Paused-clock tests let reqwest-retry's backoff pass at once; their breakers stay open for
//! an hour so that tokio's jumps to the next timer (reqwest's pool timer, the backoff) while a
//! socket is busy never reach a half-open deadline.
#![cfg(all(feature = "reqwest-middleware", feature = "hyper-util"))]

mod support;

use std::time::Duration;

use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use reqwest_retry::{RetryTransientMiddleware, policies::ExponentialBackoff};
use support::{Fault, FaultServer, record_outcomes};
use tower::{ServiceBuilder, ServiceExt};
use tower_breaker::{
    CircuitBreaker, CircuitBreakerLayer, CircuitOpen, HttpClassifier, Outcome, State,
    integrations::reqwest_middleware::{CircuitBreakerMiddleware, find_circuit_open, is_circuit_open},
};

const HOUR: Duration = Duration::from_secs(3600);

fn reqwest_client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

fn with_retry(breaker: &CircuitBreaker, retries: u32) -> ClientWithMiddleware {
    ClientBuilder::new(reqwest_client())
        .with(RetryTransientMiddleware::new_with_policy(
            ExponentialBackoff::builder().build_with_max_retries(retries),
        ))
        .with(CircuitBreakerMiddleware::new(breaker.clone()))
        .build()
}

#[tokio::test(start_paused = true)]
async fn reqwest_retry_stops_at_the_open_circuit() {
    let server = FaultServer::start(Fault::Status(500)).await;
    let breaker = CircuitBreaker::builder("api")
        .consecutive_failures(3)
        .open_duration(HOUR)
        .build()
        .unwrap();
    let client = with_retry(&breaker, 10);
    let err = client.get(server.uri("/").to_string()).send().await.unwrap_err();
    assert!(is_circuit_open(&err), "{err:#}");
    assert_eq!(find_circuit_open(&err).unwrap().name(), "api");
    assert_eq!(
        server.hits(),
        3,
        "three failures opened the breaker; no retry went out after"
    );
    assert_eq!(breaker.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn an_already_open_circuit_is_not_retried_and_still_found() {
    let server = FaultServer::start(Fault::Status(200)).await;
    let breaker = CircuitBreaker::builder("api")
        .consecutive_failures(3)
        .build()
        .unwrap();
    breaker.force_open();
    let client = with_retry(&breaker, 10);
    // reqwest-retry wraps the fatal error in its transparent `RetryError::Error`.
    let err = client.get(server.uri("/").to_string()).send().await.unwrap_err();
    assert!(is_circuit_open(&err), "{err:#}");
    assert_eq!(server.hits(), 0);
    // What users print shows the open circuit, at the top of reqwest-retry's wrapper too.
    assert_eq!(err.to_string(), r#"circuit "api" is forced open"#);
    // The crate-root helpers take this error type as well.
    assert!(tower_breaker::is_circuit_open(&err));
    assert_eq!(CircuitOpen::find(&err).unwrap().name(), "api");
}

#[tokio::test]
async fn the_rejection_is_an_anyhow_error_around_circuit_open() {
    let breaker = CircuitBreaker::builder("api")
        .consecutive_failures(1)
        .build()
        .unwrap();
    breaker.force_open();
    let client = ClientBuilder::new(reqwest_client())
        .with(CircuitBreakerMiddleware::new(breaker))
        .build();
    let err = client.get("http://127.0.0.1:1/").send().await.unwrap_err();
    let reqwest_middleware::Error::Middleware(inner) = &err else {
        panic!("{err:?}")
    };
    let open = inner
        .downcast_ref::<CircuitOpen>()
        .expect("downcasts to CircuitOpen");
    assert_eq!(open.name(), "api");
    // Issue 15 point 7: the top-level message names the open circuit (it used to be only
    // "request not sent"); the chain adds that the request was not sent, without repeating.
    assert_eq!(err.to_string(), r#"circuit "api" is forced open"#);
    assert_eq!(
        format!("{err:#}"),
        r#"circuit "api" is forced open: request not sent"#
    );
    // One function for every integration: the crate root's, on a `reqwest_middleware::Error`
    // and on a `&dyn Error` view of it.
    assert!(tower_breaker::is_circuit_open(&err));
    let dyn_error: &(dyn std::error::Error + Send + Sync + 'static) = inner.as_ref();
    assert!(tower_breaker::is_circuit_open(dyn_error));
    assert_eq!(CircuitOpen::find(&err).unwrap().name(), "api");
    assert!(find_circuit_open(&err).is_some());
}

#[tokio::test(start_paused = true)]
async fn an_open_circuit_shows_its_wait_at_the_top() {
    let breaker = CircuitBreaker::builder("api")
        .consecutive_failures(1)
        .open_duration(Duration::from_secs(30))
        .build()
        .unwrap();
    breaker.trip(Duration::from_secs(30));
    let client = ClientBuilder::new(reqwest_client())
        .with(CircuitBreakerMiddleware::new(breaker))
        .build();
    let err = client.get("http://127.0.0.1:1/").send().await.unwrap_err();
    assert_eq!(err.to_string(), r#"circuit "api" is open; retry in 30s"#);
    assert_eq!(
        format!("{err:#}"),
        r#"circuit "api" is open; retry in 30s: request not sent"#
    );
}

#[tokio::test]
async fn responses_are_classified_with_the_http_table() {
    let server = FaultServer::start(Fault::Status(200)).await;
    server.script([
        Fault::Status(200),
        Fault::Status(404),
        Fault::Status(503),
        Fault::Status(529),
        Fault::retry_after(429, "soon"),
        Fault::retry_after(429, "7"),
    ]);
    let (builder, seen) = record_outcomes(CircuitBreaker::builder("api").consecutive_failures(100));
    let breaker = builder.build().unwrap();
    let client = ClientBuilder::new(reqwest_client())
        .with(CircuitBreakerMiddleware::new(breaker.clone()))
        .build();
    for _ in 0..6 {
        client.get(server.uri("/").to_string()).send().await.unwrap();
    }
    use Outcome::*;
    assert_eq!(
        *seen.lock().unwrap(),
        [
            Success,
            Success,
            Failure,
            Failure,
            Failure,
            Trip(Duration::from_secs(7))
        ]
    );
    assert_eq!(breaker.state(), State::Open);
}

#[tokio::test]
async fn connect_and_dns_errors_are_failures() {
    let (builder, seen) = record_outcomes(CircuitBreaker::builder("api").consecutive_failures(100));
    let breaker = builder.build().unwrap();
    let client = ClientBuilder::new(reqwest_client())
        .with(CircuitBreakerMiddleware::new(breaker))
        .build();
    let refused = client
        .get(format!("http://{}/", support::closed_addr().await))
        .send()
        .await
        .unwrap_err();
    assert!(refused.is_connect(), "{refused:#}");
    let dns = client
        .get("http://no-such-host.invalid/")
        .send()
        .await
        .unwrap_err();
    assert!(dns.is_connect(), "{dns:#}");
    assert_eq!(*seen.lock().unwrap(), [Outcome::Failure, Outcome::Failure]);
}

#[tokio::test(start_paused = true)]
async fn a_reqwest_timeout_is_a_failure() {
    let server = FaultServer::start(Fault::Hang).await;
    let (builder, seen) = record_outcomes(
        CircuitBreaker::builder("api")
            .consecutive_failures(1)
            .open_duration(HOUR),
    );
    let breaker = builder.build().unwrap();
    let client = ClientBuilder::new(
        reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap(),
    )
    .with(CircuitBreakerMiddleware::new(breaker.clone()))
    .build();
    let err = client.get(server.uri("/").to_string()).send().await.unwrap_err();
    assert!(err.is_timeout(), "{err:#}");
    assert_eq!(*seen.lock().unwrap(), [Outcome::Failure]);
    assert_eq!(breaker.state(), State::Open);
}

#[tokio::test]
async fn one_breaker_guards_a_tower_stack_and_a_reqwest_client() {
    let server = FaultServer::start(Fault::Status(502)).await;
    let breaker = CircuitBreaker::builder("shared")
        .consecutive_failures(2)
        .build()
        .unwrap();
    let tower_client = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(breaker.clone()).classify(HttpClassifier::default()))
        .service(support::client());
    for _ in 0..2 {
        let res = tower_client
            .clone()
            .oneshot(support::get(server.uri("/")))
            .await
            .unwrap();
        assert_eq!(res.status(), 502);
    }
    assert_eq!(breaker.state(), State::Open);
    let client = ClientBuilder::new(reqwest_client())
        .with(CircuitBreakerMiddleware::new(breaker.clone()))
        .build();
    let err = client.get(server.uri("/").to_string()).send().await.unwrap_err();
    assert!(is_circuit_open(&err));
    assert_eq!(server.hits(), 2, "the reqwest client saw the tower stack's trip");
}

/// `reqwest::Client` is itself a tower `Service<reqwest::Request>`: the layer classifies
/// `reqwest::Response` / `reqwest::Error` with the same table.
#[tokio::test]
async fn the_tower_layer_over_a_plain_reqwest_client() {
    let server = FaultServer::start(Fault::Status(200)).await;
    server.script([
        Fault::Status(200),
        Fault::Status(529),
        Fault::retry_after(503, "4"),
    ]);
    let (builder, seen) = record_outcomes(CircuitBreaker::builder("rq").consecutive_failures(10));
    let breaker = builder.build().unwrap();
    let http = reqwest_client();
    let svc = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(breaker.clone()).classify(HttpClassifier::default()))
        .service(http.clone());
    let call = |uri: String| svc.clone().oneshot(http.get(uri).build().unwrap());
    call(server.uri("/").to_string()).await.unwrap();
    call(server.uri("/").to_string()).await.unwrap();
    let refused = call(format!("http://{}/", support::closed_addr().await))
        .await
        .unwrap_err();
    assert!(refused.downcast_ref::<reqwest::Error>().unwrap().is_connect());
    call(server.uri("/").to_string()).await.unwrap();
    use Outcome::*;
    assert_eq!(
        *seen.lock().unwrap(),
        [Success, Failure, Failure, Trip(Duration::from_secs(4))]
    );
}
