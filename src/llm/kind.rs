//! [`LlmErrorKind`] and [`ProviderError`]: what a provider's JSON error body says.
//!
//! The shapes, from the providers' API references and official SDKs:
//!
//! - **OpenAI** (API reference "Error codes"; openai-python `_exceptions.py`, whose `APIError`
//!   reads `code`, `param`, `type` from the body's `error` object):
//!   `{"error": {"message": "...", "type": "insufficient_quota", "param": null, "code":
//!   "insufficient_quota"}}`; codes `rate_limit_exceeded` (type `requests` or `tokens`),
//!   `insufficient_quota`, `context_length_exceeded`, `invalid_api_key`,
//!   `content_policy_violation`; types `invalid_request_error`, `server_error`.
//! - **Azure OpenAI** (Azure OpenAI REST reference, "ErrorResponse"; "Content filtering"):
//!   the same `error` object, with `code` sometimes the status as a string and an
//!   `innererror`: `{"error": {"code": "content_filter", "message": "...", "param": "prompt",
//!   "status": 400, "innererror": {"code": "ResponsibleAIPolicyViolation", ...}}}`,
//!   `{"error": {"code": "429", "message": "... Please retry after 2 seconds. ..."}}`.
//! - **Anthropic** (API reference "Errors"; anthropic-sdk-python `types/shared/error_type.py`
//!   and `error_response.py`): `{"type": "error", "error": {"type": "overloaded_error",
//!   "message": "Overloaded"}, "request_id": "req_..."}` with types `invalid_request_error`
//!   (400), `authentication_error` (401), `billing_error`, `permission_error` (403),
//!   `not_found_error` (404), `request_too_large` (413), `rate_limit_error` (429), `api_error`
//!   (500), `timeout_error` (504), `overloaded_error` (529). The credit balance error is a 400
//!   `invalid_request_error` whose message starts "Your credit balance is too low to access
//!   the Anthropic API"; a prompt over the context window is a 400 `invalid_request_error`
//!   "prompt is too long: 208310 tokens > 200000 maximum"; a monthly spend limit is a 429
//!   `rate_limit_error` with `error.details.error_code` = `enforced_spend_limit_reached`.

use std::{fmt, sync::Arc, time::Duration};

use http::StatusCode;
use serde_json::Value;

/// What kind of failure an LLM provider reported. Each kind has a default reaction in
/// [`LlmClassifier`](super::LlmClassifier) (see the [module docs](super)).
///
/// [`as_str`](Self::as_str) gives a stable `snake_case` name for logs, metrics and routing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum LlmErrorKind {
    /// A transient rate limit (OpenAI `rate_limit_exceeded`, Anthropic `rate_limit_error`, a
    /// 429): calls pass again once the window resets.
    RateLimited,
    /// The account's quota, credit or spend limit is used up (OpenAI `insufficient_quota`,
    /// Anthropic's credit balance error, `billing_error`, `enforced_spend_limit_reached`):
    /// this does not heal in seconds.
    QuotaExhausted,
    /// The provider is overloaded for everyone (Anthropic 529 `overloaded_error`, a 503).
    Overloaded,
    /// The key is invalid, revoked or lacks permission (401, 403; `invalid_api_key`,
    /// `authentication_error`, `permission_error`): the provider is unusable with this key.
    Auth,
    /// The prompt does not fit the model's context window (OpenAI and Azure
    /// `context_length_exceeded`, Anthropic "prompt is too long").
    ContextWindowExceeded,
    /// The input or output was refused by a content or safety policy (OpenAI
    /// `content_policy_violation`, Azure `content_filter` / `ResponsibleAIPolicyViolation`).
    ContentPolicy,
    /// Anything else wrong with the request: a 400, 404 (no such model), 413, 422, ...
    InvalidRequest,
    /// A server error (5xx: OpenAI `server_error`, Anthropic `api_error`, `timeout_error`).
    Server,
    /// An error body this crate does not recognise the meaning of.
    Other,
}

