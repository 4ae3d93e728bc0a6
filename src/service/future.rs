//! The breaker service's response future.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use pin_project_lite::pin_project;

use crate::{
    breaker::{BoxError, CircuitOpen, Permit},
    classify::Classify,
};

pin_project! {
    /// The response future of [`CircuitBreakerService`](super::CircuitBreakerService).
    ///
    /// It holds the call's permit: the result is classified and recorded when the inner
    /// future completes; if this future is dropped first, the permit is released, neutral.
    ///
    /// `R` is the refusal it may resolve to: a [`CircuitOpen`], or (for keyed services) an
    /// already boxed error.
    #[derive(Debug)]
    pub struct ResponseFuture<F, C, R = CircuitOpen> {
        #[pin]
        kind: Kind<F, C, R>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F, C, R> {
        Called { #[pin] future: F, permit: Permit, classifier: C },
        Rejected { error: Option<R> },
    }
}

impl<F, C, R> ResponseFuture<F, C, R> {
    #[inline]
    pub(crate) fn called(future: F, permit: Permit, classifier: C) -> Self {
        Self {
            kind: Kind::Called {
                future,
                permit,
                classifier,
            },
        }
    }

    pub(crate) fn rejected(error: R) -> Self {
        Self {
            kind: Kind::Rejected { error: Some(error) },
        }
    }
}

impl<F, C, R, T, E> Future for ResponseFuture<F, C, R>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classify<T, E>,
    R: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called {
                future,
                permit,
                classifier,
            } => {
                let result = ready!(future.poll(cx));
                permit.record_in_place(classifier.classify(result.as_ref()));
                Poll::Ready(result.map_err(Into::into))
            }
            KindProj::Rejected { error } => Poll::Ready(Err(error
                .take()
                .expect("ResponseFuture polled after completion")
                .into())),
        }
    }
}
