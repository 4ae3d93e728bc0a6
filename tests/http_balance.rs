//! `tower::balance::p2c` over three real endpoints, each behind its own `Wait`-mode breaker:
//! a tripped endpoint leaves the ready set and gets no traffic until it half-opens, then
//! rejoins.
//!
//! The I/O runs on the real clock; the open period is an hour and is skipped by hand (pause,
//! advance, resume) while no request is in flight.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use support::{Fault, FaultServer, client, get};
use tower::{
    Service, ServiceBuilder, ServiceExt,
    balance::p2c::Balance,
    discover::ServiceList,
    load::{CompleteOnResponse, PendingRequests},
};
use tower_breaker::{CircuitBreaker, CircuitBreakerLayer, HttpClassifier, Readiness, State};

const HOUR: Duration = Duration::from_secs(3600);

fn endpoint(
    server: &FaultServer,
    breaker: &CircuitBreaker,
) -> PendingRequests<
    impl Service<
        Request<Full<Bytes>>,
        Response = http::Response<hyper::body::Incoming>,
        Error = tower_breaker::BoxError,
    >,
> {
    let authority = server.addr().to_string();
    let svc = ServiceBuilder::new()
        .layer(
            CircuitBreakerLayer::new(breaker.clone())
                .classify(HttpClassifier::default())
                .readiness(Readiness::Wait),
        )
        .timeout(Duration::from_secs(300))
        .map_request(move |mut req: Request<Full<Bytes>>| {
            *req.uri_mut() = format!("http://{authority}{}", req.uri().path()).parse().unwrap();
            req
        })
        .service(client());
    PendingRequests::new(svc, CompleteOnResponse::default())
}

#[tokio::test]
async fn a_tripped_endpoint_gets_no_traffic_until_half_open_then_rejoins() {
    let servers = [
        FaultServer::start(Fault::Status(200)).await,
        FaultServer::start(Fault::Status(500)).await, // the bad one
        FaultServer::start(Fault::Status(200)).await,
    ];
    let breakers: Vec<CircuitBreaker> = (0..3)
        .map(|i| {
            CircuitBreaker::builder(format!("endpoint-{i}"))
                .consecutive_failures(2)
                .open_duration(HOUR)
                .build()
                .unwrap()
        })
        .collect();
    let endpoints: Vec<_> = servers
        .iter()
        .zip(&breakers)
        .map(|(s, b)| endpoint(s, b))
        .collect();
    let mut balance = Balance::new(ServiceList::new(endpoints));
    let uri: http::Uri = "http://balanced/v1".parse().unwrap();

    // Until endpoint 1 has failed twice, some answers are its 500s.
    let mut sent = 0;
    while breakers[1].state() != State::Open {
        let res = balance
            .ready()
            .await
            .unwrap()
            .call(get(uri.clone()))
            .await
            .unwrap();
        assert!(res.status() == 200 || res.status() == 500);
        sent += 1;
        assert!(sent < 500, "p2c never picked endpoint 1");
    }
    assert_eq!(servers[1].hits(), 2);

    // Open: every request goes to the other two, and every one succeeds.
    let before = [servers[0].hits(), servers[2].hits()];
    for _ in 0..60 {
        let res = balance
            .ready()
            .await
            .unwrap()
            .call(get(uri.clone()))
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    assert_eq!(servers[1].hits(), 2, "no traffic to the tripped endpoint");
    assert_eq!(servers[0].hits() + servers[2].hits(), before[0] + before[1] + 60);
    assert!(
        servers[0].hits() > before[0] && servers[2].hits() > before[1],
        "both healthy endpoints served"
    );

    // The upstream recovers; the open period ends (no request in flight while the clock moves).
    servers[1].set_default(Fault::Status(200));
    tokio::time::pause();
    tokio::time::advance(HOUR).await;
    tokio::time::resume();

    let mut sent = 0;
    while servers[1].hits() == 2 {
        let res = balance
            .ready()
            .await
            .unwrap()
            .call(get(uri.clone()))
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        sent += 1;
        assert!(sent < 500, "endpoint 1 never rejoined");
    }
    assert_eq!(breakers[1].state(), State::Closed, "its probe succeeded");
    // ... and it keeps getting its share.
    let rejoined = servers[1].hits();
    for _ in 0..60 {
        balance
            .ready()
            .await
            .unwrap()
            .call(get(uri.clone()))
            .await
            .unwrap();
    }
    assert!(servers[1].hits() > rejoined, "endpoint 1 is back in the rotation");
}
