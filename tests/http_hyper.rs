//! hyper-util's legacy client under the breaker, against a real hyper server with scripted
//! faults: the `HttpClassifier` table over real sockets, and the stack
//! `Retry → CircuitBreaker → Timeout → Client` with `retry::RetryPolicy`.
//!
//! Time: tests whose stack has a `Timeout` run on the real clock with a timeout no test
//! reaches (on a paused clock, tokio would jump to the timeout while the socket is busy),
//! except the timeout tests themselves, where the timeout is the only outcome possible.
#![cfg(all(feature = "hyper-util", feature = "retry"))]

mod support;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use support::{Fault, FaultServer, client, get, record_outcomes};
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_breaker::{
    BoxError, CircuitBreaker, CircuitBreakerLayer, HttpClassifier, Outcome, Readiness, State,
    is_circuit_open, retry::RetryPolicy,
};

const NEVER: Duration = Duration::from_secs(300);

type Outcomes = Arc<Mutex<Vec<Outcome>>>;

fn breaker(consecutive: u32) -> (CircuitBreaker, Outcomes) {
    let (builder, seen) = record_outcomes(
        CircuitBreaker::builder("upstream")
            .consecutive_failures(consecutive)
            .max_open_duration(Duration::from_secs(60)),
    );
    (builder.build().unwrap(), seen)
}

/// `CircuitBreaker → Timeout → Client`.
fn guarded(
    breaker: &CircuitBreaker,
    timeout: Duration,
) -> impl Service<Request<Full<Bytes>>, Response = Response<Incoming>, Error = BoxError> + Clone {
    ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(breaker.clone()).classify(HttpClassifier::default()))
        .timeout(timeout)
        .service(client())
}

#[tokio::test]
async fn each_scripted_status_is_classified_by_the_table() {
    let server = FaultServer::start(Fault::Status(200)).await;
    server.script([
        Fault::Status(200),
        Fault::Status(404),
        Fault::Status(500),
        Fault::Status(502),
        Fault::Status(503),
        Fault::Status(529),
        Fault::Status(408),
        Fault::Status(429),
        Fault::retry_after(429, "soon"),
        Fault::retry_after(503, "-1"),
        Fault::retry_after(429, "Thu, 01 Jan 1970 00:00:00 GMT"), // in the past
        Fault::retry_after(500, "30"),                            // not a Retry-After status
    ]);
    let (breaker, seen) = breaker(100);
    let mut svc = guarded(&breaker, NEVER);
    for _ in 0..12 {
        let res = svc
            .ready()
            .await
            .unwrap()
            .call(get(server.uri("/")))
            .await
            .unwrap();
        assert!(res.status().as_u16() >= 200);
    }
    use Outcome::*;
    assert_eq!(
        *seen.lock().unwrap(),
        [
            Success, Success, Failure, Failure, Failure, Failure, Failure, Failure, Failure, Failure,
            Failure, Failure
        ]
    );
    assert_eq!(breaker.state(), State::Closed);
}

