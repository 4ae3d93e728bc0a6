//! The `llm` feature over real sockets: a hyper server on 127.0.0.1 answering with OpenAI's,
//! Azure OpenAI's and Anthropic's real error bodies and rate-limit headers, a hyper-util
//! client, `LlmErrorLayer` inside a breaker classified by `LlmClassifier`.
//!
//! The bodies are copied from the providers' API references ("Error codes" at OpenAI, the
//! Azure OpenAI REST reference and its content filtering page, "Errors" at Anthropic) and the
//! official SDKs (openai-python and anthropic-sdk-python, `_exceptions.py`,
//! `types/shared/*_error.py`); the headers from their "Rate limits" pages.
//!
//! Time: the real clock, with no test waiting on it (the trips are read from the recorded
//! outcomes, exact, and from the breaker's deadline, bounded).
#![cfg(all(feature = "llm", feature = "hyper-util"))]

mod support;
use support::capture::Capture;

use std::{
    collections::VecDeque,
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use support::{client, get, record_outcomes};
use tokio::{net::TcpListener, sync::Notify};
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_breaker::{
    BoxError, CircuitBreaker, CircuitBreakerLayer, Outcome, State,
    llm::{LlmBody, LlmClassifier, LlmErrorKind, LlmErrorLayer, ProviderError},
};
use tracing::Level;

const S: Duration = Duration::from_secs(1);
const MAX_OPEN: Duration = Duration::from_secs(600);

// ---------- the providers' real bodies ----------

/// OpenAI, 429, `insufficient_quota` (API reference, "Error codes").
const OPENAI_QUOTA: &str = r#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;
/// OpenAI, 429, a tokens-per-minute rate limit.
const OPENAI_RATE: &str = r#"{"error":{"message":"Rate limit reached for gpt-4o in organization org-abc on tokens per min (TPM): Limit 30000, Used 29661, Requested 1046. Please try again in 1.414s. Visit https://platform.openai.com/account/rate-limits to learn more.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}"#;
/// OpenAI, 400, `context_length_exceeded`.
const OPENAI_CONTEXT: &str = r#"{"error":{"message":"This model's maximum context length is 128000 tokens. However, your messages resulted in 131072 tokens. Please reduce the length of the messages.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#;
/// OpenAI, 401, `invalid_api_key`: the message echoes part of the key.
const OPENAI_AUTH: &str = r#"{"error":{"message":"Incorrect API key provided: sk-proj-********************wxyz. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#;
/// OpenAI, 400, `content_policy_violation`.
const OPENAI_POLICY: &str = r#"{"error":{"message":"Your request was rejected as a result of our safety system. Your prompt may contain text that is not allowed by our safety system.","type":"invalid_request_error","param":null,"code":"content_policy_violation"}}"#;
/// OpenAI, 500, `server_error`.
const OPENAI_SERVER: &str = r#"{"error":{"message":"The server had an error while processing your request. Sorry about that!","type":"server_error","param":null,"code":null}}"#;
/// Azure OpenAI, 400, the content filter.
const AZURE_FILTER: &str = r#"{"error":{"message":"The response was filtered due to the prompt triggering Azure OpenAI's content management policy. Please modify your prompt and retry. To learn more about our content filtering policies please read our documentation: https://go.microsoft.com/fwlink/?linkid=2198766","type":null,"param":"prompt","code":"content_filter","status":400,"innererror":{"code":"ResponsibleAIPolicyViolation","content_filter_result":{"hate":{"filtered":false,"severity":"safe"},"self_harm":{"filtered":false,"severity":"safe"},"sexual":{"filtered":false,"severity":"safe"},"violence":{"filtered":true,"severity":"medium"}}}}}"#;
/// Azure OpenAI, 429.
const AZURE_RATE: &str = r#"{"error":{"code":"429","message":"Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-02-01 have exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after 2 seconds. Please go here: https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit."}}"#;

/// Anthropic's error envelope (API reference, "Errors").
fn anthropic(ty: &str, message: &str) -> String {
    format!(
        r#"{{"type":"error","error":{{"type":"{ty}","message":"{message}"}},"request_id":"req_011CSHoEeqs5C35K2UUqR7Fy"}}"#
    )
}

// ---------- a scripted provider ----------

#[derive(Clone)]
enum Body {
    Full(String),
    /// These chunks; the server waits for the `Notify` after the first.
    Gated(Vec<&'static str>, Arc<Notify>),
    /// These chunks, chunked (no `Content-Length`).
    Chunked(Vec<String>),
}

#[derive(Clone)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Body,
}

fn reply(status: u16, body: impl Into<String>) -> Reply {
    Reply {
        status,
        headers: vec![("content-type", "application/json".into())],
        body: Body::Full(body.into()),
    }
}

impl Reply {
    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

type Script = Arc<Mutex<VecDeque<Reply>>>;

async fn provider(script: Script) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let script = script.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
                    let next = script.lock().unwrap().pop_front().expect("a scripted reply");
                    async move { Ok::<_, Infallible>(answer(next)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn answer(reply: Reply) -> Response<BoxBody<Bytes, Infallible>> {
    let body = match reply.body {
        Body::Full(s) => Full::new(Bytes::from(s)).boxed(),
        Body::Gated(chunks, gate) => {
            let stream = futures::stream::unfold((0, chunks, gate), |(i, chunks, gate)| async move {
                let chunk = *chunks.get(i)?;
                if i == 1 {
                    gate.notified().await;
                }
                Some((
                    Ok(Frame::data(Bytes::from_static(chunk.as_bytes()))),
                    (i + 1, chunks, gate),
                ))
            });
            BodyExt::boxed(StreamBody::new(stream))
        }
        Body::Chunked(chunks) => {
            let frames = chunks.into_iter().map(|c| Ok(Frame::data(Bytes::from(c))));
            BodyExt::boxed(StreamBody::new(futures::stream::iter(frames)))
        }
    };
    let mut res = Response::new(body);
    *res.status_mut() = StatusCode::from_u16(reply.status).unwrap();
    for (name, value) in reply.headers {
        res.headers_mut().insert(name, value.parse().unwrap());
    }
    res
}

/// A provider answering `replies` in order, and the stack `breaker → LlmErrorLayer → client`
/// with its breaker (trips on the 100th consecutive failure) and recorded outcomes.
struct Stack {
    addr: SocketAddr,
    breaker: CircuitBreaker,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    svc: tower::util::BoxCloneService<Request<Full<Bytes>>, Response<LlmBody<Incoming>>, BoxError>,
}

async fn stack(
    replies: impl IntoIterator<Item = Reply>,
    layer: LlmErrorLayer,
    classifier: LlmClassifier,
) -> Stack {
    let script = Arc::new(Mutex::new(replies.into_iter().collect()));
    let addr = provider(script).await;
    let (builder, outcomes) = record_outcomes(
        CircuitBreaker::builder("openai-primary")
            .consecutive_failures(100)
            .max_open_duration(MAX_OPEN),
    );
    let breaker = builder.build().unwrap();
    let svc = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(breaker.clone()).classify(classifier))
        .layer(layer)
        .service(client());
    Stack {
        addr,
        breaker,
        outcomes,
        svc: tower::util::BoxCloneService::new(svc),
    }
}

impl Stack {
    async fn send(&mut self) -> Response<LlmBody<Incoming>> {
        let uri = format!("http://{}/v1/chat/completions", self.addr)
            .parse()
            .unwrap();
        self.svc.ready().await.unwrap().call(get(uri)).await.unwrap()
    }

    fn last_outcome(&self) -> Outcome {
        *self.outcomes.lock().unwrap().last().expect("an outcome")
    }
}

fn kind_of<B>(res: &Response<B>) -> Option<LlmErrorKind> {
    res.extensions().get::<ProviderError>().map(ProviderError::kind)
}

// ---------- each kind and its reaction ----------

#[tokio::test]
async fn each_kind_is_classified_and_the_breaker_reacts() {
    use LlmErrorKind::*;
    let cases: Vec<(&str, Reply, LlmErrorKind, Outcome)> = vec![
        (
            "openai rate limit with retry-after-ms",
            reply(429, OPENAI_RATE)
                .header("retry-after-ms", "1414")
                .header("retry-after", "2"),
            RateLimited,
            Outcome::Trip(Duration::from_millis(1414)),
        ),
        (
            "openai rate limit, no wait",
            reply(429, OPENAI_RATE),
            RateLimited,
            Outcome::Failure,
        ),
        (
            "openai insufficient_quota (with a retry-after it must not shorten)",
            reply(429, OPENAI_QUOTA).header("retry-after", "20"),
            QuotaExhausted,
            Outcome::Trip(Duration::MAX),
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
            QuotaExhausted,
            Outcome::Trip(Duration::MAX),
        ),
        (
            "anthropic 529 overloaded",
            reply(529, anthropic("overloaded_error", "Overloaded")),
            Overloaded,
            Outcome::Failure,
        ),
        (
            "a 503 overloaded with a wait",
            reply(503, anthropic("overloaded_error", "Overloaded")).header("retry-after", "7"),
            Overloaded,
            Outcome::Trip(7 * S),
        ),
        (
            "openai 401",
            reply(401, OPENAI_AUTH),
            Auth,
            Outcome::Trip(Duration::MAX),
        ),
        (
            "anthropic 403",
            reply(
                403,
                anthropic(
                    "permission_error",
                    "Your API key does not have permission to use the specified resource.",
                ),
            ),
            Auth,
            Outcome::Trip(Duration::MAX),
        ),
        (
            "openai context window",
            reply(400, OPENAI_CONTEXT),
            ContextWindowExceeded,
            Outcome::Ignore,
        ),
        (
            "anthropic prompt too long",
            reply(
                400,
                anthropic(
                    "invalid_request_error",
                    "prompt is too long: 208310 tokens > 200000 maximum",
                ),
            ),
            ContextWindowExceeded,
            Outcome::Ignore,
        ),
        (
            "openai content policy",
            reply(400, OPENAI_POLICY),
            ContentPolicy,
            Outcome::Ignore,
        ),
        (
            "azure content filter",
            reply(400, AZURE_FILTER),
            ContentPolicy,
            Outcome::Ignore,
        ),
        (
            "anthropic invalid request",
            reply(
                400,
                anthropic("invalid_request_error", "max_tokens: Field required"),
            ),
            InvalidRequest,
            Outcome::Ignore,
        ),
        ("openai 500", reply(500, OPENAI_SERVER), Server, Outcome::Failure),
        (
            "anthropic api_error",
            reply(500, anthropic("api_error", "Internal server error")),
            Server,
            Outcome::Failure,
        ),
        (
            "azure 429, the wait only in the message",
            reply(429, AZURE_RATE),
            RateLimited,
            Outcome::Trip(2 * S),
        ),
        (
            "azure 429 with x-ms-retry-after-ms",
            reply(429, AZURE_RATE).header("x-ms-retry-after-ms", "2500"),
            RateLimited,
            Outcome::Trip(Duration::from_millis(2500)),
        ),
    ];
    for (name, reply, kind, outcome) in cases {
        let mut stack = stack([reply], LlmErrorLayer::new(), LlmClassifier::new()).await;
        let res = stack.send().await;
        assert_eq!(kind_of(&res), Some(kind), "{name}");
        assert_eq!(stack.last_outcome(), outcome, "{name}");
        match outcome {
            Outcome::Trip(wait) => {
                assert_eq!(stack.breaker.state(), State::Open, "{name}");
                let left = stack.breaker.try_acquire().unwrap_err().retry_after().unwrap();
                let want = wait.min(MAX_OPEN);
                assert!(
                    left <= want && left + 5 * S > want,
                    "{name}: open for {left:?}, want {want:?}"
                );
            }
            _ => assert_eq!(stack.breaker.state(), State::Closed, "{name}"),
        }
        // The body reaches the caller intact.
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert!(body.starts_with(b"{"), "{name}");
    }
}

#[tokio::test]
async fn the_body_is_replayed_to_the_caller_byte_for_byte() {
    let mut stack = stack(
        [reply(429, OPENAI_QUOTA).header("x-request-id", "req_123")],
        LlmErrorLayer::new(),
        LlmClassifier::new(),
    )
    .await;
    let res = stack.send().await;
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["x-request-id"], "req_123");
    assert!(res.body().was_buffered());
    assert_eq!(
        res.into_body().collect().await.unwrap().to_bytes(),
        OPENAI_QUOTA.as_bytes()
    );
}

#[tokio::test]
async fn the_wait_headers_in_their_order_of_precedence() {
    let full = || {
        reply(429, OPENAI_RATE)
            .header("retry-after-ms", "1500")
            .header("x-ms-retry-after-ms", "2500")
            .header("retry-after", "3")
            .header("x-ratelimit-remaining-tokens", "0")
            .header("x-ratelimit-reset-tokens", "6m0s")
    };
    let without = |names: &[&str]| {
        let mut r = full();
        r.headers.retain(|(n, _)| !names.contains(n));
        r
    };
    let mut stack = stack(
        [
            full(),
            without(&["retry-after-ms"]),
            without(&["retry-after-ms", "x-ms-retry-after-ms"]),
            without(&["retry-after-ms", "x-ms-retry-after-ms", "retry-after"]),
            // Anthropic: the later of the exhausted budgets; the one not exhausted is no wait.
            reply(
                429,
                anthropic(
                    "rate_limit_error",
                    "Number of request tokens has exceeded your per-minute rate limit",
                ),
            )
            .header("anthropic-ratelimit-requests-remaining", "0")
            .header("anthropic-ratelimit-requests-reset", "2999-01-01T00:00:00Z")
            .header("anthropic-ratelimit-input-tokens-remaining", "0")
            .header("anthropic-ratelimit-input-tokens-reset", "3000-01-01T00:00:00Z")
            .header("anthropic-ratelimit-output-tokens-remaining", "8000")
            .header("anthropic-ratelimit-output-tokens-reset", "3001-01-01T00:00:00Z"),
            // Malformed values are skipped, down to the reset of the exhausted budget.
            reply(429, OPENAI_RATE)
                .header("retry-after-ms", "soon")
                .header("retry-after", "1.5.2")
                .header("x-ratelimit-remaining-requests", "0")
                .header("x-ratelimit-reset-requests", "20ms"),
        ],
        LlmErrorLayer::new(),
        LlmClassifier::new(),
    )
    .await;
    let mut waits = Vec::new();
    for _ in 0..6 {
        stack.breaker.reset();
        let _ = stack.send().await;
        waits.push(stack.last_outcome());
    }
    let trip = Outcome::Trip;
    assert_eq!(
        waits[..4],
        [
            trip(Duration::from_millis(1500)),
            trip(Duration::from_millis(2500)),
            trip(3 * S),
            trip(360 * S)
        ]
    );
    // Year 3000, from now: centuries (the breaker clamps it to its max_open_duration).
    let Outcome::Trip(far) = waits[4] else {
        panic!("{:?}", waits[4])
    };
    let years = far.as_secs() / (365 * 24 * 3600);
    assert!((900..1000).contains(&years), "{years}");
    assert_eq!(waits[5], trip(Duration::from_millis(20)));
}

#[tokio::test]
async fn reset_headers_on_a_200_are_not_waits() {
    let ok = || {
        reply(
            200,
            r#"{"id":"chatcmpl-1","object":"chat.completion","choices":[]}"#,
        )
        .header("x-ratelimit-remaining-requests", "0")
        .header("x-ratelimit-reset-requests", "6m0s")
        .header("anthropic-ratelimit-tokens-remaining", "0")
        .header("anthropic-ratelimit-tokens-reset", "2999-01-01T00:00:00Z")
        .header("retry-after-ms", "5000")
    };
    let mut stack = stack([ok(), ok()], LlmErrorLayer::new(), LlmClassifier::new()).await;
    for _ in 0..2 {
        let res = stack.send().await;
        assert_eq!(kind_of(&res), None);
        assert!(!res.body().was_buffered());
        assert_eq!(stack.last_outcome(), Outcome::Success);
        assert_eq!(stack.breaker.state(), State::Closed);
    }
}

#[tokio::test]
async fn a_streamed_2xx_is_not_buffered() {
    let gate = Arc::new(Notify::new());
    let sse = Reply {
        status: 200,
        headers: vec![("content-type", "text/event-stream".into())],
        body: Body::Gated(
            vec![
                "data: {\"delta\":\"Hel\"}\n\n",
                "data: {\"delta\":\"lo\"}\n\n",
                "data: [DONE]\n\n",
            ],
            gate.clone(),
        ),
    };
    let mut stack = stack([sse], LlmErrorLayer::new(), LlmClassifier::new()).await;
    // A guard against a hang if the layer did buffer; no test waits on this clock otherwise.
    let res = tokio::time::timeout(30 * S, stack.send())
        .await
        .expect("headers before the stream ends");
    assert_eq!(stack.last_outcome(), Outcome::Success);
    let mut body = res.into_body();
    assert!(!body.was_buffered());
    let first = tokio::time::timeout(30 * S, body.frame())
        .await
        .expect("the first chunk before the server sends the rest")
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), "data: {\"delta\":\"Hel\"}\n\n");
    gate.notify_one(); // only now does the server send the rest
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, "data: {\"delta\":\"lo\"}\n\ndata: [DONE]\n\n");
}

