//! The routes of the health example: `/health/circuit-breakers` (JSON) and `/metrics`
//! (Prometheus text). Shared by `examples/health.rs` and its test.

use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::Full;
use prometheus_client::registry::Registry;
use tower_breaker::{CircuitBreaker, integrations::health::HealthReport, keyed::KeyedRegistry};

/// What the endpoints report on.
#[derive(Clone)]
pub struct Ops {
    /// Single breakers (one per provider).
    pub breakers: Vec<CircuitBreaker>,
    /// Per-model breakers.
    pub models: KeyedRegistry<String>,
    /// The Prometheus registry the breakers' metrics are in.
    pub prometheus: Arc<Registry>,
}

/// Answers one request.
pub fn respond(ops: &Ops, path: &str) -> Response<Full<Bytes>> {
    match path {
        "/health/circuit-breakers" => {
            let report = ops
                .breakers
                .iter()
                .fold(HealthReport::new(), |r, b| r.breaker(b))
                .keyed(&ops.models);
            let body = serde_json::to_vec(&report).expect("a report serialises");
            Response::builder()
                .status(report.status())
                .header(header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body)))
                .unwrap()
        }
        "/metrics" => {
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, &ops.prometheus)
                .expect("encoding to a String");
            Response::builder()
                .header(
                    header::CONTENT_TYPE,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )
                .body(Full::new(Bytes::from(text)))
                .unwrap()
        }
        _ => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::from_static(b"not found\n")))
            .unwrap(),
    }
}
