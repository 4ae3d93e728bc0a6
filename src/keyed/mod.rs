//! Per-key circuit breakers: one breaker per upstream host, per model, per endpoint, held in
//! a bounded [`KeyedRegistry`] and applied by [`KeyedCircuitBreakerLayer`].
//!
//! ```
//! use std::time::Duration;
//! use tower::{Service, ServiceExt, service_fn};
//! use tower_breaker::{CircuitBreaker, CircuitOpen, Layer};
//! use tower_breaker::keyed::{Header, KeyedCircuitBreakerLayer, KeyedRegistry};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), tower_breaker::BoxError> {
//! let registry = KeyedRegistry::builder(CircuitBreaker::builder("openai").consecutive_failures(2))
//!     // embeddings trip slower than chat
//!     .override_key("text-embedding-3-small".to_string(), CircuitBreaker::builder("openai").consecutive_failures(10))
//!     .max_keys(1_000)
//!     .idle_timeout(Duration::from_secs(300))
//!     .build()?;
//!
//! // An upstream where gpt-4o is down and every other model works.
//! let upstream = service_fn(|req: http::Request<()>| async move {
//!     match req.headers()["x-model"].to_str() {
//!         Ok("gpt-4o") => Err(std::io::Error::other("503")),
//!         _ => Ok(http::Response::new(())),
//!     }
//! });
//! let mut svc = KeyedCircuitBreakerLayer::new(registry.clone(), Header::new("x-model")).layer(upstream);
//! let request = |model: &str| http::Request::post("/v1/chat/completions").header("x-model", model).body(()).unwrap();
//!
//! for _ in 0..2 {
//!     assert!(svc.ready().await?.call(request("gpt-4o")).await.is_err()); // real failures
//! }
//! // gpt-4o's breaker is open: its calls are refused, naming the key ...
//! let err = svc.ready().await?.call(request("gpt-4o")).await.unwrap_err();
//! let open = err.downcast_ref::<CircuitOpen>().unwrap();
//! assert_eq!(open.name(), "openai:gpt-4o");
//! // ... while other models still flow.
//! assert!(svc.ready().await?.call(request("gpt-4o-mini")).await.is_ok());
//! assert_eq!(registry.snapshot().len(), 2);
//! # Ok(()) }
//! ```
//!
//! # Keys and names
//!
//! The extractor is a closure `Fn(&Req) -> K` or one of the ready-made extractors for
//! `http::Request`: [`Authority`] (host and port, never the credentials), [`PathPrefix`] (the
//! first path segments, to tell chat from embeddings), [`Header`] (e.g. a model name) and
//! [`Extension`] (a value the code building the request put in its extensions, e.g. the
//! model of a JSON body: see [below](#keys-from-the-request-body-per-model-breakers)). The
//! ready-made ones borrow the key from the request, so a known key costs no allocation. Each key's breaker is built
//! on first use from the template [`Builder`] (or the key's override) and named
//! `"{template}:{key}"` unless [`name_with`](KeyedRegistryBuilder::name_with) says otherwise.
//!
//! # Keys from the request body (per-model breakers)
//!
//! An OpenAI-style API names the model in the JSON body, where no extractor can read it: a
//! body is a stream (a `Full<Bytes>` cannot be read by reference), consumed by whoever sends
//! it. Two ways to key by it:
//!
//! - The code that builds the request knows the model (it wrote the body): it puts it in the
//!   request's extensions too, and [`Extension`] keys by it. Nothing is parsed twice.
//! - Otherwise a `map_request` above the keyed layer reads it from a `Request<Bytes>` (the
//!   whole body, in memory, as a JSON API's request is), puts it in the extensions, and
//!   hands on the body as the client's `Full<Bytes>`:
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Full};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use tower_breaker::{BoxError, CircuitBreaker, CircuitOpen};
//! use tower_breaker::keyed::{Extension, KeyedCircuitBreakerLayer, KeyedRegistry};
//!
//! /// The key: the model of a chat completion.
//! #[derive(Clone)]
//! struct Model(String);
//! impl AsRef<str> for Model {
//!     fn as_ref(&self) -> &str {
//!         &self.0
//!     }
//! }
//!
//! /// The model named in a JSON body ("" when there is none: the key is then "unknown").
//! fn model_of(body: &[u8]) -> Model {
//!     #[derive(serde::Deserialize)]
//!     struct Chat {
//!         model: String,
//!     }
//!     Model(serde_json::from_slice::<Chat>(body).map(|c| c.model).unwrap_or_default())
//! }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let registry = KeyedRegistry::<String>::new(CircuitBreaker::builder("openai").consecutive_failures(2))?;
//! // A stand-in for a hyper-util client (a `Service<Request<Full<Bytes>>>`) whose upstream
//! // fails every gpt-4o call.
//! let client = service_fn(|req: http::Request<Full<Bytes>>| async move {
//!     let body = req.into_body().collect().await?.to_bytes();
//!     match model_of(&body).0.as_str() {
//!         "gpt-4o" => Err::<http::Response<()>, BoxError>("503 from the upstream".into()),
//!         _ => Ok(http::Response::new(())),
//!     }
//! });
//! let svc = ServiceBuilder::new()
//!     .map_request(|req: http::Request<Bytes>| {
//!         let model = model_of(req.body());
//!         let (mut parts, body) = req.into_parts();
//!         parts.extensions.insert(model);
//!         http::Request::from_parts(parts, Full::new(body))
//!     })
//!     .layer(KeyedCircuitBreakerLayer::new(registry.clone(), Extension::<Model>::new()))
//!     .service(client);
//!
//! let chat = |model: &str| {
//!     let json = format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#);
//!     http::Request::post("https://api.openai.com/v1/chat/completions").body(Bytes::from(json)).unwrap()
//! };
//! for _ in 0..2 {
//!     assert!(svc.clone().oneshot(chat("gpt-4o")).await.is_err()); // real failures
//! }
//! let err = svc.clone().oneshot(chat("gpt-4o")).await.unwrap_err();
//! assert_eq!(err.downcast_ref::<CircuitOpen>().unwrap().name(), "openai:gpt-4o");
//! assert!(svc.clone().oneshot(chat("gpt-4o-mini")).await.is_ok()); // other models flow
//! # Ok(()) }
//! ```
//!
//! # Readiness
//!
//! The key is known only once `call` has the request, so the keyed service's `poll_ready`
//! is the inner service's, and a refusal comes from `call`: a future already resolved to
//! `Err(CircuitOpen)` whose [`name`](CircuitOpen::name) names the key's breaker (the
//! `RejectOnCall` mode of the plain [service](crate::service)). Readiness reserved from the
//! inner service by `poll_ready` is kept for the next call.
//!
//! # Concurrency
//!
//! The registry is sharded: up to 64 shards (see [below](#bounded-memory)), each a `RwLock`
//! over a hash table of its keys' entries. New keys and evictions take a shard's write lock.
//!
//! A lookup of a known key hashes it once, reads no clock and allocates nothing. Each thread
//! keeps a small cache of the entries it looked up lately (per registry: 32 sets of 4, 6 KiB
//! for `String` keys; a miss fills it one time in eight), and a lookup that finds its key
//! there takes **no lock**: it takes the permit (a closed breaker's, which runs no listener)
//! straight from the cached entry. Otherwise it takes the shard's shared lock, for as long as
//! it takes to find the entry and take the permit or clone the breaker's handle (a breaker
//! that is not closed decides outside the lock, so listeners never run under a registry
//! lock). Measured on a 2-vCPU Xeon VM: a hot key at 100,000 keys costs 17–20 ns against
//! 13 ns for one breaker's whole closed path (26–28 ns with the shard's lock, whose two atomic
//! read-modify-writes were most of it). A lookup that misses the cache pays for the check
//! (a key spread uniformly over 100,000 keys: 345–363 ns against 258–268 ns, in a loop of
//! nothing but lookups).
//!
//! A cached lookup must never take a permit on a breaker that an eviction is removing, whose
//! outcome would then reach a breaker nobody sees. An eviction (under the write lock) marks
//! the entry, then issues a heavy barrier, then reads the breaker's reference count: if
//! something holds the breaker (a permit, a refusal, a handle), it unmarks the entry and keeps
//! it. A cached lookup takes its permit (which increments that count), issues a light
//! barrier, then reads the mark: if set, it drops the permit unrecorded and unannounced (no
//! listener hears of a call that was never made) and takes the locked path. One of the two
//! always sees the other. On Linux the heavy barrier is the `membarrier` system call (the
//! kernel fences every CPU running a thread of the process) and the light one costs nothing
//! (a compiler fence); elsewhere both are `SeqCst` fences. The
//! crate's loom models check the protocol, and a stress test races lookups against a
//! thread whose new keys evict them.
//!
//! An evicted entry stays allocated while a thread's cache still holds it (marked dead: every
//! lookup skips it), at most 128 entries per thread that used the registry, until the slot
//! is reused or the registry is dropped. Its recovery probe's task, if any, ends at the
//! eviction.
//!
//! # Bounded memory
//!
//! The registry holds at most [`max_keys`](KeyedRegistryBuilder::max_keys) breakers (default
//! 10,000), so a flood of distinct hosts cannot grow it without bound. It is sharded: up to
//! 64 shards of at least 1,024 keys where `max_keys` allows, each a `RwLock` over a hash
//! table holding an even share of `max_keys`. The bound is enforced per shard, so eviction
//! may start a little before the registry as a whole is full (measured: at 92% of 10,000
//! keys, 96% of 100,000). A lookup of a known key sets a "used" bit if it is clear (see
//! [Concurrency](#concurrency) for the rest).
//!
//! Idle keys are found with a clock (second-chance) scheme: each shard is *swept* at most
//! once per [`idle_timeout`](KeyedRegistryBuilder::idle_timeout) (default 10 minutes), when a
//! new key arrives in it or when [`KeyedRegistry::evict_idle`] is called; a sweep removes
//! the evictable keys not used since the previous sweep and clears the bit of the others. A
//! key is therefore never removed as idle before it has been unused for `idle_timeout`, and
//! is removed by the second sweep after its last use.
//!
//! When a new key arrives in a full shard, the shard evicts about an eighth of its share at
//! once, in this order:
//!
//! 1. closed breakers not used since the last sweep;
//! 2. open breakers whose open period ended, and half-open ones with no probe in flight,
//!    that were not used since the last sweep (nobody came back to probe);
//! 3. other closed breakers (their statistics are lost).
//!
//! An open breaker before its deadline, a half-open one with a probe in flight, and a breaker forced open or
//! disabled by an operator are **never** evicted: a flood of new keys cannot make a failing
//! upstream look healthy again. Nor is a breaker held outside the registry: by a call in
//! flight (its permit, or a [streaming](crate::streaming) body still being read), a
//! [`CircuitOpen`] not yet dropped, or a handle from [`KeyedRegistry::get`]. So a call's
//! outcome always reaches its key's breaker (with `max_keys(1)`, a call to `"a"` in flight
//! and a call to `"b"`, then the first call's `Trip(60 s)`: `"b"` shares the overflow
//! breaker, and `"a"` is open for 60 s), and a key never has two breakers.
//!
//! When a shard holds only such breakers, the registry's [`WhenFull`] policy decides: by
//! default the new key shares an *overflow* breaker (named `"{template}:<overflow>"`) with the
//! other keys that did not fit, so calls stay guarded and memory bounded;
//! [`WhenFull::Reject`] refuses the call with [`RegistryFull`] instead. Finding that out
//! takes one scan of the shard, which also notes the earliest instant at which one of its
//! breakers could go (the end of the first open period of a breaker unused since the last
//! sweep; 100 ms later for what has no deadline, such as a call in flight or a forced-open
//! breaker). Until then, or until the shard's next sweep, new keys of that shard are refused
//! (or overflowed) at once, without the shard's lock: about 130 ns a call against 250 µs for
//! a scan of 1,024 open breakers (`benches/keyed.rs`, `new_key_when_full_of_open`). So the
//! outage that filled a shard with open breakers does not also make each new key wait on its
//! lock.
//!
//! [`KeyedRegistry::snapshot`] lists every key with its breaker's [`Snapshot`](crate::Snapshot).

