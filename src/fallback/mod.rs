//! Fallback: when a service is unavailable, send the request to another one, at once.
//!
//! [`Fallback`] pairs a primary with a secondary (nest them for longer chains of different
//! types); [`Failover`] is an ordered chain of services of one type. Each member usually has a
//! [`CircuitBreakerLayer`](crate::CircuitBreakerLayer) of its own: while a member's circuit is
//! open, its readiness fails fast with a [`CircuitOpen`](crate::CircuitOpen), and the request,
//! still in the fallback's hands, goes to the next member without being cloned and without
//! the open member being called.
//!
//! An LLM client that prefers one provider, falls back to a second, and answers from a cache
//! when both are down:
//!
//! ```
//! use std::time::Duration;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use tower_breaker::{BoxError, CircuitBreaker, CircuitBreakerLayer, Fallback};
//! use tower_breaker::fallback::Provenance;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! // Stand-ins for real clients (a hyper-util or reqwest client per provider).
//! let openai = service_fn(|_prompt: String| async move {
//!     Err::<http::Response<String>, BoxError>("connection refused".into())
//! });
//! let anthropic = service_fn(|prompt: String| async move {
//!     Ok::<_, BoxError>(http::Response::new(format!("claude: {prompt}")))
//! });
//! let cache = service_fn(|prompt: String| async move {
//!     Ok::<_, BoxError>(http::Response::new(format!("cached: {prompt}")))
//! });
//!
//! let breaker = |name: &str| {
//!     CircuitBreaker::builder(name)
//!         .consecutive_failures(5)
//!         .open_duration(Duration::from_secs(30))
//!         .build()
//! };
//! let (openai_breaker, anthropic_breaker) = (breaker("openai")?, breaker("anthropic")?);
//!
//! // primary -> secondary -> cache
//! let llm = Fallback::new(
//!     ServiceBuilder::new()
//!         .layer(CircuitBreakerLayer::new(openai_breaker.clone()))
//!         .timeout(Duration::from_secs(60)) // per attempt, inside the breaker
//!         .service(openai),
//!     Fallback::new(
//!         ServiceBuilder::new()
//!             .layer(CircuitBreakerLayer::new(anthropic_breaker.clone()))
//!             .timeout(Duration::from_secs(60))
//!             .service(anthropic),
//!         cache,
//!     )
//!     .names("anthropic", "cache"),
//! )
//! .names("openai", "fallbacks");
//!
//! openai_breaker.force_open(); // as if openai had failed five times in a row
//! let response = llm.clone().oneshot("hello".into()).await?;
//! assert_eq!(response.body(), "claude: hello");
//!
//! // Which member served, and why the others did not.
//! let provenance = response.extensions().get::<Provenance>().unwrap();
//! assert_eq!(provenance.served_by(), "anthropic");
//! assert_eq!(provenance.skipped()[0].member(), "openai");
//!
//! anthropic_breaker.force_open();
//! let response = llm.oneshot("hello".into()).await?;
//! assert_eq!(response.body(), "cached: hello");
//! # Ok(()) }
//! ```
//!
//! `examples/failover.rs` runs a [`Failover`] over three providers (one down, one
//! rate-limited, one healthy) and a cache of earlier good answers, and prints what happened.
//!
//! # When the request moves on
//!
//! | the member's `poll_ready` | default | with [`spill_over(true)`](Fallback::spill_over) |
//! |---|---|---|
//! | `Ready(Ok)` | it gets the request | same |
//! | `Ready(Err)` with a `CircuitOpen` (or an inner chain's [`AllUnavailable`]) | skipped, never called; the next member is polled | same |
//! | `Pending` (busy: backpressure) | waited for | the next ready member takes the request |
//! | `Ready(Err)`, anything else | returned to the caller | same |
//!
//! Readiness errors other than `CircuitOpen` are tower's "this service is dead" signal; the
//! fallback passes them on rather than hiding a broken member (a [`FallbackError`] when
//! members were skipped before it). A member is polled only when the request may go to it:
//! a ready primary means the secondary is never polled.
//!
//! When every member is skipped, `poll_ready` fails at once with [`AllUnavailable`] (unless the
//! [`Failover`] or [`Fallback`] was told `when_all_open(AllOpen::ProbeSoonest)`
//! ([`Failover::when_all_open`], [`Fallback::when_all_open`]): the request then goes to the
//! member whose open period ends soonest, as its half-open probe, and its [`Provenance`] says
//! [`probed_early`](Provenance::probed_early)): each member's name and `CircuitOpen`, and the
//! smallest `retry_after`. Its `source()` is the
//! `CircuitOpen` of the member that recovers first, so
//! [`is_circuit_open`](crate::is_circuit_open) is true for it and an outer `Fallback`, or a
//! retry policy, treats the whole chain like one open circuit (nested chains flatten their
//! members into the outer `AllUnavailable`). The same instance checks again on its next
//! `poll_ready`: like `CircuitOpen`, it is transient.
//!
//! ## After a call: `on_http_failure` and `on_failure`
//!
//! By default a request that reached a member stays there: its result, failure or not, is the
//! caller's. For HTTP members whose requests can be sent again (a buffered body:
//! `http::Request<Full<Bytes>>`, `Bytes`, `String`), [`Failover::on_http_failure`] (and
//! [`Fallback::on_http_failure`]) is the preset: a 5xx, a 429, a timeout, a connect error, or
//! a refusal by a breaker inside the member sends the request to the next member.
//!
//! ```
//! use std::time::Duration;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use tower_breaker::{BoxError, CircuitBreaker, CircuitBreakerLayer, Failover, HttpClassifier};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! // Stand-ins for a hyper-util client per provider: one overloaded, one healthy.
//! let provider = |name: &'static str, status: u16| -> Result<_, BoxError> {
//!     let breaker = CircuitBreaker::builder(name).consecutive_failures(5).build()?;
//!     Ok(ServiceBuilder::new()
//!         .layer(CircuitBreakerLayer::new(breaker).classify(HttpClassifier::default()))
//!         .timeout(Duration::from_secs(20))
//!         .service(service_fn(move |_: http::Request<String>| async move {
//!             Ok::<_, BoxError>(http::Response::builder().status(status).body(name.to_owned())?)
//!         })))
//! };
//! let llm = Failover::new([("openai", provider("openai", 529)?), ("anthropic", provider("anthropic", 200)?)])
//!     .on_http_failure();
//! let res = llm.oneshot(http::Request::new("hello".to_owned())).await?;
//! assert_eq!(res.body(), "anthropic"); // openai answered 529: the request moved on
//! # Ok(()) }
//! ```
//!
//! For LLM providers (feature `llm`, on by default), `on_llm_failure()` routes by the kind of
//! failure the provider reported in its error body: a quota or a 529 fails over, a prompt too
//! long goes to a model with a larger context window, a safety refusal goes back to the caller
//! (see `llm::LlmRouting`).
//!
//! In general, [`Fallback::on_failure`] (and [`Failover::on_failure`]) take a [`Policy`] that
//! copies each request before the member gets it ([`CloneRequest`] for `Req: Clone`,
//! [`CloneWith`] for a function that may decline) and a classifier that judges the result:
//! a failed call, or an answer classified [`Outcome::Failure`](crate::Outcome::Failure) or
//! `Trip` (pass the same classifier as the breaker, e.g. for 5xx and 429), sends the copy to
//! the next member. A call rejected by a `RejectOnCall` breaker (its future resolves to
//! `CircuitOpen`) always moves on when a copy exists: nothing was sent. Without a copy (the
//! policy returned `None`) nothing moves on and the member's own result is returned.
//!
//! A policy may also say *where* the request goes ([`Policy::route`], a [`Route`]): back to the
//! caller, on to the next member, or to the first later member of a list (a model with a
//! larger context window), with a label the [`Provenance`] keeps
//! ([`Skipped::because`]). The default route follows `should_fall_back`.
//!
//! The next member is cloned (cheap for breaker services: they share the breaker) and readied
//! inside the response future, only when it is needed. If no later member can take the
//! request, the failed answer stands: a response classified as a failure is returned as is,
//! an error as a [`FallbackError`]. "Take" means answer: the failed answer is kept until the
//! next member has answered, so a member that is ready but refuses the call (a `RejectOnCall`
//! or keyed breaker whose circuit is open) leaves it standing, and the caller never gets an
//! open circuit, or an [`AllUnavailable`], for a request that a member answered. (A held
//! `http::Response` keeps its connection until then; its body is not read.)
//!
//! # Errors
//!
//! The error type is [`BoxError`](crate::BoxError). The caller gets:
//!
//! - the member's own error, unchanged, when no other member was involved;
//! - a [`FallbackError`] when the member that handled the request last failed after others
//!   were skipped: [`error`](FallbackError::error) is that member's error,
//!   [`skipped`](FallbackError::skipped) the others with their reasons, and `source()` the
//!   first of them (the primary's reason) as a [`Skipped`]. A `Skipped` does not expose a
//!   `CircuitOpen` through `source()`: the request *was* sent, so `is_circuit_open` is false
//!   for a `FallbackError`;
//! - an [`AllUnavailable`] when no member could be called.
//!
//! # Provenance
//!
//! Every response records which member served it and why the others did not, as a
//! [`Provenance`]: in `http::Response::extensions()` for HTTP responses, and through the
//! [`RecordProvenance`] trait for other response types (a no-op for plain types; implement it
//! for your own). [`on_fallback`](Fallback::on_fallback) is called with it for every response
//! that did not come from the first member, whatever the response type.
//!
//! # Permits and cancellation
//!
//! A breaker service takes its admission (a half-open probe permit, say) in `poll_ready` and
//! keeps it until `call`. The fallback polls a member only when the request may go to it, and
//! everything a request holds lives in its response future: the member's future (with its
//! permit), the copy of the request, and the clone of the next member being readied. Dropping
//! the future (a cancelled call, a timeout above) releases every permit; dropping a fallback
//! that was readied but not called releases the admission of the member it had picked. With
//! `spill_over`, a busy member keeps what it reserved until it is polled again or dropped, as
//! any tower service that was readied but not called does.
//!
//! # Composition
//!
//! Put tower's `Retry` and `Timeout` *inside* each member, around or under its breaker:
//! `Fallback(Retry(breaker(Timeout(client))), ...)`. The timeout bounds each attempt and
//! counts as a failure for that member's breaker; the retry policy should stop on
//! [`is_circuit_open`](crate::is_circuit_open), so that once the breaker opens the fallback
//! moves on at once. Members' breakers should use `Readiness::FailFast` (the default):
//! `RejectOnCall` only falls back with an `on_failure` policy, and `Wait` makes an open member
//! look busy (waited for, or passed over with `spill_over`).

mod all_open;
mod error;
mod failover;
mod future;
mod layer;
mod policy;
mod provenance;
mod service;

pub use all_open::AllOpen;
pub use error::{AllUnavailable, FallbackError, SkipReason, Skipped};
pub use failover::Failover;
pub use future::{FailoverFuture, ResponseFuture};
pub use layer::FallbackLayer;
pub use policy::{CloneRequest, CloneWith, OnFailure, OnOpen, Policy, Route};
pub use provenance::{Provenance, RecordProvenance};
pub use service::Fallback;
