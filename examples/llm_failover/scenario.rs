//! The scenario of `examples/llm_failover`, shared with `tests/showcase.rs` so that the test
//! runs exactly the code the example runs.
//!
//! - [`Sim`]: a simulated OpenAI-compatible provider, a real hyper server on `127.0.0.1:0`
//!   answering `POST /v1/chat/completions` with a latency, a context window, a content filter
//!   and scripted faults over phases of the run (500s, Anthropic's 529 `overloaded_error`,
//!   OpenAI's 429 `insufficient_quota`, 429s with `Retry-After`), each with the provider's real
//!   error body and headers.
//! - [`build_stack`]: the client stack: one hyper-util client (over [`https_connector`], http
//!   or https by the URL's scheme); per provider a breaker classified by `LlmClassifier` over
//!   a timeout over `LlmErrorLayer` over the provider's client; a [`Failover`] over the
//!   providers routed by `LlmRouting` (by the kind of failure each provider reports).
//! - [`run`]: drives requests (a mix of short prompts, long ones and ones a content filter
//!   refuses) at a steady rate with bounded concurrency and a per-request deadline, reports
//!   progress, and returns a [`Summary`].
#![allow(dead_code)]

use std::{
    convert::Infallible,
    fmt,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
};
use tokio::{net::TcpListener, sync::Semaphore, task::JoinSet, time::Instant};
use tower::{Layer, Service, ServiceBuilder, ServiceExt, util::BoxCloneSyncService};
use tower_breaker::{
    AllUnavailable, BoxError, Builder, CircuitBreaker, CircuitBreakerLayer, Event, Failover, Outcome, State,
    fallback::Provenance,
    llm::{LlmClassifier, LlmErrorKind, LlmErrorLayer, LlmErrorService, LlmRouting, ProviderError},
};

// ---------------------------------------------------------------------------------------------
// Providers as the client sees them
// ---------------------------------------------------------------------------------------------

/// An API key. `Debug` never shows it; only [`ApiKey::expose`] does, for the request header.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(Arc<str>);

impl ApiKey {
    pub fn new(key: impl Into<Arc<str>>) -> Self {
        Self(key.into())
    }

    /// The key itself: only for the `Authorization` header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// How a provider takes its key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Auth {
    /// `Authorization: Bearer <key>`: OpenAI, Anthropic's OpenAI-compatible endpoint, most
    /// gateways.
    #[default]
    Bearer,
    /// `api-key: <key>`: Azure OpenAI.
    ApiKey,
}

/// One OpenAI-compatible upstream.
#[derive(Clone, Debug)]
pub struct Provider {
    /// The name in breakers, logs and the summary.
    pub name: String,
    /// Up to and including the API version, e.g. `http://127.0.0.1:8080/v1`; the client posts
    /// to `{base_url}/chat/completions`.
    pub base_url: String,
    /// Sent in the [`Auth`] header when present.
    pub api_key: Option<ApiKey>,
    pub auth: Auth,
    /// Takes longer prompts than the members before it: a context-window error elsewhere is
    /// routed to the first such member after the one that reported it.
    pub long_context: bool,
    /// The `model` field this provider's requests carry.
    pub model: String,
    /// US dollars per billed call (see [`PRICING`]).
    pub price: f64,
    /// Per-attempt timeout (inside the breaker, so a timeout counts as a failure).
    pub timeout: Duration,
    /// This provider's own breaker settings (`--config`'s `[breaker]` and
    /// `[provider.breaker]`); `None`: the stack's [`BreakerConfig`].
    pub breaker: Option<Builder>,
}

/// How calls are billed, for the summary's cost rows.
pub const PRICING: &str = "cost = calls billed x the provider's price per call. A call is billed when the \
provider ran the model: an answer, a 500 (the simulated outage fails after generating) or a timeout \
(the provider keeps generating); a 429, a 529 and a 400 (context window, content filter) are turned \
away before any work and are free. If providers billed only answers, the breakers save no money on \
the down provider (their win is the wasted calls, the failures and the latency), and the second cost \
row shows that case.";

/// The breakers' configuration, one per provider.
#[derive(Clone, Debug)]
pub struct BreakerConfig {
    /// Trip on this many consecutive failures (a 429 with `Retry-After` trips at once).
    pub consecutive_failures: u32,
    /// How long a tripped breaker stays open before a probe.
    pub open_duration: Duration,
    /// Probes in flight at once while half-open.
    pub half_open_permits: u32,
}

