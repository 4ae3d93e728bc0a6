//! Integrations with HTTP clients and their ecosystems, and with operations tooling, each
//! behind a feature.
//!
//! - **metrics** (feature `metrics`, the [`metrics`](https://docs.rs/metrics) facade),
//!   **prometheus-client** (feature `prometheus-client`) and a [`health`] report (serialisable
//!   with `serde`); a live status page (`integrations::dashboard`, feature `dashboard`).
//! - **hyper-util** (feature `hyper-util` for its error types; the stack needs nothing else):
//!   the legacy `Client` is a tower `Service` that is always ready, so the breaker's readiness
//!   is never masked. Stack it as `Fallback → Retry → CircuitBreaker → Timeout → Client`:
//!   `Timeout` inside the breaker so the breaker sees `Elapsed`; `Retry` outside it so every
//!   attempt asks the breaker and an open breaker ends the retries (with
//!   [`retry::RetryPolicy`], feature `retry`); `Fallback` on top so
//!   the secondary serves when the primary's retries end in an open circuit. The classifier is
//!   [`HttpClassifier`](crate::HttpClassifier). See the [`retry`] module for a
//!   runnable stack.
//! - **reqwest-middleware** (feature `reqwest-middleware`):
//!   [`CircuitBreakerMiddleware`].
//! - **tower-http** (feature `tower-http`): any `ClassifyResponse` as a
//!   [`Classify`](crate::Classify).
//! - **redis** (feature `redis`): `RedisSync` shares trips among the replicas of an
//!   application through Redis (`integrations::redis`).
//! - **webhook** (feature `webhook`): `WebhookAlerts` posts Slack-compatible or JSON alerts
//!   when breakers open, reopen and recover (`integrations::webhook`).
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use hyper_util::{client::legacy::Client, rt::TokioExecutor};
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_breaker::{CircuitBreaker, CircuitBreakerLayer, HttpClassifier, State};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_breaker::BoxError> {
//! let breaker = CircuitBreaker::builder("upstream").consecutive_failures(1).build()?;
//! let client = ServiceBuilder::new()
//!     .layer(CircuitBreakerLayer::new(breaker.clone()).classify(HttpClassifier::default()))
//!     .timeout(Duration::from_secs(10))
//!     .service(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());
//!
//! let req = http::Request::get("http://127.0.0.1:1/").body(Full::new(Bytes::new()))?;
//! assert!(client.oneshot(req).await.is_err()); // connection refused: a failure
//! assert_eq!(breaker.state(), State::Open);
//! # Ok(()) }
//! ```
// Links to items behind a feature: the item when it is on, else its page on docs.rs.
#![cfg_attr(feature = "retry", doc = "[`retry`]: crate::retry")]
#![cfg_attr(
    not(feature = "retry"),
    doc = concat!("[`retry`]: https://docs.rs/tower-breaker/", env!("CARGO_PKG_VERSION"), "/tower_breaker/retry/index.html")
)]
#![cfg_attr(feature = "retry", doc = "[`retry::RetryPolicy`]: crate::retry::RetryPolicy")]
#![cfg_attr(
    not(feature = "retry"),
    doc = concat!("[`retry::RetryPolicy`]: https://docs.rs/tower-breaker/", env!("CARGO_PKG_VERSION"), "/tower_breaker/retry/struct.RetryPolicy.html")
)]
#![cfg_attr(
    feature = "reqwest-middleware",
    doc = "[`CircuitBreakerMiddleware`]: reqwest_middleware::CircuitBreakerMiddleware"
)]
#![cfg_attr(
    not(feature = "reqwest-middleware"),
    doc = concat!("[`CircuitBreakerMiddleware`]: https://docs.rs/tower-breaker/", env!("CARGO_PKG_VERSION"), "/tower_breaker/integrations/reqwest_middleware/struct.CircuitBreakerMiddleware.html")
)]

#[cfg(feature = "reqwest-middleware")]
pub mod reqwest_middleware;
#[cfg(feature = "tower-http")]
pub mod tower_http;

#[cfg(feature = "dashboard")]
pub mod dashboard;
pub mod health;
#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(feature = "prometheus-client")]
pub mod prometheus;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "webhook")]
#[cfg_attr(docsrs, doc(cfg(feature = "webhook")))]
pub mod webhook;

use crate::breaker::State;

/// The value of the `circuit_breaker_state` gauge for `state`, in every integration: `0`
/// closed, `1` open, `2` half-open, `3` forced open, `4` disabled.
pub const fn state_value(state: State) -> f64 {
    match state {
        State::Closed => 0.0,
        State::Open => 1.0,
        State::HalfOpen => 2.0,
        State::ForcedOpen => 3.0,
        State::Disabled => 4.0,
    }
}