impl LlmErrorKind {
    /// Every kind, in declaration order.
    pub const ALL: [Self; 9] = [
        Self::RateLimited,
        Self::QuotaExhausted,
        Self::Overloaded,
        Self::Auth,
        Self::ContextWindowExceeded,
        Self::ContentPolicy,
        Self::InvalidRequest,
        Self::Server,
        Self::Other,
    ];

    /// The kind's stable `snake_case` name: `rate_limited`, `quota_exhausted`, `overloaded`,
    /// `auth`, `context_window_exceeded`, `content_policy`, `invalid_request`, `server`,
    /// `other`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::RateLimited => "rate_limited",
            Self::QuotaExhausted => "quota_exhausted",
            Self::Overloaded => "overloaded",
            Self::Auth => "auth",
            Self::ContextWindowExceeded => "context_window_exceeded",
            Self::ContentPolicy => "content_policy",
            Self::InvalidRequest => "invalid_request",
            Self::Server => "server",
            Self::Other => "other",
        }
    }

    /// The kind a status alone suggests, when there is no body to read: 401 and 403 `Auth`;
    /// 429 `RateLimited`; 503 and 529 `Overloaded`; other 5xx `Server`; 400, 404, 413 and 422
    /// `InvalidRequest`; anything else (2xx included) `Other`.
    pub const fn from_status(status: StatusCode) -> Self {
        match status.as_u16() {
            401 | 403 => Self::Auth,
            429 => Self::RateLimited,
            503 | 529 => Self::Overloaded,
            500..=599 => Self::Server,
            400 | 404 | 413 | 422 => Self::InvalidRequest,
            _ => Self::Other,
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for LlmErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error a provider reported in a non-2xx response's JSON body, as
/// [`LlmErrorLayer`](super::LlmErrorLayer) stores it in the response's extensions:
/// `response.extensions().get::<ProviderError>()`.
///
/// It keeps the kind, the provider's machine-readable code (never its message, which may echo
/// part of a key: OpenAI's 401 message does) and a wait the message named, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderError {
    kind: LlmErrorKind,
    status: StatusCode,
    code: Option<Arc<str>>,
    wait_hint: Option<Duration>,
}

/// A code longer than this is not kept.
const MAX_CODE_LEN: usize = 128;

impl ProviderError {
    /// Reads a non-2xx response's body in the OpenAI, Azure OpenAI or Anthropic format.
    ///
    /// `None` when the body is not a JSON object with an `error` member (an object or a
    /// string): an HTML page from a proxy, an empty body. The kind comes from the most
    /// specific field first (`error.code`, `error.type`, Azure's `innererror.code`, Anthropic's
    /// `details.error_code`, then a few known messages), then from the status
    /// ([`LlmErrorKind::from_status`]). Never panics.
    pub fn parse(status: StatusCode, body: &[u8]) -> Option<Self> {
        let root: Value = serde_json::from_slice(body).ok()?;
        let error = root.as_object()?.get("error")?;
        let (code, message) = match error {
            Value::Object(e) => {
                let text = |v: Option<&Value>| match v {
                    Some(Value::String(s)) => Some(s.as_str().to_owned()),
                    Some(Value::Number(n)) => Some(n.to_string()),
                    _ => None,
                };
                let fields = [
                    text(e.get("code")),
                    text(e.get("type")),
                    text(e.get("innererror").and_then(|i| i.get("code"))),
                    text(e.get("details").and_then(|d| d.get("error_code"))),
                ];
                (fields, e.get("message").and_then(Value::as_str))
            }
            Value::String(message) => ([None, None, None, None], Some(message.as_str())),
            _ => return None,
        };
        let message = message.unwrap_or("");
        // The most specific code that means something; a generic one (`400`, `not_found_error`)
        // gives way to a known message; then the status.
        let by_code = code
            .iter()
            .filter_map(|c| Some((kind_of_code(c.as_deref()?)?, c.clone())))
            .min_by_key(|(kind, _)| specificity(*kind));
        let (kind, decided_by) = match by_code {
            Some((kind, c)) if kind != LlmErrorKind::InvalidRequest => (kind, c),
            by_code => match (kind_of_message(message), by_code) {
                (Some(kind), _) => (kind, None),
                (None, Some((kind, c))) => (kind, c),
                (None, None) => (kind_of_status(status), None),
            },
        };
        let code = decided_by
            .or_else(|| code.into_iter().flatten().next())
            .filter(|c| c.len() <= MAX_CODE_LEN)
            .map(Arc::from);
        let wait_hint = match kind {
            LlmErrorKind::RateLimited | LlmErrorKind::Overloaded => wait_in_message(message),
            _ => None,
        };
        Some(Self {
            kind,
            status,
            code,
            wait_hint,
        })
    }

    /// A provider error of `kind`, for tests and custom layers.
    pub const fn new(kind: LlmErrorKind, status: StatusCode) -> Self {
        Self {
            kind,
            status,
            code: None,
            wait_hint: None,
        }
    }

    /// The kind of failure.
    pub const fn kind(&self) -> LlmErrorKind {
        self.kind
    }

    /// The response's status.
    pub const fn status(&self) -> StatusCode {
        self.status
    }

    /// The provider's code or type that decided the kind, or the first one the body had
    /// (`insufficient_quota`, `overloaded_error`, `content_filter`, `429`, ...).
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// A wait the message named ("Please retry after 2 seconds", as Azure writes), for a rate
    /// limit or an overload. [`server_wait`](super::server_wait)'s headers take precedence.
    pub const fn wait_hint(&self) -> Option<Duration> {
        self.wait_hint
    }
}

/// Lower is more specific: when a body has several codes, the most telling wins (Azure's
/// `code: "429"` with `innererror.code` set, OpenAI's `type: invalid_request_error` with
/// `code: context_length_exceeded`).
const fn specificity(kind: LlmErrorKind) -> u8 {
    match kind {
        LlmErrorKind::QuotaExhausted => 0,
        LlmErrorKind::ContextWindowExceeded | LlmErrorKind::ContentPolicy => 1,
        LlmErrorKind::Auth => 2,
        LlmErrorKind::RateLimited | LlmErrorKind::Overloaded => 3,
        LlmErrorKind::Server => 4,
        LlmErrorKind::InvalidRequest => 5,
        LlmErrorKind::Other => 6,
    }
}

/// The kind a provider's `code` or `type` names; `None` for a generic or unknown one (then
/// the message, then the status, decide).
fn kind_of_code(code: &str) -> Option<LlmErrorKind> {
    use LlmErrorKind::*;
    Some(match code {
        // OpenAI, Azure
        "insufficient_quota" | "billing_hard_limit_reached" | "billing_not_active" => QuotaExhausted,
        // Anthropic
        "billing_error" | "enforced_spend_limit_reached" => QuotaExhausted,
        "context_length_exceeded" => ContextWindowExceeded,
        "content_policy_violation" | "content_filter" | "ResponsibleAIPolicyViolation" => ContentPolicy,
        "invalid_api_key"
        | "invalid_authentication"
        | "authentication_error"
        | "permission_error"
        | "PermissionDenied"
        | "Unauthorized"
        | "401"
        | "403" => Auth,
        "rate_limit_exceeded" | "rate_limit_error" | "RateLimitExceeded" | "429" => RateLimited,
        "overloaded_error" | "server_overloaded" | "engine_overloaded" | "529" => Overloaded,
        "server_error" | "api_error" | "timeout_error" | "InternalServerError" | "500" => Server,
        "not_found_error" | "model_not_found" | "DeploymentNotFound" | "request_too_large" | "404"
        | "400" | "413" => InvalidRequest,
        _ => return None,
    })
}

/// Known messages for kinds that share a generic type (Anthropic's 400 `invalid_request_error`).
fn kind_of_message(message: &str) -> Option<LlmErrorKind> {
    // Only the start of a long message is searched.
    let head = message.get(..512).unwrap_or(message);
    let has = |needle: &str| contains_ignore_ascii_case(head, needle);
    if has("credit balance is too low") || has("spend limit") || has("usage limits") {
        Some(LlmErrorKind::QuotaExhausted)
    } else if has("prompt is too long") || has("context window") || has("maximum context length") {
        Some(LlmErrorKind::ContextWindowExceeded)
    } else if has("content filtering policy") || has("content management policy") {
        Some(LlmErrorKind::ContentPolicy)
    } else {
        None
    }
}

fn contains_ignore_ascii_case(haystack: &str, needle: &str) -> bool {
    haystack
        .as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// The generic kind of a status for a recognised error body with no telling code.
const fn kind_of_status(status: StatusCode) -> LlmErrorKind {
    match status.as_u16() {
        400..=499 => match LlmErrorKind::from_status(status) {
            LlmErrorKind::Other => LlmErrorKind::InvalidRequest,
            kind => kind,
        },
        _ => LlmErrorKind::from_status(status),
    }
}

/// "retry after N second(s)" in a message (Azure OpenAI's 429: "Please retry after 2
/// seconds."), case-insensitive; `N` whole seconds.
fn wait_in_message(message: &str) -> Option<Duration> {
    const NEEDLE: &[u8] = b"retry after ";
    let head = message.get(..512).unwrap_or(message).as_bytes();
    let at = head
        .windows(NEEDLE.len())
        .position(|w| w.eq_ignore_ascii_case(NEEDLE))?;
    let rest = &head[at + NEEDLE.len()..];
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 9 {
        return None;
    }
    let unit = &rest[digits..];
    let secs: u64 = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    let is_second = |u: &[u8]| u.len() >= 7 && u[..7].eq_ignore_ascii_case(b" second");
    (secs > 0 && is_second(unit)).then(|| Duration::from_secs(secs))
}

pub(super) const KINDS: usize = LlmErrorKind::ALL.len();

pub(super) const fn kind_index(kind: LlmErrorKind) -> usize {
    kind.index()
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use LlmErrorKind::*;

    fn kind(status: u16, body: &str) -> Option<(LlmErrorKind, Option<String>)> {
        ProviderError::parse(StatusCode::from_u16(status).unwrap(), body.as_bytes())
            .map(|e| (e.kind(), e.code().map(str::to_owned)))
    }

    fn is(status: u16, body: &str, want: LlmErrorKind, code: Option<&str>) {
        assert_eq!(
            kind(status, body),
            Some((want, code.map(str::to_owned))),
            "{status} {body}"
        );
    }

    #[test]
    fn openai_bodies() {
        is(
            429,
            r#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#,
            QuotaExhausted,
            Some("insufficient_quota"),
        );
        is(
            429,
            r#"{"error":{"message":"Rate limit reached for gpt-4o in organization org-x on tokens per min (TPM): Limit 30000, Used 29000, Requested 2000. Please try again in 2s.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}"#,
            RateLimited,
            Some("rate_limit_exceeded"),
        );
        is(
            400,
            r#"{"error":{"message":"This model's maximum context length is 128000 tokens. However, your messages resulted in 130000 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#,
            ContextWindowExceeded,
            Some("context_length_exceeded"),
        );
        is(
            401,
            r#"{"error":{"message":"Incorrect API key provided: sk-abc***xyz. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#,
            Auth,
            Some("invalid_api_key"),
        );
        is(
            400,
            r#"{"error":{"message":"Your request was rejected as a result of our safety system.","type":"invalid_request_error","param":null,"code":"content_policy_violation"}}"#,
            ContentPolicy,
            Some("content_policy_violation"),
        );
        is(
            500,
            r#"{"error":{"message":"The server had an error while processing your request.","type":"server_error","param":null,"code":null}}"#,
            Server,
            Some("server_error"),
        );
        is(
            503,
            r#"{"error":{"message":"The engine is currently overloaded, please try again later.","type":"server_error","param":null,"code":null}}"#,
            Server,
            Some("server_error"),
        );
        is(
            404,
            r#"{"error":{"message":"The model `gpt-9` does not exist or you do not have access to it.","type":"invalid_request_error","param":null,"code":"model_not_found"}}"#,
            InvalidRequest,
            Some("model_not_found"),
        );
        // A generic type and no code: the status decides.
        is(
            400,
            r#"{"error":{"message":"'messages' is a required property","type":"invalid_request_error","param":null,"code":null}}"#,
            InvalidRequest,
            Some("invalid_request_error"),
        );
    }

    #[test]
    fn azure_openai_bodies() {
        is(
            400,
            r#"{"error":{"message":"The response was filtered due to the prompt triggering Azure OpenAI's content management policy.","type":null,"param":"prompt","code":"content_filter","status":400,"innererror":{"code":"ResponsibleAIPolicyViolation","content_filter_result":{"hate":{"filtered":false,"severity":"safe"},"violence":{"filtered":true,"severity":"medium"}}}}}"#,
            ContentPolicy,
            Some("content_filter"),
        );
        let rate = ProviderError::parse(
            StatusCode::TOO_MANY_REQUESTS,
            br#"{"error":{"code":"429","message":"Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-02-01 have exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after 2 seconds. Please go here: https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit."}}"#,
        )
        .unwrap();
        assert_eq!(rate.kind(), RateLimited);
        assert_eq!(rate.code(), Some("429"));
        assert_eq!(rate.wait_hint(), Some(Duration::from_secs(2)));
        is(
            401,
            r#"{"error":{"code":"401","message":"Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource."}}"#,
            Auth,
            Some("401"),
        );
        is(
            404,
            r#"{"error":{"code":"DeploymentNotFound","message":"The API deployment for this resource does not exist."}}"#,
            InvalidRequest,
            Some("DeploymentNotFound"),
        );
        is(
            400,
            r#"{"error":{"message":"This model's maximum context length is 8192 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#,
            ContextWindowExceeded,
            Some("context_length_exceeded"),
        );
    }

    #[test]
    fn anthropic_bodies() {
        let anthropic = |ty: &str, msg: &str| {
            format!(
                r#"{{"type":"error","error":{{"type":"{ty}","message":"{msg}"}},"request_id":"req_011CSHoEeqs5C35K2UUqR7Fy"}}"#
            )
        };
        is(
            529,
            &anthropic("overloaded_error", "Overloaded"),
            Overloaded,
            Some("overloaded_error"),
        );
        is(
            429,
            &anthropic(
                "rate_limit_error",
                "This request would exceed the rate limit for your organization of 50,000 input tokens per minute.",
            ),
            RateLimited,
            Some("rate_limit_error"),
        );
        is(
            400,
            &anthropic(
                "invalid_request_error",
                "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.",
            ),
            QuotaExhausted,
            Some("invalid_request_error"),
        );
        is(
            400,
            &anthropic(
                "invalid_request_error",
                "prompt is too long: 208310 tokens > 200000 maximum",
            ),
            ContextWindowExceeded,
            Some("invalid_request_error"),
        );
        is(
            400,
            &anthropic("invalid_request_error", "max_tokens: Field required"),
            InvalidRequest,
            Some("invalid_request_error"),
        );
        is(
            401,
            &anthropic("authentication_error", "invalid x-api-key"),
            Auth,
            Some("authentication_error"),
        );
        is(
            403,
            &anthropic(
                "permission_error",
                "Your API key does not have permission to use the specified resource.",
            ),
            Auth,
            Some("permission_error"),
        );
        is(
            404,
            &anthropic("not_found_error", "model: claude-9"),
            InvalidRequest,
            Some("not_found_error"),
        );
        is(
            413,
            &anthropic(
                "request_too_large",
                "Request exceeds the maximum allowed number of bytes.",
            ),
            InvalidRequest,
            Some("request_too_large"),
        );
        is(
            500,
            &anthropic("api_error", "Internal server error"),
            Server,
            Some("api_error"),
        );
        is(
            504,
            &anthropic("timeout_error", "Request timed out"),
            Server,
            Some("timeout_error"),
        );
        is(
            402,
            &anthropic("billing_error", "Billing issue"),
            QuotaExhausted,
            Some("billing_error"),
        );
        // A monthly spend limit: a 429 rate_limit_error with a telling detail.
        is(
            429,
            r#"{"type":"error","error":{"type":"rate_limit_error","message":"You have reached your specified API usage limits.","details":{"error_code":"enforced_spend_limit_reached"}}}"#,
            QuotaExhausted,
            Some("enforced_spend_limit_reached"),
        );
    }

    #[test]
    fn gateway_shapes() {
        // `error` as a string, a numeric code: kind from the status.
        is(502, r#"{"error":"upstream connect error"}"#, Server, None);
        is(
            429,
            r#"{"error":{"message":"Too many requests","code":429}}"#,
            RateLimited,
            Some("429"),
        );
        is(418, r#"{"error":{"message":"teapot"}}"#, InvalidRequest, None);
        is(503, r#"{"error":{}}"#, Overloaded, None);
    }

    #[test]
    fn not_a_provider_error() {
        for body in [
            "",
            "<html><body>502 Bad Gateway</body></html>",
            "null",
            "[]",
            r#"{"message":"no error member"}"#,
            r#"{"error":null}"#,
            r#"{"error":42}"#,
            r#"{"error":{"code":"x""#,
            "\u{feff}{}",
        ] {
            assert_eq!(kind(500, body), None, "{body:?}");
        }
        // Deep nesting hits serde_json's recursion limit: an error, not a stack overflow.
        let deep = "[".repeat(100_000);
        assert_eq!(kind(500, &deep), None);
    }

    #[test]
    fn wait_in_message_forms() {
        assert_eq!(
            wait_in_message("Please retry after 2 seconds."),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            wait_in_message("please RETRY AFTER 1 second"),
            Some(Duration::from_secs(1))
        );
        assert_eq!(wait_in_message("retry after 0 seconds"), None);
        assert_eq!(wait_in_message("retry after 2 minutes"), None);
        assert_eq!(wait_in_message("retry after 9999999999 seconds"), None);
        assert_eq!(wait_in_message("retry after"), None);
        assert_eq!(wait_in_message("Please try again in 2s."), None);
    }

    #[test]
    fn names_and_status_kinds() {
        let names: Vec<_> = LlmErrorKind::ALL.iter().map(|k| k.to_string()).collect();
        assert_eq!(
            names,
            [
                "rate_limited",
                "quota_exhausted",
                "overloaded",
                "auth",
                "context_window_exceeded",
                "content_policy",
                "invalid_request",
                "server",
                "other"
            ]
        );
        for (i, k) in LlmErrorKind::ALL.iter().enumerate() {
            assert_eq!(kind_index(*k), i);
        }
        let s = |c: u16| LlmErrorKind::from_status(StatusCode::from_u16(c).unwrap());
        assert_eq!(s(401), Auth);
        assert_eq!(s(403), Auth);
        assert_eq!(s(429), RateLimited);
        assert_eq!(s(503), Overloaded);
        assert_eq!(s(529), Overloaded);
        assert_eq!(s(500), Server);
        assert_eq!(s(400), InvalidRequest);
        assert_eq!(s(409), Other);
        assert_eq!(s(200), Other);
    }
}