impl BreakerConfig {
    pub fn builder(&self, name: &str) -> Builder {
        CircuitBreaker::builder(name)
            .consecutive_failures(self.consecutive_failures)
            .open_duration(self.open_duration)
            .half_open_permits(self.half_open_permits)
            .half_open_successes(1)
    }
}

/// A chat completion request: the OpenAI JSON body without its `model`, which each provider
/// sets. Cheap to clone (the failover copies it before each call).
#[derive(Clone, Debug)]
pub struct ChatRequest(pub Arc<serde_json::Map<String, serde_json::Value>>);

impl ChatRequest {
    /// A request with one user message.
    pub fn user(content: &str, max_tokens: u32) -> Self {
        let value = serde_json::json!({
            "messages": [{"role": "user", "content": content}],
            "max_tokens": max_tokens,
        });
        match value {
            serde_json::Value::Object(map) => Self(Arc::new(map)),
            _ => unreachable!(),
        }
    }

    /// A request from a client's JSON body (`model` is replaced by each provider's).
    pub fn from_json(body: &[u8]) -> Result<Self, BoxError> {
        match serde_json::from_slice(body)? {
            serde_json::Value::Object(map) => Ok(Self(Arc::new(map))),
            _ => Err("the body must be a JSON object".into()),
        }
    }
}

/// What every provider's client is: a chat request in, the whole HTTP answer out.
pub type Member = BoxCloneSyncService<ChatRequest, Response<Bytes>, BoxError>;

/// The connector of every client the example builds: https through rustls (ring, Mozilla's
/// roots from `webpki-roots`, TLS 1.2 and 1.3), plain http as it is (the simulated providers,
/// a local gateway). Other schemes fail at connect time; `config.rs` refuses them earlier.
pub fn https_connector() -> HttpsConnector<HttpConnector> {
    HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .build()
}

/// One provider's HTTP client: builds the request, sends it through `LlmErrorLayer` (which
/// reads an error body's kind into a `ProviderError` extension), reads the whole body.
#[derive(Clone)]
struct ProviderClient {
    client: LlmErrorService<Client<HttpsConnector<HttpConnector>, Full<Bytes>>>,
    endpoint: Uri,
    auth: Option<(header::HeaderName, HeaderValue)>,
    model: serde_json::Value,
}

impl Service<ChatRequest> for ProviderClient {
    type Response = Response<Bytes>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Bytes>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(())) // the legacy client is always ready
    }

    fn call(&mut self, req: ChatRequest) -> Self::Future {
        let mut body = (*req.0).clone();
        body.insert("model".into(), self.model.clone());
        let mut builder =
            Request::post(self.endpoint.clone()).header(header::CONTENT_TYPE, "application/json");
        if let Some((name, value)) = &self.auth {
            builder = builder.header(name, value.clone());
        }
        let request = serde_json::to_vec(&body)
            .map_err(BoxError::from)
            .and_then(|b| builder.body(Full::new(Bytes::from(b))).map_err(BoxError::from));
        let client = self.client.clone();
        Box::pin(async move {
            let response = client.oneshot(request?).await?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok(Response::from_parts(parts, body))
        })
    }
}

/// Per-provider counts, kept by [`Metered`] (calls, outcomes) and the breaker's listener
/// (rejections, open periods, transitions).
#[derive(Debug, Default)]
pub struct ProviderCounters {
    /// Calls handed to the provider's client.
    pub calls: AtomicU64,
    /// Calls whose outcome was a failure or a trip for the breaker (5xx, 429, 529, timeout,
    /// connect error); not a context-window error or a content refusal (the provider is fine).
    pub wasted: AtomicU64,
    /// Calls that are free: turned away before any work (4xx, 529) and connection failures.
    pub free: AtomicU64,
    /// Answers by the kind of error the provider reported (`LlmErrorKind::ALL`'s order).
    pub kinds: [AtomicU64; KINDS],
    /// Calls the breaker refused (the request went on to the next member at once).
    pub fast_fails: AtomicU64,
    /// Times the breaker opened.
    pub open_periods: AtomicU64,
    /// Every state change, with its time.
    pub transitions: Mutex<Vec<(Instant, State)>>,
}

/// How many kinds of provider error there are.
pub const KINDS: usize = LlmErrorKind::ALL.len();

/// The index of `kind` in `LlmErrorKind::ALL`.
pub fn kind_index(kind: LlmErrorKind) -> usize {
    LlmErrorKind::ALL
        .iter()
        .position(|k| *k == kind)
        .unwrap_or(KINDS - 1)
}

