//! Providers as the client sees them: keys, the client stack, the failover.

use std::{
    fmt,
    future::Future,
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
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceBuilder, ServiceExt, util::BoxCloneSyncService};
use tower_breaker::{
    BoxError, Builder, CircuitBreaker, CircuitBreakerLayer, Event, Failover, Outcome, State,
    llm::{LlmClassifier, LlmErrorKind, LlmErrorLayer, LlmErrorService, LlmRouting, ProviderError},
};

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
