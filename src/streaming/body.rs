//! [`RecordBody`]: a response body that records its call's outcome when it ends.

use std::{
    fmt,
    pin::Pin,
    task::{Context, Poll},
};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::{
    breaker::Permit,
    classify::{AsError, ErrorIsFailure, HttpClassifier, Outcome},
};

/// How a classifier judges the end of a response body (for
/// [`StreamingBreakerLayer`](super::StreamingBreakerLayer)).
pub trait ClassifyBody<E> {
    /// The outcome of a body that failed with `err` mid-stream.
    fn classify_body_error(&self, err: &E) -> Outcome;

    /// The outcome of a body that ended, with its trailers if any (default `Success`; a gRPC
    /// classifier would read `grpc-status` here).
    fn classify_end(&self, trailers: Option<&http::HeaderMap>) -> Outcome {
        let _ = trailers;
        Outcome::Success
    }
}

impl<E: AsError> ClassifyBody<E> for HttpClassifier {
    /// As a call that failed with this error ([`classify_error`](HttpClassifier::classify_error)).
    fn classify_body_error(&self, err: &E) -> Outcome {
        self.classify_error(err.as_error())
    }
}

impl<E> ClassifyBody<E> for ErrorIsFailure {
    /// `Failure`.
    fn classify_body_error(&self, _err: &E) -> Outcome {
        Outcome::Failure
    }
}

pin_project! {
    /// A response body that holds its call's permit and records the outcome, once, when the
    /// body ends ([`ClassifyBody::classify_end`]) or fails
    /// ([`ClassifyBody::classify_body_error`]). The end is the first of: a frame after which
    /// the inner body's [`is_end_stream`](Body::is_end_stream) is true (a sized body's last
    /// data frame: hyper's server, and so axum, stops polling there and drops the body), or
    /// `None`. A body already at its end when the headers arrive is recorded by the response
    /// future at once. Dropped before its end, it releases the permit: neutral. Frames pass
    /// through unchanged.
    pub struct RecordBody<B, C> {
        #[pin]
        inner: B,
        permit: Option<Permit>,
        classifier: C,
        trailers: Option<http::HeaderMap>,
    }
}

impl<B, C> RecordBody<B, C> {
    pub(crate) fn new(inner: B, permit: Option<Permit>, classifier: C) -> Self {
        Self {
            inner,
            permit,
            classifier,
            trailers: None,
        }
    }

    /// Whether the outcome is still to be recorded.
    pub fn is_pending(&self) -> bool {
        self.permit.is_some()
    }

    /// The wrapped body. Its outcome is not recorded (the permit is released, neutral).
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B, C> Body for RecordBody<B, C>
where
    B: Body,
    C: ClassifyBody<B::Error>,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        if this.permit.is_some() {
            match &polled {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(trailers) = frame.trailers_ref() {
                        *this.trailers = Some(trailers.clone());
                    }
                    // The body says this was its last frame: hyper's server (and so axum)
                    // polls no further and drops it, so this is where it ends.
                    if this.inner.is_end_stream() {
                        if let Some(p) = this.permit.take() {
                            p.record(this.classifier.classify_end(this.trailers.as_ref()));
                        }
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    if let Some(p) = this.permit.take() {
                        p.record(this.classifier.classify_body_error(e));
                    }
                }
                Poll::Ready(None) => {
                    if let Some(p) = this.permit.take() {
                        p.record(this.classifier.classify_end(this.trailers.as_ref()));
                    }
                }
                Poll::Pending => {}
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: fmt::Debug, C> fmt::Debug for RecordBody<B, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordBody")
            .field("inner", &self.inner)
            .field("pending", &self.permit.is_some())
            .finish()
    }
}
