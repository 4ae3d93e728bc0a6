//! The `llm` error bodies: `ProviderError::parse` on arbitrary bytes and on provider-shaped
//! JSON built from structured input (OpenAI, Azure, Anthropic envelopes with known and
//! arbitrary codes, types and messages), checked against a model of the code table; then
//! `LlmErrorService` over a response whose body comes in arbitrary chunks, with or without a
//! length, under an arbitrary limit: the caller always gets every byte back, and the
//! `ProviderError` is there exactly when the whole body fit the limit and parsed.
#![no_main]

use std::{
    collections::VecDeque,
    convert::Infallible,
    future::poll_fn,
    pin::Pin,
    task::{Context, Poll},
};

use arbitrary::Arbitrary;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use libfuzzer_sys::fuzz_target;
use tower_breaker::{
    Layer,
    llm::{LlmErrorKind, LlmErrorLayer, ProviderError},
};
use tower_service::Service;

/// Codes and types with the kind they name (the documented table), and generic ones (`None`).
const CODES: [(&str, Option<LlmErrorKind>); 16] = [
    ("insufficient_quota", Some(LlmErrorKind::QuotaExhausted)),
    ("billing_error", Some(LlmErrorKind::QuotaExhausted)),
    ("enforced_spend_limit_reached", Some(LlmErrorKind::QuotaExhausted)),
    ("context_length_exceeded", Some(LlmErrorKind::ContextWindowExceeded)),
    ("content_filter", Some(LlmErrorKind::ContentPolicy)),
    ("content_policy_violation", Some(LlmErrorKind::ContentPolicy)),
    ("ResponsibleAIPolicyViolation", Some(LlmErrorKind::ContentPolicy)),
    ("invalid_api_key", Some(LlmErrorKind::Auth)),
    ("authentication_error", Some(LlmErrorKind::Auth)),
    ("permission_error", Some(LlmErrorKind::Auth)),
    ("rate_limit_exceeded", Some(LlmErrorKind::RateLimited)),
    ("rate_limit_error", Some(LlmErrorKind::RateLimited)),
    ("overloaded_error", Some(LlmErrorKind::Overloaded)),
    ("api_error", Some(LlmErrorKind::Server)),
    ("invalid_request_error", None),
    ("tokens", None),
];

#[derive(Arbitrary, Debug)]
enum Code {
    Known(u8),
    Arbitrary(String),
    Number(i64),
    Null,
}

#[derive(Arbitrary, Debug)]
enum Shape {
    /// `{"error": {...}}` (OpenAI, Azure).
    OpenAi,
    /// `{"type": "error", "error": {...}}` (Anthropic).
    Anthropic,
}

#[derive(Arbitrary, Debug)]
struct Structured {
    shape: Shape,
    code: Option<Code>,
    ty: Option<Code>,
    inner: Option<Code>,
    message: Option<String>,
}

#[derive(Arbitrary, Debug)]
enum BodyInput {
    Raw(Vec<u8>),
    Structured(Structured),
}

#[derive(Arbitrary, Debug)]
struct Input {
    status: u16,
    body: BodyInput,
    /// Where the body is cut into chunks.
    cuts: Vec<u16>,
    /// Whether the body says its length (as with a `Content-Length`).
    exact: bool,
    max_body: u16,
}

impl Code {
    fn json(&self) -> (serde_json::Value, Option<LlmErrorKind>, bool) {
        match self {
            Code::Known(i) => {
                let (c, kind) = CODES[usize::from(*i) % CODES.len()];
                (c.into(), kind, true)
            }
            // An arbitrary string may happen to be a known code: the model stays silent.
            Code::Arbitrary(s) => (s.as_str().into(), None, false),
            Code::Number(n) => ((*n).into(), None, false),
            Code::Null => (serde_json::Value::Null, None, true),
        }
    }
}

