//! Per-host breakers in front of a real hyper-util client, against real hyper servers on
//! 127.0.0.1: a failing host is cut off without touching the healthy one.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{Empty, Full};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::{
    client::legacy::Client,
    rt::{TokioExecutor, TokioIo},
};
use tokio::net::TcpListener;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_breaker::{
    CircuitBreaker, CircuitOpen, Outcome,
    keyed::{Authority, KeyedCircuitBreakerLayer, KeyedRegistry},
};

/// A server answering every request with `status`; returns its address and a hit counter.
async fn server(status: StatusCode) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let h = h.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req: Request<Incoming>| {
                    h.fetch_add(1, Ordering::SeqCst);
                    async move {
                        let mut res = Response::new(Full::new(Bytes::from_static(b"{}")));
                        *res.status_mut() = status;
                        Ok::<_, std::convert::Infallible>(res)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, hits)
}

#[tokio::test]
async fn a_failing_host_is_cut_off_and_the_healthy_one_keeps_serving() {
    let (down, down_hits) = server(StatusCode::BAD_GATEWAY).await;
    let (up, up_hits) = server(StatusCode::OK).await;

    let registry = KeyedRegistry::<String>::new(
        CircuitBreaker::builder("upstream")
            .consecutive_failures(3)
            .open_duration(Duration::from_secs(60)),
    )
    .unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut svc = ServiceBuilder::new()
        .layer(
            KeyedCircuitBreakerLayer::new(registry.clone(), Authority::new()).classify(
                |r: Result<&Response<Incoming>, &hyper_util::client::legacy::Error>| match r {
                    Ok(res) if res.status().is_server_error() => Outcome::Failure,
                    Ok(_) => Outcome::Success,
                    Err(_) => Outcome::Failure,
                },
            ),
        )
        .service(client);
    let get = |addr: std::net::SocketAddr| {
        Request::get(format!("http://{addr}/v1/chat/completions"))
            .body(Empty::<Bytes>::new())
            .unwrap()
    };

    for _ in 0..3 {
        let res = svc.ready().await.unwrap().call(get(down)).await.unwrap();
        assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
    }
    assert_eq!(down_hits.load(Ordering::SeqCst), 3);

    for _ in 0..5 {
        let err = svc.ready().await.unwrap().call(get(down)).await.unwrap_err();
        let open = err.downcast_ref::<CircuitOpen>().expect("refused by the breaker");
        assert_eq!(open.name(), format!("upstream:{down}"));
        let res = svc.ready().await.unwrap().call(get(up)).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    assert_eq!(
        down_hits.load(Ordering::SeqCst),
        3,
        "no request reached the failing host"
    );
    assert_eq!(up_hits.load(Ordering::SeqCst), 5);

    let mut snap = registry.snapshot();
    snap.sort_by(|a, b| a.1.name.cmp(&b.1.name));
    let states: Vec<_> = snap.iter().map(|(k, s)| (k.clone(), s.state)).collect();
    assert!(states.contains(&(down.to_string(), tower_breaker::State::Open)));
    assert!(states.contains(&(up.to_string(), tower_breaker::State::Closed)));
}