mod barrier;
mod cache;
mod error;
mod extract;
mod layer;
mod registry;

use std::{
    borrow::Borrow,
    fmt,
    hash::Hash,
    task::{Context, Poll},
};

use tower_service::Service;

pub use error::{BoxError, CircuitOpen, KeyedError, RegistryFull};
pub use extract::{Authority, Extension, ExtractKey, Header, PathPrefix, UNKNOWN};
/// The response future of [`KeyedCircuitBreakerService`]: the breaker service's, whose
/// refusal is a boxed [`CircuitOpen`] (naming the key) or [`RegistryFull`].
pub type ResponseFuture<F, C> = crate::service::ResponseFuture<F, C, BoxError>;
pub use layer::KeyedCircuitBreakerLayer;
#[cfg(feature = "webhook")]
pub(crate) use registry::WeakRegistry;
pub use registry::{DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_KEYS, KeyedRegistry, KeyedRegistryBuilder, WhenFull};

#[cfg(doc)]
use crate::breaker::Builder;
use crate::classify::{Classify, ErrorIsFailure};

/// A service guarded by one circuit breaker per key. Made by [`KeyedCircuitBreakerLayer`];
/// see [the module docs](self).
#[derive(Clone, Debug)]
pub struct KeyedCircuitBreakerService<S, X, K, C = ErrorIsFailure> {
    inner: S,
    registry: KeyedRegistry<K>,
    extractor: X,
    classifier: C,
}

