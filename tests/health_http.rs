//! The health example's routes, served by a real hyper server on 127.0.0.1 and read with a
//! real hyper-util client.
#![cfg(all(feature = "serde", feature = "prometheus-client"))]

#[path = "../examples/support/health_routes.rs"]
mod health_routes;

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::{
    client::legacy::Client,
    rt::{TokioExecutor, TokioIo},
};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tower_breaker::{
    CircuitBreaker, Outcome, integrations::prometheus::BreakerMetrics, keyed::KeyedRegistry,
};

use health_routes::{Ops, respond};

async fn serve(ops: Ops) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let ops = ops.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<Incoming>| {
                    let res = respond(&ops, req.uri().path());
                    async move { Ok::<_, std::convert::Infallible>(res) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

async fn get(addr: std::net::SocketAddr, path: &str) -> (http::StatusCode, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let res = client
        .get(format!("http://{addr}{path}").parse().unwrap())
        .await
        .unwrap();
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn health_and_metrics_endpoints_answer_over_http() {
    let mut registry = Registry::default();
    let metrics = BreakerMetrics::register(&mut registry);
    let anthropic = metrics
        .build(CircuitBreaker::builder("anthropic").consecutive_failures(1))
        .unwrap();
    let m = metrics.clone();
    let models = KeyedRegistry::<String>::builder(CircuitBreaker::builder("openai").consecutive_failures(1))
        .map_builder(move |b, key| m.instrument_keyed(b, key))
        .build()
        .unwrap();
    metrics.watch_keyed(&models);
    models.try_acquire("gpt-4o").unwrap().record(Outcome::Failure);
    anthropic.try_acquire().unwrap().record(Outcome::Success);
    let ops = Ops {
        breakers: vec![anthropic.clone()],
        models: models.clone(),
        prometheus: Arc::new(registry),
    };
    let addr = serve(ops).await;

    let (status, body) = get(addr, "/health/circuit-breakers").await;
    assert_eq!(status, http::StatusCode::OK);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["overall"], "degraded");
    assert_eq!(json["breakers"]["openai:gpt-4o"]["state"], "open");
    assert_eq!(json["breakers"]["anthropic"]["state"], "closed");
    assert!(
        json["breakers"]["openai:gpt-4o"]["retry_after_secs"]
            .as_f64()
            .unwrap()
            > 29.0
    );

    anthropic.force_open();
    let (status, body) = get(addr, "/health/circuit-breakers").await;
    assert_eq!(status, http::StatusCode::SERVICE_UNAVAILABLE);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["overall"], "critical");

    let (status, text) = get(addr, "/metrics").await;
    assert_eq!(status, http::StatusCode::OK);
    assert!(
        text.contains(r#"circuit_breaker_state{breaker="anthropic"} 3.0"#),
        "{text}"
    );
    assert!(text.contains(r#"circuit_breaker_state{breaker="openai:gpt-4o",key="gpt-4o"} 1.0"#));
    assert!(text.contains(
        r#"circuit_breaker_calls_total{breaker="openai:gpt-4o",key="gpt-4o",outcome="failure"} 1"#
    ));
    assert!(text.contains("# EOF"));

    assert_eq!(get(addr, "/nope").await.0, http::StatusCode::NOT_FOUND);
}
