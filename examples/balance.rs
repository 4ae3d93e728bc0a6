//! Load balancing around a tripped endpoint: `tower::balance::p2c` over three local HTTP
//! endpoints, each behind its own circuit breaker in `Wait` mode. While an endpoint's breaker
//! is open its `poll_ready` is `Pending`, so the balancer routes around it; when the breaker
//! half-opens, the endpoint rejoins with a probe.
//!
//! Run it with `cargo run --example balance`.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::{client::legacy::Client, rt::TokioExecutor, rt::TokioIo};
use tower::{
    Service, ServiceBuilder, ServiceExt,
    balance::p2c::Balance,
    discover::ServiceList,
    load::{CompleteOnResponse, PendingRequests},
};
use tower_breaker::{BoxError, CircuitBreaker, CircuitBreakerLayer, HttpClassifier, Readiness};

/// A local endpoint that answers 200, or 503 while `failing` is set, and counts its requests.
struct Endpoint {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
}

async fn start_endpoint() -> Endpoint {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let failing = Arc::new(AtomicBool::new(false));
    let (h, f) = (hits.clone(), failing.clone());
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (h, f) = (h.clone(), f.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req: Request<hyper::body::Incoming>| {
                    h.fetch_add(1, Ordering::SeqCst);
                    let status = if f.load(Ordering::SeqCst) {
                        StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        StatusCode::OK
                    };
                    async move {
                        Ok::<_, Infallible>(
                            Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::new()))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Endpoint { addr, hits, failing }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let endpoints = [
        start_endpoint().await,
        start_endpoint().await,
        start_endpoint().await,
    ];
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();

    let mut breakers = Vec::new();
    let mut services = Vec::new();
    for (i, ep) in endpoints.iter().enumerate() {
        let breaker = CircuitBreaker::builder(format!("endpoint-{i}"))
            .consecutive_failures(2)
            .open_duration(Duration::from_secs(1))
            .build()?;
        let authority = ep.addr.to_string();
        let svc = ServiceBuilder::new()
            .layer(
                CircuitBreakerLayer::new(breaker.clone())
                    .classify(HttpClassifier::default())
                    .readiness(Readiness::Wait), // open: Pending, so p2c routes around it
            )
            .timeout(Duration::from_secs(5))
            .map_request(move |mut req: Request<Full<Bytes>>| {
                *req.uri_mut() = format!("http://{authority}/").parse().unwrap();
                req
            })
            .service(client.clone());
        services.push(PendingRequests::new(svc, CompleteOnResponse::default()));
        breakers.push(breaker);
    }
    let mut balance = Balance::new(ServiceList::new(services));

    let report = |step: &str| {
        let hits: Vec<_> = endpoints.iter().map(|e| e.hits.load(Ordering::SeqCst)).collect();
        let states: Vec<_> = breakers.iter().map(|b| b.state().as_str()).collect();
        println!("{step:<44} hits {hits:?}  breakers {states:?}");
    };

    let mut send = async |n: usize| -> Result<Vec<u16>, BoxError> {
        let mut statuses = Vec::new();
        for _ in 0..n {
            let req = Request::get("http://balanced/").body(Full::new(Bytes::new()))?;
            statuses.push(balance.ready().await?.call(req).await?.status().as_u16());
        }
        Ok(statuses)
    };

    send(30).await?;
    report("30 requests, all endpoints healthy:");

    endpoints[1].failing.store(true, Ordering::SeqCst);
    while breakers[1].state().as_str() != "open" {
        send(1).await?;
    }
    report("endpoint 1 answers 503 until it trips:");

    let statuses = send(30).await?;
    report("30 more requests while it is open:");
    println!("  all 200: {}", statuses.iter().all(|s| *s == 200));

    endpoints[1].failing.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await; // the open period ends
    send(30).await?;
    report("after 1 s it half-opens, probes, rejoins:");
    Ok(())
}
