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

/// A hyper server on 127.0.0.1 that answers every request by calling `svc` (the streaming
/// breaker over a client) for `upstream` and serving the response, body and all, back: a
/// proxy, as axum or the showcase's `--serve` mode would be. hyper stops polling a body once
/// `is_end_stream()` is true after a data frame, and drops it.
async fn proxy(
    svc: tower_breaker::streaming::StreamingBreakerService<
        hyper_util::client::legacy::Client<
            hyper_util::client::legacy::connect::HttpConnector,
            http_body_util::Full<bytes::Bytes>,
        >,
        HttpClassifier,
    >,
    upstream: http::Uri,
) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (svc, upstream) = (svc.clone(), upstream.clone());
            tokio::spawn(async move {
                let handler =
                    hyper::service::service_fn(move |_req: http::Request<hyper::body::Incoming>| {
                        let (svc, upstream) = (svc.clone(), upstream.clone());
                        async move { svc.oneshot(get(upstream)).await.map_err(std::io::Error::other) }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), handler)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn behind_a_hyper_server_a_sized_body_is_recorded_when_it_reports_its_end() {
    // 20 answers of 200 with a sized body, then 4 of 500.
    let upstream = FaultServer::start(Fault::Status(500)).await;
    upstream.script((0..20).map(|_| Fault::Body(200, r#"{"choices":[]}"#)));
    let (builder, seen) = record_outcomes(CircuitBreaker::builder("llm").failure_rate(0.5).min_calls(4));
    let breaker = builder.build().unwrap();
    let svc = ServiceBuilder::new().layer(streaming(&breaker)).service(client());
    let front = proxy(svc, upstream.uri("/v1/chat")).await;

    let real_client = client();
    for i in 0..24 {
        let res = real_client
            .get(format!("http://{front}/").parse().unwrap())
            .await
            .unwrap();
        let status = res.status();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        if i < 20 {
            assert_eq!(status, 200);
            assert_eq!(&body[..], br#"{"choices":[]}"#);
        } else {
            assert_eq!(status, 500);
        }
    }
    // Every success was recorded (once) when its body reported its end, before hyper wrote
    // the last bytes to the client.
    let outcomes = seen.lock().unwrap().clone();
    assert_eq!(outcomes.len(), 24, "{outcomes:?}");
    assert!(outcomes[..20].iter().all(|o| *o == Outcome::Success));
    assert!(outcomes[20..].iter().all(|o| *o == Outcome::Failure));
    let snapshot = breaker.snapshot();
    assert_eq!((snapshot.calls, snapshot.failures), (24, 4));
    assert_eq!(breaker.state(), State::Closed);
}

#[tokio::test]
async fn a_body_read_to_its_last_frame_is_recorded_once() {
    let server = FaultServer::start(Fault::Body(200, "data: all\n\n")).await;
    let (builder, seen) = record_outcomes(CircuitBreaker::builder("llm").consecutive_failures(1));
    let breaker = builder.build().unwrap();
    let svc = ServiceBuilder::new().layer(streaming(&breaker)).service(client());
    let res = svc.oneshot(get(server.uri("/"))).await.unwrap();
    let mut body = res.into_body();
    assert!(body.is_pending());
    let frame = body.frame().await.unwrap().unwrap();
    assert_eq!(&frame.into_data().unwrap()[..], b"data: all\n\n");
    // The last data frame: the body says it ended, and that is the outcome.
    assert!(http_body::Body::is_end_stream(&body));
    assert!(!body.is_pending());
    assert_eq!(*seen.lock().unwrap(), [Outcome::Success]);
    // Polled on to `None` (as `collect` would), nothing more is recorded.
    assert!(body.frame().await.is_none());
    drop(body);
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
    async fn a_full_body_is_recorded_with_its_only_frame_and_an_empty_one_at_the_headers() {
        let (builder, seen) = record_outcomes(CircuitBreaker::builder("s").consecutive_failures(1));
        let breaker = builder.build().unwrap();
        let svc = streaming(&breaker).layer(upstream());
        let mut body = svc.oneshot(()).await.unwrap().into_body();
        assert!(
            body.is_pending(),
            "a body with data is not at its end before a poll"
        );
        assert_eq!(
            &body.frame().await.unwrap().unwrap().into_data().unwrap()[..],
            b"ok"
        );
        assert_eq!(*seen.lock().unwrap(), [Outcome::Success]);

        let empty = service_fn(|_: ()| async {
            Ok::<_, std::io::Error>(http::Response::new(Full::new(Bytes::new())))
        });
        let res = streaming(&breaker).layer(empty).oneshot(()).await.unwrap();
        assert!(!res.body().is_pending(), "recorded at the headers");
        assert_eq!(*seen.lock().unwrap(), [Outcome::Success, Outcome::Success]);
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
