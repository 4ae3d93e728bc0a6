//! Routing by kind (`LlmRouting`, `on_llm_failure`) and `AllOpen::ProbeSoonest`, over real
//! sockets: hyper servers on 127.0.0.1 answering with OpenAI's, Azure OpenAI's and Anthropic's
//! real error bodies and headers, a hyper-util client, and per provider
//! `breaker (LlmClassifier) → LlmErrorLayer → client` in a `Failover`.
//!
//! The bodies are the ones `tests/llm.rs` copies from the providers' API references ("Error
//! codes" at OpenAI, the Azure OpenAI REST reference and its content filtering page, "Errors"
//! at Anthropic).
//!
//! Time: the real clock, with no test waiting on it (open periods of 10 s and more, decisions
//! read at once), except the timeout test, which runs paused with the timeout as its only
//! timer.
#![cfg(all(feature = "llm", feature = "hyper-util"))]

mod support;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use support::client;
use tokio::net::TcpListener;
use tower::{ServiceBuilder, ServiceExt, util::BoxCloneService};
use tower_breaker::{
    AllUnavailable, BoxError, CircuitBreaker, CircuitBreakerLayer, Failover, Outcome, State,
    fallback::{AllOpen, Provenance, SkipReason},
    llm::{KindRoute, LlmBody, LlmClassifier, LlmErrorKind, LlmErrorLayer, LlmRouting, ProviderError},
};

const S: Duration = Duration::from_secs(1);

// ---------- the providers' real bodies ----------

/// OpenAI, 429, `insufficient_quota` (API reference, "Error codes").
const OPENAI_QUOTA: &str = r#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;
/// OpenAI, 429, a tokens-per-minute rate limit.
const OPENAI_RATE: &str = r#"{"error":{"message":"Rate limit reached for gpt-4o in organization org-abc on tokens per min (TPM): Limit 30000, Used 29661, Requested 1046. Please try again in 1.414s. Visit https://platform.openai.com/account/rate-limits to learn more.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}"#;
/// OpenAI, 400, `context_length_exceeded`.
const OPENAI_CONTEXT: &str = r#"{"error":{"message":"This model's maximum context length is 128000 tokens. However, your messages resulted in 131072 tokens. Please reduce the length of the messages.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#;
/// OpenAI, 401, `invalid_api_key`.
const OPENAI_AUTH: &str = r#"{"error":{"message":"Incorrect API key provided: sk-proj-********************wxyz. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#;
/// OpenAI, 500, `server_error`.
const OPENAI_SERVER: &str = r#"{"error":{"message":"The server had an error while processing your request. Sorry about that!","type":"server_error","param":null,"code":null}}"#;
/// OpenAI, 404, `model_not_found`.
const OPENAI_NO_MODEL: &str = r#"{"error":{"message":"The model `gpt-9` does not exist or you do not have access to it.","type":"invalid_request_error","param":null,"code":"model_not_found"}}"#;
/// Azure OpenAI, 400, the content filter.
const AZURE_FILTER: &str = r#"{"error":{"message":"The response was filtered due to the prompt triggering Azure OpenAI's content management policy. Please modify your prompt and retry. To learn more about our content filtering policies please read our documentation: https://go.microsoft.com/fwlink/?linkid=2198766","type":null,"param":"prompt","code":"content_filter","status":400,"innererror":{"code":"ResponsibleAIPolicyViolation","content_filter_result":{"hate":{"filtered":false,"severity":"safe"},"self_harm":{"filtered":false,"severity":"safe"},"sexual":{"filtered":false,"severity":"safe"},"violence":{"filtered":true,"severity":"medium"}}}}}"#;

/// Anthropic's error envelope (API reference, "Errors").
fn anthropic(ty: &str, message: &str) -> String {
    format!(
        r#"{{"type":"error","error":{{"type":"{ty}","message":"{message}"}},"request_id":"req_011CSHoEeqs5C35K2UUqR7Fy"}}"#
    )
}

const COMPLETION: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Hello!"},"finish_reason":"stop"}]}"#;

// ---------- a provider ----------

#[derive(Clone, Debug)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