/// Counts each call, its outcome and its kind, under the breaker (it sees only admitted
/// calls), judged by the breaker's own classifier.
#[derive(Clone)]
struct Metered<S> {
    inner: S,
    counters: Arc<ProviderCounters>,
    classifier: LlmClassifier,
}

impl<S> Service<ChatRequest> for Metered<S>
where
    S: Service<ChatRequest, Response = Response<Bytes>, Error = BoxError>,
    S::Future: Send + 'static,
{
    type Response = Response<Bytes>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Bytes>, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: ChatRequest) -> Self::Future {
        self.counters.calls.fetch_add(1, Ordering::Relaxed);
        let future = self.inner.call(req);
        let (counters, classifier) = (self.counters.clone(), self.classifier.clone());
        Box::pin(async move {
            let result = future.await;
            let outcome = match &result {
                Ok(res) => classifier.classify_parts(res.status(), res.headers(), res.extensions()),
                Err(e) => classifier.classify_error(&**e),
            };
            if matches!(outcome, Outcome::Failure | Outcome::Trip(_)) {
                counters.wasted.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(err) = result
                .as_ref()
                .ok()
                .and_then(|r| r.extensions().get::<ProviderError>())
            {
                counters.kinds[kind_index(err.kind())].fetch_add(1, Ordering::Relaxed);
            }
            let free = match &result {
                Ok(res) => !(res.status().is_success() || res.status() == StatusCode::INTERNAL_SERVER_ERROR),
                Err(e) => !e.is::<tower::timeout::error::Elapsed>(),
            };
            if free {
                counters.free.fetch_add(1, Ordering::Relaxed);
            }
            result
        })
    }
}

/// The client stack over some providers.
pub struct Stack {
    /// `Failover` over the providers, boxed so that its futures can be spawned.
    pub chain: Member,
    /// One breaker per provider, in order. Disabled when the stack was built without breakers.
    pub breakers: Vec<CircuitBreaker>,
    pub counters: Vec<Arc<ProviderCounters>>,
    pub providers: Vec<Provider>,
}

/// Builds the stack: per provider `breaker (LlmClassifier) → metered → timeout →
/// LlmErrorLayer → client`, then `Failover(first → second → ...)` that skips open members
/// without calling them and, after a call, routes by the kind of failure the provider
/// reported (`LlmRouting`): rate limits, quota, overload, auth, 5xx and timeouts fail over; a
/// context-window error goes to the next `long_context` member; a content refusal goes back
/// to the caller.
///
/// `breakers_on = false` builds the same stack with every breaker [disabled]: it admits
/// everything and records nothing, the baseline. `instrument` may add listeners (metrics).
///
/// [disabled]: CircuitBreaker::disable
pub fn build_stack(
    providers: &[Provider],
    breaker: &BreakerConfig,
    breakers_on: bool,
    instrument: &dyn Fn(Builder) -> Builder,
) -> Result<Stack, BoxError> {
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build::<_, Full<Bytes>>(https_connector());
    let mut members = Vec::new();
    let (mut breakers, mut all_counters) = (Vec::new(), Vec::new());
    for p in providers {
        let counters = Arc::new(ProviderCounters::default());
        let c = counters.clone();
        let base = match &p.breaker {
            Some(own) => own.clone().name(p.name.as_str()),
            None => breaker.builder(&p.name),
        };
        let builder = base.on_event(move |event| match *event {
            Event::Rejected { .. } => {
                c.fast_fails.fetch_add(1, Ordering::Relaxed);
            }
            Event::Transition { to, .. } => {
                if to == State::Open {
                    c.open_periods.fetch_add(1, Ordering::Relaxed);
                }
                c.transitions.lock().unwrap().push((Instant::now(), to));
            }
            _ => {}
        });
        let cb = instrument(builder).build()?;
        if !breakers_on {
            cb.disable();
        }
        let mut auth = None;
        if let Some(key) = &p.api_key {
            let (name, value) = match p.auth {
                Auth::Bearer => (header::AUTHORIZATION, format!("Bearer {}", key.expose())),
                Auth::ApiKey => (
                    header::HeaderName::from_static("api-key"),
                    key.expose().to_owned(),
                ),
            };
            let mut value = HeaderValue::try_from(value)
                .map_err(|_| format!("the API key of {:?} is not a valid header value", p.name))?;
            value.set_sensitive(true);
            auth = Some((name, value));
        }
        let endpoint: Uri = format!("{}/chat/completions", p.base_url.trim_end_matches('/')).parse()?;
        let classifier = LlmClassifier::new().provider(p.name.clone());
        let member = ServiceBuilder::new()
            .layer(CircuitBreakerLayer::new(cb.clone()).classify(classifier.clone()))
            .layer_fn(|inner| Metered {
                inner,
                counters: counters.clone(),
                classifier: classifier.clone(),
            })
            .timeout(p.timeout)
            .service(ProviderClient {
                client: LlmErrorLayer::new().layer(client.clone()),
                endpoint,
                auth,
                model: p.model.clone().into(),
            });
        members.push((p.name.clone(), BoxCloneSyncService::new(member)));
        breakers.push(cb);
        all_counters.push(counters);
    }
    let long_context = providers
        .iter()
        .filter(|p| p.long_context)
        .map(|p| p.name.as_str());
    let chain = Failover::new(members).on_failure(LlmRouting::new().larger_context(long_context));
    Ok(Stack {
        chain: BoxCloneSyncService::new(chain),
        breakers,
        counters: all_counters,
        providers: providers.to_vec(),
    })
}

