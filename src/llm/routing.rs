//! [`LlmRouting`]: a failover [`Policy`] that routes by the kind of failure a provider
//! reported, and the `on_llm_failure` presets of [`Failover`], [`Fallback`] and
//! [`FallbackLayer`].

use std::{error::Error, fmt, sync::Arc};

use http::{Extensions, HeaderMap, StatusCode};

use super::{
    LlmErrorKind, ProviderError,
    kind::{KINDS, kind_index},
};
use crate::{
    classify::{AsError, HttpClassifier, Outcome},
    fallback::{Failover, Fallback, FallbackLayer, OnFailure, Policy, Route},
};

/// Where a request goes after a provider answered with one [`LlmErrorKind`]: a row of
/// [`LlmRouting`]'s table.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KindRoute {
    /// Fail over to the next member of the chain (the next one not open).
    FailOver,
    /// Go to the first later member named here (say, the models with a larger context
    /// window); when the chain has none after this member, return the answer to the caller.
    To(Arc<[Arc<str>]>),
    /// Return the answer to the caller, as it is: no other provider is asked.
    Caller,
    /// As [`HttpClassifier`] judges the status: a failure (5xx, 429, 408) fails over,
    /// anything else goes back to the caller.
    Status,
}

impl KindRoute {
    /// `To` these members, in any form of names.
    pub fn to<N: Into<Arc<str>>>(members: impl IntoIterator<Item = N>) -> Self {
        Self::To(members.into_iter().map(Into::into).collect())
    }
}

/// A failover [`Policy`] for LLM providers: where a request goes after a provider's failure
/// depends on what the provider said, as [`LlmErrorLayer`](super::LlmErrorLayer) found it in
/// the error body ([`ProviderError`]).
///
/// | kind | default route | why |
/// |---|---|---|
/// | `RateLimited`, `QuotaExhausted`, `Overloaded`, `Auth`, `Server` | [`FailOver`](KindRoute::FailOver) | this provider cannot answer now (or with this key); another can |
/// | `ContextWindowExceeded` | [`To`](KindRoute::To) the [`larger_context`](Self::larger_context) members if named, else [`Caller`](KindRoute::Caller) | only a model with a larger context window can take the prompt |
/// | `ContentPolicy` | `Caller` | a safety refusal is an answer: never silently sent to another provider |
/// | `InvalidRequest` | `Caller` | the request is wrong everywhere |
/// | `Other` | [`Status`](KindRoute::Status) | as `HttpClassifier` judges the status |
/// | no `ProviderError`: an error (timeout, connect, reset) | fail over | |
/// | no `ProviderError`: a response | `HttpClassifier`'s table: a 5xx, 429, 408 fails over | |
///
/// Every route is labelled with the kind's [`as_str`](LlmErrorKind::as_str) name, which the
/// response's [`Provenance`](crate::fallback::Provenance) keeps: `skipped()[i].because()` is
/// `Some("quota_exhausted")` for a member that ran out of quota. A failure without a
/// `ProviderError` (a bare 503, an HTML 502 from a proxy) is labelled with the kind of its
/// status ([`LlmErrorKind::from_status`]); an error has no label (its
/// [`SkipReason::Failed`](crate::fallback::SkipReason::Failed) holds it).
///
/// Each member needs an [`LlmErrorLayer`](super::LlmErrorLayer) inside it (and, for its
/// breaker, an [`LlmClassifier`](super::LlmClassifier)); without one, responses are routed by
/// status alone. The request is copied before each call, so `Req: Clone` (a buffered body:
/// `http::Request<Full<Bytes>>`); for another way to copy, write a [`Policy`] whose
/// [`route`](Policy::route) calls [`route_response`](Self::route_response) and
/// [`route_error`](Self::route_error).
///
/// The breaker and the routing are separate decisions: the breaker (with `LlmClassifier`)
/// judges the *provider's health*, the routing where *this request* goes. A context-window
/// error is `Ignore` for the breaker and moves the request to a larger model; a quota error
/// opens the breaker for a long time and moves the request to the next provider.
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use tower::{ServiceBuilder, ServiceExt, service_fn, util::BoxCloneService};
/// use tower_breaker::{BoxError, CircuitBreaker, CircuitBreakerLayer, Failover};
/// use tower_breaker::fallback::Provenance;
/// use tower_breaker::llm::{LlmClassifier, LlmErrorLayer, LlmRouting};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), BoxError> {
/// // Stand-ins for a hyper-util client per provider, answering with the providers' bodies.
/// let provider = |name: &'static str, status: u16, body: &'static str| -> Result<_, BoxError> {
///     let breaker = CircuitBreaker::builder(name).consecutive_failures(5).build()?;
///     let client = service_fn(move |_: http::Request<Full<Bytes>>| async move {
///         let res = http::Response::builder().status(status).body(Full::new(Bytes::from(body)))?;
///         Ok::<_, BoxError>(res)
///     });
///     Ok((
///         name,
///         BoxCloneService::new(
///             ServiceBuilder::new()
///                 .layer(CircuitBreakerLayer::new(breaker).classify(LlmClassifier::new().provider(name)))
///                 .layer(LlmErrorLayer::new())
///                 .service(client),
///         ),
///     ))
/// };
/// let too_long = r#"{"error":{"message":"This model's maximum context length is 128000 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#;
/// let chain = Failover::new([
///     provider("gpt-4o", 400, too_long)?,
///     provider("claude-haiku", 200, "haiku's answer")?,
///     provider("gpt-4.1", 200, "gpt-4.1's answer")?, // 1M tokens of context
/// ])
/// .on_failure(LlmRouting::new().larger_context(["gpt-4.1"]));
///
/// let req = http::Request::new(Full::new(Bytes::from("a very long prompt")));
/// let res = chain.oneshot(req).await?;
/// let provenance = res.extensions().get::<Provenance>().unwrap();
/// assert_eq!(provenance.served_by(), "gpt-4.1"); // not claude-haiku: its context is smaller
/// assert_eq!(provenance.skipped()[0].because(), Some("context_window_exceeded"));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct LlmRouting {
    routes: [KindRoute; KINDS],
    http: HttpClassifier,
}

