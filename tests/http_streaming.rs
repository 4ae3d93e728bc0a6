//! Streaming responses over real sockets: `StreamingBreakerLayer` records the outcome when
//! the body ends or fails; a body dropped mid-stream is neutral. The default
//! `CircuitBreakerLayer` decides at the headers.
#![cfg(feature = "hyper-util")]

mod support;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use http_body_util::BodyExt;
use support::{Fault, FaultServer, client, get, record_outcomes};
use tower::{ServiceBuilder, ServiceExt};
use tower_breaker::{
    CircuitBreaker, CircuitBreakerLayer, Event, HttpClassifier, Outcome, State,
    streaming::StreamingBreakerLayer,
};

const HOUR: Duration = Duration::from_secs(3600);

fn sse() -> Fault {
    Fault::Stream {
        chunks: vec!["data: one\n\n", "data: two\n\n", "data: [DONE]\n\n"],
        gap: Duration::ZERO,
    }
}

fn streaming(breaker: &CircuitBreaker) -> StreamingBreakerLayer<HttpClassifier> {
    StreamingBreakerLayer::new(breaker.clone()).classify(HttpClassifier::default())
}

#[tokio::test]
async fn a_stream_that_ends_is_a_success_recorded_at_its_end() {
    let server = FaultServer::start(sse()).await;
    let (builder, seen) = record_outcomes(CircuitBreaker::builder("llm").consecutive_failures(1));
    let breaker = builder.build().unwrap();
    let svc = ServiceBuilder::new().layer(streaming(&breaker)).service(client());
    let res = svc.oneshot(get(server.uri("/v1/chat"))).await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(seen.lock().unwrap().is_empty(), "nothing recorded at the headers");
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"data: one\n\ndata: two\n\ndata: [DONE]\n\n");
    assert_eq!(*seen.lock().unwrap(), [Outcome::Success]);
}

#[tokio::test]
async fn a_reset_mid_body_is_a_failure() {
    let server = FaultServer::start(Fault::ResetMidBody {
        chunks: vec!["data: par"],
    })
    .await;
    let (builder, seen) = record_outcomes(CircuitBreaker::builder("llm").consecutive_failures(1));
    let breaker = builder.build().unwrap();
    let svc = ServiceBuilder::new().layer(streaming(&breaker)).service(client());
    let res = svc.oneshot(get(server.uri("/"))).await.unwrap();
    assert_eq!(res.status(), 200);
    let mut body = res.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"data: par");
    assert_eq!(breaker.state(), State::Closed);
    let err = loop {
        match body.frame().await {
            Some(Ok(_)) => continue,
            Some(Err(e)) => break e,
            None => panic!("the body ended cleanly"),
        }
    };
    assert!(
        err.is_incomplete_message() || err.to_string().contains("body"),
        "{err:?}"
    );
    assert_eq!(*seen.lock().unwrap(), [Outcome::Failure]);
    assert_eq!(breaker.state(), State::Open);
}

#[tokio::test]
async fn the_default_layer_decides_at_the_headers() {
    let server = FaultServer::start(Fault::ResetMidBody {
        chunks: vec!["data: par"],
    })
    .await;
    let (builder, seen) = record_outcomes(CircuitBreaker::builder("llm").consecutive_failures(1));
    let breaker = builder.build().unwrap();
    let svc = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(breaker.clone()).classify(HttpClassifier::default()))
        .service(client());
    let res = svc.oneshot(get(server.uri("/"))).await.unwrap();
    assert_eq!(*seen.lock().unwrap(), [Outcome::Success]);
    assert!(res.into_body().collect().await.is_err());
    assert_eq!(
        *seen.lock().unwrap(),
        [Outcome::Success],
        "the broken body is not seen"
    );
    assert_eq!(breaker.state(), State::Closed);
}

#[tokio::test]
async fn a_body_dropped_mid_stream_is_neutral() {
    let server = FaultServer::start(Fault::Stream {
        chunks: vec!["data: a\n\n", "data: b\n\n"],
        gap: HOUR,
    })
    .await;
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let breaker = CircuitBreaker::builder("llm")
        .consecutive_failures(1)
        .on_event(move |e| match e {
            Event::Recorded { outcome, .. } => sink.lock().unwrap().push(format!("recorded {outcome:?}")),
            Event::Released { .. } => sink.lock().unwrap().push("released".into()),
            _ => {}
        })
        .build()
        .unwrap();
    let svc = ServiceBuilder::new().layer(streaming(&breaker)).service(client());
    let res = svc.oneshot(get(server.uri("/"))).await.unwrap();
    assert!(res.body().is_pending());
    drop(res); // the caller gave up on the stream
    assert_eq!(*events.lock().unwrap(), ["released"]);
    assert_eq!(breaker.state(), State::Closed);
    assert_eq!(breaker.snapshot().failures, 0);
}

