//! Streaming responses (SSE, chunked LLM output): record a call's outcome when its response
//! **body** ends, not when its headers arrive.
//!
//! [`CircuitBreakerLayer`](crate::CircuitBreakerLayer) (the default) decides at the headers: a
//! 200 is a success even if the stream then breaks. [`StreamingBreakerLayer`] decides at the
//! end of the body instead:
//!
//! | the response | outcome |
//! |---|---|
//! | the call failed, or its headers classify as anything but `Success` (5xx, 429, a `Retry-After` ...) | recorded at once, as with `CircuitBreakerLayer` |
//! | headers `Success`, then the body ends | `Success`, at the end: with the frame after which the body reports [`is_end_stream`](http_body::Body::is_end_stream) (a sized body's last data frame: hyper's server, and so axum, polls no further), or at `None` |
//! | headers `Success`, then the body fails (a reset mid-stream) | the body error, classified ([`ClassifyBody`]): `Failure` with [`HttpClassifier`](crate::HttpClassifier) |
//! | the caller drops the body before its end | nothing: the permit is released, neutral |
//! | an empty body (`is_end_stream()` at the headers) | `Success`, at once |
//! | a half-open probe | decided at the headers, so a long stream cannot hold the breaker half-open past its `half_open_max_wait` |
//!
//! The response body becomes [`RecordBody<B, C>`](RecordBody). A call's duration (for the
//! slow-call rule) runs to the end of its body.
//!
//! Why the headers are the crate's default: it keeps the response type unchanged, it works
//! for any response type (not only `http::Response`), and it frees the permit at once.
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Full, StreamBody};
//! use hyper::body::Frame;
//! use tower::{ServiceExt, service_fn};
//! use tower_breaker::{CircuitBreaker, HttpClassifier, Layer, State, streaming::StreamingBreakerLayer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_breaker::BoxError> {
//! let breaker = CircuitBreaker::builder("llm").consecutive_failures(1).build()?;
//! // A stream that sends one chunk and then breaks.
//! let upstream = service_fn(|_: ()| async {
//!     let frames = vec![Ok(Frame::data(Bytes::from("data: hel"))), Err(std::io::Error::other("reset"))];
//!     Ok::<_, std::io::Error>(http::Response::new(StreamBody::new(futures::stream::iter(frames))))
//! });
//! let svc = StreamingBreakerLayer::new(breaker.clone())
//!     .classify(HttpClassifier::default())
//!     .layer(upstream);
//!
//! let res = svc.oneshot(()).await?; // 200: nothing recorded yet
//! assert_eq!(breaker.state(), State::Closed);
//! assert!(res.into_body().collect().await.is_err()); // the stream broke
//! assert_eq!(breaker.state(), State::Open); // ... and that was the failure
//! # Ok(()) }
//! ```

mod body;
mod future;
mod layer;

use std::task::{Context, Poll};

use tower_service::Service;

pub use body::{ClassifyBody, RecordBody};
pub use future::ResponseFuture;
pub use layer::StreamingBreakerLayer;

use crate::{
    breaker::{BoxError, CircuitBreaker},
    classify::{Classify, ErrorIsFailure},
    service::{Gate, Readiness},
};

/// A service guarded by a circuit breaker that records outcomes at the end of the response
/// body. See the [module docs](self); readiness works as in
/// [`CircuitBreakerService`](crate::CircuitBreakerService).
#[derive(Debug)]
pub struct StreamingBreakerService<S, C = ErrorIsFailure> {
    inner: S,
    classifier: C,
    gate: Gate,
}

impl<S> StreamingBreakerService<S> {
    /// Guards `inner` with `breaker`, classifying `Err` as failure, in `FailFast` mode.
    pub const fn new(inner: S, breaker: CircuitBreaker) -> Self {
        Self {
            inner,
            classifier: ErrorIsFailure::new(),
            gate: Gate::new(breaker, Readiness::FailFast),
        }
    }
}

impl<S, C> StreamingBreakerService<S, C> {
    /// Classifies results (and body errors, see [`ClassifyBody`]) with `classifier`.
    pub fn classify<C2>(self, classifier: C2) -> StreamingBreakerService<S, C2> {
        StreamingBreakerService {
            inner: self.inner,
            classifier,
            gate: self.gate,
        }
    }

    /// Sets the readiness mode.
    #[must_use]
    pub fn readiness(mut self, readiness: Readiness) -> Self {
        self.gate.readiness = readiness;
        self
    }

    /// The breaker guarding this service.
    pub const fn breaker(&self) -> &CircuitBreaker {
        &self.gate.breaker
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

impl<S: Clone, C: Clone> Clone for StreamingBreakerService<S, C> {
    /// Shares the breaker; the clone makes its own admission decisions.
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            classifier: self.classifier.clone(),
            gate: self.gate.clone(),
        }
    }
}

impl<S, C, Req, B> Service<Req> for StreamingBreakerService<S, C>
where
    S: Service<Req, Response = http::Response<B>>,
    S::Error: Into<BoxError>,
    B: http_body::Body,
    C: Classify<http::Response<B>, S::Error> + ClassifyBody<B::Error> + Clone,
{
    type Response = http::Response<RecordBody<B, C>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let inner = &mut self.inner;
        self.gate.poll_ready(cx, |cx| inner.poll_ready(cx))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.gate.take() {
            Ok(permit) => ResponseFuture::called(self.inner.call(req), permit, self.classifier.clone()),
            Err(refused) => ResponseFuture::rejected(refused),
        }
    }
}
