//! Simulated providers: real hyper servers with scripted faults.

use std::{
    convert::Infallible,
    fmt,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, time::Instant};
use tower_breaker::BoxError;

/// Whose API a simulated provider speaks: its error bodies and headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// OpenAI's API reference, "Error codes".
    OpenAi,
    /// Azure OpenAI: OpenAI's bodies, its content filter's (REST reference, "Content
    /// filtering"), `retry-after-ms` and `x-ms-retry-after-ms` on a 429.
    Azure,
    /// Anthropic's API reference, "Errors": `{"type":"error","error":{...},"request_id":...}`
    /// (its OpenAI-compatible endpoint keeps OpenAI's error format; the layer reads both).
    Anthropic,
}

/// What a simulated provider does during a fault phase.
#[derive(Clone, Copy, Debug)]
pub enum FaultKind {
    /// `500` with the provider's `server_error` / `api_error` body, after this long.
    ServerError { latency: Duration },
    /// Anthropic's `529 overloaded_error`, after this long.
    Overloaded { latency: Duration },
    /// The account's quota is spent: OpenAI's `429 insufficient_quota` (Anthropic: the 400
    /// "credit balance is too low"), after this long. No wait header: it does not heal.
    QuotaExhausted { latency: Duration },
    /// `429` rate limit with `Retry-After: {retry_after_secs}` (and the provider's own wait
    /// headers), after this long.
    RateLimited {
        retry_after_secs: u64,
        latency: Duration,
    },
}

impl FaultKind {
    /// What the provider answers, in a few characters (for a chart's label).
    pub const fn short(&self) -> &'static str {
        match self {
            FaultKind::ServerError { .. } => "500s",
            FaultKind::Overloaded { .. } => "529s",
            FaultKind::QuotaExhausted { .. } => "out of quota",
            FaultKind::RateLimited { .. } => "429s",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FaultKind::ServerError { latency } => write!(f, "500s after ~{} ms", latency.as_millis()),
            FaultKind::Overloaded { .. } => f.write_str("529 overloaded_error"),
            FaultKind::QuotaExhausted { .. } => f.write_str("quota exhausted (429 insufficient_quota)"),
            FaultKind::RateLimited { retry_after_secs, .. } => {
                write!(f, "429 + Retry-After: {retry_after_secs}")
            }
        }
    }
}

/// A fault from `from` to `until` (offsets from the run's start).
#[derive(Clone, Copy, Debug)]
pub struct Fault {
    pub from: Duration,
    pub until: Duration,
    pub kind: FaultKind,
}

/// A simulated OpenAI-compatible provider.
#[derive(Clone, Debug)]
pub struct Sim {
    pub name: &'static str,
    pub model: &'static str,
    pub flavor: Flavor,
    pub price: f64,
    /// Answers take `latency` plus a uniform jitter of up to `jitter`.
    pub latency: Duration,
    pub jitter: Duration,
    pub timeout: Duration,
    /// The model's context window, in tokens (a prompt's tokens are estimated as its length
    /// in bytes / 4): a longer prompt gets the provider's context-window error.
    pub context_tokens: usize,
    /// Refuses prompts marked [`UNSAFE`] with the provider's content-filter error.
    pub content_filter: bool,
    /// Routed to for prompts too long for the members before it.
    pub long_context: bool,
    pub faults: Vec<Fault>,
}

/// The marker of a prompt the simulated content filters refuse.
pub const UNSAFE: &str = "#unsafe";

impl Sim {
    /// The fault in force `at` this offset from the start, if any.
    pub fn fault_at(&self, at: Duration) -> Option<FaultKind> {
        self.faults
            .iter()
            .find(|f| f.from <= at && at < f.until)
            .map(|f| f.kind)
    }

    /// When this provider is healthy again for good: the end of its last fault.
    pub fn recovers_at(&self) -> Option<Duration> {
        self.faults.iter().map(|f| f.until).max()
    }