// ---------------------------------------------------------------------------------------------
// Simulated providers
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// The scenario and its load
// ---------------------------------------------------------------------------------------------

/// The traffic.
#[derive(Clone, Debug)]
pub struct Load {
    pub requests: usize,
    /// Requests per second, started on a fixed schedule.
    pub rate: f64,
    /// At most this many requests in flight; the others wait for a slot.
    pub concurrency: usize,
    /// A request not answered this long after its scheduled start (waiting for a slot
    /// included) fails: the user gave up.
    pub deadline: Duration,
    /// Every this many requests, one is a long prompt ([`LONG_PROMPT_TOKENS`] tokens).
    pub long_every: Option<usize>,
    /// Every this many requests, one is a prompt the content filters refuse ([`UNSAFE`]).
    pub unsafe_every: Option<usize>,
}

/// The estimated tokens of a long prompt: more than the first two providers' context windows
/// (8k and 16k), less than the others' (200k, 1M).
pub const LONG_PROMPT_TOKENS: usize = 20_000;

impl Load {
    /// The prompt of request `i`.
    fn prompt(&self, i: usize) -> Prompt {
        let every = |n: Option<usize>, at: usize| n.is_some_and(|n| n > 0 && i % n == at % n);
        if every(self.long_every, 25) {
            Prompt::Long
        } else if every(self.unsafe_every, 10) {
            Prompt::Unsafe
        } else {
            Prompt::Short
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Prompt {
    Short,
    Long,
    Unsafe,
}

/// Providers, breakers and load.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub sims: Vec<Sim>,
    pub breaker: BreakerConfig,
    pub load: Load,
}

impl Scenario {
    /// The example's scenario: 10,000 requests at 800/s (12.5 s); every 50th prompt is long
    /// (20k tokens), every 50th another is one the content filters refuse.
    ///
    /// - `azure` (Azure OpenAI, a gpt-4 deployment with an 8k context window and Azure's
    ///   content filter; 60-80 ms, $0.0060 a call) answers 500s after ~250 ms from 2 s to 8 s.
    /// - `openai` (gpt-3.5-turbo, 16k; 70-90 ms, $0.0010: the cheap one) has spent its quota
    ///   from 4 s on: `429 insufficient_quota`.
    /// - `anthropic` (claude-3-5-haiku, 200k; 90-120 ms, $0.0040) is overloaded from 3 s to
    ///   6 s: `529 overloaded_error`.
    /// - `backup` (gpt-4.1, 1M; 250-300 ms, $0.0120: a dedicated deployment) is always
    ///   healthy, slower and dearer.
    ///
    /// Long prompts go from `azure` to the next member with a larger context window
    /// (`anthropic`, then `backup`), past `openai`; refused prompts go back to the caller.
    pub fn standard() -> Self {
        let ms = Duration::from_millis;
        let s = Duration::from_secs;
        let sim = |name, model, flavor, price, latency, jitter, context_tokens| Sim {
            name,
            model,
            flavor,
            price,
            latency: ms(latency),
            jitter: ms(jitter),
            timeout: s(2),
            context_tokens,
            content_filter: false,
            long_context: false,
            faults: vec![],
        };
        let fault = |from, until, kind| Fault { from, until, kind };
        Self {
            sims: vec![
                Sim {
                    content_filter: true,
                    faults: vec![fault(s(2), s(8), FaultKind::ServerError { latency: ms(250) })],
                    ..sim("azure", "gpt-4", Flavor::Azure, 0.0060, 60, 20, 8_192)
                },
                Sim {
                    faults: vec![fault(
                        s(4),
                        s(3600),
                        FaultKind::QuotaExhausted { latency: ms(20) },
                    )],
                    ..sim("openai", "gpt-3.5-turbo", Flavor::OpenAi, 0.0010, 70, 20, 16_385)
                },
                Sim {
                    long_context: true,
                    faults: vec![fault(s(3), s(6), FaultKind::Overloaded { latency: ms(15) })],
                    ..sim(
                        "anthropic",
                        "claude-3-5-haiku",
                        Flavor::Anthropic,
                        0.0040,
                        90,
                        30,
                        200_000,
                    )
                },
                Sim {
                    long_context: true,
                    timeout: s(3),
                    ..sim("backup", "gpt-4.1", Flavor::OpenAi, 0.0120, 250, 50, 1_047_576)
                },
            ],
            breaker: BreakerConfig {
                consecutive_failures: 5,
                open_duration: ms(1500),
                half_open_permits: 1,
            },
            load: Load {
                requests: 10_000,
                rate: 800.0,
                concurrency: 256,
                deadline: s(2),
                long_every: Some(50),
                unsafe_every: Some(50),
            },
        }
    }

    /// The same story, shortened for `tests/showcase.rs`: 800 requests at 250/s (3.2 s),
    /// `azure` down from 0.5 s to 1.5 s, `openai` out of quota from 0.9 s, `anthropic`
    /// overloaded from 0.7 s to 1.2 s.
    pub fn short() -> Self {
        let ms = Duration::from_millis;
        let mut s = Self::standard();
        let [azure, openai, anthropic, backup] = &mut s.sims[..] else {
            unreachable!()
        };
        azure.latency = ms(20);
        azure.jitter = ms(10);
        azure.timeout = ms(500);
        azure.faults[0] = Fault {
            from: ms(500),
            until: ms(1500),
            kind: FaultKind::ServerError { latency: ms(30) },
        };
        openai.latency = ms(20);
        openai.jitter = ms(10);
        openai.timeout = ms(500);
        openai.faults[0].from = ms(900);
        anthropic.latency = ms(30);
        anthropic.jitter = ms(10);
        anthropic.timeout = ms(500);
        anthropic.faults[0] = Fault {
            from: ms(700),
            until: ms(1200),
            kind: FaultKind::Overloaded { latency: ms(5) },
        };
        backup.latency = ms(60);
        backup.jitter = ms(20);
        backup.timeout = ms(1000);
        s.breaker = BreakerConfig {
            consecutive_failures: 3,
            open_duration: ms(400),
            half_open_permits: 1,
        };
        s.load = Load {
            requests: 800,
            rate: 250.0,
            concurrency: 32,
            deadline: Duration::from_secs(2),
            long_every: Some(50),
            unsafe_every: Some(50),
        };
        s
    }

    /// Starts the simulated providers; their phases count from `epoch`.
    pub async fn start(&self, epoch: Instant) -> Result<(Vec<Provider>, Vec<Arc<SimCounters>>), BoxError> {
        let mut providers = Vec::new();
        let mut counters = Vec::new();
        for sim in &self.sims {
            let (addr, c) = sim.start(epoch).await?;
            providers.push(Provider {
                name: sim.name.into(),
                base_url: format!("http://{addr}/v1"),
                api_key: None,
                auth: Auth::default(),
                long_context: sim.long_context,
                model: sim.model.into(),
                price: sim.price,
                timeout: sim.timeout,
                breaker: None,
            });
            counters.push(c);
        }
        Ok((providers, counters))
    }

    /// Runs the scenario once: fresh servers, a fresh stack, the whole load.
    pub async fn run(&self, breakers_on: bool, progress: impl FnMut(&Progress)) -> Result<Summary, BoxError> {
        let epoch = Instant::now() + Duration::from_millis(50);
        let (providers, sims) = self.start(epoch).await?;
        let stack = build_stack(&providers, &self.breaker, breakers_on, &|b| b)?;
        let recovers = self.sims.first().and_then(Sim::recovers_at);
        let mut summary = run(&stack, &self.load, epoch, recovers, progress).await;
        for (p, s) in summary.providers.iter_mut().zip(&sims) {
            p.server_requests = Some(s.requests.load(Ordering::Relaxed));
        }
        summary.breakers_on = breakers_on;
        Ok(summary)
    }
}

// ---------------------------------------------------------------------------------------------
// Driving the load
// ---------------------------------------------------------------------------------------------

/// Prints a user-visible error with its causes the first time that text is seen (so a real
/// provider's DNS, TLS or 401 trouble is visible, once). Errors carry no request data and no key.
fn report_first(error: &(dyn std::error::Error + 'static)) {
    static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    let mut seen = SEEN.lock().unwrap();
    if seen.len() < 16 && !seen.contains(&text) {
        eprintln!("request failed: {text}");
        seen.push(text);
    }
}

/// How one request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Served by the member at this index; `fell_back` when another member was skipped or
    /// failed first.
    Served { by: usize, fell_back: bool },
    /// The caller got the member's refusal of *this request*: a content filter's, a prompt too
    /// long for every model that could take it, an invalid request. Not a failure of the
    /// providers (no other provider is asked, and no breaker counts it).
    Refused { by: usize, kind: LlmErrorKind },
    /// Not answered within the deadline.
    Deadline,
    /// Every member's breaker was open.
    AllOpen,
    /// The last member tried failed (an error, or a failed answer that stood: a 5xx, a 429).
    Error,
}

impl Ending {
    /// Whether the user saw a failure (not a refusal of the request).
    pub const fn is_failure(&self) -> bool {
        matches!(self, Ending::Deadline | Ending::AllOpen | Ending::Error)
    }
}

#[derive(Clone, Copy, Debug)]
struct Record {
    /// When it ended, from the start.
    done: Duration,
    /// From its scheduled start to its end.
    latency: Duration,
    ending: Ending,
    /// How many times the request moved on from a member, by the kind that moved it.
    moved: [u8; KINDS],
}

/// The state of a run, about every 200 ms.
#[derive(Clone, Debug)]
pub struct Progress {
    pub elapsed: Duration,
    pub states: Vec<State>,
    /// Requests served by each member, over the last second.
    pub served: Vec<u64>,
    /// Requests that failed, over the last second.
    pub failures: u64,
    /// Calls refused by breakers since the start (a refused call costs nothing and goes on).
    pub fast_fails: u64,
    /// Latency percentiles (scheduled start to end) of the requests that ended over the last
    /// second.
    pub p50: Option<Duration>,
    pub p99: Option<Duration>,
    pub done: usize,
    pub total: usize,
}

/// The `q` quantile of sorted durations.
pub fn quantile(sorted: &[Duration], q: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    Some(sorted[i])
}

/// Sends `load.requests` requests through `stack`, the i-th at `epoch + i / rate`, each with a
/// deadline, at most `load.concurrency` at once; calls `progress` about every 200 ms.
/// `recovers`: when the first provider recovered (to time its breaker's closing).
pub async fn run(
    stack: &Stack,
    load: &Load,
    epoch: Instant,
    recovers: Option<Duration>,
    mut progress: impl FnMut(&Progress),
) -> Summary {
    let records: Arc<Mutex<Vec<Record>>> = Arc::new(Mutex::new(Vec::with_capacity(load.requests)));
    let slots = Arc::new(Semaphore::new(load.concurrency));
    let names: Arc<[String]> = stack.providers.iter().map(|p| p.name.clone()).collect();
    let short = ChatRequest::user("Summarise the plot of Hamlet in one sentence.", 64);
    let document = "The parties agree as follows. ".repeat(LONG_PROMPT_TOKENS * 4 / 30 + 1);
    let long = ChatRequest::user(&format!("Summarise this contract: {document}"), 256);
    let unsafe_ = ChatRequest::user(&format!("{UNSAFE} Describe something the filter refuses."), 64);

    let driver = {
        let (records, chain, load, names) =
            (records.clone(), stack.chain.clone(), load.clone(), names.clone());
        let (short, long, unsafe_) = (short.clone(), long.clone(), unsafe_.clone());
        tokio::spawn(async move {
            let mut tasks = JoinSet::new();
            for i in 0..load.requests {
                let at = epoch + Duration::from_secs_f64(i as f64 / load.rate);
                tokio::time::sleep_until(at).await;
                let deadline = at + load.deadline;
                let request = match load.prompt(i) {
                    Prompt::Short => short.clone(),
                    Prompt::Long => long.clone(),
                    Prompt::Unsafe => unsafe_.clone(),
                };
                let (slots, mut chain, records, names) =
                    (slots.clone(), chain.clone(), records.clone(), names.clone());
                tasks.spawn(async move {
                    let ending = tokio::time::timeout_at(deadline, async {
                        let _slot = slots.acquire_owned().await.expect("never closed");
                        chain.ready().await?.call(request).await
                    })
                    .await;
                    let mut moved = [0u8; KINDS];
                    let ending = match ending {
                        Err(_) => Ending::Deadline,
                        Ok(Ok(res)) => {
                            let provenance = res.extensions().get::<Provenance>();
                            let by = provenance
                                .and_then(|p| names.iter().position(|n| n == p.served_by()))
                                .unwrap_or(0);
                            for s in provenance.map_or(&[][..], |p| p.skipped()) {
                                let kind = LlmErrorKind::ALL.iter().find(|k| Some(k.as_str()) == s.because());
                                if let Some(kind) = kind {
                                    moved[kind_index(*kind)] += 1;
                                }
                            }
                            let kind = res.extensions().get::<ProviderError>().map(ProviderError::kind);
                            match kind {
                                _ if res.status().is_success() => Ending::Served {
                                    by,
                                    fell_back: provenance.is_some_and(Provenance::fell_back),
                                },
                                Some(
                                    kind @ (LlmErrorKind::ContentPolicy
                                    | LlmErrorKind::ContextWindowExceeded
                                    | LlmErrorKind::InvalidRequest),
                                ) => Ending::Refused { by, kind },
                                _ => Ending::Error,
                            }
                        }
                        Ok(Err(e)) => {
                            report_first(&*e);
                            if e.is::<AllUnavailable>() {
                                Ending::AllOpen
                            } else {
                                Ending::Error
                            }
                        }
                    };
                    let now = Instant::now();
                    records.lock().unwrap().push(Record {
                        done: now.saturating_duration_since(epoch),
                        latency: now.saturating_duration_since(at),
                        ending,
                        moved,
                    });
                });
                // Reap finished tasks as we go.
                while tasks.try_join_next().is_some() {}
            }
            while tasks.join_next().await.is_some() {}
        })
    };
    tokio::pin!(driver);
    let mut ticks = tokio::time::interval_at(epoch + Duration::from_millis(200), Duration::from_millis(200));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut driver => break,
            _ = ticks.tick() => {
                let p = snapshot(stack, &records.lock().unwrap(), epoch, load.requests);
                progress(&p);
            }
        }
    }
    let wall = Instant::now().saturating_duration_since(epoch);
    let records = Arc::try_unwrap(records)
        .map(|m| m.into_inner().unwrap())
        .unwrap_or_else(|a| a.lock().unwrap().clone());
    summarise(stack, load, &records, epoch, recovers, wall)
}