impl Default for LlmRouting {
    fn default() -> Self {
        Self::new()
    }
}

impl LlmRouting {
    /// The default table (see the [type docs](Self)): no member is named for larger inputs,
    /// so a context-window error goes back to the caller.
    pub fn new() -> Self {
        Self {
            routes: LlmErrorKind::ALL.map(default_route),
            http: HttpClassifier::new(),
        }
    }

    /// The members that take larger inputs: a context-window error goes to the first of them
    /// after the member that reported it (`route(ContextWindowExceeded, KindRoute::to(members))`).
    #[must_use]
    pub fn larger_context<N: Into<Arc<str>>>(self, members: impl IntoIterator<Item = N>) -> Self {
        self.route(LlmErrorKind::ContextWindowExceeded, KindRoute::to(members))
    }

    /// Sets the route of `kind`.
    #[must_use]
    pub fn route(mut self, kind: LlmErrorKind, route: KindRoute) -> Self {
        self.routes[kind_index(kind)] = route;
        self
    }

    /// The route of `kind`.
    pub fn route_of(&self, kind: LlmErrorKind) -> &KindRoute {
        &self.routes[kind_index(kind)]
    }

    /// Replaces the classifier that judges responses without a [`ProviderError`],
    /// [`KindRoute::Status`], and errors (default `HttpClassifier::new()`).
    #[must_use]
    pub fn http(mut self, http: HttpClassifier) -> Self {
        self.http = http;
        self
    }