/// An OpenAI quota body padded past `len` bytes: classified if it were read whole.
fn padded_quota_body(len: usize) -> String {
    let pad = " ".repeat(len.saturating_sub(OPENAI_QUOTA.len()) + 1);
    format!("{pad}{OPENAI_QUOTA}")
}

#[tokio::test]
async fn an_error_body_over_the_limit_passes_unclassified_and_intact() {
    let limit = 1024;
    let long = padded_quota_body(limit);
    // Chunked, so the layer finds out while reading: 300-byte chunks.
    let chunks: Vec<String> = long
        .as_bytes()
        .chunks(300)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect();
    let mut stack = stack(
        [
            reply(429, long.clone()), // with a Content-Length over the limit: never read
            Reply {
                status: 429,
                headers: vec![],
                body: Body::Chunked(chunks),
            },
            reply(429, OPENAI_QUOTA), // under the limit: classified
        ],
        LlmErrorLayer::new().max_body(limit),
        LlmClassifier::new(),
    )
    .await;
    for buffered in [false, true] {
        let res = stack.send().await;
        assert_eq!(kind_of(&res), None);
        assert_eq!(res.body().was_buffered(), buffered);
        // No provider error: the HTTP table (a 429 without a wait is a failure).
        assert_eq!(stack.last_outcome(), Outcome::Failure);
        assert_eq!(
            res.into_body().collect().await.unwrap().to_bytes(),
            long.as_bytes()
        );
    }
    let res = stack.send().await;
    assert_eq!(kind_of(&res), Some(LlmErrorKind::QuotaExhausted));
}

