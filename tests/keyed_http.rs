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

/// The key of the JSON-body test: the model of a chat completion.
#[derive(Clone, Debug)]
struct Model(String);

impl AsRef<str> for Model {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

fn model_of(body: &[u8]) -> Model {
    #[derive(serde::Deserialize)]
    struct Chat {
        model: String,
    }
    Model(
        serde_json::from_slice::<Chat>(body)
            .map(|c| c.model)
            .unwrap_or_default(),
    )
}

#[tokio::test]
async fn a_per_model_breaker_keyed_by_the_json_body_through_map_request_and_extensions() {
    use http_body_util::BodyExt;
    use tower_breaker::keyed::Extension;

    // An OpenAI-style server: gpt-4o is overloaded (529), other models answer.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let h = h.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    h.fetch_add(1, Ordering::SeqCst);
                    async move {
                        let body = req.into_body().collect().await?.to_bytes();
                        let status = if model_of(&body).0 == "gpt-4o" { 529 } else { 200 };
                        let mut res = Response::new(Full::new(Bytes::from_static(b"{}")));
                        *res.status_mut() = StatusCode::from_u16(status).unwrap();
                        Ok::<_, hyper::Error>(res)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });

    let registry = KeyedRegistry::<String>::new(
        CircuitBreaker::builder("openai")
            .consecutive_failures(2)
            .open_duration(Duration::from_secs(60)),
    )
    .unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let svc = ServiceBuilder::new()
        // The body is in memory: read the model, put it in the extensions, send the body on.
        .map_request(|req: Request<Bytes>| {
            let model = model_of(req.body());
            let (mut parts, body) = req.into_parts();
            parts.extensions.insert(model);
            Request::from_parts(parts, Full::new(body))
        })
        .layer(
            KeyedCircuitBreakerLayer::new(registry.clone(), Extension::<Model>::new()).classify(
                |r: Result<&Response<Incoming>, &hyper_util::client::legacy::Error>| match r {
                    Ok(res) if res.status().is_server_error() => Outcome::Failure,
                    Ok(_) => Outcome::Success,
                    Err(_) => Outcome::Failure,
                },
            ),
        )
        .service(client);
    let chat = |model: &str| {
        Request::post(format!("http://{addr}/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(Bytes::from(format!(
                r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#
            )))
            .unwrap()
    };

    for _ in 0..2 {
        let res = svc.clone().oneshot(chat("gpt-4o")).await.unwrap();
        assert_eq!(res.status().as_u16(), 529);
    }
    let err = svc.clone().oneshot(chat("gpt-4o")).await.unwrap_err();
    let open = err
        .downcast_ref::<CircuitOpen>()
        .expect("gpt-4o's breaker refused");
    assert_eq!(open.name(), "openai:gpt-4o");
    assert_eq!(hits.load(Ordering::SeqCst), 2, "the refused call never left");
    for model in ["gpt-4o-mini", "o3"] {
        assert_eq!(svc.clone().oneshot(chat(model)).await.unwrap().status(), 200);
    }
    // A body without a model keys as "unknown".
    let res = svc
        .clone()
        .oneshot(
            Request::post(format!("http://{addr}/v1/chat/completions"))
                .body(Bytes::from_static(b"not json"))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut keys: Vec<String> = registry.snapshot().into_iter().map(|(k, _)| k).collect();
    keys.sort();
    assert_eq!(keys, ["gpt-4o", "gpt-4o-mini", "o3", "unknown"]);
}
