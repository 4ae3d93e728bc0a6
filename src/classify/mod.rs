//! Deciding what a call's result means for the breaker: [`Outcome`] and [`Classify`].
//!
//! ```
//! use std::time::Duration;
//! use tower_breaker::{Classify, Outcome};
//!
//! // Any closure over `Result<&Res, &E>` is a classifier.
//! let classify = |result: Result<&u16, &std::io::Error>| match result {
//!     Ok(429) => Outcome::Trip(Duration::from_secs(5)),
//!     Ok(s) if *s >= 500 => Outcome::Failure,
//!     Ok(_) => Outcome::Success,
//!     Err(_) => Outcome::Failure,
//! };
//! assert_eq!(classify.classify(Ok(&503)), Outcome::Failure);
//! ```

mod http;
mod open;
mod retry_after;

use std::fmt;

pub use http::{AsError, ErrorClass, HttpClassifier};
pub(crate) use open::{dead_buffer_found, next_in_chain};
pub use open::{is_circuit_open, is_dead_buffer};
pub use retry_after::parse_retry_after;

/// Re-exported from the core, whose vocabulary it is.
pub use crate::breaker::Outcome;

/// Turns a call's result into an [`Outcome`].
///
/// Closures `Fn(Result<&Res, &E>) -> Outcome` implement it.
pub trait Classify<Res, E> {
    /// Classifies one result.
    fn classify(&self, result: Result<&Res, &E>) -> Outcome;
}

impl<Res, E, F> Classify<Res, E> for F
where
    F: Fn(Result<&Res, &E>) -> Outcome,
{
    #[inline]
    fn classify(&self, result: Result<&Res, &E>) -> Outcome {
        self(result)
    }
}

/// The default classifier: `Ok` is a success, `Err` a failure.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct ErrorIsFailure;

impl ErrorIsFailure {
    /// The classifier.
    pub const fn new() -> Self {
        Self
    }
}

impl fmt::Debug for ErrorIsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ErrorIsFailure")
    }
}

impl<Res, E> Classify<Res, E> for ErrorIsFailure {
    #[inline]
    fn classify(&self, result: Result<&Res, &E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        }
    }
}
