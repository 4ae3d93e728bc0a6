//! Alerting: post a JSON alert to a webhook when a breaker opens and when it recovers.
//!
//! ```sh
//! cargo run --example alerting -- http://127.0.0.1:9000/alerts
//! ```
//!
//! Without an argument, it starts its own receiver that prints the alerts.

#[path = "support/webhook.rs"]
mod webhook;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tower_breaker::{CircuitBreaker, Outcome};

use webhook::WebhookAlerter;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let url = match std::env::args().nth(1) {
        Some(url) => url,
        None => format!("http://{}/alerts", print_receiver().await?),
    };
    let (alerter, task) = WebhookAlerter::spawn(url.parse()?);
    let breaker = CircuitBreaker::builder("openai")
        .consecutive_failures(2)
        .open_duration(Duration::from_secs(1))
        .on_event(alerter.listener())
        .build()?;

    for _ in 0..2 {
        breaker.try_acquire()?.record(Outcome::Failure); // opens: alert "opened"
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    breaker.try_acquire()?.record(Outcome::Success); // the probe succeeds: alert "recovered"

    println!("alerts dropped: {}", alerter.dropped());
    drop((breaker, alerter)); // closes the queue; the task posts what is left and ends
    task.await?;
    Ok(())
}

/// A local receiver that prints what it gets.
async fn print_receiver() -> std::io::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|req: http::Request<Incoming>| async move {
                    let body = req.into_body().collect().await?.to_bytes();
                    println!("alert: {}", String::from_utf8_lossy(&body));
                    Ok::<_, hyper::Error>(http::Response::new(Full::new(Bytes::new())))
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}