#[tokio::test]
async fn a_chunked_error_body_under_the_limit_is_read_whole() {
    let body = anthropic("overloaded_error", "Overloaded");
    let chunks: Vec<String> = body
        .as_bytes()
        .chunks(7)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect();
    let mut stack = stack(
        [Reply {
            status: 529,
            headers: vec![],
            body: Body::Chunked(chunks),
        }],
        LlmErrorLayer::new(),
        LlmClassifier::new(),
    )
    .await;
    let res = stack.send().await;
    assert_eq!(kind_of(&res), Some(LlmErrorKind::Overloaded));
    assert_eq!(
        res.into_body().collect().await.unwrap().to_bytes(),
        body.as_bytes()
    );
}

#[tokio::test]
async fn a_non_json_error_falls_back_to_the_http_table() {
    let mut stack = stack(
        [
            reply(502, "<html><body><h1>502 Bad Gateway</h1></body></html>"),
            reply(429, "slow down").header("retry-after", "4"),
            reply(404, ""),
        ],
        LlmErrorLayer::new(),
        LlmClassifier::new(),
    )
    .await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        stack.breaker.reset();
        let res = stack.send().await;
        assert_eq!(kind_of(&res), None);
        seen.push(stack.last_outcome());
    }
    assert_eq!(seen, [Outcome::Failure, Outcome::Trip(4 * S), Outcome::Success]);
}