#[tokio::test]
async fn failing_headers_are_recorded_at_once() {
    let server = FaultServer::start(Fault::Status(200)).await;
    server.script([Fault::Status(503), Fault::retry_after(429, "9")]);
    let (builder, seen) = record_outcomes(CircuitBreaker::builder("llm").consecutive_failures(5));
    let breaker = builder.build().unwrap();
    let svc = ServiceBuilder::new().layer(streaming(&breaker)).service(client());
    let res = svc.clone().oneshot(get(server.uri("/"))).await.unwrap();
    assert_eq!(res.status(), 503);
    assert!(!res.body().is_pending());
    assert_eq!(*seen.lock().unwrap(), [Outcome::Failure]);
    let res = svc.clone().oneshot(get(server.uri("/"))).await.unwrap();
    assert_eq!(res.status(), 429);
    assert_eq!(
        *seen.lock().unwrap(),
        [Outcome::Failure, Outcome::Trip(Duration::from_secs(9))]
    );
    assert_eq!(breaker.state(), State::Open);
}

#[tokio::test]
async fn a_half_open_probe_is_decided_at_the_headers() {
    let server = FaultServer::start(Fault::Status(500)).await;
    let breaker = CircuitBreaker::builder("llm")
        .consecutive_failures(1)
        .open_duration(HOUR)
        .build()
        .unwrap();
    let svc = ServiceBuilder::new().layer(streaming(&breaker)).service(client());
    let res = svc.clone().oneshot(get(server.uri("/"))).await.unwrap();
    assert_eq!(res.status(), 500);
    assert_eq!(breaker.state(), State::Open);

    // No I/O in flight: move the breaker's clock past the open period.
    tokio::time::pause();
    tokio::time::advance(HOUR).await;
    tokio::time::resume();

    server.set_default(Fault::Stream {
        chunks: vec!["data: a\n\n", "data: b\n\n"],
        gap: HOUR,
    });
    let res = svc.clone().oneshot(get(server.uri("/"))).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        breaker.state(),
        State::Closed,
        "the probe closed the breaker at its headers"
    );
    assert!(!res.body().is_pending());
}

mod readiness {
    use super::*;
    use bytes::Bytes;
    use http_body_util::Full;
    use tower::{Layer, Service, service_fn};
    use tower_breaker::{Readiness, is_circuit_open};

    fn upstream() -> impl Service<(), Response = http::Response<Full<Bytes>>, Error = std::io::Error> + Clone
    {
        service_fn(|_: ()| async {
            Ok::<_, std::io::Error>(http::Response::new(Full::new(Bytes::from("ok"))))
        })
    }

    fn open_breaker() -> CircuitBreaker {
        let b = CircuitBreaker::builder("s")
            .consecutive_failures(1)
            .open_duration(Duration::from_secs(10))
            .build()
            .unwrap();
        b.try_acquire().unwrap().record(Outcome::Failure);
        b
    }

    #[tokio::test(start_paused = true)]
    async fn fail_fast_rejects_in_poll_ready() {
        let mut svc = streaming(&open_breaker()).layer(upstream());
        let err = svc.ready().await.err().unwrap();
        assert!(is_circuit_open(&err));
    }

    #[tokio::test(start_paused = true)]
    async fn reject_on_call_rejects_in_call() {
        let mut svc = streaming(&open_breaker())
            .readiness(Readiness::RejectOnCall)
            .layer(upstream());
        let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
        assert!(is_circuit_open(&err));
    }

    #[tokio::test(start_paused = true)]
    async fn wait_is_pending_until_half_open() {
        let breaker = open_breaker();
        let mut svc = streaming(&breaker).readiness(Readiness::Wait).layer(upstream());
        let start = tokio::time::Instant::now();
        let res = svc.ready().await.unwrap().call(()).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        assert_eq!(
            breaker.state(),
            State::Closed,
            "the probe was decided at its headers"
        );
        assert_eq!(&res.into_body().collect().await.unwrap().to_bytes()[..], b"ok");
    }
}

#[tokio::test]
async fn per_service_layers_get_their_own_breakers() {
    use tower::{Layer, Service};
    let server = FaultServer::start(Fault::Status(500)).await;
    let layer = StreamingBreakerLayer::per_service(CircuitBreaker::builder("ep").consecutive_failures(1))
        .unwrap()
        .classify(HttpClassifier::default());
    let mut a = layer.layer(client());
    let mut b = layer.layer(client());
    a.ready().await.unwrap().call(get(server.uri("/"))).await.unwrap();
    assert_eq!(a.breaker().state(), State::Open);
    assert_eq!(b.breaker().state(), State::Closed);
    assert!(b.ready().await.is_ok());
    assert!(
        StreamingBreakerLayer::per_service(CircuitBreaker::builder("none")).is_err(),
        "no trip rule"
    );
}
