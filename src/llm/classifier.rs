//! [`LlmClassifier`] and its per-kind [`Reaction`]s.

use std::{
    error::Error,
    fmt,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime},
};

use http::{Extensions, HeaderMap, StatusCode};

use super::{
    LlmErrorKind, ProviderError,
    headers::server_wait,
    kind::{KINDS, kind_index},
};
use crate::classify::{AsError, Classify, HttpClassifier, Outcome};

/// What [`LlmClassifier`] makes of a kind of provider error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reaction {
    /// Always this outcome.
    Outcome(Outcome),
    /// `Trip` for the server's wait ([`server_wait`](super::server_wait), then the message's
    /// [`wait_hint`](ProviderError::wait_hint)) when the status is one of the fallback
    /// classifier's [`retry_after_statuses`](HttpClassifier::retry_after_statuses) (429, 503 by
    /// default) and a wait was given; otherwise this outcome.
    WaitOr(Outcome),
    /// As the fallback [`HttpClassifier`] classifies the status (with the providers' wait
    /// headers on its `retry_after_statuses`), as for a response with no [`ProviderError`].
    Status,
}

impl Reaction {
    /// `Outcome(Trip(wait))`: open for `wait` (clamped by the breaker's `max_open_duration`).
    pub const fn trip(wait: Duration) -> Self {
        Self::Outcome(Outcome::Trip(wait))
    }

    /// `Outcome(Trip(Duration::MAX))`: open for the breaker's `max_open_duration`.
    pub const OPEN_LONG: Self = Self::Outcome(Outcome::Trip(Duration::MAX));
}

/// Classifies LLM provider responses by the [`ProviderError`] that
/// [`LlmErrorLayer`](super::LlmErrorLayer) found in their body, and by the providers' wait
/// headers; everything else as its fallback [`HttpClassifier`] does.
///
/// The default reactions ([`new`](Self::new)):
///
/// | kind | default | |
/// |---|---|---|
/// | `RateLimited` | `Trip(the server's wait)`, else `Failure` | [`Reaction::WaitOr`]`(Failure)` |
/// | `QuotaExhausted` | `Trip` for `max_open_duration` | [`Reaction::OPEN_LONG`] |
/// | `Overloaded` | `Failure`; a 503 with a wait trips for it | `WaitOr(Failure)` |
/// | `Auth` | `Trip` for `max_open_duration`, and one ERROR log | `OPEN_LONG` |
/// | `ContextWindowExceeded`, `ContentPolicy`, `InvalidRequest` | `Ignore` | `Outcome(Ignore)` |
/// | `Server` | `Failure`; a 503 with a wait trips for it | `WaitOr(Failure)` |
/// | `Other` | as `HttpClassifier` | [`Reaction::Status`] |
/// | no `ProviderError` (a 2xx, a body that is no provider error, over the limit) | `HttpClassifier`'s table, the providers' wait headers on 429 and 503 | — |
/// | an error (timeout, connect, ...) | `HttpClassifier`'s rows | [`http`](Self::http) |
///
/// The ERROR log names the [`provider`](Self::provider), the status and the provider's code,
/// never the message (OpenAI's 401 message echoes part of the key) or a header. It is written
/// once, and again only after a 2xx has shown the key working; clones share that memory.
///
/// # Clone
///
/// A clone (the breaker service takes one per call) copies the table and bumps two reference
/// counts; it allocates nothing.
#[derive(Clone)]
pub struct LlmClassifier {
    http: HttpClassifier,
    reactions: [Reaction; KINDS],
    provider: Arc<str>,
    auth_logged: Arc<AtomicBool>,
}

impl Default for LlmClassifier {
    fn default() -> Self {
        Self::new()
    }
}