    /// Where a response with this status and these extensions (a [`ProviderError`] among
    /// them) sends the request.
    pub fn route_response(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        extensions: &Extensions,
    ) -> Route<'_> {
        let Some(err) = extensions.get::<ProviderError>() else {
            return match self.http.classify_status(status, headers) {
                Outcome::Failure | Outcome::Trip(_) => {
                    Route::to_next().because(LlmErrorKind::from_status(status).as_str())
                }
                _ => Route::to_caller(),
            };
        };
        let kind = err.kind();
        let route = match &self.routes[kind_index(kind)] {
            KindRoute::FailOver => Route::to_next(),
            KindRoute::To(members) => Route::to_any_of(members),
            KindRoute::Caller => return Route::to_caller(),
            KindRoute::Status => match self.http.classify_status(status, headers) {
                Outcome::Failure | Outcome::Trip(_) => Route::to_next(),
                _ => return Route::to_caller(),
            },
        };
        route.because(kind.as_str())
    }

    /// Where a failed call sends the request: on to the next member when the classifier
    /// calls the error a failure (timeouts, connect errors, resets: every error, by default).
    pub fn route_error(&self, err: &(dyn Error + 'static)) -> Route<'_> {
        match self.http.classify_error(err) {
            Outcome::Failure | Outcome::Trip(_) => Route::to_next(),
            _ => Route::to_caller(),
        }
    }
}

const fn default_route(kind: LlmErrorKind) -> KindRoute {
    match kind {
        LlmErrorKind::RateLimited
        | LlmErrorKind::QuotaExhausted
        | LlmErrorKind::Overloaded
        | LlmErrorKind::Auth
        | LlmErrorKind::Server => KindRoute::FailOver,
        LlmErrorKind::ContextWindowExceeded | LlmErrorKind::ContentPolicy | LlmErrorKind::InvalidRequest => {
            KindRoute::Caller
        }
        LlmErrorKind::Other => KindRoute::Status,
    }
}

impl<Req: Clone, B, E: AsError> Policy<Req, http::Response<B>, E> for LlmRouting {
    #[inline]
    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }

    fn should_fall_back(&mut self, result: Result<&http::Response<B>, &E>) -> bool {
        !Policy::<Req, _, E>::route(self, result).is_to_caller()
    }

    fn route(&mut self, result: Result<&http::Response<B>, &E>) -> Route<'_> {
        match result {
            Ok(res) => self.route_response(res.status(), res.headers(), res.extensions()),
            Err(err) => self.route_error(err.as_error()),
        }
    }
}

#[cfg(feature = "reqwest")]
impl<Req: Clone, E: AsError> Policy<Req, reqwest::Response, E> for LlmRouting {
    #[inline]
    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }

    fn should_fall_back(&mut self, result: Result<&reqwest::Response, &E>) -> bool {
        !Policy::<Req, _, E>::route(self, result).is_to_caller()
    }

    /// By the status (and a [`ProviderError`] a middleware stored in the extensions).
    fn route(&mut self, result: Result<&reqwest::Response, &E>) -> Route<'_> {
        match result {
            Ok(res) => self.route_response(res.status(), res.headers(), res.extensions()),
            Err(err) => self.route_error(err.as_error()),
        }
    }
}

impl fmt::Debug for LlmRouting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Routes<'a>(&'a [KindRoute; KINDS]);
        impl fmt::Debug for Routes<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_map()
                    .entries(
                        LlmErrorKind::ALL
                            .iter()
                            .map(|k| (k.as_str(), &self.0[kind_index(*k)])),
                    )
                    .finish()
            }
        }
        f.debug_struct("LlmRouting")
            .field("routes", &Routes(&self.routes))
            .field("http", &self.http)
            .finish()
    }
}

impl<S, F> Failover<S, F> {
    /// Fails over by the kind of failure the provider reported: the preset for LLM providers
    /// (feature `llm`). The same as `.on_failure(LlmRouting::new())`: rate limits, quota,
    /// overload, authentication, 5xx, timeouts and connect errors fail over; a content-policy
    /// refusal, an invalid request and a context-window error go back to the caller (name the
    /// members that take longer prompts with
    /// `.on_failure(LlmRouting::new().larger_context([...]))`). See [`LlmRouting`].
    pub fn on_llm_failure(self) -> Failover<S, OnFailure<LlmRouting>>
    where
        S: Clone,
    {
        self.on_failure(LlmRouting::new())
    }
}

