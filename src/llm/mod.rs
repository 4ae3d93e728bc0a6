//! LLM providers' failures (feature `llm`): their rate-limit headers, and the kind of failure
//! their JSON error bodies name, each with its own reaction on the breaker.
//!
//! Status codes alone lump together failures that need opposite reactions: a 429 is a rate
//! limit that heals in seconds, or a quota that will not heal before the month ends; a 400 is
//! a prompt too long for this model, a content refusal, or a credit balance at zero. OpenAI,
//! Azure OpenAI and Anthropic say which in the error body and in their headers.
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use tower_breaker::{CircuitBreaker, CircuitBreakerLayer, State};
//! use tower_breaker::llm::{LlmClassifier, LlmErrorKind, LlmErrorLayer, ProviderError};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), tower_breaker::BoxError> {
//! // A provider whose account ran out of quota (OpenAI's real body).
//! let provider = service_fn(|_req: http::Request<()>| async {
//!     let body = r#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;
//!     let res = http::Response::builder().status(429).header("retry-after", "20");
//!     Ok::<_, std::io::Error>(res.body(Full::new(Bytes::from(body))).unwrap())
//! });
//! let breaker = CircuitBreaker::builder("openai")
//!     .consecutive_failures(5)
//!     .max_open_duration(Duration::from_secs(3600))
//!     .build()?;
//! let svc = ServiceBuilder::new()
//!     .layer(CircuitBreakerLayer::new(breaker.clone()).classify(LlmClassifier::new().provider("openai")))
//!     .layer(LlmErrorLayer::new()) // reads the 429's body: inside the breaker
//!     .service(provider);
//!
//! let res = svc.oneshot(http::Request::new(())).await?;
//! let err = res.extensions().get::<ProviderError>().unwrap();
//! assert_eq!(err.kind(), LlmErrorKind::QuotaExhausted);
//! assert_eq!(err.code(), Some("insufficient_quota"));
//! // Not a 20 s rate limit: open for the breaker's max_open_duration, at the first answer.
//! assert_eq!(breaker.state(), State::Open);
//! let refused = breaker.try_acquire().unwrap_err();
//! assert_eq!(refused.retry_after(), Some(Duration::from_secs(3600)));
//! # Ok(()) }
//! ```
//!
//! # Kinds and their default reactions
//!
//! [`LlmErrorLayer`] reads the body of a 4xx or 5xx response (at most 64 KiB; a 2xx or a
//! stream is never read) and stores a [`ProviderError`] with its [`LlmErrorKind`] in the
//! response's extensions; [`LlmClassifier`] turns it into an [`Outcome`](crate::Outcome):
//!
//! | kind | what the provider sent | default reaction |
//! |---|---|---|
//! | `RateLimited` | 429; OpenAI `rate_limit_exceeded`, Anthropic `rate_limit_error`, Azure `429` | `Trip` for the server's wait; `Failure` without one |
//! | `QuotaExhausted` | OpenAI `insufficient_quota`; Anthropic "credit balance is too low", `billing_error`, `enforced_spend_limit_reached` | `Trip` for `max_open_duration` (configurable) |
//! | `Overloaded` | Anthropic 529 `overloaded_error`; a 503 | `Failure`; a 503 with a wait trips for it |
//! | `Auth` | 401, 403; `invalid_api_key`, `authentication_error`, `permission_error` | `Trip` for `max_open_duration`, one ERROR log naming the provider (never the key) |
//! | `ContextWindowExceeded` | `context_length_exceeded`; Anthropic "prompt is too long" | `Ignore` |
//! | `ContentPolicy` | `content_policy_violation`; Azure `content_filter` | `Ignore` |
//! | `InvalidRequest` | other 4xx (`invalid_request_error`, `not_found_error`, 413) | `Ignore` |
//! | `Server` | other 5xx (`server_error`, `api_error`) | `Failure`; a 503 with a wait trips for it |
//! | `Other` | an error body with nothing telling | as [`HttpClassifier`](crate::HttpClassifier) |
//! | *(none)* | a 2xx; a body that is no provider error; a body over the limit | `HttpClassifier`'s table, with the providers' wait headers on 429 and 503 |
//!
//! Every row changes with [`LlmClassifier::reaction`]; errors (timeouts, connect errors) and
//! responses without a [`ProviderError`] go to its [`HttpClassifier`](crate::HttpClassifier)
//! ([`LlmClassifier::http`]).
//!
//! # The server's wait
//!
//! On a 429 or a 503, the wait is the first usable of `retry-after-ms`, `x-ms-retry-after-ms`,
//! `Retry-After`, then the reset of the exhausted budget (OpenAI's `x-ratelimit-reset-*`,
//! Anthropic's `anthropic-ratelimit-*-reset`, whose `remaining` is 0): see [`server_wait`].
//! Reset headers on other responses are no wait (they come with successes too, and a daily
//! budget's reset can be hours away). The breaker clamps every `Trip` to its
//! `max_open_duration`; malformed values are ignored.
//!
//! # What the layer changes
//!
//! - The response body type becomes [`LlmBody<B>`](LlmBody), whose data frames are `Bytes`.
//!   A body that was read is replayed byte for byte, with its trailers or error.
//! - An error body is read before the response is returned: put the layer inside the
//!   breaker's timeout (`CircuitBreakerLayer → Timeout → LlmErrorLayer → client`) so a body
//!   that never ends is a timeout.
//! - Only a read error body is held in memory (boxed, with at most `max_body` bytes copied);
//!   a 2xx response costs one enum tag.
//!
//! # Routing by kind
//!
//! The [`ProviderError`] stays in the response's extensions for whoever is above the breaker.
//! [`LlmRouting`], the failover [`Policy`](crate::fallback::Policy) of
//! [`Failover::on_llm_failure`](crate::Failover::on_llm_failure), routes by it: rate limits,
//! quota, overload, auth, 5xx and timeouts fail over; a context-window error goes to the next
//! member named as taking larger inputs ([`LlmRouting::larger_context`]), else back to the
//! caller; a content refusal and an invalid request go back to the caller, never to another
//! provider. The response's [`Provenance`](crate::fallback::Provenance) names the kind that
//! moved the request ([`Skipped::because`](crate::fallback::Skipped::because)), with
//! [`LlmErrorKind::as_str`]'s names, which logs and metrics use too.
//!
//! The breaker's reaction (its provider's health) and the route (this request's fate) are
//! separate tables: a context-window error is `Ignore` for the breaker and moves the request;
//! a quota error opens the breaker for a long time and moves the request.

mod body;
mod classifier;
mod future;
mod headers;
mod kind;
mod layer;
mod routing;

pub use body::LlmBody;
pub use classifier::{LlmClassifier, Reaction};
pub use future::ResponseFuture;
pub use headers::{parse_go_duration, parse_rfc3339, server_wait};
pub use kind::{LlmErrorKind, ProviderError};
pub use layer::{DEFAULT_MAX_BODY, LlmErrorLayer, LlmErrorService};
pub use routing::{KindRoute, LlmRouting};
