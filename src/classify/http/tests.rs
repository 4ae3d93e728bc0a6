//! Unit tests of the HTTP classifier.

use std::io;

use super::*;
use crate::breaker::BoxError;
use http::{HeaderValue, Response};

/// Wed, 21 Oct 2015 07:28:00 GMT
fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480)
}

fn status(c: &HttpClassifier, code: u16, retry_after: Option<&str>) -> Outcome {
    let mut headers = HeaderMap::new();
    if let Some(v) = retry_after {
        headers.insert(RETRY_AFTER, HeaderValue::from_str(v).unwrap());
    }
    c.classify_status_at(StatusCode::from_u16(code).unwrap(), &headers, now)
}

fn err(c: &HttpClassifier, e: BoxError) -> Outcome {
    Classify::<Response<()>, BoxError>::classify(c, Err(&e))
}

#[test]
fn server_errors_are_failures() {
    let c = HttpClassifier::default();
    for code in [500, 501, 502, 503, 504, 529, 599] {
        assert_eq!(status(&c, code, None), Outcome::Failure, "{code}");
    }
}

#[test]
fn retry_after_trips_on_429_and_503() {
    let c = HttpClassifier::default();
    let secs = Outcome::Trip(Duration::from_secs(30));
    assert_eq!(status(&c, 429, Some("30")), secs);
    assert_eq!(status(&c, 503, Some("30")), secs);
    let date = Some("Wed, 21 Oct 2015 07:30:00 GMT");
    assert_eq!(status(&c, 429, date), Outcome::Trip(Duration::from_secs(120)));
    assert_eq!(status(&c, 503, date), Outcome::Trip(Duration::from_secs(120)));
    // Not on other statuses: a 500 or 502 with Retry-After is just a failure.
    assert_eq!(status(&c, 500, Some("30")), Outcome::Failure);
    assert_eq!(status(&c, 502, Some("30")), Outcome::Failure);
    assert_eq!(status(&c, 200, Some("30")), Outcome::Success);
}

#[test]
fn unusable_retry_after_falls_back_to_the_row() {
    let c = HttpClassifier::default();
    for bad in ["soon", "-5", "1.5", "", "0", "Wed, 21 Oct 2015 07:00:00 GMT"] {
        assert_eq!(status(&c, 429, Some(bad)), Outcome::Failure, "{bad:?}");
        assert_eq!(status(&c, 503, Some(bad)), Outcome::Failure, "{bad:?}");
    }
    assert_eq!(status(&c, 429, None), Outcome::Failure);
    assert_eq!(status(&c, 503, None), Outcome::Failure);
}

#[test]
fn huge_retry_after_is_kept_for_the_core_to_clamp() {
    let c = HttpClassifier::default();
    assert_eq!(
        status(&c, 429, Some("99999999999999999999999999")),
        Outcome::Trip(Duration::from_secs(u64::MAX))
    );
}

#[test]
fn rate_limited_and_request_timeout_are_failures() {
    let c = HttpClassifier::default();
    assert_eq!(status(&c, 429, None), Outcome::Failure);
    assert_eq!(status(&c, 408, None), Outcome::Failure);
    // 408 has no Retry-After row by default
    assert_eq!(status(&c, 408, Some("10")), Outcome::Failure);
}

#[test]
fn other_statuses_are_successes() {
    let c = HttpClassifier::default();
    for code in [
        100, 101, 200, 201, 204, 301, 304, 400, 401, 403, 404, 409, 422, 499,
    ] {
        assert_eq!(status(&c, code, None), Outcome::Success, "{code}");
    }
}

#[test]
fn nonstandard_statuses_are_failures() {
    let c = HttpClassifier::default();
    assert_eq!(status(&c, 600, None), Outcome::Failure);
    assert_eq!(status(&c, 999, None), Outcome::Failure);
}

#[test]
fn status_rows_are_configurable() {
    let c = HttpClassifier::new()
        .failure_statuses([401])
        .success_statuses([501])
        .ignore_statuses(400..=403)
        .failure_statuses([403]);
    assert_eq!(status(&c, 401, None), Outcome::Ignore); // ignore came later
    assert_eq!(status(&c, 403, None), Outcome::Failure);
    assert_eq!(status(&c, 400, None), Outcome::Ignore);
    assert_eq!(status(&c, 501, None), Outcome::Success);
    assert_eq!(status(&c, 500, None), Outcome::Failure);
    let c = c.success_statuses(100..=599);
    assert_eq!(status(&c, 500, None), Outcome::Success);
    assert_eq!(status(&c, 400, None), Outcome::Success);
    // out-of-range codes are skipped, not a panic
    let _ = HttpClassifier::new().failure_statuses([0, 99, 600, u16::MAX]);
}

#[test]
fn retry_after_statuses_are_configurable() {
    let c = HttpClassifier::new().retry_after_statuses([]);
    assert_eq!(status(&c, 429, Some("30")), Outcome::Failure);
    assert_eq!(status(&c, 503, Some("30")), Outcome::Failure);
    let c = HttpClassifier::new().retry_after_statuses([429, 502]);
    assert_eq!(status(&c, 503, Some("30")), Outcome::Failure);
    assert_eq!(
        status(&c, 502, Some("30")),
        Outcome::Trip(Duration::from_secs(30))
    );
    // a success status in the set can trip too
    let c = HttpClassifier::new().retry_after_statuses([200]);
    assert_eq!(status(&c, 200, Some("5")), Outcome::Trip(Duration::from_secs(5)));
    assert_eq!(status(&c, 200, None), Outcome::Success);
}