fn snapshot(stack: &Stack, records: &[Record], epoch: Instant, total: usize) -> Progress {
    let elapsed = Instant::now().saturating_duration_since(epoch);
    let since = elapsed.saturating_sub(Duration::from_secs(1));
    let mut served = vec![0; stack.providers.len()];
    let (mut failures, mut latencies) = (0, Vec::new());
    for r in records.iter().filter(|r| r.done >= since) {
        match r.ending {
            Ending::Served { by, .. } => served[by] += 1,
            Ending::Refused { .. } => {}
            _ => failures += 1,
        }
        latencies.push(r.latency);
    }
    latencies.sort_unstable();
    Progress {
        elapsed,
        states: stack.breakers.iter().map(CircuitBreaker::state).collect(),
        served,
        failures,
        fast_fails: stack
            .counters
            .iter()
            .map(|c| c.fast_fails.load(Ordering::Relaxed))
            .sum(),
        p50: quantile(&latencies, 0.5),
        p99: quantile(&latencies, 0.99),
        done: records.len(),
        total,
    }
}

// ---------------------------------------------------------------------------------------------
// The summary
// ---------------------------------------------------------------------------------------------

/// One provider's line of the summary.
#[derive(Clone, Debug)]
pub struct ProviderSummary {
    pub name: String,
    pub price: f64,
    /// Calls sent to it.
    pub calls: u64,
    /// Calls that failed (5xx, 429, timeout): wasted on it while it was down.
    pub wasted: u64,
    /// Calls billed (see [`PRICING`]).
    pub billed: u64,
    /// Requests it served.
    pub served: u64,
    /// Calls its breaker refused.
    pub fast_fails: u64,
    /// Times its breaker opened.
    pub open_periods: u64,
    /// Requests the simulated server received (`None` for a real provider).
    pub server_requests: Option<u64>,
    /// Its answers by the kind of error it reported (`LlmErrorKind::ALL`'s order).
    pub kinds: [u64; KINDS],
}

