//! The alerting example's webhook listener, posting to a real hyper receiver on 127.0.0.1.

#[path = "../examples/support/webhook.rs"]
mod webhook;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::{net::TcpListener, sync::mpsc, time::timeout};
use tower_breaker::{CircuitBreaker, Outcome, State};

use webhook::WebhookAlerter;

/// A receiver that forwards (method, path, content type, JSON body) of every request.
async fn receiver() -> (
    std::net::SocketAddr,
    mpsc::UnboundedReceiver<(String, String, String, Value)>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let method = req.method().to_string();
                        let path = req.uri().path().to_string();
                        let ctype = req.headers()[http::header::CONTENT_TYPE]
                            .to_str()
                            .unwrap()
                            .to_string();
                        let body = req.into_body().collect().await?.to_bytes();
                        tx.send((method, path, ctype, serde_json::from_slice(&body).unwrap()))
                            .unwrap();
                        Ok::<_, hyper::Error>(http::Response::new(Full::new(Bytes::new())))
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, rx)
}

async fn next(
    rx: &mut mpsc::UnboundedReceiver<(String, String, String, Value)>,
) -> (String, String, String, Value) {
    // A generous bound that is never what is tested: the alert arrives in milliseconds.
    timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("an alert")
        .unwrap()
}

/// Moves the breaker's clock without sleeping: pause, advance, resume (real sockets need a
/// running clock).
async fn skip(d: Duration) {
    tokio::time::pause();
    tokio::time::advance(d).await;
    tokio::time::resume();
}

#[tokio::test]
async fn alerts_when_a_breaker_opens_and_when_it_recovers_not_on_a_failed_probe() {
    let (addr, mut rx) = receiver().await;
    let (alerter, task) = WebhookAlerter::spawn(format!("http://{addr}/alerts").parse().unwrap());
    let breaker = CircuitBreaker::builder("openai")
        .consecutive_failures(2)
        .open_duration(Duration::from_secs(30))
        .on_event(alerter.listener())
        .build()
        .unwrap();

    breaker.try_acquire().unwrap().record(Outcome::Failure);
    breaker.try_acquire().unwrap().record(Outcome::Failure);
    let (method, path, ctype, alert) = next(&mut rx).await;
    assert_eq!(
        (method.as_str(), path.as_str(), ctype.as_str()),
        ("POST", "/alerts", "application/json")
    );
    assert_eq!(
        alert,
        serde_json::json!({
            "breaker": "openai", "status": "opened", "from": "closed", "to": "open",
            "reason": "consecutive_failures", "open_for_secs": 30.0
        })
    );

    // A failed probe reopens it: the same outage, no new alert.
    skip(Duration::from_secs(30)).await;
    breaker.try_acquire().unwrap().record(Outcome::Failure);
    assert_eq!(breaker.state(), State::Open);

    // A successful probe closes it: "recovered".
    skip(Duration::from_secs(30)).await;
    breaker.try_acquire().unwrap().record(Outcome::Success);
    assert_eq!(breaker.state(), State::Closed);
    let (.., alert) = next(&mut rx).await;
    assert_eq!(
        alert["status"], "recovered",
        "alerts are posted in order; no alert came between: {alert}"
    );
    assert_eq!(alert["from"], "half_open");
    assert_eq!(alert["reason"], "probes_succeeded");
    assert_eq!(alert["open_for_secs"], Value::Null);

    // Forced open and reset by an operator: both alerted.
    breaker.force_open();
    assert_eq!(next(&mut rx).await.3["status"], "opened");
    breaker.reset();
    let (.., alert) = next(&mut rx).await;
    assert_eq!(
        (alert["status"].as_str(), alert["reason"].as_str()),
        (Some("recovered"), Some("reset"))
    );

    assert_eq!(alerter.dropped(), 0);
    drop((breaker, alerter));
    timeout(Duration::from_secs(30), task).await.unwrap().unwrap();
    assert!(rx.try_recv().is_err(), "nothing else was posted");
}

#[test]
fn only_outage_edges_make_alerts() {
    use tower_breaker::{Event, Reason};
    let t = |from, to, reason| Event::Transition {
        name: "x",
        from,
        to,
        reason,
        open_for: None,
        shadow: false,
    };
    assert!(webhook::alert_for(&t(State::Closed, State::Open, Reason::FailureRate)).is_some());
    assert!(webhook::alert_for(&t(State::Open, State::HalfOpen, Reason::OpenElapsed)).is_none());
    assert!(webhook::alert_for(&t(State::HalfOpen, State::Open, Reason::ProbeFailed)).is_none());
    assert!(webhook::alert_for(&t(State::Closed, State::Disabled, Reason::Disabled)).is_none());
    assert!(
        webhook::alert_for(&Event::Rejected {
            name: "x",
            state: State::Open
        })
        .is_none()
    );
}
