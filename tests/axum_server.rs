//! `examples/axum_server.rs` served on 127.0.0.1 and called with a real hyper-util client: the
//! flaky route trips and answers 503 with `Retry-After`, the healthy route keeps answering
//! 200, an unknown path stays 404, and the flaky route recovers after its open period. Then the
//! pitfall the example avoids: one breaker under `Router::layer` refuses every route.
//! Paused tokio time: the open period passes with `advance`, not on the wall clock.

#[allow(dead_code)]
#[path = "../examples/axum_server.rs"]
mod axum_server;

use std::{borrow::Cow, net::SocketAddr, time::Duration};

use axum::{
    Router, error_handling::HandleErrorLayer, extract::MatchedPath, http::StatusCode, response::IntoResponse,
    routing::get,
};
use bytes::Bytes;
use http::header::RETRY_AFTER;
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_breaker::{
    BoxError, CircuitBreaker, CircuitBreakerLayer, CircuitOpenResponse, HttpClassifier, State,
    integrations::health::HealthReport,
    keyed::{ExtractKey, KeyedCircuitBreakerLayer, KeyedRegistry, UNKNOWN},
};

use axum_server::{Upstream, app, serve};

struct Answer {
    status: StatusCode,
    retry_after: Option<String>,
    body: String,
}

async fn start(router: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, router));
    addr
}