fn reply(status: u16, body: impl Into<String>) -> Reply {
    Reply {
        status,
        headers: vec![("content-type", "application/json".into())],
        body: body.into(),
    }
}

impl Reply {
    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

fn ok() -> Reply {
    reply(200, COMPLETION)
}

/// A provider on 127.0.0.1 answering each request (by its hit number) with `answer`.
struct Provider {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

impl Provider {
    async fn start(answer: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let (h, answer) = (hits.clone(), Arc::new(answer));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (h, answer) = (h.clone(), answer.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_: Request<Incoming>| {
                        let r = answer(h.fetch_add(1, Ordering::SeqCst));
                        let mut res = Response::new(Full::new(Bytes::from(r.body)));
                        *res.status_mut() = StatusCode::from_u16(r.status).unwrap();
                        for (name, value) in r.headers {
                            res.headers_mut().insert(name, value.parse().unwrap());
                        }
                        async move { Ok::<_, Infallible>(res) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self { addr, hits }
    }

    /// Always `reply`.
    async fn always(reply: Reply) -> Self {
        Self::start(move |_| reply.clone()).await
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

type Member = BoxCloneService<Request<Full<Bytes>>, Response<LlmBody<Incoming>>, BoxError>;

/// `breaker (LlmClassifier) → [timeout] → LlmErrorLayer → client`, aimed at `addr`.
fn member(breaker: &CircuitBreaker, addr: SocketAddr, timeout: Option<Duration>) -> Member {
    let classify = LlmClassifier::new().provider(breaker.name().to_owned());
    let to_addr = ServiceBuilder::new()
        .layer(LlmErrorLayer::new())
        .map_request(move |mut req: Request<Full<Bytes>>| {
            *req.uri_mut() = Uri::try_from(format!("http://{addr}/v1/chat/completions")).unwrap();
            req
        })
        .service(client());
    let layer = CircuitBreakerLayer::new(breaker.clone()).classify(classify);
    match timeout {
        Some(t) => BoxCloneService::new(ServiceBuilder::new().layer(layer).timeout(t).service(to_addr)),
        None => BoxCloneService::new(ServiceBuilder::new().layer(layer).service(to_addr)),
    }
}

fn breaker(name: &str) -> CircuitBreaker {
    CircuitBreaker::builder(name)
        .consecutive_failures(3)
        .open_duration(30 * S)
        .max_open_duration(600 * S)
        .build()
        .unwrap()
}

fn chat() -> Request<Full<Bytes>> {
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    Request::post("http://unused/")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

fn provenance<B>(res: &Response<B>) -> &Provenance {
    res.extensions().get::<Provenance>().expect("a provenance")
}

fn kind_of<B>(res: &Response<B>) -> Option<LlmErrorKind> {
    res.extensions().get::<ProviderError>().map(ProviderError::kind)
}

async fn body_of(res: Response<LlmBody<Incoming>>) -> String {
    String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

// ---------- routing by kind ----------

#[tokio::test]
async fn each_kind_fails_over_or_returns_to_the_caller_as_its_default_says() {
    use LlmErrorKind::*;
    // (case, the first provider's answer, routed on (its label), the breaker's state after)
    let cases: Vec<(&str, Reply, Option<LlmErrorKind>, State)> = vec![
        (
            "openai quota",
            reply(429, OPENAI_QUOTA),
            Some(QuotaExhausted),
            State::Open,
        ),
        (
            "openai rate limit",
            reply(429, OPENAI_RATE).header("retry-after-ms", "1500"),
            Some(RateLimited),
            State::Open,
        ),
        (
            "anthropic 529",
            reply(529, anthropic("overloaded_error", "Overloaded")),
            Some(Overloaded),
            State::Closed, // one failure of three
        ),
        (
            "anthropic credit balance",
            reply(
                400,
                anthropic(
                    "invalid_request_error",
                    "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.",
                ),
            ),
            Some(QuotaExhausted),
            State::Open,
        ),
        ("openai auth", reply(401, OPENAI_AUTH), Some(Auth), State::Open),
        (
            "openai 500",
            reply(500, OPENAI_SERVER),
            Some(Server),
            State::Closed,
        ),
        (
            "a proxy's HTML 503",
            reply(503, "<html><body>503 Service Unavailable</body></html>")
                .header("content-type", "text/html"),
            Some(Overloaded), // the status's kind: no provider error in the body
            State::Closed,
        ),
        (
            "azure content filter",
            reply(400, AZURE_FILTER),
            None,
            State::Closed,
        ),
        (
            "openai context window",
            reply(400, OPENAI_CONTEXT),
            None,
            State::Closed,
        ),
        (
            "openai no such model",
            reply(404, OPENAI_NO_MODEL),
            None,
            State::Closed,
        ),
    ];
    for (case, first, moved_by, state) in cases {
        let (a, b) = (breaker("openai"), breaker("anthropic"));
        let first_status = first.status;
        let (pa, pb) = (Provider::always(first).await, Provider::always(ok()).await);
        let chain = Failover::new([
            ("openai", member(&a, pa.addr, None)),
            ("anthropic", member(&b, pb.addr, None)),
        ])
        .on_llm_failure();
        let res = chain.oneshot(chat()).await.unwrap();
        let p = provenance(&res).clone();
        match moved_by {
            Some(kind) => {
                assert_eq!(res.status(), 200, "{case}");
                assert_eq!(p.served_by(), "anthropic", "{case}");
                assert_eq!(p.skipped()[0].member(), "openai", "{case}");
                assert_eq!(p.skipped()[0].because(), Some(kind.as_str()), "{case}");
                assert!(
                    matches!(p.skipped()[0].reason(), SkipReason::FailureResponse),
                    "{case}"
                );
                assert_eq!(pb.hits(), 1, "{case}");
            }
            None => {
                // The caller gets the provider's own answer, whole; nobody else is asked.
                assert_eq!(res.status().as_u16(), first_status, "{case}");
                assert_eq!(p.served_by(), "openai", "{case}");
                assert!(!p.fell_back(), "{case}");
                assert!(kind_of(&res).is_some(), "{case}: the kind is in the extensions");
                assert_eq!(pb.hits(), 0, "{case}: never sent to another provider");
            }
        }
        assert_eq!(pa.hits(), 1, "{case}");
        assert_eq!(a.state(), state, "{case}");
    }
}

#[tokio::test]
async fn a_content_refusal_reaches_the_caller_byte_for_byte() {
    let (a, b) = (breaker("azure"), breaker("openai"));
    let (pa, pb) = (
        Provider::always(reply(400, AZURE_FILTER)).await,
        Provider::always(ok()).await,
    );
    let chain = Failover::new([
        ("azure", member(&a, pa.addr, None)),
        ("openai", member(&b, pb.addr, None)),
    ])
    .on_llm_failure();
    for _ in 0..5 {
        let res = chain.clone().oneshot(chat()).await.unwrap();
        assert_eq!(kind_of(&res), Some(LlmErrorKind::ContentPolicy));
        assert_eq!(body_of(res).await, AZURE_FILTER);
    }
    assert_eq!(pb.hits(), 0);
    // Not the provider's health: the breaker ignored every refusal.
    assert_eq!(a.state(), State::Closed);
    assert_eq!(a.snapshot().consecutive_failures, 0);
}

#[tokio::test]
async fn a_context_window_error_goes_to_the_larger_model_past_smaller_ones() {
    let (small, haiku, large) = (breaker("gpt-4o"), breaker("claude-haiku"), breaker("gpt-4.1"));
    let ps = Provider::always(reply(400, OPENAI_CONTEXT)).await;
    let too_long = anthropic(
        "invalid_request_error",
        "prompt is too long: 208310 tokens > 200000 maximum",
    );
    let ph = Provider::always(reply(400, too_long)).await;
    let pl = Provider::always(ok()).await;
    let chain = Failover::new([
        ("gpt-4o", member(&small, ps.addr, None)),
        ("claude-haiku", member(&haiku, ph.addr, None)),
        ("gpt-4.1", member(&large, pl.addr, None)),
    ])
    .on_failure(LlmRouting::new().larger_context(["gpt-4.1"]));

    let res = chain.clone().oneshot(chat()).await.unwrap();
    assert_eq!(res.status(), 200);
    let p = provenance(&res);
    assert_eq!(p.served_by(), "gpt-4.1");
    assert_eq!(p.skipped().len(), 1, "{p}");
    assert_eq!(p.skipped()[0].because(), Some("context_window_exceeded"));
    assert_eq!(
        (ps.hits(), ph.hits(), pl.hits()),
        (1, 0, 1),
        "the smaller claude-haiku is passed over"
    );
    assert_eq!(small.state(), State::Closed, "not the provider's health");

    // The larger model open: the context error stands, to the caller.
    large.force_open();
    let res = chain.clone().oneshot(chat()).await.unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(kind_of(&res), Some(LlmErrorKind::ContextWindowExceeded));
    let p = provenance(&res);
    assert_eq!(p.served_by(), "gpt-4o");
    assert_eq!(p.skipped()[0].member(), "gpt-4.1");
    assert!(p.skipped()[0].circuit_open().is_some());
    assert_eq!(ph.hits(), 0);

    // Two larger models, each named: the one that is too small for this prompt too hands on.
    large.reset();
    let chain = Failover::new([
        ("gpt-4o", member(&small, ps.addr, None)),
        ("claude-haiku", member(&haiku, ph.addr, None)),
        ("gpt-4.1", member(&large, pl.addr, None)),
    ])
    .on_failure(LlmRouting::new().route(
        LlmErrorKind::ContextWindowExceeded,
        KindRoute::to(["claude-haiku", "gpt-4.1"]),
    ));
    let res = chain.oneshot(chat()).await.unwrap();
    let hops: Vec<_> = provenance(&res)
        .skipped()
        .iter()
        .map(|s| (s.member(), s.because()))
        .collect();
    assert_eq!(
        hops,
        [
            ("gpt-4o", Some("context_window_exceeded")),
            ("claude-haiku", Some("context_window_exceeded"))
        ]
    );
    assert_eq!(provenance(&res).served_by(), "gpt-4.1");
}

/// The timeout is the only timer while the first provider hangs: the paused clock jumps to it.
/// The second member has no timeout, so nothing else can fire while its real socket works.
#[tokio::test(start_paused = true)]
async fn a_timeout_fails_over_without_a_kind() {
    let (a, b) = (breaker("openai"), breaker("anthropic"));
    let hang = support::black_hole().await;
    let pb = Provider::always(ok()).await;
    let chain = Failover::new([
        ("openai", member(&a, hang, Some(20 * S))),
        ("anthropic", member(&b, pb.addr, None)),
    ])
    .on_llm_failure();
    let res = chain.oneshot(chat()).await.unwrap();
    let p = provenance(&res);
    assert_eq!(p.served_by(), "anthropic");
    assert_eq!(p.skipped()[0].because(), None);
    match p.skipped()[0].reason() {
        SkipReason::Failed(e) => assert!(e.is::<tower::timeout::error::Elapsed>(), "{e}"),
        other => panic!("expected the timeout, got {other:?}"),
    }
}

// ---------- every provider open: AllOpen::ProbeSoonest ----------

/// A breaker opened by its own rule (one 529), for `open`.
fn blipped(name: &str, open: Duration) -> CircuitBreaker {
    let b = CircuitBreaker::builder(name)
        .consecutive_failures(1)
        .open_duration(open)
        .build()
        .unwrap();
    b.try_acquire().unwrap().record(Outcome::Failure);
    b
}

#[tokio::test]
async fn every_provider_open_after_a_blip_serves_through_an_early_probe() {
    let (a, b) = (blipped("openai", 30 * S), blipped("anthropic", 10 * S));
    let (pa, pb) = (Provider::always(ok()).await, Provider::always(ok()).await);
    let members = [
        ("openai", member(&a, pa.addr, None)),
        ("anthropic", member(&b, pb.addr, None)),
    ];

    // Without the policy: refused for 10 s.
    let err = Failover::new(members.clone())
        .on_llm_failure()
        .oneshot(chat())
        .await
        .unwrap_err();
    let all = err.downcast_ref::<AllUnavailable>().expect("every member open");
    assert!(all.retry_after().unwrap() <= 10 * S);
    assert_eq!(pa.hits() + pb.hits(), 0);

    // With it: anthropic's period ends first; the request is its probe, which closes it.
    let chain = Failover::new(members)
        .on_llm_failure()
        .when_all_open(AllOpen::ProbeSoonest);
    let res = chain.clone().oneshot(chat()).await.unwrap();
    assert_eq!(res.status(), 200);
    let p = provenance(&res);
    assert_eq!(p.served_by(), "anthropic");
    assert!(p.probed_early());
    assert_eq!(p.skipped()[0].member(), "openai");
    assert_eq!((pa.hits(), pb.hits()), (0, 1));
    assert_eq!(b.state(), State::Closed);
    assert_eq!(a.state(), State::Open, "only one member is probed");

    // Anthropic is closed now: the next request goes there, as any request would.
    let res = chain.oneshot(chat()).await.unwrap();
    assert!(!provenance(&res).probed_early());
    assert_eq!(pb.hits(), 2);
}

#[tokio::test]
async fn an_early_probe_that_fails_reopens_and_its_answer_stands() {
    let overloaded = || reply(529, anthropic("overloaded_error", "Overloaded"));
    let (a, b) = (blipped("openai", 30 * S), blipped("anthropic", 10 * S));
    let (pa, pb) = (Provider::always(ok()).await, Provider::always(overloaded()).await);
    let chain = Failover::new([
        ("openai", member(&a, pa.addr, None)),
        ("anthropic", member(&b, pb.addr, None)),
    ])
    .on_llm_failure()
    .when_all_open(AllOpen::ProbeSoonest);
    let res = chain.oneshot(chat()).await.unwrap();
    // The probe's 529 would fail over, but the only other member is open: the answer stands.
    assert_eq!(res.status(), 529);
    assert_eq!(kind_of(&res), Some(LlmErrorKind::Overloaded));
    let p = provenance(&res);
    assert_eq!(p.served_by(), "anthropic");
    assert!(p.probed_early());
    assert_eq!((pa.hits(), pb.hits()), (0, 1));
    assert_eq!(b.state(), State::Open, "the failed probe reopened it");
    assert_eq!(b.snapshot().reason, Some(tower_breaker::Reason::ProbeFailed));
}

#[tokio::test]
async fn a_servers_wait_a_quota_and_an_operator_are_never_bypassed() {
    // openai: rate limited, the server said 2 s; azure: out of quota (open for max_open);
    // local: forced open by an operator; anthropic: open 30 s after a blip.
    let (openai, azure, local) = (breaker("openai"), breaker("azure"), breaker("local"));
    let anthropic_b = blipped("anthropic", 30 * S);
    let rate = Provider::always(reply(429, OPENAI_RATE).header("retry-after", "2")).await;
    let quota = Provider::always(reply(429, OPENAI_QUOTA)).await;
    let healthy = Provider::always(ok()).await;
    let members = vec![
        ("openai", member(&openai, rate.addr, None)),
        ("azure", member(&azure, quota.addr, None)),
        ("local", member(&local, healthy.addr, None)),
        ("anthropic", member(&anthropic_b, healthy.addr, None)),
    ];
    // Trip openai and azure through their real answers (the chain without anthropic).
    let first_two = Failover::new(members[..2].to_vec()).on_llm_failure();
    let _ = first_two.oneshot(chat()).await;
    assert_eq!((openai.state(), azure.state()), (State::Open, State::Open));
    assert!(openai.snapshot().retry_after.unwrap() <= 2 * S);
    local.force_open();

    let chain = Failover::new(members)
        .on_llm_failure()
        .when_all_open(AllOpen::ProbeSoonest);
    let res = chain.oneshot(chat()).await.unwrap();
    let p = provenance(&res);
    assert_eq!(p.served_by(), "anthropic", "{p}");
    assert!(p.probed_early());
    assert_eq!(
        (rate.hits(), quota.hits()),
        (1, 1),
        "only the calls that tripped them"
    );
    assert_eq!(healthy.hits(), 1);
    assert_eq!(local.state(), State::ForcedOpen);
}
