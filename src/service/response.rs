//! [`CircuitOpenResponse`]: the HTTP response a server sends for a refused call.

use std::{fmt::Write as _, time::Duration};

use http::{HeaderValue, Response, StatusCode, header};

use crate::{
    breaker::{CircuitOpen, State},
    classify::AsError,
};

/// Builds the HTTP response a server sends when a breaker refused the call behind a request:
/// `503 Service Unavailable` by default (or `429 Too Many Requests`, or any status), with a
/// `Retry-After` header and a plain-text body that says the same thing.
///
/// ```
/// use std::time::Duration;
/// use http::{StatusCode, header::RETRY_AFTER};
/// use tower::{ServiceExt, service_fn};
/// use tower_breaker::{BoxError, CircuitBreaker, CircuitBreakerLayer, CircuitOpenResponse, Layer};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), BoxError> {
/// let breaker = CircuitBreaker::builder("payments")
///     .consecutive_failures(1)
///     .open_duration(Duration::from_millis(29_500))
///     .build()?;
/// let svc = CircuitBreakerLayer::new(breaker.clone())
///     .layer(service_fn(|_: ()| async { Err::<(), BoxError>("payments down".into()) }));
/// let _ = svc.clone().oneshot(()).await; // a real failure: the breaker opens
///
/// let err = svc.oneshot(()).await.unwrap_err(); // refused
/// let res: http::Response<String> = CircuitOpenResponse::new().for_error(&err).unwrap();
/// assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
/// assert_eq!(res.headers()[RETRY_AFTER], "30"); // 29.5 s, rounded up
/// assert_eq!(res.body(), r#"circuit "payments" is open; retry in 30s"#);
///
/// // An error that holds no refusal is not this helper's business.
/// let other: BoxError = "payments down".into();
/// assert!(CircuitOpenResponse::new().for_error::<_, String>(&other).is_none());
/// # Ok(()) }
/// ```
///
/// Under axum, call it from `HandleErrorLayer`; the [crate docs](crate#server-side) show a
/// whole router, with a breaker per route.
///
/// The wait is read from the refusal **once**, so the header and the body never disagree
/// (reading `retry_after()` twice, a few microseconds apart, can give 30 s and 29.99 s).
/// `Retry-After` carries whole seconds, **rounded up** ([`retry_after_secs`]): a client that
/// waits as long as it says never comes back before the breaker lets a probe through. It is
/// `0` when the open period has just ended (the next request may be the probe), and it is
/// left out when the wait is unknown: forced open, or half-open with every probe in flight.
///
/// | refusal | `Retry-After` | body |
/// |---|---|---|
/// | open, 29.5 s left | `30` | `circuit "payments" is open; retry in 30s` |
/// | open, the period just ended | `0` | `circuit "payments" was open; its open period has ended` |
/// | half-open, every probe in flight | — | `circuit "payments" is half-open and its probes are all in flight` |
/// | forced open | — | `circuit "payments" is forced open` |
///
/// The body names the breaker, as [`CircuitOpen`]'s message does (it never holds request
/// data). A public API that should not reveal its dependencies' names uses
/// [`hide_name`](Self::hide_name): `temporarily unavailable; retry in 30s`.
///
/// The body type is any `B: From<String>`: `String`, `http_body_util::Full<Bytes>`,
/// `axum::body::Body`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CircuitOpenResponse {
    status: StatusCode,
    name: bool,
}

impl Default for CircuitOpenResponse {
    fn default() -> Self {
        Self::new()
    }
}

impl CircuitOpenResponse {
    /// `503 Service Unavailable`, the body naming the breaker.
    pub const fn new() -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            name: true,
        }
    }

    /// Answers with `status` instead of 503: e.g. `StatusCode::TOO_MANY_REQUESTS` where
    /// clients back off on 429 only.
    #[must_use]
    pub const fn status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// Leaves the breaker's name out of the body: `temporarily unavailable; retry in 30s`.
    #[must_use]
    pub const fn hide_name(mut self) -> Self {
        self.name = false;
        self
    }

    /// The response for `err` when it is a [`CircuitOpen`] or holds one in its `source()`
    /// chain (a [`BoxError`](crate::BoxError) from a breaker service, a fallback's
    /// [`AllUnavailable`](crate::AllUnavailable), which holds the member that reopens first,
    /// ...); `None` for any other error.
    pub fn for_error<E, B>(&self, err: &E) -> Option<Response<B>>
    where
        E: AsError + ?Sized,
        B: From<String>,
    {
        CircuitOpen::find(err.as_error()).map(|open| self.for_circuit_open(open))
    }

    /// The response for `open`.
    pub fn for_circuit_open<B: From<String>>(&self, open: &CircuitOpen) -> Response<B> {
        let state = open.state();
        // Read once: the header and the body say the same.
        let wait = match state {
            State::ForcedOpen | State::HalfOpen => None,
            _ => open.retry_after(),
        };
        let secs = wait.map(retry_after_secs);

        let mut body = String::with_capacity(64);
        if self.name {
            let name = open.name();
            let _ = match (state, secs) {
                (State::ForcedOpen, _) => write!(body, "circuit {name:?} is forced open"),
                (State::HalfOpen, _) => {
                    write!(
                        body,
                        "circuit {name:?} is half-open and its probes are all in flight"
                    )
                }
                (_, Some(0)) => write!(body, "circuit {name:?} was open; its open period has ended"),
                (_, Some(s)) => write!(body, "circuit {name:?} is open; retry in {s}s"),
                (_, None) => write!(body, "circuit {name:?} is open"),
            };
        } else {
            body.push_str("temporarily unavailable");
            match secs {
                Some(0) => body.push_str("; retry now"),
                Some(s) => {
                    let _ = write!(body, "; retry in {s}s");
                }
                None => {}
            }
        }

        let mut res = Response::new(B::from(body));
        *res.status_mut() = self.status;
        let headers = res.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if let Some(s) = secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        res
    }
}

/// `wait` in whole seconds for a `Retry-After` header, rounded up: 29.001 s is `30`, 30 s is
/// `30`, zero is `0`.
pub const fn retry_after_secs(wait: Duration) -> u64 {
    // `as_secs()` is at most u64::MAX; a nonzero fraction of u64::MAX seconds saturates.
    wait.as_secs().saturating_add((wait.subsec_nanos() > 0) as u64)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::ZERO), 0);
        assert_eq!(retry_after_secs(Duration::from_nanos(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(999)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(29_001)), 30);
        assert_eq!(retry_after_secs(Duration::from_secs(30)), 30);
        assert_eq!(retry_after_secs(Duration::MAX), u64::MAX);
    }
}