async fn get_path(addr: SocketAddr, path: &str) -> Answer {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let res = client
        .get(format!("http://{addr}{path}").parse().unwrap())
        .await
        .unwrap();
    let status = res.status();
    let retry_after = res
        .headers()
        .get(RETRY_AFTER)
        .map(|v| v.to_str().unwrap().to_owned());
    let body = res.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        retry_after,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

#[tokio::test(start_paused = true)]
async fn flaky_route_trips_to_503_with_retry_after_while_other_routes_and_404_are_untouched() {
    let upstream = Upstream::default();
    let app = app(upstream.clone(), Duration::from_secs(30)).unwrap();
    let (quotes, orders) = (app.quotes.clone(), app.orders.clone());
    let addr = start(app.router).await;

    assert_eq!(get_path(addr, "/quotes").await.status, StatusCode::OK);
    upstream.set_down(true);
    for _ in 0..3 {
        let a = get_path(addr, "/quotes").await;
        assert_eq!(a.status, StatusCode::BAD_GATEWAY, "the handler's own answer");
        assert_eq!(a.retry_after, None);
    }
    assert_eq!(
        quotes.state(),
        State::Open,
        "three 502s in a row trip the route's breaker"
    );
    assert_eq!(upstream.calls(), 4);

    // Open: refused at once, the upstream not called, the wait in the header and the body.
    let a = get_path(addr, "/quotes").await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.retry_after.as_deref(), Some("30"));
    assert_eq!(a.body, r#"circuit "quotes" is open; retry in 30s"#);
    assert_eq!(upstream.calls(), 4);

    // The other guarded route, an unguarded one and an unknown path are not affected.
    let a = get_path(addr, "/orders").await;
    assert_eq!((a.status, a.retry_after), (StatusCode::OK, None));
    assert_eq!(orders.state(), State::Closed);
    let a = get_path(addr, "/health/circuit-breakers").await;
    assert_eq!((a.status, a.body.as_str()), (StatusCode::OK, "degraded\n"));
    let a = get_path(addr, "/nope").await;
    assert_eq!((a.status, a.retry_after), (StatusCode::NOT_FOUND, None));

    // Later in the open period the header counts down, rounded up.
    tokio::time::advance(Duration::from_millis(20_500)).await;
    let a = get_path(addr, "/quotes").await;
    assert_eq!(a.retry_after.as_deref(), Some("10"));
    assert_eq!(a.body, r#"circuit "quotes" is open; retry in 10s"#);

    // The upstream recovers; after the open period the next request is the probe, and closes it.
    upstream.set_down(false);
    tokio::time::advance(Duration::from_millis(9_500)).await;
    let a = get_path(addr, "/quotes").await;
    assert_eq!((a.status, a.body.as_str()), (StatusCode::OK, "quote: 42\n"));
    assert_eq!(quotes.state(), State::Closed);
    assert_eq!(upstream.calls(), 5);
    let a = get_path(addr, "/health/circuit-breakers").await;
    assert_eq!(a.body, "healthy\n");
}

/// Why the example guards each route: one breaker under `Router::layer` wraps every route and
/// the 404 fallback, so once the flaky route trips it, healthy routes and unknown paths are
/// refused too.
#[tokio::test(start_paused = true)]
async fn one_breaker_under_router_layer_refuses_healthy_routes_and_404s() {
    let shared = CircuitBreaker::builder("shared")
        .consecutive_failures(1)
        .build()
        .unwrap();
    let router = Router::new()
        .route("/flaky", get(|| async { StatusCode::BAD_GATEWAY }))
        .route("/healthy", get(|| async { "ok" }))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(|err: BoxError| async move {
                    CircuitOpenResponse::new()
                        .for_error(&err)
                        .unwrap_or_else(|| StatusCode::INTERNAL_SERVER_ERROR.into_response())
                }))
                .layer(CircuitBreakerLayer::new(shared.clone()).classify(HttpClassifier::default())),
        );
    let addr = start(router).await;

    assert_eq!(get_path(addr, "/flaky").await.status, StatusCode::BAD_GATEWAY);
    assert_eq!(shared.state(), State::Open);
    assert_eq!(
        get_path(addr, "/healthy").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        get_path(addr, "/nope").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

/// Many routes, one layer: a keyed registry under `Router::route_layer`, keyed by the route
/// that matched (`MatchedPath`), gives each route a breaker of its own, named after it and
/// reachable through the registry; the 404 fallback is not layered. (`per_service` is not the
/// tool here: axum calls a route layer's `layer` once per method endpoint, and, before the
/// router has its state, once per connection.)
#[tokio::test(start_paused = true)]
async fn a_registry_keyed_by_matched_path_gives_each_route_a_named_breaker() {
    let registry =
        KeyedRegistry::<String>::new(CircuitBreaker::builder("route").consecutive_failures(1)).unwrap();
    let router = Router::new()
        .route("/flaky", get(|| async { StatusCode::BAD_GATEWAY }))
        .route("/items/{id}", get(|| async { "ok" }))
        .route_layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(|err: BoxError| async move {
                    CircuitOpenResponse::new()
                        .for_error(&err)
                        .unwrap_or_else(|| StatusCode::INTERNAL_SERVER_ERROR.into_response())
                }))
                .layer(
                    KeyedCircuitBreakerLayer::new(registry.clone(), RoutePath)
                        .classify(HttpClassifier::default()),
                ),
        );
    let addr = start(router).await;

    assert_eq!(get_path(addr, "/flaky").await.status, StatusCode::BAD_GATEWAY);
    let a = get_path(addr, "/flaky").await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.body, r#"circuit "route:/flaky" is open; retry in 30s"#);
    assert_eq!(a.retry_after.as_deref(), Some("30"));
    for id in [1, 2] {
        assert_eq!(
            get_path(addr, &format!("/items/{id}")).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(get_path(addr, "/nope").await.status, StatusCode::NOT_FOUND);

    let report = HealthReport::new().keyed(&registry);
    let states: Vec<(&str, State)> = report
        .breakers
        .iter()
        .map(|(n, s)| (n.as_str(), s.state))
        .collect();
    assert_eq!(
        states,
        [
            ("route:/flaky", State::Open),
            ("route:/items/{id}", State::Closed)
        ],
        "one breaker per route (not per path), none for the 404"
    );
}

/// The route that matched, borrowed from the request: the key of its breaker.
#[derive(Clone, Copy, Debug)]
struct RoutePath;

impl<B> ExtractKey<http::Request<B>> for RoutePath {
    type Key = str;

    fn extract<'a>(&'a self, req: &'a http::Request<B>) -> Cow<'a, str> {
        Cow::Borrowed(
            req.extensions()
                .get::<MatchedPath>()
                .map_or(UNKNOWN, MatchedPath::as_str),
        )
    }
}
