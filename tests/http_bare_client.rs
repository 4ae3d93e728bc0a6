//! A breaker with `HttpClassifier` directly over a bare hyper-util legacy `Client` (no
//! `Timeout` to box its errors) compiles with the crate's default features and classifies
//! real responses and errors from a real hyper server. `.ci/run` runs this file with the
//! default features (`cargo test --test http_bare_client`), not only with `--all-features`.

mod support;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use support::{Fault, FaultServer, get};
use tower::{Service, ServiceExt};
use tower_breaker::{CircuitBreaker, CircuitBreakerLayer, CircuitOpen, HttpClassifier, Layer, State};

#[tokio::test]
async fn breaker_with_http_classifier_over_a_bare_legacy_client() {
    let server = FaultServer::start(Fault::Status(200)).await;
    let breaker = CircuitBreaker::builder("upstream")
        .consecutive_failures(2)
        .build()
        .unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    // Exactly the first composition a user writes: no `.timeout()`, no `map_err`.
    let mut svc = CircuitBreakerLayer::new(breaker.clone())
        .classify(HttpClassifier::default())
        .layer(client);

    let res = svc
        .ready()
        .await
        .unwrap()
        .call(get(server.uri("/")))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    server.script([Fault::Status(500), Fault::Status(503)]);
    for _ in 0..2 {
        let res = svc
            .ready()
            .await
            .unwrap()
            .call(get(server.uri("/")))
            .await
            .unwrap();
        assert!(res.status().is_server_error());
    }
    assert_eq!(breaker.state(), State::Open, "two 5xx in a row trip it");
    let hits = server.hits();
    let err = svc.ready().await.unwrap_err();
    assert_eq!(err.downcast_ref::<CircuitOpen>().unwrap().name(), "upstream");
    assert_eq!(server.hits(), hits, "an open circuit sends nothing");
}

#[tokio::test]
async fn a_refused_connection_from_a_bare_client_is_a_failure() {
    // A port with no listener: bind one, note its address, close it.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let breaker = CircuitBreaker::builder("gone")
        .consecutive_failures(1)
        .build()
        .unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let svc = CircuitBreakerLayer::new(breaker.clone())
        .classify(HttpClassifier::default())
        .layer(client);

    let uri: http::Uri = format!("http://{addr}/").parse().unwrap();
    let err = svc.oneshot(get(uri)).await.unwrap_err();
    // The classifier saw hyper-util's own error type (a connect error), not a boxed one.
    assert!(err.is::<hyper_util::client::legacy::Error>());
    assert_eq!(breaker.state(), State::Open);
}