// ---------- the authentication log ----------

#[tokio::test]
async fn auth_failures_log_once_at_error_with_the_provider_name_and_never_the_key() {
    let capture = Capture::start();
    let ok = || reply(200, r#"{"id":"chatcmpl-1","choices":[]}"#);
    let mut stack = stack(
        [
            reply(401, OPENAI_AUTH),
            reply(401, OPENAI_AUTH),
            ok(),
            reply(401, OPENAI_AUTH),
        ],
        LlmErrorLayer::new(),
        LlmClassifier::new().provider("openai-primary"),
    )
    .await;
    let errors = || {
        capture
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|(level, _)| *level == Level::ERROR)
            .map(|(_, m)| m.clone())
            .collect::<Vec<_>>()
    };
    for _ in 0..2 {
        stack.breaker.reset();
        let _ = stack.send().await;
        assert_eq!(stack.last_outcome(), Outcome::Trip(Duration::MAX));
    }
    let logged = errors();
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert!(logged[0].contains("provider=openai-primary"), "{}", logged[0]);
    assert!(logged[0].contains("status=401"), "{}", logged[0]);
    assert!(logged[0].contains("invalid_api_key"), "{}", logged[0]);
    assert!(!logged[0].contains("sk-"), "{}", logged[0]);
    // A 2xx shows the key working again: the next refusal is news and is logged.
    stack.breaker.reset();
    let _ = stack.send().await;
    stack.breaker.reset();
    let _ = stack.send().await;
    assert_eq!(errors().len(), 2);
}
