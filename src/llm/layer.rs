//! [`LlmErrorLayer`] and [`LlmErrorService`].

use std::task::{Context, Poll};

use http::{Request, Response};
use http_body::Body;
use tower_layer::Layer;
use tower_service::Service;

use super::{LlmBody, ResponseFuture};

/// The default limit of an error body the layer reads: 64 KiB.
pub const DEFAULT_MAX_BODY: usize = 64 * 1024;

/// Reads the JSON error body of a provider's 4xx or 5xx response (at most
/// [`max_body`](Self::max_body) bytes, 64 KiB by default) and stores what it says, a
/// [`ProviderError`](super::ProviderError), in the response's extensions, where
/// [`LlmClassifier`](super::LlmClassifier) and a failover policy read it.
///
/// - 1xx, 2xx and 3xx responses (a completion, a streamed answer) pass at once, their body
///   untouched and never read.
/// - An error body longer than the limit (by its `Content-Length`, or found while reading)
///   passes unclassified, with every byte: what was read is replayed, then the rest streams.
/// - An error body that fails while being read: the bytes read, then the error, unclassified.
///
/// The response body type becomes [`LlmBody<B>`](LlmBody) (data as `Bytes`); the error type
/// does not change. Put the layer inside the breaker and its timeout, so the read is part of
/// the call: `CircuitBreakerLayer → Timeout → LlmErrorLayer → client`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LlmErrorLayer {
    max_body: usize,
}

impl Default for LlmErrorLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl LlmErrorLayer {
    /// The layer, reading error bodies up to 64 KiB.
    pub const fn new() -> Self {
        Self {
            max_body: DEFAULT_MAX_BODY,
        }
    }

    /// Reads error bodies up to `bytes` (0 reads none: nothing is classified).
    #[must_use]
    pub const fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }
}

impl<S> Layer<S> for LlmErrorLayer {
    type Service = LlmErrorService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LlmErrorService {
            inner,
            max_body: self.max_body,
        }
    }
}

/// The service of [`LlmErrorLayer`].
#[derive(Clone, Debug)]
pub struct LlmErrorService<S> {
    inner: S,
    max_body: usize,
}

impl<S> LlmErrorService<S> {
    /// Wraps `inner`, reading error bodies up to 64 KiB.
    pub const fn new(inner: S) -> Self {
        Self {
            inner,
            max_body: DEFAULT_MAX_BODY,
        }
    }

    /// The wrapped service.
    pub const fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub const fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The wrapped service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for LlmErrorService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body,
{
    type Response = Response<LlmBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        ResponseFuture::new(self.inner.call(req), self.max_body)
    }
}