impl ProviderSummary {
    pub fn cost(&self) -> f64 {
        self.billed as f64 * self.price
    }
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct Summary {
    pub breakers_on: bool,
    pub providers: Vec<ProviderSummary>,
    pub requests: u64,
    pub served: u64,
    /// Served by a member other than the first, or after the first was skipped or failed.
    pub served_by_fallback: u64,
    /// Requests the user saw fail: deadline, all open, or an error from the last member.
    pub failures: u64,
    pub failures_deadline: u64,
    /// Requests whose refusal went back to the caller, by kind (content filter, too long for
    /// every model reachable, invalid): answers about the request, not failures of a provider.
    pub refused: [u64; KINDS],
    /// Times a request moved on from a member, by the kind of failure that moved it.
    pub moved: [u64; KINDS],
    /// From the first provider's recovery to its breaker's closing (`None` when it did not
    /// close after the recovery, or breakers are off).
    pub recovery_to_close: Option<Duration>,
    /// Latency percentiles over every request (scheduled start to end).
    pub p50: Duration,
    pub p99: Duration,
    pub wall: Duration,
    pub concurrency: usize,
}

impl Summary {
    pub fn cost(&self) -> f64 {
        self.providers.iter().map(ProviderSummary::cost).sum()
    }

    /// The cost had providers billed only the answers they served (no 500, no timeout): the
    /// lower bound, where a breaker saves no money on the down provider and its recovery lag
    /// keeps traffic on a dearer fallback a little longer.
    pub fn answers_cost(&self) -> f64 {
        self.providers.iter().map(|p| p.served as f64 * p.price).sum()
    }