impl<S, X, K> KeyedCircuitBreakerService<S, X, K> {
    /// Guards `inner` with `registry`'s breakers, picked by `extractor`.
    pub const fn new(inner: S, registry: KeyedRegistry<K>, extractor: X) -> Self {
        Self {
            inner,
            registry,
            extractor,
            classifier: ErrorIsFailure::new(),
        }
    }
}

impl<S, X, K, C> KeyedCircuitBreakerService<S, X, K, C> {
    /// Classifies results with `classifier`.
    pub fn classify<C2>(self, classifier: C2) -> KeyedCircuitBreakerService<S, X, K, C2> {
        KeyedCircuitBreakerService {
            inner: self.inner,
            registry: self.registry,
            extractor: self.extractor,
            classifier,
        }
    }

    /// The registry of breakers.
    pub const fn registry(&self) -> &KeyedRegistry<K> {
        &self.registry
    }

    /// The inner service.
    pub const fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, consuming this one.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, X, K, C, Req> Service<Req> for KeyedCircuitBreakerService<S, X, K, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    X: ExtractKey<Req>,
    X::Key: ToOwned<Owned = K>,
    K: Borrow<X::Key> + Hash + Eq + Clone + fmt::Display + Send + Sync + 'static,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let admission = {
            let key = self.extractor.extract(&req);
            self.registry.try_acquire(&*key)
        };
        match admission {
            Ok(permit) => ResponseFuture::called(self.inner.call(req), permit, self.classifier.clone()),
            Err(refused) => ResponseFuture::rejected(refused.into_box()),
        }
    }
}
