//! What kind of error a call ended in ([`ErrorClass`]), and the error types that can tell ([`AsError`]).

use std::{error::Error, io};

use crate::breaker::{BoxError, CircuitOpen};

/// What kind of error a call ended in, found by walking its `source()` chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorClass {
    /// A timeout: `tower::timeout::error::Elapsed`, an I/O `TimedOut`, a hyper or reqwest
    /// timeout. Wins over `Connect` (a connect timeout is a timeout).
    Timeout,
    /// The connection could not be made: refused, DNS failure, unreachable (an I/O error of
    /// those kinds, or a hyper-util / reqwest connect error with their features).
    Connect,
    /// A breaker further down refused the call; nothing was sent. (Not when the refusal
    /// killed a `tower::buffer::Buffer` above that breaker: that buffer is dead for good, see
    /// [`is_dead_buffer`](crate::is_dead_buffer), and the error is `Other`.)
    CircuitOpen,
    /// Anything else: a reset, a protocol error, a body error...
    Other,
}

impl ErrorClass {
    /// Classifies `err` by the first telling error in its `source()` chain.
    pub fn of(err: &(dyn Error + 'static)) -> Self {
        let mut class = Self::Other;
        let mut in_buffer = false;
        let mut cur = Some(err);
        while let Some(e) = cur {
            if let Some(open) = e.downcast_ref::<CircuitOpen>() {
                if in_buffer {
                    crate::classify::dead_buffer_found(open);
                    return Self::Other;
                }
                return Self::CircuitOpen;
            }
            in_buffer |= e.is::<tower::buffer::error::ServiceError>();
            if e.is::<tower::timeout::error::Elapsed>() {
                return Self::Timeout;
            }
            if let Some(io) = e.downcast_ref::<io::Error>() {
                match io.kind() {
                    io::ErrorKind::TimedOut => return Self::Timeout,
                    io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::AddrNotAvailable
                    | io::ErrorKind::HostUnreachable
                    | io::ErrorKind::NetworkUnreachable => class = Self::Connect,
                    _ => {}
                }
            }
            #[cfg(feature = "hyper-util")]
            {
                if let Some(h) = e.downcast_ref::<hyper::Error>() {
                    if h.is_timeout() {
                        return Self::Timeout;
                    }
                }
                if let Some(h) = e.downcast_ref::<hyper_util::client::legacy::Error>() {
                    if h.is_connect() {
                        class = Self::Connect;
                    }
                }
            }
            #[cfg(feature = "reqwest")]
            if let Some(r) = e.downcast_ref::<reqwest::Error>() {
                if r.is_timeout() {
                    return Self::Timeout;
                }
                if r.is_connect() {
                    class = Self::Connect;
                }
            }
            cur = crate::classify::next_in_chain(e);
        }
        class
    }
}

/// An error [`HttpClassifier`](super::HttpClassifier) (and the crate's retry helpers) can look into: a view of it as
/// `&dyn Error`.
///
/// Implemented for [`BoxError`], `Box<dyn Error>`, `dyn Error` (with or without `Send` and
/// `Sync`), references to any of these, `std::io::Error`, `Infallible`, [`CircuitOpen`],
/// `tower::timeout::error::Elapsed`, and with their features `hyper::Error`,
/// `hyper_util::client::legacy::Error`, `reqwest::Error` and `reqwest_middleware::Error`.
/// Implement it for your own error type to use the classifier, and
/// [`is_circuit_open`](crate::is_circuit_open), with it.
pub trait AsError {
    /// This error as a `dyn Error`, whose `source()` chain the classifier walks.
    fn as_error(&self) -> &(dyn Error + 'static);
}

impl AsError for BoxError {
    fn as_error(&self) -> &(dyn Error + 'static) {
        &**self
    }
}

impl AsError for Box<dyn Error> {
    fn as_error(&self) -> &(dyn Error + 'static) {
        &**self
    }
}

impl AsError for dyn Error + 'static {
    fn as_error(&self) -> &(dyn Error + 'static) {
        self
    }
}

impl AsError for dyn Error + Send + 'static {
    fn as_error(&self) -> &(dyn Error + 'static) {
        self
    }
}

impl AsError for dyn Error + Send + Sync + 'static {
    fn as_error(&self) -> &(dyn Error + 'static) {
        self
    }
}

impl<E: AsError + ?Sized> AsError for &E {
    fn as_error(&self) -> &(dyn Error + 'static) {
        (**self).as_error()
    }
}

macro_rules! as_error_itself {
    ($($(#[$m:meta])* $t:ty),* $(,)?) => {$(
        $(#[$m])*
        impl AsError for $t {
            fn as_error(&self) -> &(dyn Error + 'static) {
                self
            }
        }
    )*};
}

as_error_itself!(
    io::Error,
    std::convert::Infallible,
    CircuitOpen,
    tower::timeout::error::Elapsed,
    #[cfg(feature = "hyper-util")]
    hyper::Error,
    #[cfg(feature = "hyper-util")]
    hyper_util::client::legacy::Error,
    #[cfg(feature = "reqwest")]
    reqwest::Error,
);

#[cfg(feature = "reqwest-middleware")]
impl AsError for reqwest_middleware::Error {
    fn as_error(&self) -> &(dyn Error + 'static) {
        // The variants are `#[error(transparent)]`: look at the wrapped error itself, not
        // past it.
        match self {
            reqwest_middleware::Error::Middleware(e) => {
                let e: &(dyn Error + Send + Sync + 'static) = e.as_ref();
                e
            }
            reqwest_middleware::Error::Reqwest(e) => e,
        }
    }
}