impl<P, S, F> Fallback<P, S, F> {
    /// Falls back by the kind of failure the provider reported (feature `llm`): the same as
    /// `.on_failure(LlmRouting::new())`. See [`Failover::on_llm_failure`] and
    /// [`LlmRouting`].
    pub fn on_llm_failure(self) -> Fallback<P, S, OnFailure<LlmRouting>> {
        self.on_failure(LlmRouting::new())
    }
}

impl<S, F> FallbackLayer<S, F> {
    /// Falls back by the kind of failure the provider reported (feature `llm`): the same as
    /// `.on_failure(LlmRouting::new())`. See [`LlmRouting`].
    pub fn on_llm_failure(self) -> FallbackLayer<S, OnFailure<LlmRouting>> {
        self.on_failure(LlmRouting::new())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use LlmErrorKind::*;

    /// The member a request goes to from "small" in the chain small, mid, large (`None`: the
    /// caller), and the route's label.
    fn route(
        r: &LlmRouting,
        status: u16,
        kind: Option<LlmErrorKind>,
    ) -> (Option<usize>, Option<&'static str>) {
        let status = StatusCode::from_u16(status).unwrap();
        let mut ext = Extensions::new();
        if let Some(kind) = kind {
            ext.insert(ProviderError::new(kind, status));
        }
        let route = r.route_response(status, &HeaderMap::new(), &ext);
        let names: Vec<Arc<str>> = ["small", "mid", "large"].map(Arc::from).to_vec();
        (route.resolve(&names, 0).after(0, names.len()), route.label())
    }

    #[test]
    fn default_routes() {
        let r = LlmRouting::new();
        for (status, kind) in [
            (429, RateLimited),
            (429, QuotaExhausted),
            (529, Overloaded),
            (401, Auth),
            (500, Server),
        ] {
            assert_eq!(
                route(&r, status, Some(kind)),
                (Some(1), Some(kind.as_str())),
                "{kind}"
            );
        }
        for (status, kind) in [
            (400, ContextWindowExceeded),
            (400, ContentPolicy),
            (404, InvalidRequest),
        ] {
            assert_eq!(route(&r, status, Some(kind)), (None, None), "{kind}");
        }
        assert_eq!(route(&r, 502, Some(Other)), (Some(1), Some("other")));
        assert_eq!(route(&r, 409, Some(Other)), (None, None));
        // No provider error: the status's kind labels a failure.
        assert_eq!(route(&r, 503, None), (Some(1), Some("overloaded")));
        assert_eq!(route(&r, 500, None), (Some(1), Some("server")));
        assert_eq!(route(&r, 400, None), (None, None));
        assert_eq!(route(&r, 200, None), (None, None));
    }

    #[test]
    fn larger_context_and_every_row_is_configurable() {
        let r = LlmRouting::new()
            .larger_context(["large"])
            .route(ContentPolicy, KindRoute::FailOver)
            .route(Auth, KindRoute::Caller);
        assert_eq!(
            route(&r, 400, Some(ContextWindowExceeded)),
            (Some(2), Some("context_window_exceeded"))
        );
        assert_eq!(
            route(&r, 400, Some(ContentPolicy)),
            (Some(1), Some("content_policy"))
        );
        assert_eq!(route(&r, 401, Some(Auth)), (None, None));
        assert_eq!(r.route_of(ContextWindowExceeded), &KindRoute::to(["large"]));
        let dbg = format!("{r:?}");
        assert!(
            dbg.contains(r#""context_window_exceeded": To(["large"])"#),
            "{dbg}"
        );
    }

    #[test]
    fn errors_fail_over() {
        let r = LlmRouting::new();
        let err = std::io::Error::other("connection reset");
        assert!(!r.route_error(&err).is_to_caller());
        let r = r.http(HttpClassifier::new().other_error(Outcome::Ignore));
        assert!(r.route_error(&err).is_to_caller());
    }
}
