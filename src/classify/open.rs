//! Finding a breaker's refusal in any error: [`is_circuit_open`], [`CircuitOpen::find`], and
//! the one refusal that is *not* transient, a dead `Buffer` ([`is_dead_buffer`]).
//!
//! Every function here takes any error [`AsError`] covers (`BoxError`, `&dyn Error`,
//! `std::io::Error`, `reqwest_middleware::Error` with its feature, your own types), and walks
//! its `source()` chain, looking *into* `reqwest_middleware::Error`s, whose variants are
//! transparent.
//!
//! ```
//! use tower_breaker::{BoxError, CircuitBreaker, CircuitOpen, is_circuit_open};
//!
//! let breaker = CircuitBreaker::builder("openai").consecutive_failures(1).build().unwrap();
//! breaker.force_open();
//! let err: BoxError = Box::new(breaker.try_acquire().unwrap_err());
//! assert!(is_circuit_open(&err));
//! assert_eq!(CircuitOpen::find(&*err).unwrap().name(), "openai"); // `&dyn Error` too
//!
//! let other: BoxError = "connection reset".into();
//! assert!(!is_circuit_open(&other));
//! ```

use std::{
    error::Error,
    sync::atomic::{AtomicBool, Ordering},
};

use tower::buffer::error::ServiceError as BufferError;

use super::AsError;
use crate::breaker::CircuitOpen;

/// What a walk down an error's chain found.
enum Found<'a> {
    /// A refusal: the circuit is open (transiently).
    Open(&'a CircuitOpen),
    /// A refusal that killed a `tower::buffer::Buffer`'s worker.
    DeadBuffer,
    Nothing,
}

/// Walks `err`'s chain for a `CircuitOpen`, noting whether it sits under a `Buffer`'s
/// `ServiceError` (the buffer's worker received it from `poll_ready` and stopped).
fn walk<'a>(err: &'a (dyn Error + 'static)) -> Found<'a> {
    let mut in_buffer = false;
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(open) = e.downcast_ref::<CircuitOpen>() {
            if in_buffer {
                dead_buffer_found(open);
                return Found::DeadBuffer;
            }
            return Found::Open(open);
        }
        in_buffer |= e.is::<BufferError>();
        cur = next_in_chain(e);
    }
    Found::Nothing
}

/// The next error in a chain: `source()`, except that a `reqwest_middleware::Error` (whose
/// variants are transparent: its own `source()` skips the wrapped error) is looked into.
#[inline]
pub(crate) fn next_in_chain<'a>(e: &'a (dyn Error + 'static)) -> Option<&'a (dyn Error + 'static)> {
    #[cfg(feature = "reqwest-middleware")]
    {
        crate::integrations::reqwest_middleware::next_in_chain(e)
    }
    #[cfg(not(feature = "reqwest-middleware"))]
    {
        e.source()
    }
}

/// `open` was found under a dead buffer: logs the mistake once per process, naming the fix.
#[cold]
pub(crate) fn dead_buffer_found(open: &CircuitOpen) {
    static LOGGED: AtomicBool = AtomicBool::new(false);
    if !LOGGED.swap(true, Ordering::Relaxed) {
        tracing::error!(
            breaker = open.name(),
            "a tower Buffer above the circuit breaker {:?} has stopped for good: the breaker's \
             `Readiness::FailFast` refusal reached the buffer's worker from `poll_ready`, which \
             tower treats as final, so every later call fails even once the upstream recovers. \
             Put the breaker above the buffer (`ServiceBuilder::new().layer(breaker).buffer(n)`), \
             or give this breaker `Readiness::RejectOnCall`",
            open.name(),
        );
    }
}

/// Whether `err`, or any error in its `source()` chain, is a [`CircuitOpen`] refusal: the
/// call was not sent, and the same service will ask its breaker again on its next
/// `poll_ready`. Retry policies use it to stop retrying an open circuit; a fallback chain whose
/// members were all unavailable ([`AllUnavailable`](crate::AllUnavailable)) counts too.
///
/// It takes any error [`AsError`] covers: `BoxError` (what this crate's services return),
/// `&dyn Error`, `reqwest_middleware::Error` (feature `reqwest-middleware`, looked into at any
/// depth, through reqwest-retry's errors too), `std::io::Error`, and your own types.
///
/// A refusal found inside a `tower::buffer::Buffer`'s error is **not** an open circuit: the
/// buffer's worker got it from `poll_ready` and stopped for good (see [`is_dead_buffer`]), so
/// it is `false` then, and an ERROR is logged once.
pub fn is_circuit_open<E: AsError + ?Sized>(err: &E) -> bool {
    matches!(walk(err.as_error()), Found::Open(_))
}

/// Whether `err` comes from a `tower::buffer::Buffer` whose worker stopped for good because
/// a circuit breaker below it, in `Readiness::FailFast` mode, refused from `poll_ready`.
///
/// tower treats a `poll_ready` error as final: the buffer's worker drops the breaker service
/// and every later call through that buffer fails with the same error (`buffered service
/// failed: circuit "..." is open ...`), even once the upstream recovered and the breaker
/// closed. The fix is in the stack, not at run time: put the breaker *above* the buffer
/// (`ServiceBuilder::new().layer(breaker_layer).buffer(64)`), or give the breaker under the
/// buffer `Readiness::RejectOnCall`. The first time this crate meets such an error
/// (here, in [`is_circuit_open`], [`CircuitOpen::find`], a fallback or the classifier), it
/// logs an ERROR saying so.
///
/// ```
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
/// use tower_breaker::{BoxError, CircuitBreaker, CircuitBreakerLayer, is_circuit_open, is_dead_buffer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), BoxError> {
/// let breaker = CircuitBreaker::builder("upstream").consecutive_failures(1).build()?;
/// breaker.force_open();
/// let wrong = ServiceBuilder::new()
///     .buffer(64) // above the breaker: its worker stops at the first refusal
///     .layer(CircuitBreakerLayer::new(breaker.clone()))
///     .service(service_fn(|_: ()| async { Ok::<_, BoxError>("ok") }));
/// let err = wrong.oneshot(()).await.unwrap_err();
/// assert!(is_dead_buffer(&err));
/// assert!(!is_circuit_open(&err)); // not transient: this buffer never recovers
/// # Ok(()) }
/// ```
pub fn is_dead_buffer<E: AsError + ?Sized>(err: &E) -> bool {
    matches!(walk(err.as_error()), Found::DeadBuffer)
}

impl CircuitOpen {
    /// Finds the `CircuitOpen` refusal in an error or anywhere in its `source()` chain; `None`
    /// if there is none, or if it killed a `Buffer` (see [`is_dead_buffer`]). Takes what
    /// [`is_circuit_open`] takes.
    pub fn find<E: AsError + ?Sized>(err: &E) -> Option<&CircuitOpen> {
        match walk(err.as_error()) {
            Found::Open(open) => Some(open),
            Found::DeadBuffer | Found::Nothing => None,
        }
    }
}