    /// Starts the server; its phases count from `epoch`. It stops with the runtime.
    pub async fn start(&self, epoch: Instant) -> Result<(SocketAddr, Arc<SimCounters>), BoxError> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let counters = Arc::new(SimCounters::default());
        let (sim, c) = (Arc::new(self.clone()), counters.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                let (sim, c) = (sim.clone(), c.clone());
                tokio::spawn(async move {
                    let svc =
                        hyper::service::service_fn(move |req| answer(sim.clone(), c.clone(), epoch, req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok((addr, counters))
    }
}

/// What a simulated provider saw.
#[derive(Debug, Default)]
pub struct SimCounters {
    pub requests: AtomicU64,
    pub ok: AtomicU64,
    pub errors: AtomicU64,
    pub rate_limited: AtomicU64,
}

/// The error bodies, copied from the providers' API references (OpenAI "Error codes"; Azure
/// OpenAI REST reference and "Content filtering"; Anthropic "Errors") and their SDKs
/// (openai-python and anthropic-sdk-python, `_exceptions.py`), as `tests/llm.rs` has them.
mod bodies {
    use super::Flavor;

    pub const REQUEST_ID: &str = "req_011CSHoEeqs5C35K2UUqR7Fy";

    fn anthropic(ty: &str, message: &str) -> serde_json::Value {
        serde_json::json!({"type": "error", "error": {"type": ty, "message": message}, "request_id": REQUEST_ID})
    }

    fn openai(message: &str, ty: Option<&str>, param: Option<&str>, code: Option<&str>) -> serde_json::Value {
        serde_json::json!({"error": {"message": message, "type": ty, "param": param, "code": code}})
    }

    pub fn server_error(flavor: Flavor) -> serde_json::Value {
        match flavor {
            Flavor::Anthropic => anthropic("api_error", "Internal server error"),
            _ => openai(
                "The server had an error while processing your request. Sorry about that!",
                Some("server_error"),
                None,
                None,
            ),
        }
    }

    pub fn overloaded() -> serde_json::Value {
        anthropic("overloaded_error", "Overloaded")
    }

    pub fn quota(flavor: Flavor) -> serde_json::Value {
        match flavor {
            Flavor::Anthropic => anthropic(
                "invalid_request_error",
                "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.",
            ),
            _ => openai(
                "You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.",
                Some("insufficient_quota"),
                None,
                Some("insufficient_quota"),
            ),
        }
    }

    pub fn rate_limited(flavor: Flavor, model: &str) -> serde_json::Value {
        match flavor {
            Flavor::Anthropic => anthropic(
                "rate_limit_error",
                "This request would exceed the rate limit for your organization of 50,000 input tokens per minute.",
            ),
            Flavor::Azure => {
                serde_json::json!({"error": {"code": "429", "message": "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 have exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after 1 second. Please go here: https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit."}})
            }
            Flavor::OpenAi => openai(
                &format!(
                    "Rate limit reached for {model} in organization org-abc on requests per min (RPM): Limit 500, Used 500, Requested 1. Please try again in 120ms. Visit https://platform.openai.com/account/rate-limits to learn more."
                ),
                Some("requests"),
                None,
                Some("rate_limit_exceeded"),
            ),
        }
    }

    pub fn context_window(flavor: Flavor, context: usize, tokens: usize) -> serde_json::Value {
        match flavor {
            Flavor::Anthropic => anthropic(
                "invalid_request_error",
                &format!("prompt is too long: {tokens} tokens > {context} maximum"),
            ),
            _ => openai(
                &format!(
                    "This model's maximum context length is {context} tokens. However, your messages resulted in {tokens} tokens. Please reduce the length of the messages."
                ),
                Some("invalid_request_error"),
                Some("messages"),
                Some("context_length_exceeded"),
            ),
        }
    }

    pub fn content_filter(flavor: Flavor) -> serde_json::Value {
        match flavor {
            Flavor::Azure => serde_json::json!({"error": {
                "message": "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. Please modify your prompt and retry. To learn more about our content filtering policies please read our documentation: https://go.microsoft.com/fwlink/?linkid=2198766",
                "type": null, "param": "prompt", "code": "content_filter", "status": 400,
                "innererror": {"code": "ResponsibleAIPolicyViolation", "content_filter_result": {
                    "hate": {"filtered": false, "severity": "safe"},
                    "self_harm": {"filtered": false, "severity": "safe"},
                    "sexual": {"filtered": false, "severity": "safe"},
                    "violence": {"filtered": true, "severity": "medium"}}}}}),
            _ => openai(
                "Your request was rejected as a result of our safety system. Your prompt may contain text that is not allowed by our safety system.",
                Some("invalid_request_error"),
                None,
                Some("content_policy_violation"),
            ),
        }
    }
}

async fn answer(
    sim: Arc<Sim>,
    counters: Arc<SimCounters>,
    epoch: Instant,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let json = |status: StatusCode, body: serde_json::Value| {
        let mut res = Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "application/json");
        if sim.flavor == Flavor::Anthropic {
            res = res.header("request-id", bodies::REQUEST_ID);
        }
        res.body(Full::new(Bytes::from(body.to_string()))).unwrap()
    };
    if req.method() != http::Method::POST || req.uri().path() != "/v1/chat/completions" {
        return Ok(json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": {"message": "not found"}}),
        ));
    }
    let arrived = Instant::now().saturating_duration_since(epoch);
    counters.requests.fetch_add(1, Ordering::Relaxed);
    let Ok(body) = req.into_body().collect().await else {
        return Ok(json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"error": {"message": "bad body"}}),
        ));
    };
    let request: serde_json::Value = serde_json::from_slice(&body.to_bytes()).unwrap_or_default();
    let prompt: String = request["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["content"].as_str())
        .collect();
    let jitter = |d: Duration| d.mul_f64(fastrand::f64());
    let fault = sim.fault_at(arrived);
    if fault.is_none() {
        // Checked before any work, as the providers do: quick and free.
        let tokens = prompt.len() / 4;
        let refusal = if tokens > sim.context_tokens {
            Some(bodies::context_window(sim.flavor, sim.context_tokens, tokens))
        } else if sim.content_filter && prompt.contains(UNSAFE) {
            Some(bodies::content_filter(sim.flavor))
        } else {
            None
        };
        if let Some(body) = refusal {
            tokio::time::sleep(sim.latency / 4).await;
            counters.errors.fetch_add(1, Ordering::Relaxed);
            return Ok(json(StatusCode::BAD_REQUEST, body));
        }
    }
    match fault {
        Some(FaultKind::ServerError { latency }) => {
            tokio::time::sleep(latency + jitter(sim.jitter)).await;
            counters.errors.fetch_add(1, Ordering::Relaxed);
            Ok(json(
                StatusCode::INTERNAL_SERVER_ERROR,
                bodies::server_error(sim.flavor),
            ))
        }
        Some(FaultKind::Overloaded { latency }) => {
            tokio::time::sleep(latency).await;
            counters.errors.fetch_add(1, Ordering::Relaxed);
            Ok(json(StatusCode::from_u16(529).unwrap(), bodies::overloaded()))
        }
        Some(FaultKind::QuotaExhausted { latency }) => {
            tokio::time::sleep(latency).await;
            counters.rate_limited.fetch_add(1, Ordering::Relaxed);
            let status = match sim.flavor {
                Flavor::Anthropic => StatusCode::BAD_REQUEST,
                _ => StatusCode::TOO_MANY_REQUESTS,
            };
            Ok(json(status, bodies::quota(sim.flavor)))
        }
        Some(FaultKind::RateLimited {
            retry_after_secs,
            latency,
        }) => {
            tokio::time::sleep(latency).await;
            counters.rate_limited.fetch_add(1, Ordering::Relaxed);
            let mut res = json(
                StatusCode::TOO_MANY_REQUESTS,
                bodies::rate_limited(sim.flavor, sim.model),
            );
            let headers = res.headers_mut();
            headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            let ms = HeaderValue::from(retry_after_secs * 1000);
            match sim.flavor {
                Flavor::Azure => {
                    headers.insert("retry-after-ms", ms.clone());
                    headers.insert("x-ms-retry-after-ms", ms);
                }
                Flavor::OpenAi => {
                    headers.insert("x-ratelimit-remaining-requests", HeaderValue::from(0));
                    headers.insert(
                        "x-ratelimit-reset-requests",
                        HeaderValue::try_from(format!("{retry_after_secs}s")).unwrap(),
                    );
                }
                Flavor::Anthropic => {
                    headers.insert("anthropic-ratelimit-requests-remaining", HeaderValue::from(0));
                }
            }
            Ok(res)
        }
        None => {
            tokio::time::sleep(sim.latency + jitter(sim.jitter)).await;
            counters.ok.fetch_add(1, Ordering::Relaxed);
            Ok(json(
                StatusCode::OK,
                serde_json::json!({
                    "id": format!("chatcmpl-{:016x}", fastrand::u64(..)),
                    "object": "chat.completion",
                    "model": request.get("model").cloned().unwrap_or(sim.model.into()),
                    "choices": [{
                        "index": 0,
                        "message": {"role": "assistant", "content": format!("Hello from {}!", sim.name)},
                        "finish_reason": "stop",
                    }],
                    "usage": {"prompt_tokens": 1000, "completion_tokens": 250, "total_tokens": 1250},
                }),
            ))
        }
    }
}
