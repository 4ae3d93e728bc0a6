//! A health endpoint for circuit breakers, and their metrics for Prometheus.
//!
//! ```sh
//! cargo run --example health --features serde,prometheus-client
//! curl -s localhost:3000/health/circuit-breakers   # {"breakers": {...}, "overall": "degraded"}
//! curl -s localhost:3000/metrics                   # Prometheus text
//! ```
//!
//! The breakers here see simulated traffic: "anthropic" is healthy, model "gpt-4o" of
//! "openai" is failing (its breaker is open), "gpt-4o-mini" works. The report is therefore
//! `degraded`; it would be `critical` (HTTP 503) if every breaker were open.

#[path = "support/health_routes.rs"]
mod health_routes;

use std::{net::SocketAddr, sync::Arc};

use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tower_breaker::{
    CircuitBreaker, Outcome, integrations::prometheus::BreakerMetrics, keyed::KeyedRegistry,
};

use health_routes::{Ops, respond};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut registry = Registry::default();
    let metrics = BreakerMetrics::register(&mut registry);

    let anthropic = metrics.build(CircuitBreaker::builder("anthropic").consecutive_failures(5))?;
    let m = metrics.clone();
    let models = KeyedRegistry::<String>::builder(CircuitBreaker::builder("openai").consecutive_failures(3))
        .map_builder(move |b, key| m.instrument_keyed(b, key))
        .build()?;
    metrics.watch_keyed(&models);

    // Simulated traffic.
    for _ in 0..3 {
        anthropic.try_acquire()?.record(Outcome::Success);
        models.try_acquire("gpt-4o")?.record(Outcome::Failure);
        models.try_acquire("gpt-4o-mini")?.record(Outcome::Success);
    }

    let ops = Ops {
        breakers: vec![anthropic],
        models,
        prometheus: Arc::new(registry),
    };
    let addr: SocketAddr = std::env::var("ADDR")
        .unwrap_or_else(|_| "127.0.0.1:3000".into())
        .parse()?;
    let listener = TcpListener::bind(addr).await?;
    println!(
        "listening on http://{}/health/circuit-breakers and /metrics",
        listener.local_addr()?
    );
    loop {
        let (stream, _) = listener.accept().await?;
        let ops = ops.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: http::Request<Incoming>| {
                let res = respond(&ops, req.uri().path());
                async move { Ok::<_, std::convert::Infallible>(res) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                eprintln!("connection error: {e}");
            }
        });
    }
}
