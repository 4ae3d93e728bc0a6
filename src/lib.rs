//! Circuit breaker, fallback and failure classification as [tower] middleware.
//!
//! `tower-breaker` keeps an application responsive and cheap while a remote dependency (an LLM
//! provider API, any HTTP upstream) is down. While the breaker is open, calls fail fast with a
//! typed [`CircuitOpen`] error instead of waiting on a dead upstream; after the open period it
//! lets a few probes through and closes by itself once they succeed.
//!
//! The stack most HTTP clients want: one breaker per upstream, and a [`Failover`] that sends a
//! request to the next upstream when one is open, **or when its call fails** (a 5xx, a 429, a
//! timeout, a connect error):
//!
//! ```
//! use std::time::Duration;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use tower_breaker::{BoxError, CircuitBreaker, CircuitBreakerLayer, Failover, HttpClassifier, State};
//! use tower_breaker::fallback::Provenance;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! // One member per upstream: breaker → timeout → client. The clients here are stand-ins
//! // (openai is down and answers 503); the README builds the same stack over hyper-util.
//! let member = |name: &'static str, status: u16| -> Result<_, BoxError> {
//!     let breaker = CircuitBreaker::builder(name)
//!         .consecutive_failures(5) // trip on the 5th consecutive failure
//!         .open_duration(Duration::from_secs(30))
//!         .build()?;
//!     let client = service_fn(move |_: http::Request<String>| async move {
//!         Ok::<_, BoxError>(http::Response::builder().status(status).body(format!("{name}: {status}"))?)
//!     });
//!     let svc = ServiceBuilder::new()
//!         .layer(CircuitBreakerLayer::new(breaker.clone()).classify(HttpClassifier::default()))
//!         .timeout(Duration::from_secs(20)) // per attempt, inside the breaker
//!         .service(client);
//!     Ok((breaker, svc))
//! };
//! let (openai, primary) = member("openai", 503)?;
//! let (_, secondary) = member("anthropic", 200)?;
//!
//! // Fails over on an open circuit (without calling it), and after a failed call (with a copy
//! // of the request: `http::Request<B>` with a buffered body is `Clone`).
//! let llm = Failover::new([("openai", primary), ("anthropic", secondary)]).on_http_failure();
//! let request = || http::Request::post("/v1/chat/completions").body("{}".to_owned());
//!
//! for _ in 0..5 {
//!     let response = llm.clone().oneshot(request()?).await?;
//!     assert_eq!(response.body(), "anthropic: 200"); // each 503 moved on to anthropic
//! }
//! assert_eq!(openai.state(), State::Open); // five 503s in a row: openai's breaker opened
//!
//! let response = llm.oneshot(request()?).await?;
//! let provenance = response.extensions().get::<Provenance>().unwrap();
//! assert_eq!(provenance.served_by(), "anthropic");
//! assert!(provenance.skipped()[0].circuit_open().is_some()); // openai skipped, not called
//! # Ok(()) }
//! ```
//!
//! Without [`on_http_failure`](Failover::on_http_failure), a `Failover` moves on only when a
//! member's circuit is already open (the default: the request is never copied, so it needs
//! no `Clone`); a failed call's answer goes to the caller. A streaming request body cannot be
//! replayed: see [`on_failure`](Failover::on_failure) and [`fallback::CloneWith`].
//!
//! A breaker on its own fails fast while open, and the request stays in the caller's hands:
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
//!   gives a [`Permit`] on which the call's [`Outcome`] is recorded. [`CircuitBreaker::snapshot`]
//!   and [`Event`] listeners feed dashboards.
//! - [`classify`]: [`Outcome`] (`Success`, `Failure`, `Ignore`, `Trip(wait)`) and the
//!   [`Classify`] trait; [`HttpClassifier`] for HTTP responses and client errors (5xx and
//!   timeouts fail, 429/503 with `Retry-After` trip for the server's wait), every row
//!   configurable.
//! - [`service`]: [`CircuitBreakerLayer`] and its three [`Readiness`] modes;
//!   [`CircuitOpenResponse`], the 503 a server sends for a refused call
//!   ([server side](#server-side)).
//! - [`fallback`]: [`Fallback`], [`FallbackLayer`] and [`Failover`]: when a member is open, the
//!   request goes to the next one at once, without being cloned; with `on_http_failure` (or
//!   `on_failure` and a policy), a failed call sends a copy on too.
//! - [`keyed`]: one breaker per key (host, model, endpoint) in a bounded registry.
//! - [`streaming`]: record the outcome when a streamed response body ends.
//! - [`retry`] (feature `retry`): a `tower::retry::Policy` that never retries an open circuit
//!   and honours `Retry-After`.
//! - [`llm`] (feature `llm`, on by default): OpenAI, Azure OpenAI and Anthropic failures by
//!   kind (rate limit, quota, overload, auth, context window, content policy, ...) from their
//!   error bodies, their rate-limit headers, and failover routing by kind (`on_llm_failure`).
//! - [`integrations`]: hyper-util, reqwest-middleware, tower-http, `metrics`,
//!   `prometheus-client`, Redis (sharing trips among replicas), webhook alerts, and a health
//!   report.
//! - [`config`] (feature `serde`): breaker and keyed-registry settings from configuration
//!   files.
//!
//! # Fallback
//!
//! The LLM failover stack: a primary provider, a secondary, and a cache of last resort. Each
//! provider has its own breaker; while one is open, its requests go to the next member at
//! once.
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
//! # Feature flags
//!
//! Everything not in this table needs no feature: the core, the tower layer and its
//! [`Readiness`] modes, fallback and failover, keyed breakers, streaming, [`HttpClassifier`]
//! for `http::Response` with [`BoxError`], `std::io::Error` and `tower::timeout` errors, the
//! [`health`](integrations::health) report, and the server-side [`CircuitOpenResponse`].
//!
//! | feature | default | needed for |
//! |---|---|---|
//! | `hyper-util` | on | a breaker with [`HttpClassifier`] directly over a hyper-util legacy `Client`: it classifies `hyper_util::client::legacy::Error` and `hyper::Error` (connect errors, timeouts). Without it that stack does not compile (`the method 'oneshot' exists ... but its trait bounds were not satisfied`: the client's error has no [`AsError`] impl); a `Timeout` between the two boxes the error and needs no feature. Costs a dependency on hyper and hyper-util (which such a user has anyway): turn the default features off if you use neither |
//! | `reqwest` | | [`HttpClassifier`] for `reqwest::Response` and `reqwest::Error` (a breaker around a tower service that calls reqwest) |
//! | `reqwest-middleware` | | [`CircuitBreakerMiddleware`] for a `reqwest_middleware::ClientWithMiddleware`; turns on `reqwest` |
//! | `tower-http` | | [`FromClassifyResponse`]: a tower-http `ClassifyResponse` (e.g. `ServerErrorsAsFailures`) as the breaker's classifier |
//! | `retry` | | [`retry::RetryPolicy`]: a `tower::retry::Policy` that stops at an open circuit and honours `Retry-After`; turns on `tower/retry` |
//! | `metrics` | | [`integrations::metrics`]: counters and gauges through the `metrics` facade |
//! | `prometheus-client` | | [`integrations::prometheus`]: the same families in a `prometheus_client` registry |
//! | `serde` | | `Serialize` for [`Snapshot`], [`State`] and the health report (a JSON health endpoint); [`config`]: every breaker setting from TOML, YAML or environment variables (`Deserialize`; durations through `humantime`) |
//! | `redis` | | [`integrations::redis`]: the replicas of an application share trips and operators' overrides through Redis |
//! | `llm` | on | [`llm`]: classifying OpenAI, Azure OpenAI and Anthropic failures by kind, from their rate-limit headers and JSON error bodies (`LlmErrorLayer`, `LlmClassifier`), and failover routing by kind (`LlmRouting`, `on_llm_failure`). Costs a dependency on `serde_json`, and nothing at run time until its layer is used; the showcase needs it |
//! | `dashboard` | | [`integrations::dashboard`]: a live status page (HTML, a JSON snapshot, a live stream) as a tower service; turns on `serde` |
//! | `webhook` | | [`integrations::webhook`]: Slack-compatible or JSON alerts when a breaker opens, reopens and recovers, posted by a background task with retries and a rate limit (https through rustls); turns on `serde` and `hyper-util` |
//! | `test-util` | | tests that move time with `tokio::time::pause()`/`advance()` after building their breakers in a running runtime: every breaker reads tokio's pausable clock, wherever it was built (see [Time](#time)); turns on tokio's `test-util` |
//!
//! The docs on docs.rs are built with every feature; items that need one say which.
//!
//! # Operating it
//!
//! The people who run an application tune its breakers per environment and get paged by
//! them:
//!
//! - **Settings from files** (feature `serde`): [`config::BreakerConfig`] and
//!   [`config::KeyedConfig`] read every builder setting from TOML, YAML or JSON, with
//!   durations as `"30s"` or numbers of seconds, misspelt fields refused, per-key overrides
//!   that inherit the template, and environment variables layered over a file by the
//!   `config` or `figment` crates. A value out of range is a [`ConfigError`] naming the
//!   breaker and the field.
//! - **Hot reload**: [`CircuitBreaker::reconfigure`] (and a keyed registry's, and a reloaded
//!   file's) applies new settings to a live breaker, keeping its state, its open deadline and
//!   as much of its window as the new shape allows; see [Hot reload](#hot-reload).
//! - **Alerts without code** (feature `webhook`): [`integrations::webhook`] posts to a Slack
//!   incoming webhook or any JSON receiver when a breaker opens, reopens and recovers, with
//!   the reason, the counts and the open duration; a background task with a bounded queue,
//!   timeouts, retries and a rate limit per breaker, never in the way of a call.
//! - **Observe first** ([Shadow mode](#shadow-mode)): breakers that never refuse, count and
//!   announce the calls they would have refused, and are switched to enforce at runtime.
//! - **Acting by hand** ([Manual overrides](#manual-overrides)): force open, disable, reset
//!   and shadow switches, audited with their origin, and shared by every replica through
//!   Redis (feature `redis`).
//! - **Recovery probes**: [`Builder::recovery_probe`] checks the upstream out of band (e.g.
//!   `GET /v1/models`) when an open period ends, and only its success lets live calls in;
//!   see [Recovery probes](#recovery-probes).
//! - **Seeing it**: the [`health`](integrations::health) report, metrics
//!   ([`integrations::metrics`], [`integrations::prometheus`]) and a live page
//!   ([`integrations::dashboard`]).
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
//! - **`Buffer`**: its worker treats a `poll_ready` error as final and stops **for good**. Put
//!   the breaker above it, `breaker(buffer(client))`, in `FailFast` mode; or, when the `Buffer`
//!   must sit above the breaker, use [`Readiness::RejectOnCall`], whose readiness never fails.
//!   `buffer(breaker(client))` in `FailFast` mode dies at the first open circuit: its error
//!   is a dead buffer ([`is_dead_buffer`]), not an open circuit ([`is_circuit_open`] is false:
//!   retrying it, or routing around it, would never end), and the crate logs one ERROR naming
//!   the fix the first time it sees one. [`CircuitBreakerLayer`] shows both stacks.
//! - **`balance`**: give each endpoint its own breaker ([`CircuitBreakerLayer::per_service`])
//!   in [`Readiness::Wait`] mode: a tripped endpoint is simply not ready, so `p2c` routes
//!   around it until its half-open deadline, when it rejoins.
//! - **`LoadShed`** above a `Wait`-mode breaker turns "not ready" into an immediate error.
//! - **hyper-util**: the legacy `Client` is always ready, so nothing masks the breaker's
//!   readiness; the [`integrations`] docs run the stack over a real client, and the
//!   [`retry`] docs (feature `retry`) add the retry policy.
//! - **reqwest**: with `reqwest-middleware`, put
//!   [`CircuitBreakerMiddleware`] *after* `reqwest-retry`'s middleware
//!   (inner), so each attempt is counted and the retry middleware stops at an open circuit;
//!   the `integrations::reqwest_middleware` docs (feature `reqwest-middleware`) show it.
//! - **Keyed**: one breaker per host or model ([`keyed`]) inside the fallback, so one dead
//!   model does not take its provider's other models down.
//!
//! `CircuitOpen` from `poll_ready` is **transient**, unlike what tower's contract assumes of
//! readiness errors: the same service instance, and every clone, checks the breaker again on
//! its next `poll_ready`.
//!
//! ## Why `FailFast` is the default
//!
//! [`Readiness::FailFast`] answers `poll_ready` with the refusal while the circuit is open.
//! The request has not been handed over, so a [`Fallback`] routes it to the next member
//! without cloning it, tower's `Retry` stops at once instead of spending its budget, and a
//! direct caller still holds it. The price is the one composition above: a combinator that
//! takes a readiness error as final (tower's `Buffer`) must sit *below* the breaker, or the
//! breaker under it must be `RejectOnCall`. Refusing at call time by default would make every
//! fallback clone every request and every retry loop run to its limit against an open
//! circuit; the crate keeps the fast path and makes the wrong stack loud instead (above).
//!
//! Every function that looks for a refusal in an error, [`is_circuit_open`],
//! [`CircuitOpen::find`] and [`is_dead_buffer`], takes any error [`AsError`] covers:
//! `BoxError`, `&dyn Error`, `reqwest_middleware::Error` (feature `reqwest-middleware`), your
//! own types.
//!
//! # Server side
//!
//! In a server, a breaker guards a route that depends on a flaky upstream (a pricing API, a
//! database): while the upstream is down, the route answers at once instead of holding a
//! connection and a worker for each doomed request.
//!
//! - **One breaker per route**, on that route: `get(handler).route_layer(..)` in axum. The
//!   breaker sees that route's responses ([`HttpClassifier`]: a 5xx is a failure, a 4xx is
//!   the client's business), so the handler answers `502`/`503`/`504` when its upstream fails.
//! - **Not one breaker under `Router::layer`**: axum applies it to every route *and* to the
//!   404 fallback, all sharing the breaker, so once the flaky route trips it every route and
//!   every unknown path answers 503. (`Router::route_layer` spares the fallback but still
//!   shares the one breaker.)
//! - **`HandleErrorLayer` outermost**, turning the refusal into a response with
//!   [`CircuitOpenResponse`]: `503` (or `429`) with `Retry-After` in whole seconds, rounded
//!   up, and a body that gives the same wait. The default [`Readiness::FailFast`] works here:
//!   `HandleError` calls a clone of the service for each request, whose `poll_ready` refusal
//!   it turns into the response.
//! - **Many routes under one layer**: a [`keyed`] registry keyed by the route that matched
//!   (axum's `MatchedPath`) under `Router::route_layer` gives each route its own breaker, named
//!   `"{template}:{route}"` and listed by the registry for health and metrics
//!   (`tests/axum_server.rs` has the extractor). [`CircuitBreakerLayer::per_service`] is not
//!   the tool for routes: axum calls a route layer's `layer` once per method endpoint and,
//!   before the router has its state, once per connection.
//!
//! `cargo run --example axum_server` runs a whole app; its test serves it on 127.0.0.1.
//!
//! ```
//! use std::time::Duration;
//! use axum::{Router, body::Body, error_handling::HandleErrorLayer, http::{Request, StatusCode}};
//! use axum::{response::IntoResponse, routing::get};
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_breaker::{BoxError, CircuitBreaker, CircuitBreakerLayer, CircuitOpenResponse, HttpClassifier};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let quotes = CircuitBreaker::builder("quotes")
//!     .consecutive_failures(3)
//!     .open_duration(Duration::from_secs(30))
//!     .build()?;
//! let guard = ServiceBuilder::new()
//!     .layer(HandleErrorLayer::new(|err: BoxError| async move {
//!         CircuitOpenResponse::new()
//!             .for_error(&err)
//!             .unwrap_or_else(|| StatusCode::INTERNAL_SERVER_ERROR.into_response())
//!     }))
//!     .layer(CircuitBreakerLayer::new(quotes.clone()).classify(HttpClassifier::default()));
//!
//! let app = Router::new()
//!     // The upstream of /quotes is down: its handler answers 502.
//!     .route("/quotes", get(|| async { StatusCode::BAD_GATEWAY }).route_layer(guard))
//!     .route("/orders", get(|| async { "order 7: shipped" }));
//!
//! let status = |path: &str| {
//!     let request = Request::get(path).body(Body::empty()).unwrap();
//!     let app = app.clone();
//!     async move { app.oneshot(request).await.unwrap() }
//! };
//! for _ in 0..3 {
//!     assert_eq!(status("/quotes").await.status(), StatusCode::BAD_GATEWAY);
//! }
//! let refused = status("/quotes").await; // open: refused at once
//! assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
//! assert_eq!(refused.headers()["retry-after"], "30");
//! assert_eq!(status("/orders").await.status(), StatusCode::OK); // other routes are untouched
//! assert_eq!(status("/nope").await.status(), StatusCode::NOT_FOUND); // and so are 404s
//! # Ok(()) }
//! ```
//!
//! # Time
//!
//! A breaker reads time as `tokio::time::Instant` does: a test that builds its breakers inside
//! a paused runtime (`#[tokio::test(start_paused = true)]`, or after `tokio::time::pause()`)
//! moves them with `tokio::time::advance` exactly, with no feature of this crate. Elsewhere,
//! on Linux, a breaker reads a cheaper clock:
//!
//! - An open breaker refuses a call on `CLOCK_MONOTONIC_COARSE` (through `rustix`, about
//!   6 ns against 17–22 ns for `Instant::now()` here) while `coarse + margin < deadline`, and
//!   reads the precise clock (`CLOCK_MONOTONIC`, `std::time::Instant`'s) within the margin.
//!   The coarse clock runs on the precise clock's timeline and never ahead of it, trailing by
//!   at most a kernel tick (4 ms at 250 Hz) and the timer interrupt's latency, so the move to
//!   half-open is **never later than the precise clock says**. The margin is four ticks
//!   (16 ms at 250 Hz), widened to twice the largest lag seen at a trip.
//! - A time window places calls in buckets by the coarse clock: a bucket boundary may be late
//!   by that margin, no more.
//! - Slow-call durations are measured on the precise clock, to the nanosecond (modulo 2^48 ns,
//!   78 hours).
//!
//! Which clock a breaker reads is decided when it is built: tokio's when tokio's clock is
//! paused or was moved by hand (two back-to-back reads are equal only while it is paused), and
//! again at every trip, so a breaker built before `pause()` switches to tokio's clock the first
//! time it opens under a paused clock. A test that builds a breaker in a running runtime and
//! moves time only later (pause, advance, resume around real sockets) enables this crate's
//! `test-util` feature in its dev-dependencies, as tokio's own: every breaker then reads
//! tokio's clock. Where no coarse clock exists (not Linux), breakers read tokio's clock.
//!
//! # Refusals
//!
//! A refusal costs no heap allocation in the core: [`CircuitOpen`] holds a copy of the
//! breaker's name when it is at most 31 bytes (a longer one is shared by reference count), the
//! breaker's epoch and the deadline, so that [`CircuitOpen::name`] and
//! [`CircuitOpen::retry_after`] need nothing else, and refusing a call writes no memory that
//! another thread's refusal writes. Through a service (`type Error = BoxError`, tower's
//! convention) a refusal is one box of 72 bytes, built in place (about 6 ns of the 22 ns a
//! refusal costs through the layer here): the price of an error that can be downcast and still
//! names its breaker and its wait.
//!
//! # Shadow mode
//!
//! To deploy breakers observe-only, see when they would have opened, then enforce: a breaker
//! built with [`Builder::shadow(true)`](Builder::shadow), or switched at runtime with
//! [`CircuitBreaker::set_shadow`], runs its state machine and publishes every event, but never
//! refuses a call. While it is notionally open (or half-open with its probes all in flight,
//! or forced open), a call it would refuse passes on a permit that records nothing: it is
//! counted in [`Snapshot::would_reject`], traced at debug level with `shadow = true` and
//! announced as [`Event::WouldReject`]. At the deadline it goes half-open as any breaker does
//! and judges the next calls (`half_open_permits` of them) as its probes. Its transitions say
//! `shadow: true` ([`Event::Transition`], the tracing events, [`Snapshot::shadow`]).
//!
//! Since it never returns [`CircuitOpen`], [`Fallback`] and [`Failover`] never treat it as open,
//! and the Redis sync (`integrations::redis`) does not publish its trips to other replicas.
//! Switching it to enforce keeps its state, deadline and windows: a notionally open breaker
//! refuses from the next call.
//!
//! ```
//! use std::time::Duration;
//! use tower_breaker::{CircuitBreaker, Outcome, State};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let breaker = CircuitBreaker::builder("openai")
//!     .consecutive_failures(3)
//!     .shadow(true)
//!     .build()
//!     .unwrap();
//! for _ in 0..3 {
//!     breaker.try_acquire().unwrap().record(Outcome::Failure);
//! }
//! assert_eq!(breaker.state(), State::Open); // it would have opened ...
//! assert!(breaker.try_acquire().is_ok()); // ... but lets the call through
//! let snapshot = breaker.snapshot();
//! assert!(snapshot.shadow);
//! assert_eq!(snapshot.would_reject, 1);
//!
//! breaker.set_shadow(false); // enforce: refused from now on
//! assert!(breaker.try_acquire().is_err());
//! # }
//! ```
//!
//! What a shadow breaker tells the integrations: the [health report](integrations::health)
//! counts it healthy whatever its state (it refuses nothing) and lists it under
//! `would_refuse` while it would refuse;
//! the metrics count its would-be rejections as `circuit_breaker_calls_total{outcome="would_reject"}`
//! and label its transitions `shadow="true"`; webhook alerts say "shadow: would have opened"
//! (or are not sent, with `WebhookBuilder::shadow_alerts(false)`, feature `webhook`); the
//! live dashboard (feature `dashboard`) draws it apart, its notional state muted, with the
//! calls it would have refused.
//!
//! # Manual overrides
//!
//! An operator acts on a breaker with [`CircuitBreaker::force_open`] (refuse everything until
//! reset), [`disable`](CircuitBreaker::disable) (admit everything, record nothing, until
//! reset), [`reset`](CircuitBreaker::reset) (closed, statistics and backoff cleared) and
//! [`set_shadow`](CircuitBreaker::set_shadow). Each is announced to the listeners as
//! [`Event::Override`] (the audit trail: the action and its [`Origin`], before the transition
//! it causes, even when it changes nothing) and traced at INFO with `origin = "local"`.
//!
//! With [`integrations::redis`], the overrides of an attached breaker are shared: an operator
//! acts on one replica and every replica's breaker of that name follows, including replicas
//! that start or reconnect later, until the next override (a reset ends a force-open
//! everywhere). There, the event says [`Origin::Remote`]`("<the acting replica's origin>")`.
//! A sync component of your own applies other replicas' actions with
//! [`CircuitBreaker::apply_override`] and shares only those whose origin is local.
//!
//! ```
//! use tower_breaker::{CircuitBreaker, Event, Origin, Override, State};
//!
//! let breaker = CircuitBreaker::builder("openai")
//!     .consecutive_failures(5)
//!     .on_event(|e| {
//!         if let Event::Override { name, action, origin } = e {
//!             println!("audit: {action} on {name} from {origin}"); // e.g. to an audit log
//!         }
//!     })
//!     .build()
//!     .unwrap();
//! breaker.force_open(); // "audit: force_open on openai from local"
//! assert_eq!(breaker.state(), State::ForcedOpen);
//! // What a sync applies when another replica resets it:
//! breaker.apply_override(Override::Reset, Origin::Remote("web-2-4242-9f1c"));
//! assert_eq!(breaker.state(), State::Closed);
//! ```
//!
//! # Hot reload
//!
//! Tuning a breaker should not cost its memory: [`CircuitBreaker::reconfigure`] applies every
//! setting of a new [`Builder`] to the live breaker (every clone, every service holding it),
//! [`keyed::KeyedRegistry::reconfigure`] to every key of a registry, and, with the `serde`
//! feature, `BreakerConfig::reconfigure` and `KeyedConfig::reconfigure` apply a reloaded file
//! in one call (the [`config`] module's "Reloading" shows one). What a reload keeps:
//!
//! - **The state and its clock**: closed, open, half-open, forced open or disabled; the
//!   generation (calls in flight still count); the open deadline (an open breaker stays open
//!   until the deadline it has); the backoff's attempt count; the half-open probes in flight
//!   and their successes; the shadow flag, unless the new builder sets one; the would-be
//!   rejections; the name, the listeners and the recovery probe (a breaker's identity and
//!   code: the builder's are ignored, and a builder of another name is a [`ConfigError`]).
//! - **The window, as far as the new shape allows**: the same shape (kind and size), kept as
//!   is; a count window shrunk keeps its latest calls, grown keeps them all, in order; a time
//!   window lengthened or shortened keeps the calls still inside the new window, to bucket
//!   resolution (a tenth of the window): an old bucket that ends inside the new window is
//!   kept whole, counted in the new bucket where it starts (or the oldest live one), and
//!   expires with it. Count to time, time to count, or to or from no window: the window
//!   starts empty. The consecutive run is kept, whatever the window does (a consecutive rule
//!   switched on or off starts it at zero).
//!
//! When the new settings act: the trip rules judge a closed breaker's statistics in the
//! reload itself (a threshold lowered below the current failure rate, or to the current run,
//! opens it then, with that rule's reason: the breaker never sits closed above its own
//! threshold waiting for a call); `open_duration` / `open_backoff` apply from the next
//! opening, `max_open_duration` from the next server wait, `half_open_permits` from the next
//! admission, `half_open_successes` from the next probe success, `half_open_max_wait` at the
//! next check of the probes in flight, and a new slow-call threshold to every call recorded
//! from then on (calls in flight too), while a slow-call rule switched on judges only the
//! calls admitted after the reload (one admitted before was not timed). Listeners
//! hear [`Event::Reconfigured`] (with the shadow flag it leaves: a file's `shadow` is a
//! setting, not an operator's override, and is not shared through Redis; then the
//! transition, if the reload opened the breaker), and
//! a tracing event at info level says `circuit breaker reconfigured`. An invalid builder is a
//! [`ConfigError`] naming the breaker and the setting, and changes nothing.
//!
//! The closed path pays nothing for this: the trip rules' settings are atomics read
//! `Relaxed` (plain loads), and the window is found through one index next to the state word;
//! no lock, no reference count. A reload that changes the window's shape builds the new window
//! under the breaker's lock and keeps the old one until the breaker is dropped (a call
//! recording into it at that instant is lost, at most one per thread racing the reload), so a
//! breaker has at most 16 windows in its life: a 16th change of shape is a [`ConfigError`]
//! (build a new breaker). Reloads that keep the shape are free and unlimited.
//!
//! ```
//! use tower_breaker::{CircuitBreaker, Outcome, State};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let settings = |window| {
//!     CircuitBreaker::builder("openai").failure_rate(0.6).count_window(window).min_calls(4)
//! };
//! let breaker = settings(10).build()?;
//! use Outcome::{Failure as F, Success as S};
//! for outcome in [F, F, S, S, S, S] {
//!     breaker.try_acquire()?.record(outcome); // 2 failures in 6 calls
//! }
//! breaker.reconfigure(settings(4))?; // the window shrinks to its latest 4 calls
//! let snapshot = breaker.snapshot();
//! assert_eq!((snapshot.calls, snapshot.failures), (4, 0));
//! for _ in 0..3 {
//!     breaker.try_acquire()?.record(F);
//! }
//! assert_eq!(breaker.state(), State::Open); // S, F, F, F: 75% of the latest 4
//! # Ok(()) }
//! ```
//!
//! # Recovery probes
//!
//! Without one, the first call after the open period is the half-open probe: a user's request
//! finds out whether the upstream is still down. With
//! [`Builder::recovery_probe(probe, timeout)`](Builder::recovery_probe), the breaker asks
//! first, out of band: when the open period ends it runs `probe()` (a `GET /v1/models` on the
//! provider, say), bounded by `timeout`, and only its success lets live calls in.
//!
//! - **Success** moves the breaker `Open → HalfOpen` ([`Reason::RecoveryProbeSucceeded`]) and
//!   never closes it: a healthy control plane does not prove a healthy data plane. The next
//!   live calls are judged as half-open probes, as usual (`half_open_permits`,
//!   `half_open_successes`).
//! - **Failure** (`Err`) or **timeout** opens it again for the backoff's next value
//!   ([`Reason::RecoveryProbeFailed`], [`Reason::RecoveryProbeTimedOut`]; an `Open → Open`
//!   [`Event::Transition`]); closing resets the backoff, as always. The verdict is traced at
//!   INFO, the probe's error (its `Display`) only at DEBUG.
//! - **Meanwhile** calls are refused as while open. From the deadline until the verdict,
//!   [`Snapshot::recovery_probe`] is `true` and a refusal's
//!   [`retry_after`](CircuitOpen::retry_after) (and [`Snapshot::retry_after`]) is the time
//!   left until the probe's timeout, the latest its verdict can come. These refusals stay on
//!   the hot path: the probe is looked at only in transitions and by a call that finds the
//!   open period over.
//! - **Server waits rule**: an [`Outcome::Trip`] (a `Retry-After`) or a remote trip that
//!   arrives while the probe runs is never cut short: after a success the breaker stays open
//!   until the server's deadline and probes again then; after a failure it stays open until
//!   the later of that deadline and the backoff's.
//! - **One at a time**, run by one task per breaker, spawned on the tokio runtime current
//!   when the breaker opens (or, if there was none or it has shut down since, on the runtime
//!   of the first call after the deadline, which is refused). With no runtime at all the
//!   breaker goes half-open as one without a probe does; it never panics. The task holds a
//!   weak reference: dropping the breaker ends it, and drops a probe in flight. A probe that
//!   panics has failed. The probe needs tokio's timer (`enable_time`, which `#[tokio::main]`
//!   and `#[tokio::test]` turn on).
//! - **Manual controls win**: [`force_open`](CircuitBreaker::force_open),
//!   [`disable`](CircuitBreaker::disable) and [`reset`](CircuitBreaker::reset) stop a probe in
//!   flight, and a verdict from before them is discarded (it carries the generation it was
//!   claimed in). [`CircuitBreaker::try_probe_early`] (and a `Failover`'s or `Fallback`'s
//!   `AllOpen::ProbeSoonest`) still lets its caller through as the half-open probe, before or
//!   during the recovery probe, which it stops.
//! - **Shadow mode**: the probe still gates the notional half-open; calls pass meanwhile, as
//!   would-be rejections.
//! - **Keyed registries**: every key's breaker gets the template's probe, with a task of its
//!   own; [`keyed::KeyedRegistryBuilder::map_builder`] can give a key its own probe.
//!
//! A probe is code, so a configuration file ([`config`], feature `serde`) cannot set one:
//! build from the file, then add it with `recovery_probe` on the builder.
//!
//! ```
//! use std::time::Duration;
//! use tower_breaker::{BoxError, CircuitBreaker, Outcome, Reason, State};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! # let models_up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
//! # let up = models_up.clone();
//! // A cheap request to the provider: e.g. `GET /v1/models`, `Err` unless it answers 200.
//! let list_models = move || {
//! #   let up = up.clone();
//!     async move {
//! #       if !up.load(std::sync::atomic::Ordering::SeqCst) { return Err::<(), BoxError>("503".into()); }
//!         Ok::<(), BoxError>(())
//!     }
//! };
//! let breaker = CircuitBreaker::builder("openai")
//!     .consecutive_failures(1)
//!     .open_duration(Duration::from_secs(30))
//!     .recovery_probe(list_models, Duration::from_secs(5))
//!     .build()?;
//! breaker.try_acquire()?.record(Outcome::Failure);
//!
//! tokio::time::sleep(Duration::from_secs(30)).await; // the probe runs, and fails
//! # for _ in 0..10 { tokio::task::yield_now().await; }
//! assert_eq!(breaker.state(), State::Open);
//! assert_eq!(breaker.snapshot().reason, Some(Reason::RecoveryProbeFailed));
//! assert!(breaker.try_acquire().is_err()); // no user request went out to find that
//!
//! # models_up.store(true, std::sync::atomic::Ordering::SeqCst);
//! tokio::time::sleep(Duration::from_secs(30)).await; // it succeeds: half-open
//! # for _ in 0..10 { tokio::task::yield_now().await; }
//! assert_eq!(breaker.state(), State::HalfOpen);
//! breaker.try_acquire()?.record(Outcome::Success); // a live probe closes it
//! assert_eq!(breaker.state(), State::Closed);
//! # Ok(()) }
//! ```
//!
//! [tower]: https://docs.rs/tower
//!
// Links to items behind a feature: to the item when the feature is on, else to its page on
// docs.rs (built with every feature), so that `cargo doc` has no broken link in any build.
#![cfg_attr(feature = "llm", doc = "[`llm`]: crate::llm")]
#![cfg_attr(
    not(feature = "llm"),
    doc = concat!("[`llm`]: https://docs.rs/tower-breaker/", env!("CARGO_PKG_VERSION"), "/tower_breaker/llm/index.html")
)]
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
    doc = "[`CircuitBreakerMiddleware`]: crate::integrations::reqwest_middleware::CircuitBreakerMiddleware"
)]
#![cfg_attr(
    not(feature = "reqwest-middleware"),
    doc = concat!("[`CircuitBreakerMiddleware`]: https://docs.rs/tower-breaker/", env!("CARGO_PKG_VERSION"), "/tower_breaker/integrations/reqwest_middleware/struct.CircuitBreakerMiddleware.html")
)]
#![cfg_attr(
    feature = "tower-http",
    doc = "[`FromClassifyResponse`]: crate::integrations::tower_http::FromClassifyResponse"
)]
#![cfg_attr(
    not(feature = "tower-http"),
    doc = concat!("[`FromClassifyResponse`]: https://docs.rs/tower-breaker/", env!("CARGO_PKG_VERSION"), "/tower_breaker/integrations/tower_http/struct.FromClassifyResponse.html")
)]
#![cfg_attr(
    feature = "metrics",
    doc = "[`integrations::metrics`]: crate::integrations::metrics"
)]
#![cfg_attr(
    not(feature = "metrics"),
    doc = concat!("[`integrations::metrics`]: https://docs.rs/tower-breaker/", env!("CARGO_PKG_VERSION"), "/tower_breaker/integrations/metrics/index.html")
)]
#![cfg_attr(
    feature = "prometheus-client",
    doc = "[`integrations::prometheus`]: crate::integrations::prometheus"
)]
#![cfg_attr(
    not(feature = "prometheus-client"),
    doc = concat!("[`integrations::prometheus`]: https://docs.rs/tower-breaker/", env!("CARGO_PKG_VERSION"), "/tower_breaker/integrations/prometheus/index.html")
)]
#![cfg_attr(
    feature = "redis",
    doc = "[`integrations::redis`]: crate::integrations::redis"
)]
#![cfg_attr(
    not(feature = "redis"),
    doc = concat!("[`integrations::redis`]: https://docs.rs/tower-breaker/", env!("CARGO_PKG_VERSION"), "/tower_breaker/integrations/redis/index.html")
)]
#![cfg_attr(
    feature = "dashboard",
    doc = "[`integrations::dashboard`]: crate::integrations::dashboard"
)]
#![cfg_attr(
    not(feature = "dashboard"),
    doc = concat!("[`integrations::dashboard`]: https://docs.rs/tower-breaker/", env!("CARGO_PKG_VERSION"), "/tower_breaker/integrations/dashboard/index.html")
)]
#![cfg_attr(feature = "serde", doc = "[`config`]: crate::config")]
#![cfg_attr(
    not(feature = "serde"),
    doc = concat!("[`config`]: https://docs.rs/tower-breaker/", env!("CARGO_PKG_VERSION"), "/tower_breaker/config/index.html")
)]
#![cfg_attr(
    feature = "serde",
    doc = "[`config::BreakerConfig`]: crate::config::BreakerConfig"
)]
#![cfg_attr(
    not(feature = "serde"),
    doc = concat!("[`config::BreakerConfig`]: https://docs.rs/tower-breaker/", env!("CARGO_PKG_VERSION"), "/tower_breaker/config/struct.BreakerConfig.html")
)]
#![cfg_attr(
    feature = "serde",
    doc = "[`config::KeyedConfig`]: crate::config::KeyedConfig"
)]
#![cfg_attr(
    not(feature = "serde"),
    doc = concat!("[`config::KeyedConfig`]: https://docs.rs/tower-breaker/", env!("CARGO_PKG_VERSION"), "/tower_breaker/config/struct.KeyedConfig.html")
)]
#![cfg_attr(
    feature = "webhook",
    doc = "[`integrations::webhook`]: crate::integrations::webhook"
)]
#![cfg_attr(
    not(feature = "webhook"),
    doc = concat!("[`integrations::webhook`]: https://docs.rs/tower-breaker/", env!("CARGO_PKG_VERSION"), "/tower_breaker/integrations/webhook/index.html")
)]
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod breaker;
pub mod classify;
#[cfg(feature = "serde")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
pub mod config;
pub mod fallback;
pub mod keyed;
pub mod service;

pub use breaker::{
    Backoff, BoxError, Builder, CircuitBreaker, CircuitOpen, ConfigError, Event, Origin, Override, Permit,
    Reason, Snapshot, State,
};
pub use classify::{
    AsError, Classify, ErrorIsFailure, HttpClassifier, Outcome, is_circuit_open, is_dead_buffer,
};
pub use fallback::{AllUnavailable, Failover, Fallback, FallbackLayer};
pub use service::{CircuitBreakerLayer, CircuitBreakerService, CircuitOpenResponse, Readiness};
#[doc(no_inline)]
pub use tower_layer::Layer;
pub mod integrations;
#[cfg(feature = "llm")]
#[cfg_attr(docsrs, doc(cfg(feature = "llm")))]
pub mod llm;
#[cfg(feature = "retry")]
pub mod retry;
pub mod streaming;

// Every ```rust block of README.md is a doc-test (`cargo test --doc`): the README's code
// compiles, as users copy it. Blocks that are not Rust are marked `sh` or `text`.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
