//! The scenario of `examples/llm_failover`, shared with `tests/showcase.rs` so that the test
//! runs exactly the code the example runs.
//!
//! - [`Sim`]: a simulated OpenAI-compatible provider, a real hyper server on `127.0.0.1:0`
//!   answering `POST /v1/chat/completions` with a latency and scripted faults (500s, 429s with
//!   `Retry-After`) over phases of the run.
//! - [`build_stack`]: the client stack: one hyper-util client (over [`https_connector`], http
//!   or https by the URL's scheme); per provider an
//!   `HttpClassifier`-driven breaker over a timeout over the provider's client; a
//!   [`Failover`] over the providers that also falls back after a failed call.
//! - [`run`]: drives requests at a steady rate with bounded concurrency and a per-request
//!   deadline, reports progress, and returns a [`Summary`].
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
use tower::{Service, ServiceBuilder, ServiceExt, util::BoxCloneSyncService};
use tower_breaker::{
    AllUnavailable, BoxError, Builder, CircuitBreaker, CircuitBreakerLayer, Classify, Event, Failover,
    HttpClassifier, Outcome, State,
    fallback::{CloneRequest, Provenance},
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

/// One OpenAI-compatible upstream.
#[derive(Clone, Debug)]
pub struct Provider {
    /// The name in breakers, logs and the summary.
    pub name: String,
    /// Up to and including the API version, e.g. `http://127.0.0.1:8080/v1`; the client posts
    /// to `{base_url}/chat/completions`.
    pub base_url: String,
    /// Sent as `Authorization: Bearer ...` when present.
    pub api_key: Option<ApiKey>,
    /// The `model` field this provider's requests carry.
    pub model: String,
    /// US dollars per billed call (see [`PRICING`]).
    pub price: f64,
    /// Per-attempt timeout (inside the breaker, so a timeout counts as a failure).
    pub timeout: Duration,
}

/// How calls are billed, for the summary's cost rows.
pub const PRICING: &str = "cost = calls billed x the provider's price per call. A call is billed when the \
provider ran the model: an answer, a 500 (the simulated outage fails after generating) or a timeout \
(the provider keeps generating); a 429 is turned away before any work and is free. If providers billed \
only answers, the breakers save no money on the down provider (their win is the wasted calls, the \
failures and the latency), and the second cost row shows that case.";

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

/// One provider's HTTP client: builds the request, sends it, reads the whole body.
#[derive(Clone)]
struct ProviderClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    endpoint: Uri,
    auth: Option<HeaderValue>,
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
        if let Some(auth) = &self.auth {
            builder = builder.header(header::AUTHORIZATION, auth.clone());
        }
        let request = serde_json::to_vec(&body)
            .map_err(BoxError::from)
            .and_then(|b| builder.body(Full::new(Bytes::from(b))).map_err(BoxError::from));
        let client = self.client.clone();
        Box::pin(async move {
            let response = client.request(request?).await?;
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
    /// Calls whose outcome was a failure or a trip (5xx, 429, timeout, connect error).
    pub wasted: AtomicU64,
    /// Calls that are free: 429s and connection failures (nothing ran).
    pub free: AtomicU64,
    /// Calls the breaker refused (the request went on to the next member at once).
    pub fast_fails: AtomicU64,
    /// Times the breaker opened.
    pub open_periods: AtomicU64,
    /// Every state change, with its time.
    pub transitions: Mutex<Vec<(Instant, State)>>,
}

/// Counts each call and its outcome, under the breaker (it sees only admitted calls).
#[derive(Clone)]
struct Metered<S> {
    inner: S,
    counters: Arc<ProviderCounters>,
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
        let counters = self.counters.clone();
        Box::pin(async move {
            let result = future.await;
            if matches!(
                Classify::<Response<Bytes>, BoxError>::classify(&HttpClassifier::new(), result.as_ref()),
                Outcome::Failure | Outcome::Trip(_)
            ) {
                counters.wasted.fetch_add(1, Ordering::Relaxed);
            }
            let free = match &result {
                Ok(res) => res.status() == StatusCode::TOO_MANY_REQUESTS,
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

/// Builds the stack: per provider `breaker → metered → timeout → client`, then
/// `Failover(primary → secondary → ...)` that skips open members without calling them and
/// sends the request on after a failed call (5xx, 429, timeout).
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
        let builder = breaker.builder(&p.name).on_event(move |event| match *event {
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
            let mut value = HeaderValue::try_from(format!("Bearer {}", key.expose()))
                .map_err(|_| format!("the API key of {:?} is not a valid header value", p.name))?;
            value.set_sensitive(true);
            auth = Some(value);
        }
        let endpoint: Uri = format!("{}/chat/completions", p.base_url.trim_end_matches('/')).parse()?;
        let member = ServiceBuilder::new()
            .layer(CircuitBreakerLayer::new(cb.clone()).classify(HttpClassifier::new()))
            .layer_fn(|inner| Metered {
                inner,
                counters: counters.clone(),
            })
            .timeout(p.timeout)
            .service(ProviderClient {
                client: client.clone(),
                endpoint,
                auth,
                model: p.model.clone().into(),
            });
        members.push((p.name.clone(), BoxCloneSyncService::new(member)));
        breakers.push(cb);
        all_counters.push(counters);
    }
    let chain = Failover::new(members).on_failure(CloneRequest::new().classify(HttpClassifier::new()));
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

/// What a simulated provider does during a fault phase.
#[derive(Clone, Copy, Debug)]
pub enum FaultKind {
    /// `500 Internal Server Error` after this long.
    ServerError { latency: Duration },
    /// `429 Too Many Requests` with `Retry-After: {retry_after_secs}`, after this long.
    RateLimited {
        retry_after_secs: u64,
        latency: Duration,
    },
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
    pub price: f64,
    /// Answers take `latency` plus a uniform jitter of up to `jitter`.
    pub latency: Duration,
    pub jitter: Duration,
    pub timeout: Duration,
    pub faults: Vec<Fault>,
}

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

async fn answer(
    sim: Arc<Sim>,
    counters: Arc<SimCounters>,
    epoch: Instant,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let json = |status: StatusCode, body: serde_json::Value| {
        Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap()
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
    let jitter = |d: Duration| d.mul_f64(fastrand::f64());
    match sim.fault_at(arrived) {
        Some(FaultKind::ServerError { latency }) => {
            tokio::time::sleep(latency + jitter(sim.jitter)).await;
            counters.errors.fetch_add(1, Ordering::Relaxed);
            Ok(json(
                StatusCode::INTERNAL_SERVER_ERROR,
                serde_json::json!({"error": {"message": "The server had an error while processing your request.", "type": "server_error"}}),
            ))
        }
        Some(FaultKind::RateLimited {
            retry_after_secs,
            latency,
        }) => {
            tokio::time::sleep(latency).await;
            counters.rate_limited.fetch_add(1, Ordering::Relaxed);
            let mut res = json(
                StatusCode::TOO_MANY_REQUESTS,
                serde_json::json!({"error": {"message": "Rate limit reached for requests", "type": "rate_limit_error"}}),
            );
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
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
}

/// Providers, breakers and load.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub sims: Vec<Sim>,
    pub breaker: BreakerConfig,
    pub load: Load,
}

impl Scenario {
    /// The example's scenario: 10,000 requests at 800/s (12.5 s).
    ///
    /// - `primary` (60-80 ms, $0.0060 a call: the best model) answers 500s after ~250 ms from
    ///   2 s to 8 s.
    /// - `secondary` (90-120 ms, $0.0045: a cheaper model elsewhere) answers 429 with
    ///   `Retry-After: 1` from 3 s to 6 s.
    /// - `backup` (250-300 ms, $0.0120: a dedicated deployment) is always healthy, slower and
    ///   dearer.
    pub fn standard() -> Self {
        let ms = Duration::from_millis;
        let s = Duration::from_secs;
        Self {
            sims: vec![
                Sim {
                    name: "primary",
                    model: "gpt-4o",
                    price: 0.0060,
                    latency: ms(60),
                    jitter: ms(20),
                    timeout: s(2),
                    faults: vec![Fault {
                        from: s(2),
                        until: s(8),
                        kind: FaultKind::ServerError { latency: ms(250) },
                    }],
                },
                Sim {
                    name: "secondary",
                    model: "claude-sonnet",
                    price: 0.0045,
                    latency: ms(90),
                    jitter: ms(30),
                    timeout: s(2),
                    faults: vec![Fault {
                        from: s(3),
                        until: s(6),
                        kind: FaultKind::RateLimited {
                            retry_after_secs: 1,
                            latency: ms(15),
                        },
                    }],
                },
                Sim {
                    name: "backup",
                    model: "llama-3.1-405b",
                    price: 0.0120,
                    latency: ms(250),
                    jitter: ms(50),
                    timeout: s(3),
                    faults: vec![],
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
            },
        }
    }

    /// The same story, shortened for `tests/showcase.rs`: 800 requests at 250/s (3.2 s), the
    /// primary down from 0.5 s to 1.5 s, the secondary rate-limited from 0.7 s to 1.2 s.
    pub fn short() -> Self {
        let ms = Duration::from_millis;
        let mut s = Self::standard();
        let [primary, secondary, backup] = &mut s.sims[..] else {
            unreachable!()
        };
        primary.latency = ms(20);
        primary.jitter = ms(10);
        primary.timeout = ms(500);
        primary.faults[0] = Fault {
            from: ms(500),
            until: ms(1500),
            kind: FaultKind::ServerError { latency: ms(30) },
        };
        secondary.latency = ms(30);
        secondary.jitter = ms(10);
        secondary.timeout = ms(500);
        secondary.faults[0] = Fault {
            from: ms(700),
            until: ms(1200),
            kind: FaultKind::RateLimited {
                retry_after_secs: 1,
                latency: ms(5),
            },
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
                model: sim.model.into(),
                price: sim.price,
                timeout: sim.timeout,
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
    /// Not answered within the deadline.
    Deadline,
    /// Every member's breaker was open.
    AllOpen,
    /// The last member tried failed.
    Error,
}

#[derive(Clone, Copy, Debug)]
struct Record {
    /// When it ended, from the start.
    done: Duration,
    /// From its scheduled start to its end.
    latency: Duration,
    ending: Ending,
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
    let request = ChatRequest::user("Summarise the plot of Hamlet in one sentence.", 64);

    let driver = {
        let (records, chain, load, names) =
            (records.clone(), stack.chain.clone(), load.clone(), names.clone());
        tokio::spawn(async move {
            let mut tasks = JoinSet::new();
            for i in 0..load.requests {
                let at = epoch + Duration::from_secs_f64(i as f64 / load.rate);
                tokio::time::sleep_until(at).await;
                let deadline = at + load.deadline;
                let (slots, mut chain, records, names, request) = (
                    slots.clone(),
                    chain.clone(),
                    records.clone(),
                    names.clone(),
                    request.clone(),
                );
                tasks.spawn(async move {
                    let ending = tokio::time::timeout_at(deadline, async {
                        let _slot = slots.acquire_owned().await.expect("never closed");
                        chain.ready().await?.call(request).await
                    })
                    .await;
                    let ending = match ending {
                        Err(_) => Ending::Deadline,
                        Ok(Ok(res)) => match res.extensions().get::<Provenance>() {
                            Some(p) => Ending::Served {
                                by: names.iter().position(|n| n == p.served_by()).unwrap_or(0),
                                fell_back: p.fell_back(),
                            },
                            None => Ending::Served {
                                by: 0,
                                fell_back: false,
                            },
                        },
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
    let mut latencies: Vec<Duration> = records.iter().map(|r| r.latency).collect();
    latencies.sort_unstable();
    for r in records {
        match r.ending {
            Ending::Served { by, fell_back } => {
                served[by] += 1;
                if by > 0 || fell_back {
                    fallback += 1;
                }
            }
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
                }
            })
            .collect(),
        requests: records.len() as u64,
        served: records.len() as u64 - failures,
        served_by_fallback: fallback,
        failures,
        failures_deadline: deadline,
        recovery_to_close,
        p50: quantile(&latencies, 0.5).unwrap_or_default(),
        p99: quantile(&latencies, 0.99).unwrap_or_default(),
        wall,
        concurrency: load.concurrency,
    }
}
