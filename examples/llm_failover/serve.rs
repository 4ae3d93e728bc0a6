//! `--serve ADDR`: the failover stack as an OpenAI-compatible proxy.
//!
//! - `POST /v1/chat/completions`: the body goes to the first provider whose breaker lets it
//!   through (its `model` is replaced by that provider's). The answer carries
//!   `x-served-by: <provider>` and, when it came from a fallback, `x-failover: <why>`. When
//!   every breaker is open: `503` with `Retry-After`.
//! - `GET /health/circuit-breakers`: the crate's [`HealthReport`] as JSON (`503` when
//!   critical).
//! - `GET /metrics`: the crate's Prometheus families (feature `prometheus-client`).
//! - `GET /dashboard/`: the crate's live status page, its `snapshot.json` and `events`
//!   (feature `dashboard`; without it, a `501` that names the feature).
//!
//! With features `serde` and `prometheus-client`, the two operations routes are those of
//! `examples/support/health_routes.rs` (the `health` example's). Without them the health route
//! writes a smaller report by hand and `/metrics` says which features it needs.

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited, combinators::UnsyncBoxBody};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tower::ServiceExt;
use tower_breaker::{AllUnavailable, BoxError, CircuitBreaker, fallback::Provenance};

use crate::scenario::{ChatRequest, Member};

/// What the routes need.
#[derive(Clone)]
pub struct Proxy {
    pub chain: Member,
    pub breakers: Vec<CircuitBreaker>,
    /// The registry the breakers' metrics are in.
    #[cfg(feature = "prometheus-client")]
    pub registry: Arc<prometheus_client::registry::Registry>,
    /// The live status page over the breakers.
    #[cfg(feature = "dashboard")]
    pub dashboard: tower_breaker::integrations::dashboard::Dashboard,
}

/// Every route's body: a whole JSON answer, or the dashboard's (which may be an endless event
/// stream).
type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Serves until the process ends.
pub async fn serve(addr: SocketAddr, proxy: Proxy) -> Result<(), BoxError> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    println!("OpenAI-compatible failover proxy on http://{local}/v1/chat/completions");
    println!("breakers: http://{local}/health/circuit-breakers   metrics: http://{local}/metrics");
    println!("dashboard: http://{local}/dashboard/");
    let proxy = Arc::new(proxy);
    loop {
        let (stream, _) = listener.accept().await?;
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| route(proxy.clone(), req));
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                eprintln!("connection error: {e}");
            }
        });
    }
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json(
        status,
        serde_json::json!({"error": {"message": message, "type": "proxy_error"}}),
    )
}

async fn route(proxy: Arc<Proxy>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    if path == "/dashboard" || path.starts_with("/dashboard/") {
        return Ok(dashboard(&proxy, req).await);
    }
    Ok(match (req.method().as_str(), path.as_str()) {
        ("POST", "/v1/chat/completions") => complete(&proxy, req).await,
        ("GET", "/health/circuit-breakers") | ("GET", "/metrics") => operations(&proxy, &path),
        _ => error(StatusCode::NOT_FOUND, "not found"),
    }
    .map(BodyExt::boxed_unsync))
}

/// `/dashboard/...`: the crate's dashboard service, mounted as it is.
#[cfg(feature = "dashboard")]
async fn dashboard(proxy: &Proxy, req: Request<Incoming>) -> Response<Body> {
    let res = proxy.dashboard.service().oneshot(req).await;
    let Ok(res) = res;
    res.map(BodyExt::boxed_unsync)
}

#[cfg(not(feature = "dashboard"))]
async fn dashboard(_: &Proxy, _: Request<Incoming>) -> Response<Body> {
    error(
        StatusCode::NOT_IMPLEMENTED,
        "run the example with --features dashboard for /dashboard",
    )
    .map(BodyExt::boxed_unsync)
}

async fn complete(proxy: &Proxy, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let body = match Limited::new(req.into_body(), 4 << 20).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return error(StatusCode::BAD_REQUEST, "unreadable or too large body"),
    };
    let request = match ChatRequest::from_json(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("invalid JSON body: {e}")),
    };
    match proxy.chain.clone().oneshot(request).await {
        Ok(res) => {
            let (parts, body) = res.into_parts();
            let mut out = Response::builder().status(parts.status);
            if let Some(ct) = parts.headers.get(header::CONTENT_TYPE) {
                out = out.header(header::CONTENT_TYPE, ct);
            }
            if let Some(p) = parts.extensions.get::<Provenance>() {
                out = out.header("x-served-by", p.served_by());
                if let (true, Ok(v)) = (p.fell_back(), HeaderValue::try_from(p.to_string())) {
                    out = out.header("x-failover", v);
                }
            }
            out.body(Full::new(body)).unwrap()
        }
        Err(e) => {
            if let Some(all) = e.downcast_ref::<AllUnavailable>() {
                let mut res = error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string());
                let secs = all
                    .retry_after()
                    .map_or(1, |d| d.as_secs_f64().ceil().max(1.0) as u64);
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                res
            } else {
                error(StatusCode::BAD_GATEWAY, &e.to_string())
            }
        }
    }
}

/// The example `health`'s routes, over this proxy's breakers and registry.
#[cfg(all(feature = "serde", feature = "prometheus-client"))]
fn operations(proxy: &Proxy, path: &str) -> Response<Full<Bytes>> {
    use tower_breaker::keyed::KeyedRegistry;
    static NO_KEYS: std::sync::OnceLock<KeyedRegistry<String>> = std::sync::OnceLock::new();
    let models = NO_KEYS.get_or_init(|| {
        KeyedRegistry::builder(CircuitBreaker::builder("unused").consecutive_failures(1))
            .build()
            .expect("valid registry")
    });
    let ops = crate::health_routes::Ops {
        breakers: proxy.breakers.clone(),
        models: models.clone(),
        prometheus: proxy.registry.clone(),
    };
    crate::health_routes::respond(&ops, path)
}

/// Without `serde` / `prometheus-client`: a smaller health report, and a hint for `/metrics`.
#[cfg(not(all(feature = "serde", feature = "prometheus-client")))]
fn operations(proxy: &Proxy, path: &str) -> Response<Full<Bytes>> {
    if path == "/metrics" {
        return error(
            StatusCode::NOT_IMPLEMENTED,
            "run the example with --features serde,prometheus-client for /metrics",
        );
    }
    use tower_breaker::integrations::health::HealthReport;
    let report = proxy
        .breakers
        .iter()
        .fold(HealthReport::new(), |r, b| r.breaker(b));
    let breakers: serde_json::Map<String, serde_json::Value> = report
        .breakers
        .iter()
        .map(|(name, s)| {
            let retry = s.retry_after.map(|d| d.as_secs_f64());
            (
                name.clone(),
                serde_json::json!({"state": s.state.as_str(), "consecutive_failures": s.consecutive_failures, "retry_after_secs": retry}),
            )
        })
        .collect();
    json(
        report.status(),
        serde_json::json!({"breakers": breakers, "overall": report.overall.as_str()}),
    )
}