impl LlmClassifier {
    /// The default table (see the [type docs](Self)), over `HttpClassifier::default()`, for a
    /// provider named `"llm"` in logs.
    pub fn new() -> Self {
        let mut reactions = [Reaction::Status; KINDS];
        for kind in LlmErrorKind::ALL {
            reactions[kind_index(kind)] = default_reaction(kind);
        }
        Self {
            http: HttpClassifier::new(),
            reactions,
            provider: Arc::from("llm"),
            auth_logged: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The provider's name in the authentication log line (say, the breaker's name).
    #[must_use]
    pub fn provider(mut self, name: impl Into<Arc<str>>) -> Self {
        self.provider = name.into();
        self
    }

    /// Sets the reaction to `kind`.
    #[must_use]
    pub const fn reaction(mut self, kind: LlmErrorKind, reaction: Reaction) -> Self {
        self.reactions[kind_index(kind)] = reaction;
        self
    }

    /// The reaction to `kind`.
    pub const fn reaction_to(&self, kind: LlmErrorKind) -> Reaction {
        self.reactions[kind_index(kind)]
    }

    /// Replaces the fallback classifier: its status table serves responses without a
    /// [`ProviderError`] and [`Reaction::Status`]; its `retry_after_statuses` are where waits
    /// are read; its error rows classify errors.
    #[must_use]
    pub fn http(mut self, http: HttpClassifier) -> Self {
        self.http = http;
        self
    }

    /// Classifies a response from its status, headers and extensions (an HTTP-date is
    /// measured from the system clock).
    pub fn classify_parts(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        extensions: &Extensions,
    ) -> Outcome {
        self.classify_parts_at(status, headers, extensions, SystemTime::now)
    }

    /// Like [`classify_parts`](Self::classify_parts), measuring dates from `now`.
    pub fn classify_parts_at(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        extensions: &Extensions,
        now: impl FnOnce() -> SystemTime,
    ) -> Outcome {
        let err = extensions.get::<ProviderError>();
        let wait = move || {
            if !self.http.waits_on(status) {
                return None;
            }
            server_wait(headers, now()).or_else(|| err.and_then(ProviderError::wait_hint))
        };
        let Some(err) = err else {
            if status.is_success() {
                self.rearm_auth_log();
            }
            return self.by_status(status, headers, wait());
        };
        if err.kind() == LlmErrorKind::Auth {
            self.log_auth_once(err);
        }
        match self.reaction_to(err.kind()) {
            Reaction::Outcome(outcome) => outcome,
            Reaction::WaitOr(outcome) => wait().map_or(outcome, Outcome::Trip),
            Reaction::Status => self.by_status(status, headers, wait()),
        }
    }

    fn by_status(&self, status: StatusCode, headers: &HeaderMap, wait: Option<Duration>) -> Outcome {
        match wait {
            Some(wait) => Outcome::Trip(wait),
            // No wait header usable: the table (its `Retry-After` parse finds none either).
            None => self.http.classify_status(status, headers),
        }
    }

    fn rearm_auth_log(&self) {
        if self.auth_logged.load(Ordering::Relaxed) {
            self.auth_logged.store(false, Ordering::Relaxed);
        }
    }

    fn log_auth_once(&self, err: &ProviderError) {
        if !self.auth_logged.swap(true, Ordering::Relaxed) {
            tracing::error!(
                provider = %self.provider,
                status = err.status().as_u16(),
                code = err.code().unwrap_or(""),
                "the provider refused the credentials (invalid, revoked or without \
                 permission): its breaker opens for its max_open_duration; check the key",
            );
        }
    }

    /// Classifies an error with the fallback's error rows.
    pub fn classify_error(&self, err: &(dyn Error + 'static)) -> Outcome {
        self.http.classify_error(err)
    }
}

const fn default_reaction(kind: LlmErrorKind) -> Reaction {
    match kind {
        LlmErrorKind::RateLimited | LlmErrorKind::Overloaded | LlmErrorKind::Server => {
            Reaction::WaitOr(Outcome::Failure)
        }
        LlmErrorKind::QuotaExhausted | LlmErrorKind::Auth => Reaction::OPEN_LONG,
        LlmErrorKind::ContextWindowExceeded | LlmErrorKind::ContentPolicy | LlmErrorKind::InvalidRequest => {
            Reaction::Outcome(Outcome::Ignore)
        }
        LlmErrorKind::Other => Reaction::Status,
    }
}

impl<B, E: AsError> Classify<http::Response<B>, E> for LlmClassifier {
    fn classify(&self, result: Result<&http::Response<B>, &E>) -> Outcome {
        match result {
            Ok(res) => self.classify_parts(res.status(), res.headers(), res.extensions()),
            Err(err) => self.classify_error(err.as_error()),
        }
    }
}

#[cfg(feature = "reqwest")]
impl<E: AsError> Classify<reqwest::Response, E> for LlmClassifier {
    /// By the headers (and a [`ProviderError`] a middleware stored in the extensions).
    fn classify(&self, result: Result<&reqwest::Response, &E>) -> Outcome {
        match result {
            Ok(res) => self.classify_parts(res.status(), res.headers(), res.extensions()),
            Err(err) => self.classify_error(err.as_error()),
        }
    }
}

impl fmt::Debug for LlmClassifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Reactions<'a>(&'a [Reaction; KINDS]);
        impl fmt::Debug for Reactions<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_map()
                    .entries(
                        LlmErrorKind::ALL
                            .iter()
                            .map(|k| (k.as_str(), self.0[kind_index(*k)])),
                    )
                    .finish()
            }
        }
        f.debug_struct("LlmClassifier")
            .field("provider", &self.provider)
            .field("reactions", &Reactions(&self.reactions))
            .field("http", &self.http)
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use LlmErrorKind::*;
    use http::HeaderValue;

    const S: Duration = Duration::from_secs(1);

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_735_689_600)
    }

    fn classify(
        c: &LlmClassifier,
        status: u16,
        kind: Option<LlmErrorKind>,
        headers: &[(&'static str, &str)],
    ) -> Outcome {
        let status = StatusCode::from_u16(status).unwrap();
        let mut ext = Extensions::new();
        if let Some(kind) = kind {
            ext.insert(ProviderError::new(kind, status));
        }
        let headers: HeaderMap = headers
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_static(k),
                    HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect();
        c.classify_parts_at(status, &headers, &ext, now)
    }

    #[test]
    fn default_reactions() {
        let c = LlmClassifier::new();
        let wait = [("retry-after-ms", "2500")];
        assert_eq!(
            classify(&c, 429, Some(RateLimited), &wait),
            Outcome::Trip(Duration::from_millis(2500))
        );
        assert_eq!(classify(&c, 429, Some(RateLimited), &[]), Outcome::Failure);
        assert_eq!(
            classify(&c, 429, Some(QuotaExhausted), &wait),
            Outcome::Trip(Duration::MAX)
        );
        assert_eq!(
            classify(&c, 400, Some(QuotaExhausted), &[]),
            Outcome::Trip(Duration::MAX)
        );
        assert_eq!(classify(&c, 529, Some(Overloaded), &[]), Outcome::Failure);
        assert_eq!(
            classify(&c, 529, Some(Overloaded), &[("retry-after", "5")]),
            Outcome::Failure
        );
        assert_eq!(
            classify(&c, 503, Some(Overloaded), &[("retry-after", "5")]),
            Outcome::Trip(5 * S)
        );
        assert_eq!(classify(&c, 401, Some(Auth), &[]), Outcome::Trip(Duration::MAX));
        assert_eq!(
            classify(&c, 400, Some(ContextWindowExceeded), &[]),
            Outcome::Ignore
        );
        assert_eq!(classify(&c, 400, Some(ContentPolicy), &[]), Outcome::Ignore);
        assert_eq!(classify(&c, 404, Some(InvalidRequest), &[]), Outcome::Ignore);
        assert_eq!(
            classify(&c, 500, Some(Server), &[("retry-after", "5")]),
            Outcome::Failure
        );
        assert_eq!(
            classify(&c, 503, Some(Server), &[("retry-after", "5")]),
            Outcome::Trip(5 * S)
        );
        assert_eq!(classify(&c, 409, Some(Other), &[]), Outcome::Success); // HttpClassifier's row
        assert_eq!(classify(&c, 502, Some(Other), &[]), Outcome::Failure);
    }

    #[test]
    fn without_a_provider_error_the_http_table_with_the_wait_headers() {
        let c = LlmClassifier::new();
        assert_eq!(classify(&c, 200, None, &[]), Outcome::Success);
        assert_eq!(classify(&c, 500, None, &[]), Outcome::Failure);
        assert_eq!(classify(&c, 400, None, &[]), Outcome::Success);
        assert_eq!(classify(&c, 429, None, &[]), Outcome::Failure);
        assert_eq!(
            classify(&c, 429, None, &[("x-ms-retry-after-ms", "700")]),
            Outcome::Trip(Duration::from_millis(700))
        );
        // Reset headers on a 200 are no wait.
        let exhausted = [
            ("x-ratelimit-remaining-tokens", "0"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ];
        assert_eq!(classify(&c, 200, None, &exhausted), Outcome::Success);
        assert_eq!(classify(&c, 429, None, &exhausted), Outcome::Trip(360 * S));
        assert_eq!(classify(&c, 500, None, &exhausted), Outcome::Failure);
    }

    #[test]
    fn every_row_is_configurable() {
        let c = LlmClassifier::new()
            .reaction(QuotaExhausted, Reaction::trip(3600 * S))
            .reaction(Auth, Reaction::Outcome(Outcome::Failure))
            .reaction(ContentPolicy, Reaction::Outcome(Outcome::Failure))
            .reaction(RateLimited, Reaction::WaitOr(Outcome::Trip(10 * S)))
            .reaction(InvalidRequest, Reaction::Status)
            .http(HttpClassifier::new().retry_after_statuses([429, 503, 529]));
        assert_eq!(
            classify(&c, 429, Some(QuotaExhausted), &[]),
            Outcome::Trip(3600 * S)
        );
        assert_eq!(classify(&c, 401, Some(Auth), &[]), Outcome::Failure);
        assert_eq!(classify(&c, 400, Some(ContentPolicy), &[]), Outcome::Failure);
        assert_eq!(classify(&c, 429, Some(RateLimited), &[]), Outcome::Trip(10 * S));
        assert_eq!(classify(&c, 400, Some(InvalidRequest), &[]), Outcome::Success);
        assert_eq!(
            classify(&c, 529, Some(Overloaded), &[("retry-after", "5")]),
            Outcome::Trip(5 * S)
        );
        assert_eq!(
            c.reaction_to(ContextWindowExceeded),
            Reaction::Outcome(Outcome::Ignore)
        );
    }

    #[test]
    fn the_messages_wait_comes_after_the_headers() {
        let c = LlmClassifier::new();
        let status = StatusCode::TOO_MANY_REQUESTS;
        let body = br#"{"error":{"code":"429","message":"Please retry after 2 seconds."}}"#;
        let mut ext = Extensions::new();
        ext.insert(ProviderError::parse(status, body).unwrap());
        let mut headers = HeaderMap::new();
        assert_eq!(
            c.classify_parts_at(status, &headers, &ext, now),
            Outcome::Trip(2 * S)
        );
        headers.insert("retry-after", HeaderValue::from_static("4"));
        assert_eq!(
            c.classify_parts_at(status, &headers, &ext, now),
            Outcome::Trip(4 * S)
        );
    }

    #[test]
    fn debug_lists_the_table_and_the_type_stays_small() {
        let dbg = format!("{:?}", LlmClassifier::new().provider("openai"));
        assert!(dbg.contains(r#""quota_exhausted": Outcome(Trip("#), "{dbg}");
        assert!(dbg.contains(r#"provider: "openai""#), "{dbg}");
        let size = std::mem::size_of::<LlmClassifier>();
        assert!(size <= 768, "{size}");
    }
}
