//! The streaming breaker's response future.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use pin_project_lite::pin_project;

use super::{ClassifyBody, RecordBody};
use crate::{
    breaker::{BoxError, CircuitOpen, Permit},
    classify::{Classify, Outcome},
};

pin_project! {
    /// The response future of [`StreamingBreakerService`](super::StreamingBreakerService): on
    /// a `Success` at the headers it moves the permit into the response body; otherwise it
    /// records the outcome at once. Dropped before completion, it releases the permit.
    #[derive(Debug)]
    pub struct ResponseFuture<F, C> {
        #[pin]
        kind: Kind<F, C>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F, C> {
        Called { #[pin] future: F, permit: Option<Permit>, classifier: Option<C> },
        Rejected { error: Option<CircuitOpen> },
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn called(future: F, permit: Permit, classifier: C) -> Self {
        Self {
            kind: Kind::Called {
                future,
                permit: Some(permit),
                classifier: Some(classifier),
            },
        }
    }

    pub(crate) fn rejected(error: CircuitOpen) -> Self {
        Self {
            kind: Kind::Rejected { error: Some(error) },
        }
    }
}

impl<F, C, B, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    E: Into<BoxError>,
    B: http_body::Body,
    C: Classify<http::Response<B>, E> + ClassifyBody<B::Error>,
{
    type Output = Result<http::Response<RecordBody<B, C>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called {
                future,
                permit,
                classifier,
            } => {
                let result = ready!(future.poll(cx));
                let permit = permit.take().expect("ResponseFuture polled after completion");
                let classifier = classifier.take().expect("ResponseFuture polled after completion");
                let outcome = classifier.classify(result.as_ref());
                match result {
                    Ok(res) => {
                        let defer = outcome == Outcome::Success
                            && !permit.is_probe()
                            && !http_body::Body::is_end_stream(res.body());
                        let permit = if defer {
                            Some(permit)
                        } else {
                            permit.record(outcome);
                            None
                        };
                        Poll::Ready(Ok(res.map(|body| RecordBody::new(body, permit, classifier))))
                    }
                    Err(e) => {
                        permit.record(outcome);
                        Poll::Ready(Err(e.into()))
                    }
                }
            }
            KindProj::Rejected { error } => Poll::Ready(Err(error
                .take()
                .expect("ResponseFuture polled after completion")
                .into())),
        }
    }
}
