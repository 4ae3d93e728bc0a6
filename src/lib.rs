//! Circuit breaker, fallback and failure classification as [tower] middleware.
//!
//! `tower-breaker` keeps an application responsive and cheap while a remote dependency (an LLM
//! provider API, any HTTP upstream) is down. While the breaker is open, calls fail fast with a
//! typed [`CircuitOpen`] error instead of waiting on a dead upstream; after the open period it
//! lets a few probes through and closes by itself once they succeed.
//!
//! ```
//! use std::time::Duration;
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//! use tower_breaker::{BoxError, CircuitBreaker, CircuitBreakerLayer, CircuitOpen, State};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let breaker = CircuitBreaker::builder("upstream")
//!     .consecutive_failures(3) // trip on the 3rd consecutive failure
//!     .open_duration(Duration::from_secs(30))
//!     .build()?;
//! let mut svc = ServiceBuilder::new()
//!     .layer(CircuitBreakerLayer::new(breaker.clone()))
//!     .service(service_fn(|_req: ()| async { Err::<(), BoxError>("503".into()) }));
//!
//! for _ in 0..3 {
//!     let _ = svc.ready().await?.call(()).await; // three real failures
//! }
//! assert_eq!(breaker.state(), State::Open);
//! let err = svc.ready().await.unwrap_err(); // fails fast; the request is still ours
//! assert_eq!(err.downcast_ref::<CircuitOpen>().unwrap().retry_after(), Some(Duration::from_secs(30)));
//! # Ok(()) }
//! ```
//!
//! # The pieces
//!
//! - [`breaker`]: the core, independent of tower. [`CircuitBreaker::builder`] configures the
//!   trip rules (consecutive failures, failure rate over a count or time window, slow calls),
//!   the open period ([`Backoff`]), half-open probing, listeners; [`CircuitBreaker::try_acquire`]
//!   gives a [`Permit`] on which the call's [`Outcome`] is recorded.
//! - [`classify`]: [`Outcome`] (`Success`, `Failure`, `Ignore`, `Trip(wait)`) and the
//!   [`Classify`] trait; [`HttpClassifier`] for HTTP responses and client errors (5xx and
//!   timeouts fail, 429/503 with `Retry-After` trip for the server's wait).
//! - [`service`]: [`CircuitBreakerLayer`] and its three [`Readiness`] modes.
//!
//! # Feature flags
//!
//! | feature | what it adds |
//! |---|---|
//! | *(default)* | the core, the tower layer, `Outcome`/`Classify`, `HttpClassifier` |
//! | `serde` | `Serialize` for [`Snapshot`] and [`State`] |
//!
//! # Layering
//!
//! Outermost first, for a client that calls an upstream:
//!
//! ```text
//! Fallback → Retry → CircuitBreaker → Timeout → client
//! ```
//!
//! - **`Timeout` inside the breaker**, so that a timed-out attempt reaches the breaker as a
//!   failure ([`tower::timeout::error::Elapsed`](https://docs.rs/tower/latest/tower/timeout/error/struct.Elapsed.html)
//!   is a failure for the default classifier and for [`HttpClassifier`]).
//! - **`Retry` outside the breaker**, so that every attempt is counted and a retry loop ends at
//!   an open circuit: in the default `FailFast` mode the retry's `poll_ready` fails with
//!   `CircuitOpen` and `Retry` returns it without consulting its policy. A policy written by
//!   hand should not retry [`is_circuit_open`] errors either.
//! - **`Fallback` outermost**: it sees the primary's `CircuitOpen` at readiness, before the
//!   request is handed over, and routes the request to the secondary without cloning it.
//! - **`Buffer`**: its worker treats a `poll_ready` error as final and stops. Put the breaker
//!   above it, `breaker(buffer(client))`, in `FailFast` mode; or, when the `Buffer` must sit
//!   above the breaker, use [`Readiness::RejectOnCall`], whose readiness never fails.
//! - **`balance`**: give each endpoint its own breaker ([`CircuitBreakerLayer::per_service`])
//!   in [`Readiness::Wait`] mode: a tripped endpoint is simply not ready, so `p2c` routes
//!   around it until its half-open deadline, when it rejoins.
//! - **`LoadShed`** above a `Wait`-mode breaker turns "not ready" into an immediate error.
//!
//! `CircuitOpen` from `poll_ready` is **transient**, unlike what tower's contract assumes of
//! readiness errors: the same service instance, and every clone, checks the breaker again on
//! its next `poll_ready`.
//!
//! [tower]: https://docs.rs/tower

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod breaker;
pub mod classify;
pub mod fallback;
pub mod keyed;
pub mod service;

pub use breaker::{
    Backoff, BoxError, Builder, CircuitBreaker, CircuitOpen, ConfigError, Event, Permit, Reason, Snapshot,
    State, is_circuit_open,
};
pub use classify::{AsError, Classify, ErrorIsFailure, HttpClassifier, Outcome};
pub use fallback::{AllUnavailable, Failover, Fallback, FallbackLayer};
pub use service::{CircuitBreakerLayer, CircuitBreakerService, Readiness};
#[doc(no_inline)]
pub use tower_layer::Layer;
pub mod integrations;
#[cfg(feature = "retry")]
pub mod retry;
pub mod streaming;
