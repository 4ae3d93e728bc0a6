//! The dashboard's routes over real sockets: a hyper server on 127.0.0.1 serving
//! `Dashboard::service()` under a prefix, and a hyper-util client.
//!
//! - the snapshot JSON names every watched breaker with its state, rates and transitions, and
//!   the top keys of a keyed registry;
//! - the event stream sends a snapshot at once, then a `transition` event when a breaker trips,
//!   and an `action` event for each operator's override (with its origin) and reload;
//! - the page is served at the prefix with its security headers; other methods are refused;
//! - nothing from the requests that went through the breakers (headers, bodies, keys) shows.

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::{
    client::legacy::Client,
    rt::{TokioExecutor, TokioIo},
};
use tokio::net::TcpListener;
use tower::{ServiceBuilder, ServiceExt};
use tower_breaker::{
    BoxError, CircuitBreaker, CircuitBreakerLayer, Outcome,
    breaker::{Origin, Override},
    integrations::dashboard::Dashboard,
    keyed::{Header, KeyedCircuitBreakerLayer, KeyedRegistry},
};

/// Serves `dashboard` under `/ops/dashboard` on a free port.
async fn serve(dashboard: &Dashboard) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = dashboard.service();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = service.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let service = service.clone();
                    async move {
                        if !req.uri().path().starts_with("/ops/dashboard") {
                            let mut res = http::Response::new(Default::default());
                            *res.status_mut() = StatusCode::NOT_FOUND;
                            return Ok::<_, Infallible>(res);
                        }
                        service.oneshot(req).await
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn get(addr: SocketAddr, path: &str) -> (http::response::Parts, Bytes) {
    let res = client()
        .get(format!("http://{addr}{path}").parse().unwrap())
        .await
        .unwrap();
    let (parts, body) = res.into_parts();
    (parts, body.collect().await.unwrap().to_bytes())
}

#[tokio::test]
async fn snapshot_json_shows_each_breaker_and_the_top_keys() {
    let dashboard = Dashboard::new();
    let openai = dashboard
        .build(CircuitBreaker::builder("openai").consecutive_failures(2))
        .unwrap();
    let anthropic = dashboard
        .build(CircuitBreaker::builder("anthropic").consecutive_failures(2))
        .unwrap();
    let d = dashboard.clone();
    let models = KeyedRegistry::<String>::builder(CircuitBreaker::builder("models").consecutive_failures(1))
        .map_builder(move |b, key| d.instrument_keyed(b, key))
        .build()
        .unwrap();
    dashboard.watch_keyed(&models);

    for _ in 0..2 {
        openai.try_acquire().unwrap().record(Outcome::Failure);
        anthropic.try_acquire().unwrap().record(Outcome::Success);
    }
    models.try_acquire("gpt-4o").unwrap().record(Outcome::Failure);
    models
        .try_acquire("gpt-4o-mini")
        .unwrap()
        .record(Outcome::Success);
    dashboard.sample();

    let addr = serve(&dashboard).await;
    let (parts, body) = get(addr, "/ops/dashboard/snapshot.json").await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(parts.headers["content-type"], "application/json");
    assert_eq!(parts.headers["cache-control"], "no-store");
    assert_eq!(parts.headers["x-content-type-options"], "nosniff");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let breakers = v["breakers"].as_array().unwrap();
    assert_eq!(breakers.len(), 2);
    assert_eq!(breakers[0]["name"], "openai");
    assert_eq!(breakers[0]["state"], "open");
    assert!(breakers[0]["retry_after_secs"].as_f64().unwrap() > 0.0);
    assert_eq!(breakers[0]["transitions"][0]["reason"], "consecutive_failures");
    assert_eq!(breakers[1]["name"], "anthropic");
    assert_eq!(breakers[1]["state"], "closed");
    assert_eq!(
        breakers[1]["history"]["state"]
            .as_array()
            .unwrap()
            .last()
            .unwrap(),
        "closed"
    );
    let reg = &v["registries"][0];
    assert_eq!(reg["name"], "models");
    assert_eq!(reg["keys"], 2);
    // Equal rejections (none in the interval): the open key first.
    assert_eq!(reg["top"][0]["key"], "gpt-4o");
    assert_eq!(reg["top"][0]["state"], "open");
    assert_eq!(reg["top"][1]["key"], "gpt-4o-mini");
    assert_eq!(reg["top"][1]["state"], "closed");
}

#[tokio::test]
async fn the_event_stream_sends_a_snapshot_then_each_transition() {
    let dashboard = Dashboard::new();
    let openai = dashboard
        .build(CircuitBreaker::builder("openai").consecutive_failures(1))
        .unwrap();
    let addr = serve(&dashboard).await;
    let res = client()
        .get(format!("http://{addr}/ops/dashboard/events").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    assert_eq!(res.headers()["cache-control"], "no-store");
    let mut body = res.into_body();
    let mut text = String::new();
    // Reads frames until `text` contains `what` (10 s at most: a hang fails the test).
    let mut read_until = async |what: &str, text: &mut String| {
        tokio::time::timeout(Duration::from_secs(10), async {
            while !text.contains(what) {
                let frame = body.frame().await.expect("the stream never ends").unwrap();
                if let Ok(data) = frame.into_data() {
                    text.push_str(std::str::from_utf8(&data).unwrap());
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {what:?} in 10 s; got {text:?}"));
    };
    read_until("event: snapshot\n", &mut text).await;
    assert!(
        text.starts_with("retry: 2000\n\nevent: snapshot\ndata: {"),
        "{text}"
    );
    assert!(text.contains(r#""name":"openai","state":"closed""#), "{text}");

    text.clear();
    openai.try_acquire().unwrap().record(Outcome::Failure);
    read_until("event: transition\n", &mut text).await;
    let line = text
        .lines()
        .skip_while(|l| *l != "event: transition")
        .nth(1)
        .unwrap();
    let event: serde_json::Value = serde_json::from_str(line.strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(event["breaker"], "openai");
    assert_eq!(event["from"], "closed");
    assert_eq!(event["to"], "open");
    assert_eq!(event["reason"], "consecutive_failures");
    assert_eq!(event["open_for_secs"], 30.0);

    // The next periodic snapshot shows it open too.
    text.clear();
    read_until("event: snapshot\n", &mut text).await;
    read_until("\n\n", &mut text).await;
    assert!(text.contains(r#""name":"openai","state":"open""#), "{text}");
}

#[tokio::test]
async fn the_page_is_served_at_its_prefix_and_only_read() {
    let dashboard = Dashboard::builder().title("checkout-api").build().unwrap();
    let addr = serve(&dashboard).await;
    for path in ["/ops/dashboard", "/ops/dashboard/", "/ops/dashboard/index.html"] {
        let (parts, body) = get(addr, path).await;
        assert_eq!(parts.status, StatusCode::OK, "{path}");
        assert_eq!(parts.headers["content-type"], "text/html; charset=utf-8");
        let csp = parts.headers["content-security-policy"].to_str().unwrap();
        assert!(csp.starts_with("default-src 'none'"), "{csp}");
        assert!(csp.contains("connect-src 'self'"), "{csp}");
        let html = std::str::from_utf8(&body).unwrap();
        assert!(html.starts_with("<!doctype html>"));
        assert!(html.contains("new EventSource(base + 'events')"));
        assert!(html.contains("addEventListener('action'"));
        // Self-contained: no script, style or font from elsewhere.
        assert!(!html.contains("src=\"http") && !html.contains("href=\"http") && !html.contains("@import"));
    }
    for method in [Method::POST, Method::PUT, Method::DELETE] {
        let req = Request::builder()
            .method(method.clone())
            .uri(format!("http://{addr}/ops/dashboard/snapshot.json"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let res = client().request(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(res.headers()["allow"], "GET, HEAD");
    }
    let (_, body) = get(addr, "/ops/dashboard/snapshot.json").await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["title"], "checkout-api");
}

#[tokio::test]
async fn no_request_data_reaches_the_page() {
    let dashboard = Dashboard::new();
    let upstream = dashboard
        .build(CircuitBreaker::builder("upstream").consecutive_failures(1))
        .unwrap();
    let d = dashboard.clone();
    let models = KeyedRegistry::<String>::builder(CircuitBreaker::builder("models").consecutive_failures(1))
        .map_builder(move |b, key| d.instrument_keyed(b, key))
        .build()
        .unwrap();
    dashboard.watch_keyed(&models);
    let failing = tower::service_fn(|req: Request<String>| async move {
        Err::<http::Response<()>, BoxError>(format!("upstream refused {}", req.body()).into())
    });
    let svc = ServiceBuilder::new()
        .layer(KeyedCircuitBreakerLayer::new(
            models.clone(),
            Header::new("x-model"),
        ))
        .layer(CircuitBreakerLayer::new(upstream.clone()))
        .service(failing);
    let request = || {
        Request::post("/v1/chat/completions")
            .header("authorization", "Bearer sk-live-SECRET-KEY")
            .header("x-model", "gpt-4o")
            .body("a confidential prompt".to_string())
            .unwrap()
    };
    for _ in 0..3 {
        let _ = svc.clone().oneshot(request()).await;
    }
    dashboard.sample();
    let addr = serve(&dashboard).await;
    let (_, body) = get(addr, "/ops/dashboard/snapshot.json").await;
    let json = std::str::from_utf8(&body).unwrap();
    assert!(json.contains(r#""name":"upstream","state":"open""#), "{json}");
    assert!(json.contains(r#""key":"gpt-4o""#), "{json}");
    for secret in [
        "sk-live",
        "SECRET",
        "Bearer",
        "confidential",
        "authorization",
        "chat/completions",
    ] {
        assert!(!json.contains(secret), "{secret:?} in {json}");
    }
}

/// Reads the event stream of `body` until a frame of `kind` arrives, and returns its data.
async fn next_event(body: &mut Incoming, text: &mut String, kind: &str) -> serde_json::Value {
    let head = format!("event: {kind}\ndata: ");
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(at) = text.find(&head) {
                if let Some(end) = text[at..].find("\n\n") {
                    let data = text[at + head.len()..at + end].to_string();
                    text.drain(..at + end + 2);
                    return serde_json::from_str(&data).unwrap();
                }
            }
            let frame = body.frame().await.expect("the stream never ends").unwrap();
            if let Ok(data) = frame.into_data() {
                text.push_str(std::str::from_utf8(&data).unwrap());
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {kind:?} event in 10 s; got {text:?}"))
}

#[tokio::test]
async fn the_event_stream_carries_overrides_reloads_and_shadow_transitions() {
    let dashboard = Dashboard::new();
    let openai = dashboard
        .build(
            CircuitBreaker::builder("openai")
                .consecutive_failures(1)
                .shadow(true),
        )
        .unwrap();
    let addr = serve(&dashboard).await;
    let res = client()
        .get(format!("http://{addr}/ops/dashboard/events").parse().unwrap())
        .await
        .unwrap();
    let mut body = res.into_body();
    let mut text = String::new();
    let snapshot = next_event(&mut body, &mut text, "snapshot").await;
    assert_eq!(snapshot["breakers"][0]["shadow"], true);
    assert_eq!(snapshot["breakers"][0]["would_reject"], 0);

    // A notional trip: the transition says so.
    openai.try_acquire().unwrap().record(Outcome::Failure);
    let t = next_event(&mut body, &mut text, "transition").await;
    assert_eq!(
        (&t["breaker"], &t["to"], &t["shadow"]),
        (&"openai".into(), &"open".into(), &true.into())
    );

    // Another replica's force-open: the action, then the transition it causes.
    openai.apply_override(Override::ForceOpen, Origin::Remote("web-2-4242"));
    let a = next_event(&mut body, &mut text, "action").await;
    assert_eq!(a["breaker"], "openai");
    assert_eq!(a["key"], serde_json::Value::Null);
    assert_eq!(a["action"], "force_open");
    assert_eq!(a["origin"], "web-2-4242");
    assert_eq!(a["local"], false);
    let t = next_event(&mut body, &mut text, "transition").await;
    assert_eq!(
        (&t["to"], &t["reason"]),
        (&"forced_open".into(), &"remote".into())
    );

    // A local reset, and a reload that switches shadow mode off.
    openai.reset();
    let a = next_event(&mut body, &mut text, "action").await;
    assert_eq!(
        (&a["action"], &a["origin"], &a["local"]),
        (&"reset".into(), &"local".into(), &true.into())
    );
    openai
        .reconfigure(
            CircuitBreaker::builder("openai")
                .consecutive_failures(3)
                .shadow(false),
        )
        .unwrap();
    let a = next_event(&mut body, &mut text, "action").await;
    assert_eq!((&a["action"], &a["shadow"]), (&"reload".into(), &false.into()));

    // The snapshot keeps them, newest first.
    let (_, body) = get(addr, "/ops/dashboard/snapshot.json").await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let actions: Vec<&str> = v["breakers"][0]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["reload", "reset", "force_open"]);
    assert_eq!(v["breakers"][0]["shadow"], false);
}
