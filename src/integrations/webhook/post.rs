//! Posting one alert: the https client, one attempt with its timeout, retries with backoff.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

use super::{Format, alert::Alert, shared::Shared};
use crate::{breaker::Backoff, classify::parse_retry_after};

/// The most of a receiver's answer that is read (then dropped), so that its connection can be
/// reused.
const MAX_ANSWER: usize = 64 * 1024;

/// What posting needs, shared by every delivery.
pub(super) struct Poster {
    pub(super) client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    pub(super) url: Uri,
    pub(super) headers: HeaderMap,
    pub(super) format: Format,
    pub(super) timeout: Duration,
    pub(super) retries: u32,
    pub(super) backoff: Backoff,
    /// The longest wait between attempts (a receiver's `Retry-After` is capped at it).
    pub(super) max_wait: Duration,
}

/// The https client: rustls with ring and Mozilla's roots; plain http as it is.
pub(super) fn client() -> Client<HttpsConnector<HttpConnector>, Full<Bytes>> {
    let connector = HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
        // ring's provider supports rustls' safe default protocol versions: never an error.
        .unwrap_or_else(|_| HttpsConnectorBuilder::new().with_webpki_roots())
        .https_or_http()
        .enable_http1()
        .build();
    Client::builder(TokioExecutor::new()).build(connector)
}

/// Why an attempt failed, and whether another may succeed.
struct Failed {
    error: String,
    retry: bool,
    /// The receiver's `Retry-After`.
    wait: Option<Duration>,
}

impl Poster {
    /// Posts `alert`, retrying as configured; counts the result in `shared`.
    pub(super) async fn deliver(self: Arc<Self>, alert: Alert, shared: Arc<Shared>) {
        let body = Bytes::from(alert.body(self.format));
        let mut attempt = 0;
        let failed = loop {
            match self.attempt(body.clone()).await {
                Ok(()) => {
                    shared.count_sent();
                    return;
                }
                Err(f) if !f.retry || attempt >= self.retries => break f,
                Err(f) => {
                    tracing::debug!(breaker = %alert.breaker, error = %f.error, attempt, "webhook: alert not delivered; retrying");
                    shared.count_retry();
                    let wait = self
                        .backoff
                        .next(attempt)
                        .max(f.wait.unwrap_or_default().min(self.max_wait));
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
            }
        };
        tracing::warn!(
            breaker = %alert.breaker, alert = %alert.kind, host = self.url.host().unwrap_or(""),
            error = %failed.error, attempts = attempt + 1,
            "webhook: alert dropped"
        );
        shared.count_failed(failed.error);
    }

    async fn attempt(&self, body: Bytes) -> Result<(), Failed> {
        let mut request = Request::post(self.url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(
                header::USER_AGENT,
                concat!("tower-breaker/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(body))
            .map_err(|e| Failed {
                error: format!("invalid request: {e}"),
                retry: false,
                wait: None,
            })?;
        for (name, value) in &self.headers {
            request.headers_mut().insert(name, value.clone());
        }
        let exchange = async {
            let response = self.client.request(request).await?;
            let status = response.status();
            let wait = response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| parse_retry_after(v.as_bytes(), std::time::SystemTime::now()));
            // The answer is read so that the connection can be reused; its content is not
            // used, and an error reading it changes nothing.
            let _ = Limited::new(response.into_body(), MAX_ANSWER).collect().await;
            Ok::<_, hyper_util::client::legacy::Error>((status, wait))
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => Err(Failed {
                error: format!("no answer within {:?}", self.timeout),
                retry: true,
                wait: None,
            }),
            Ok(Err(e)) => Err(Failed {
                error: chain(&e),
                retry: true,
                wait: None,
            }),
            Ok(Ok((status, _))) if status.is_success() => Ok(()),
            Ok(Ok((status, wait))) => Err(Failed {
                error: format!("the receiver answered {status}"),
                retry: retryable(status),
                wait,
            }),
        }
    }
}

/// 5xx, 429 and 408 may pass on another attempt; another 4xx (a wrong URL, a revoked token)
/// will not.
fn retryable(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
}

/// An error and its sources, `a: b: c` (the URL is never in them: hyper-util's errors do not
/// carry it, and the path of a Slack webhook is its secret).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}
