//! [`FromClassifyResponse`]: any tower-http `ClassifyResponse` as a [`Classify`] (feature
//! `tower-http`).
//!
//! ```
//! use tower_breaker::{Classify, Outcome, integrations::tower_http::FromClassifyResponse};
//! use tower_http::classify::StatusInRangeAsFailures;
//!
//! // 4xx and 5xx are failures for this breaker.
//! let classifier = FromClassifyResponse::new(StatusInRangeAsFailures::new(400..=599));
//! let res = |code: u16| http::Response::builder().status(code).body(()).unwrap();
//! let classify = |code| Classify::<_, std::io::Error>::classify(&classifier, Ok(&res(code)));
//! assert_eq!(classify(200), Outcome::Success);
//! assert_eq!(classify(404), Outcome::Failure);
//! assert_eq!(classify(503), Outcome::Failure);
//! ```

use std::fmt;

use tower_http::classify::{ClassifiedResponse, ClassifyResponse};

use crate::classify::{Classify, Outcome};

/// Adapts a tower-http [`ClassifyResponse`] (`ServerErrorsAsFailures`,
/// `StatusInRangeAsFailures`, `GrpcErrorsAsFailures`, your own) into a [`Classify`] for
/// `http::Response<B>` and any error.
///
/// - `ClassifiedResponse::Ready(Ok(()))` → `Success`; `Ready(Err(_))` → `Failure`.
/// - `ClassifiedResponse::RequiresEos(_)` (the verdict is in the trailers, e.g. gRPC) → the
///   [`requires_eos`](Self::requires_eos) outcome, `Success` by default: the upstream answered
///   and the stream's end is not observed.
/// - Every error → `Failure` (tower-http's classifiers call every error a failure; the error
///   is not stringified).
///
/// The classifier is cloned per classification, since `ClassifyResponse` consumes `self`:
/// keep it cheap to clone (the built-ins are).
#[derive(Clone)]
pub struct FromClassifyResponse<C> {
    inner: C,
    requires_eos: Outcome,
}

impl<C> FromClassifyResponse<C> {
    /// Adapts `classifier`.
    pub const fn new(classifier: C) -> Self {
        Self {
            inner: classifier,
            requires_eos: Outcome::Success,
        }
    }

    /// The outcome when the classifier needs the end of the stream to decide (default
    /// `Success`).
    #[must_use]
    pub const fn requires_eos(mut self, outcome: Outcome) -> Self {
        self.requires_eos = outcome;
        self
    }

    /// The adapted classifier.
    pub const fn get_ref(&self) -> &C {
        &self.inner
    }
}

impl<C, B, E> Classify<http::Response<B>, E> for FromClassifyResponse<C>
where
    C: ClassifyResponse + Clone,
{
    fn classify(&self, result: Result<&http::Response<B>, &E>) -> Outcome {
        match result {
            Ok(res) => match self.inner.clone().classify_response(res) {
                ClassifiedResponse::Ready(Ok(())) => Outcome::Success,
                ClassifiedResponse::Ready(Err(_)) => Outcome::Failure,
                ClassifiedResponse::RequiresEos(_) => self.requires_eos,
            },
            Err(_) => Outcome::Failure,
        }
    }
}

impl<C: fmt::Debug> fmt::Debug for FromClassifyResponse<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FromClassifyResponse")
            .field("inner", &self.inner)
            .field("requires_eos", &self.requires_eos)
            .finish()
    }
}
