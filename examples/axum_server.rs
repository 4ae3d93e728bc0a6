//! A circuit breaker on the server side: an axum app whose `/quotes` route depends on a flaky
//! upstream. The route has a breaker of its own; while it is open, `/quotes` answers `503`
//! with `Retry-After` at once, and every other route (and the 404 of an unknown path) is left
//! alone.
//!
//! ```sh
//! cargo run --example axum_server                               # a short demo against itself
//! cargo run --example axum_server -- --serve 127.0.0.1:3000     # serve, for curl
//! curl -i localhost:3000/quotes                                 # 502 x3 (the upstream is down), then 503
//! curl -i -X POST localhost:3000/upstream/up                    # the upstream recovers
//! curl -i localhost:3000/health/circuit-breakers                # degraded / healthy
//! ```
//!
//! Each guarded route is `route(path, handler.route_layer(guard(breaker)))`: the breaker sees
//! only that route's responses (a 5xx is a failure for `HttpClassifier`), and
//! `HandleErrorLayer` turns its refusal into a response with `CircuitOpenResponse`. A single
//! breaker under `Router::layer` would instead be shared by every route and the 404 fallback:
//! once `/quotes` tripped it, `/orders` and unknown paths would answer 503 too.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    error_handling::HandleErrorLayer,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{MethodRouter, get, post},
};
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_breaker::{
    BoxError, CircuitBreaker, CircuitBreakerLayer, CircuitOpenResponse, ConfigError, HttpClassifier,
    integrations::health::HealthReport,
};

/// The stand-in for what `/quotes` depends on (a pricing API, a database): up or down, and how
/// often it was called.
#[derive(Clone, Debug, Default)]
pub struct Upstream {
    down: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
}

impl Upstream {
    /// Takes the upstream down (`true`) or brings it back.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// How many times a handler called it.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    async fn fetch_quote(&self) -> Result<u32, &'static str> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            Err("quotes upstream failed")
        } else {
            Ok(42)
        }
    }
}

/// The app: its router and the breakers of its guarded routes (for health and metrics).
#[derive(Debug)]
pub struct App {
    /// Serve it with `axum::serve`.
    pub router: Router,
    /// The breaker of `/quotes`.
    pub quotes: CircuitBreaker,
    /// The breaker of `/orders`.
    pub orders: CircuitBreaker,
}

/// Guards one route: `CircuitOpen` (or any other error of the breaker service) becomes a
/// response. `HandleErrorLayer` is outermost: a route must not fail.
fn guard<S: Clone + Send + Sync + 'static>(
    breaker: &CircuitBreaker,
    route: MethodRouter<S>,
) -> MethodRouter<S> {
    route.route_layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(|err: BoxError| async move {
                CircuitOpenResponse::new()
                    .for_error(&err)
                    .unwrap_or_else(|| (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response())
            }))
            .layer(CircuitBreakerLayer::new(breaker.clone()).classify(HttpClassifier::default())),
    )
}

async fn quote(State(upstream): State<Upstream>) -> Response {
    match upstream.fetch_quote().await {
        Ok(q) => format!("quote: {q}\n").into_response(),
        Err(e) => (StatusCode::BAD_GATEWAY, format!("{e}\n")).into_response(),
    }
}

/// Builds the app over `upstream`; `/quotes` opens after 3 failures in a row, for `open_for`.
pub fn app(upstream: Upstream, open_for: Duration) -> Result<App, ConfigError> {
    let quotes = CircuitBreaker::builder("quotes")
        .consecutive_failures(3)
        .open_duration(open_for)
        .build()?;
    let orders = CircuitBreaker::builder("orders")
        .consecutive_failures(3)
        .open_duration(open_for)
        .build()?;
    let breakers = [quotes.clone(), orders.clone()];

    let router = Router::new()
        .route("/quotes", guard(&quotes, get(quote)))
        .route("/orders", guard(&orders, get(|| async { "order 7: shipped\n" })))
        .route(
            "/health/circuit-breakers",
            get(move || {
                let report = breakers.iter().fold(HealthReport::new(), |r, b| r.breaker(b));
                async move { (report.status(), format!("{}\n", report.overall.as_str())) }
            }),
        )
        .route(
            "/upstream/{state}",
            post(
                |State(upstream): State<Upstream>,
                 axum::extract::Path(state): axum::extract::Path<String>| async move {
                    upstream.set_down(state == "down");
                    format!("upstream {state}\n")
                },
            ),
        )
        .with_state(upstream);
    Ok(App {
        router,
        quotes,
        orders,
    })
}

/// Serves `router` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, router: Router) -> std::io::Result<()> {
    axum::serve(listener, router).await
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let serve_at = std::env::args().skip_while(|a| a != "--serve").nth(1);
    let upstream = Upstream::default();
    upstream.set_down(true);

    if let Some(addr) = serve_at {
        let app = app(upstream, Duration::from_secs(30))?;
        let listener = TcpListener::bind(&addr).await?;
        println!(
            "listening on http://{addr} (the quotes upstream is down: POST /upstream/up to bring it back)"
        );
        serve(listener, app.router).await?;
        return Ok(());
    }

    // The demo: the server on a free loopback port, and a client.
    let open_for = Duration::from_secs(2);
    let app = app(upstream.clone(), open_for)?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(serve(listener, app.router));
    let get = |path: &'static str| fetch(addr, path);

    println!("the quotes upstream is down");
    for _ in 0..4 {
        get("/quotes").await?;
    }
    get("/orders").await?;
    get("/nope").await?;
    get("/health/circuit-breakers").await?;
    println!(
        "upstream called {} times (3 failures; the 4th request was refused)",
        upstream.calls()
    );

    println!("\nthe upstream recovers; after the open period ({open_for:?}) the next request is the probe");
    upstream.set_down(false);
    tokio::time::sleep(open_for).await;
    get("/quotes").await?;
    get("/health/circuit-breakers").await?;
    println!("breaker \"quotes\": {:?}", app.quotes.state());
    Ok(())
}

/// GETs `path` with a hyper-util client and prints the answer.
async fn fetch(addr: SocketAddr, path: &str) -> Result<(), BoxError> {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::{client::legacy::Client, rt::TokioExecutor};

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let res = client.get(format!("http://{addr}{path}").parse()?).await?;
    let status = res.status();
    let retry_after = res
        .headers()
        .get(http::header::RETRY_AFTER)
        .map(|v| format!(" [Retry-After: {}]", v.to_str().unwrap_or("?")))
        .unwrap_or_default();
    let body = res.into_body().collect().await?.to_bytes();
    println!(
        "GET {path:<26} -> {status}{retry_after}  {}",
        String::from_utf8_lossy(&body).trim_end()
    );
    Ok(())
}