/// A body of chunks, optionally with an exact size hint.
struct Chunks {
    chunks: VecDeque<Bytes>,
    exact: Option<u64>,
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.chunks.pop_front().map(|c| Ok(Frame::data(c))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        match self.exact {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let waker = std::task::Waker::noop();
    match f.as_mut().poll(&mut Context::from_waker(waker)) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("nothing here waits"),
    }
}

fuzz_target!(|input: Input| {
    let status = StatusCode::from_u16(100 + input.status % 500).unwrap();
    let mut model: Option<LlmErrorKind> = None;
    let mut model_silent = true;
    let body: Vec<u8> = match &input.body {
        BodyInput::Raw(raw) => raw.clone(),
        BodyInput::Structured(s) => {
            let mut error = serde_json::Map::new();
            let mut kinds = Vec::new();
            let mut all_known = true;
            for (field, code) in [("code", &s.code), ("type", &s.ty)] {
                if let Some(code) = code {
                    let (v, kind, known) = code.json();
                    error.insert(field.into(), v);
                    kinds.extend(kind);
                    all_known &= known;
                }
            }
            if let Some(inner) = &s.inner {
                let (v, kind, known) = inner.json();
                error.insert("innererror".into(), serde_json::json!({ "code": v }));
                kinds.extend(kind);
                all_known &= known;
            }
            // A message without the phrases the parser looks for, so the codes decide.
            let neutral = s.message.as_ref().map_or(true, |m| {
                let m = m.to_ascii_lowercase();
                !["credit", "spend", "usage", "prompt", "context", "content", "retry"]
                    .iter()
                    .any(|w| m.contains(w))
            });
            if let Some(m) = &s.message {
                error.insert("message".into(), m.as_str().into());
            }
            let root = match s.shape {
                Shape::OpenAi => serde_json::json!({ "error": error }),
                Shape::Anthropic => serde_json::json!({ "type": "error", "error": error }),
            };
            if all_known && neutral && status.as_u16() >= 400 {
                model_silent = false;
                // The most specific named kind, else the status.
                model = Some(kinds.into_iter().min_by_key(|k| rank(*k)).unwrap_or_else(|| {
                    match LlmErrorKind::from_status(status) {
                        LlmErrorKind::Other if status.is_client_error() => LlmErrorKind::InvalidRequest,
                        k => k,
                    }
                }));
            }
            serde_json::to_vec(&root).unwrap()
        }
    };

    let parsed = ProviderError::parse(status, &body);
    if let Some(p) = &parsed {
        assert_eq!(p.status(), status);
        assert!(p.code().is_none_or(|c| c.len() <= 128));
        let v: serde_json::Value = serde_json::from_slice(&body).expect("only JSON parses");
        assert!(v.get("error").is_some());
    }
    if !model_silent {
        assert_eq!(parsed.as_ref().map(ProviderError::kind), model, "{}", String::from_utf8_lossy(&body));
    }

    // Through the layer, in chunks.
    let mut chunks = VecDeque::new();
    let mut at = 0;
    let mut cuts: Vec<usize> = input.cuts.iter().take(32).map(|&c| usize::from(c) % (body.len() + 1)).collect();
    cuts.sort_unstable();
    for cut in cuts.into_iter().chain([body.len()]) {
        if cut > at {
            chunks.push_back(Bytes::copy_from_slice(&body[at..cut]));
            at = cut;
        }
    }
    let max_body = usize::from(input.max_body);
    let exact = input.exact.then_some(body.len() as u64);
    let mut svc = LlmErrorLayer::new().max_body(max_body).layer(tower_service_fn(status, Chunks { chunks, exact }));
    let res = block_on(svc.call(Request::new(()))).unwrap();
    let ext = res.extensions().get::<ProviderError>().cloned();
    let buffered = res.body().was_buffered();
    let mut out = Vec::new();
    let mut res_body = std::pin::pin!(res.into_body());
    while let Some(frame) = block_on(poll_fn(|cx| res_body.as_mut().poll_frame(cx))) {
        out.extend_from_slice(&frame.unwrap().into_data().unwrap());
    }
    assert_eq!(out, body, "the caller gets every byte");
    let is_error = status.is_client_error() || status.is_server_error();
    if !is_error || body.is_empty() {
        assert!(!buffered);
    }
    let fits = body.len() <= max_body;
    let want = if is_error && fits { parsed } else { None };
    assert_eq!(ext, want);
});

fn rank(kind: LlmErrorKind) -> u8 {
    match kind {
        LlmErrorKind::QuotaExhausted => 0,
        LlmErrorKind::ContextWindowExceeded | LlmErrorKind::ContentPolicy => 1,
        LlmErrorKind::Auth => 2,
        LlmErrorKind::RateLimited | LlmErrorKind::Overloaded => 3,
        LlmErrorKind::Server => 4,
        _ => 5,
    }
}

/// A service answering one response with `status` and `body`.
fn tower_service_fn(
    status: StatusCode,
    body: Chunks,
) -> impl Service<Request<()>, Response = Response<Chunks>, Error = Infallible, Future = std::future::Ready<Result<Response<Chunks>, Infallible>>> {
    struct One(Option<(StatusCode, Chunks)>);
    impl Service<Request<()>> for One {
        type Response = Response<Chunks>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Response<Chunks>, Infallible>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: Request<()>) -> Self::Future {
            let (status, body) = self.0.take().expect("one call");
            let mut res = Response::new(body);
            *res.status_mut() = status;
            std::future::ready(Ok(res))
        }
    }
    One(Some((status, body)))
}