    pub fn wasted(&self) -> u64 {
        self.providers.iter().map(|p| p.wasted).sum()
    }

    /// Requests refused to the caller, every kind.
    pub fn refusals(&self) -> u64 {
        self.refused.iter().sum()
    }

    /// Provider answers of `kind`, every provider.
    pub fn answers_of(&self, kind: LlmErrorKind) -> u64 {
        self.providers.iter().map(|p| p.kinds[kind_index(kind)]).sum()
    }
}

fn summarise(
    stack: &Stack,
    load: &Load,
    records: &[Record],
    epoch: Instant,
    recovers: Option<Duration>,
    wall: Duration,
) -> Summary {
    let n = stack.providers.len();
    let mut served = vec![0u64; n];
    let (mut fallback, mut failures, mut deadline) = (0, 0, 0);
    let (mut refused, mut moved) = ([0; KINDS], [0; KINDS]);
    let mut latencies: Vec<Duration> = records.iter().map(|r| r.latency).collect();
    latencies.sort_unstable();
    for r in records {
        for (total, n) in moved.iter_mut().zip(r.moved) {
            *total += u64::from(n);
        }
        match r.ending {
            Ending::Served { by, fell_back } => {
                served[by] += 1;
                if by > 0 || fell_back {
                    fallback += 1;
                }
            }
            Ending::Refused { kind, .. } => refused[kind_index(kind)] += 1,
            Ending::Deadline => {
                failures += 1;
                deadline += 1;
            }
            Ending::AllOpen | Ending::Error => failures += 1,
        }
    }
    let breakers_on = stack.breakers.iter().all(|b| b.state() != State::Disabled);
    let recovery_to_close = match (recovers, stack.counters.first()) {
        (Some(at), Some(c)) if breakers_on => {
            let recovered = epoch + at;
            c.transitions
                .lock()
                .unwrap()
                .iter()
                .find(|(t, s)| *t >= recovered && *s == State::Closed)
                .map(|(t, _)| t.saturating_duration_since(recovered))
        }
        _ => None,
    };
    Summary {
        breakers_on,
        providers: stack
            .providers
            .iter()
            .zip(&stack.counters)
            .zip(served)
            .map(|((p, c), served)| {
                let calls = c.calls.load(Ordering::Relaxed);
                ProviderSummary {
                    name: p.name.clone(),
                    price: p.price,
                    calls,
                    wasted: c.wasted.load(Ordering::Relaxed),
                    billed: calls - c.free.load(Ordering::Relaxed).min(calls),
                    served,
                    fast_fails: c.fast_fails.load(Ordering::Relaxed),
                    open_periods: c.open_periods.load(Ordering::Relaxed),
                    server_requests: None,
                    kinds: std::array::from_fn(|i| c.kinds[i].load(Ordering::Relaxed)),
                }
            })
            .collect(),
        requests: records.len() as u64,
        served: records.len() as u64 - failures - refused.iter().sum::<u64>(),
        served_by_fallback: fallback,
        failures,
        failures_deadline: deadline,
        refused,
        moved,
        recovery_to_close,
        p50: quantile(&latencies, 0.5).unwrap_or_default(),
        p99: quantile(&latencies, 0.99).unwrap_or_default(),
        wall,
        concurrency: load.concurrency,
    }
}