#[tokio::test]
async fn retry_after_seconds_trips_the_breaker_for_that_long() {
    let server = FaultServer::start(Fault::Status(200)).await;
    server.script([Fault::retry_after(429, "7")]);
    let (breaker, seen) = breaker(100);
    let mut svc = guarded(&breaker, NEVER);
    let res = svc
        .ready()
        .await
        .unwrap()
        .call(get(server.uri("/")))
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    assert_eq!(*seen.lock().unwrap(), [Outcome::Trip(Duration::from_secs(7))]);
    assert_eq!(breaker.state(), State::Open);
    let wait = breaker.try_acquire().unwrap_err().retry_after().unwrap();
    assert!(
        wait <= Duration::from_secs(7) && wait > Duration::from_secs(5),
        "{wait:?}"
    );
    // The next call fails fast; the server sees nothing.
    let err = svc.ready().await.err().unwrap();
    assert!(is_circuit_open(&err));
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn retry_after_http_date_trips_the_breaker_until_that_date() {
    let server = FaultServer::start(Fault::Status(200)).await;
    let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
    server.script([Fault::retry_after(503, date)]);
    let (breaker, seen) = breaker(100);
    let mut svc = guarded(&breaker, NEVER);
    svc.ready()
        .await
        .unwrap()
        .call(get(server.uri("/")))
        .await
        .unwrap();
    let seen = seen.lock().unwrap().clone();
    let [Outcome::Trip(wait)] = seen[..] else {
        panic!("{seen:?}")
    };
    // The date has one-second resolution: just under 120 s minus the round trip (generous
    // bounds: a loaded machine may be slow between making the date and reading it).
    assert!(
        wait > Duration::from_secs(100) && wait <= Duration::from_secs(120),
        "{wait:?}"
    );
    // ... and the core clamps it to max_open_duration (60 s here).
    assert_eq!(breaker.state(), State::Open);
    let open_for = breaker.try_acquire().unwrap_err().retry_after().unwrap();
    assert!(
        open_for <= Duration::from_secs(60) && open_for > Duration::from_secs(50),
        "{open_for:?}"
    );
}

#[tokio::test]
async fn huge_retry_after_is_clamped_by_the_core() {
    let server = FaultServer::start(Fault::Status(200)).await;
    server.script([Fault::retry_after(429, "99999999999999999999999")]);
    let (breaker, _) = breaker(100);
    let mut svc = guarded(&breaker, NEVER);
    svc.ready()
        .await
        .unwrap()
        .call(get(server.uri("/")))
        .await
        .unwrap();
    let open_for = breaker.try_acquire().unwrap_err().retry_after().unwrap();
    assert!(open_for <= Duration::from_secs(60), "{open_for:?}");
}

#[tokio::test(start_paused = true)]
async fn slow_response_past_the_timeout_is_a_failure() {
    let server = FaultServer::start(Fault::Slow(Duration::from_secs(10), 200)).await;
    let (breaker, seen) = breaker(100);
    let mut svc = guarded(&breaker, Duration::from_secs(1));
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(get(server.uri("/")))
        .await
        .unwrap_err();
    assert!(err.is::<tower::timeout::error::Elapsed>(), "{err}");
    assert_eq!(*seen.lock().unwrap(), [Outcome::Failure]);
}

#[tokio::test]
async fn reset_before_the_response_is_a_failure() {
    let server = FaultServer::start(Fault::Reset).await;
    let (breaker, seen) = breaker(2);
    let mut svc = guarded(&breaker, NEVER);
    for _ in 0..2 {
        let err = svc
            .ready()
            .await
            .unwrap()
            .call(get(server.uri("/")))
            .await
            .unwrap_err();
        assert!(
            err.downcast_ref::<hyper_util::client::legacy::Error>().is_some(),
            "{err}"
        );
    }
    assert_eq!(*seen.lock().unwrap(), [Outcome::Failure, Outcome::Failure]);
    assert_eq!(breaker.state(), State::Open);
}

/// `Retry → CircuitBreaker → Timeout → Client`.
fn retry_stack(
    breaker: &CircuitBreaker,
    policy: RetryPolicy,
    readiness: Readiness,
) -> impl Service<Request<Full<Bytes>>, Response = Response<Incoming>, Error = BoxError> + Clone {
    ServiceBuilder::new()
        .retry(policy)
        .layer(
            CircuitBreakerLayer::new(breaker.clone())
                .classify(HttpClassifier::default())
                .readiness(readiness),
        )
        .timeout(NEVER)
        .service(client())
}

#[tokio::test]
async fn retry_stops_at_the_open_circuit_fail_fast() {
    let server = FaultServer::start(Fault::Status(500)).await;
    let (breaker, seen) = breaker(3);
    let svc = retry_stack(
        &breaker,
        RetryPolicy::new().no_backoff().max_retries(10),
        Readiness::FailFast,
    );
    let err = svc.oneshot(get(server.uri("/"))).await.unwrap_err();
    assert!(is_circuit_open(&err), "{err}");
    assert_eq!(server.hits(), 3, "the retries stopped when the breaker opened");
    assert_eq!(seen.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn retry_stops_at_the_open_circuit_reject_on_call() {
    let server = FaultServer::start(Fault::Status(502)).await;
    let (breaker, _) = breaker(3);
    let svc = retry_stack(
        &breaker,
        RetryPolicy::new().no_backoff().max_retries(10),
        Readiness::RejectOnCall,
    );
    let err = svc.oneshot(get(server.uri("/"))).await.unwrap_err();
    assert!(is_circuit_open(&err), "{err}");
    assert_eq!(server.hits(), 3);
}

#[tokio::test]
async fn retry_recovers_from_transient_failures() {
    let server = FaultServer::start(Fault::Status(200)).await;
    server.script([Fault::Status(503), Fault::Status(529)]);
    let (breaker, seen) = breaker(3);
    let svc = retry_stack(&breaker, RetryPolicy::new().no_backoff(), Readiness::FailFast);
    let res = svc.oneshot(get(server.uri("/"))).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(server.hits(), 3);
    assert_eq!(
        *seen.lock().unwrap(),
        [Outcome::Failure, Outcome::Failure, Outcome::Success]
    );
    assert_eq!(breaker.state(), State::Closed);
}

#[tokio::test]
async fn retry_gives_up_when_retry_after_exceeds_the_cap() {
    let server = FaultServer::start(Fault::Status(200)).await;
    server.script([Fault::retry_after(429, "3600")]);
    let (breaker, _) = breaker(3);
    let policy = RetryPolicy::new().max_retry_after(Duration::from_secs(30));
    let res = retry_stack(&breaker, policy, Readiness::FailFast)
        .oneshot(get(server.uri("/")))
        .await
        .unwrap();
    assert_eq!(res.status(), 429, "the caller gets the 429 itself");
    assert_eq!(server.hits(), 1);
    assert_eq!(breaker.state(), State::Open);
}

/// No `Timeout` layer here: the clock is paused so that the retry's 5 s wait passes at once,
/// and a timeout would be the next timer tokio jumps to while the socket is busy.
#[tokio::test(start_paused = true)]
async fn retry_waits_out_retry_after_and_its_probe_closes_the_breaker() {
    let server = FaultServer::start(Fault::Status(200)).await;
    server.script([Fault::retry_after(429, "5")]);
    let (breaker, seen) = breaker(3);
    let svc = ServiceBuilder::new()
        .retry(RetryPolicy::new())
        .layer(CircuitBreakerLayer::new(breaker.clone()).classify(HttpClassifier::default()))
        .service(client());
    let start = tokio::time::Instant::now();
    let res = svc.oneshot(get(server.uri("/"))).await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(start.elapsed() >= Duration::from_secs(5), "{:?}", start.elapsed());
    assert_eq!(server.hits(), 2);
    assert_eq!(
        *seen.lock().unwrap(),
        [Outcome::Trip(Duration::from_secs(5)), Outcome::Success]
    );
    assert_eq!(
        breaker.state(),
        State::Closed,
        "the retry was the half-open probe"
    );
}
