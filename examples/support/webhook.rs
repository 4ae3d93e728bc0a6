//! An alerting listener: posts a JSON alert to a webhook when a breaker opens and when it
//! recovers. Shared by `examples/alerting.rs` and its test.
//!
//! Listeners run synchronously inside the breaker, so this one only queues the alert
//! (`try_send` on a bounded channel, never blocking a call); a task posts them in order.
//! A full queue drops alerts and counts them; a failed post is logged and not retried.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use serde_json::{Value, json};
use tokio::{sync::mpsc, task::JoinHandle};
use tower_breaker::{Event, State};

/// The JSON alert for `event`, if it deserves one:
/// - `"opened"` when a breaker that was serving (closed or disabled) opens or is forced open;
/// - `"recovered"` when a breaker that was refusing calls closes.
///
/// A failed half-open probe (half-open → open) is the same outage: no new alert.
pub fn alert_for(event: &Event<'_>) -> Option<Value> {
    let Event::Transition {
        name,
        from,
        to,
        reason,
        open_for,
        ..
    } = *event
    else {
        return None;
    };
    let status = match (from, to) {
        (State::Closed | State::Disabled, State::Open | State::ForcedOpen) => "opened",
        (State::Open | State::HalfOpen | State::ForcedOpen, State::Closed) => "recovered",
        _ => return None,
    };
    Some(json!({
        "breaker": name,
        "status": status,
        "from": from.as_str(),
        "to": to.as_str(),
        "reason": reason.as_str(),
        "open_for_secs": open_for.map(|d| d.as_secs_f64()),
    }))
}

/// Queues alerts for a webhook.
#[derive(Clone, Debug)]
pub struct WebhookAlerter {
    tx: mpsc::Sender<Value>,
    dropped: Arc<AtomicU64>,
}

impl WebhookAlerter {
    /// Starts the task that posts alerts to `url` (call inside a tokio runtime).
    pub fn spawn(url: http::Uri) -> (Self, JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<Value>(1024);
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let task = tokio::spawn(async move {
            while let Some(alert) = rx.recv().await {
                let req = http::Request::post(url.clone())
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(Full::new(Bytes::from(alert.to_string())))
                    .expect("a valid request");
                match client.request(req).await {
                    Ok(res) if res.status().is_success() => {}
                    Ok(res) => eprintln!("alert webhook answered {}", res.status()),
                    Err(e) => eprintln!("alert webhook failed: {e}"),
                }
            }
        });
        let alerter = Self {
            tx,
            dropped: Arc::default(),
        };
        (alerter, task)
    }

    /// The listener to install with `Builder::on_event`.
    pub fn listener(&self) -> impl Fn(&Event<'_>) + Send + Sync + 'static {
        let tx = self.tx.clone();
        let dropped = self.dropped.clone();
        move |event| {
            if let Some(alert) = alert_for(event) {
                if tx.try_send(alert).is_err() {
                    dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Alerts dropped because the queue was full (or the task had stopped).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}