#[test]
fn rate_limited_wait_applies_to_bare_429() {
    let c = HttpClassifier::new().rate_limited_wait(Some(Duration::from_secs(10)));
    let ten = Outcome::Trip(Duration::from_secs(10));
    assert_eq!(status(&c, 429, None), ten);
    assert_eq!(status(&c, 429, Some("garbage")), ten);
    assert_eq!(status(&c, 429, Some("3")), Outcome::Trip(Duration::from_secs(3)));
    assert_eq!(status(&c, 503, None), Outcome::Failure); // 429 only
}

#[test]
fn errors_by_class() {
    let c = HttpClassifier::default();
    assert_eq!(
        err(&c, Box::new(tower::timeout::error::Elapsed::new())),
        Outcome::Failure
    );
    assert_eq!(
        err(&c, Box::new(io::Error::from(io::ErrorKind::TimedOut))),
        Outcome::Failure
    );
    assert_eq!(
        err(&c, Box::new(io::Error::from(io::ErrorKind::ConnectionRefused))),
        Outcome::Failure
    );
    assert_eq!(
        err(&c, Box::new(io::Error::from(io::ErrorKind::ConnectionReset))),
        Outcome::Failure
    );
    assert_eq!(err(&c, "boom".into()), Outcome::Failure);

    let c = HttpClassifier::new()
        .timeout_error(Outcome::Trip(Duration::from_secs(3)))
        .connect_error(Outcome::Ignore)
        .other_error(Outcome::Success)
        .circuit_open_error(Outcome::Failure);
    assert_eq!(
        err(&c, Box::new(tower::timeout::error::Elapsed::new())),
        Outcome::Trip(Duration::from_secs(3))
    );
    assert_eq!(
        err(&c, Box::new(io::Error::from(io::ErrorKind::TimedOut))),
        Outcome::Trip(Duration::from_secs(3))
    );
    assert_eq!(
        err(&c, Box::new(io::Error::from(io::ErrorKind::ConnectionRefused))),
        Outcome::Ignore
    );
    assert_eq!(err(&c, "boom".into()), Outcome::Success);
}

#[test]
fn classes_walk_the_source_chain() {
    #[derive(Debug)]
    struct Wrap(BoxError);
    impl fmt::Display for Wrap {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("wrapped")
        }
    }
    impl Error for Wrap {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&*self.0)
        }
    }
    let timeout = Wrap(Box::new(io::Error::new(
        io::ErrorKind::TimedOut,
        Wrap(Box::new(io::Error::from(io::ErrorKind::ConnectionRefused))),
    )));
    assert_eq!(ErrorClass::of(&timeout), ErrorClass::Timeout);
    let refused = Wrap(Box::new(io::Error::from(io::ErrorKind::ConnectionRefused)));
    assert_eq!(ErrorClass::of(&refused), ErrorClass::Connect);
    assert_eq!(ErrorClass::of(&Wrap("x".into())), ErrorClass::Other);
}

#[test]
fn circuit_open_below_is_ignored() {
    let breaker = crate::CircuitBreaker::builder("inner")
        .consecutive_failures(1)
        .build()
        .unwrap();
    breaker.force_open();
    let open = breaker.try_acquire().unwrap_err();
    let c = HttpClassifier::default();
    assert_eq!(err(&c, Box::new(open.clone())), Outcome::Ignore);
    assert_eq!(ErrorClass::of(&open), ErrorClass::CircuitOpen);
}

#[test]
fn error_hook_goes_first_and_can_pass() {
    let c = HttpClassifier::new().on_error(|e| {
        e.to_string()
            .contains("quota")
            .then_some(Outcome::Trip(Duration::from_secs(60)))
    });
    assert_eq!(
        err(&c, "quota exceeded".into()),
        Outcome::Trip(Duration::from_secs(60))
    );
    assert_eq!(err(&c, "boom".into()), Outcome::Failure);
    assert_eq!(
        err(&c, Box::new(tower::timeout::error::Elapsed::new())),
        Outcome::Failure
    );
}

#[test]
fn classifies_http_responses_through_the_trait() {
    let c = HttpClassifier::default();
    let res = Response::builder()
        .status(503)
        .header(RETRY_AFTER, "7")
        .body(())
        .unwrap();
    assert_eq!(
        Classify::<_, io::Error>::classify(&c, Ok(&res)),
        Outcome::Trip(Duration::from_secs(7))
    );
    let e = io::Error::from(io::ErrorKind::BrokenPipe);
    assert_eq!(
        Classify::<Response<()>, _>::classify(&c, Err(&e)),
        Outcome::Failure
    );
}

#[cfg(feature = "reqwest-middleware")]
#[test]
fn reqwest_middleware_errors_are_looked_into() {
    let breaker = crate::CircuitBreaker::builder("mw")
        .consecutive_failures(1)
        .build()
        .unwrap();
    breaker.force_open();
    let open = reqwest_middleware::Error::middleware(breaker.try_acquire().unwrap_err());
    assert_eq!(ErrorClass::of(open.as_error()), ErrorClass::CircuitOpen);
    let other = reqwest_middleware::Error::middleware(io::Error::from(io::ErrorKind::TimedOut));
    assert_eq!(ErrorClass::of(other.as_error()), ErrorClass::Timeout);
}

#[test]
fn clone_is_cheap_and_debug_is_readable() {
    assert!(std::mem::size_of::<HttpClassifier>() <= 320);
    let dbg = format!("{:?}", HttpClassifier::default());
    assert!(dbg.contains("failure: {408, 429, 500-599}"), "{dbg}");
    assert!(dbg.contains("retry_after: {429, 503}"), "{dbg}");
    assert!(dbg.contains("ignore: {}"), "{dbg}");
}
