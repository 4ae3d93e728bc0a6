//! Inputs the fuzz targets (`fuzz/`) found or circle around, replayed through the public API
//! with the results they must give. Each crash the fuzzers found has a test here, named after
//! it; the rest pin the edge values the targets generate (zero, `Duration::MAX`, NaN, ...).
//!
//! Time is tokio's paused clock in a current-thread runtime with only the time driver, so the
//! file also runs under Miri.

use std::{
    future::Future,
    time::{Duration, SystemTime},
};

use http::{HeaderMap, HeaderValue, Response, StatusCode, header::RETRY_AFTER};
use tokio::time::advance;
use tower_breaker::{
    Backoff, BoxError, CircuitBreaker, Classify, ConfigError, HttpClassifier, Outcome, State,
    classify::parse_retry_after,
};

const S: Duration = Duration::from_secs(1);
const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
/// Deadlines are nanoseconds in a `u64` from the breaker's creation: ~584 years.
const HORIZON: Duration = Duration::from_nanos(u64::MAX);

fn paused<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime")
        .block_on(f)
}

fn fail(b: &CircuitBreaker) {
    b.try_acquire().expect("admitted").record(Outcome::Failure);
}

/// Wed, 21 Oct 2015 07:28:00 GMT
fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480)
}

fn classify(c: &HttpClassifier, code: u16, retry_after: &[u8]) -> Outcome {
    let mut headers = HeaderMap::new();
    headers.insert(
        RETRY_AFTER,
        HeaderValue::from_bytes(retry_after).expect("a header value"),
    );
    c.classify_status_at(StatusCode::from_u16(code).expect("status"), &headers, now)
}

/// The open breaker's time left, from a refused call; it must name one.
fn refused_for(b: &CircuitBreaker) -> Duration {
    let refused = b.try_acquire().expect_err("open: refused");
    assert_eq!(refused.state(), State::Open);
    refused.retry_after().expect("an open breaker has a deadline")
}

// ---------- breaker: crashes found by `fuzz_targets/builder.rs` and `http_classify.rs` ----------

/// Crash: `Trip(909154440147 s)` with `max_open_duration` near `Duration::MAX`: the wait in
/// nanoseconds was cast with `as u64`, which wraps, so a 28,800-year wait opened the breaker
/// for a few years (and a wait of exactly 2^64 ns for nothing at all).
#[test]
fn trip_longer_than_the_nanosecond_range_is_not_wrapped() {
    paused(async {
        for wait in [
            Duration::from_secs(909_154_440_147),
            HORIZON + Duration::from_nanos(1), // 2^64 ns: wrapped to zero
            Duration::from_secs(22_814_863_608_823_806),
        ] {
            let b = CircuitBreaker::builder("wrap")
                .consecutive_failures(1)
                .max_open_duration(Duration::MAX)
                .build()
                .unwrap();
            b.trip(wait);
            let left = refused_for(&b);
            assert!(left > 584 * YEAR, "{wait:?}: open for only {left:?}");
            advance(100 * YEAR).await;
            assert!(b.try_acquire().is_err(), "{wait:?}: still open a century later");
        }
    });
}

/// The same through an outcome: a 429 with a huge `Retry-After` on a breaker that does not
/// clamp (`max_open_duration(Duration::MAX)`) stays open as long as the clock can say.
#[test]
fn huge_retry_after_outcome_is_not_wrapped() {
    paused(async {
        let b = CircuitBreaker::builder("wrap")
            .consecutive_failures(5)
            .max_open_duration(Duration::MAX)
            .build()
            .unwrap();
        // 18,446,744,074 s is 2^64 ns and 0.29 s: the cast read it as a third of a second.
        for (value, wait) in [
            (&b"18446744074"[..], 18_446_744_074),
            (b"99999999999999999999", u64::MAX),
        ] {
            let outcome = classify(&HttpClassifier::default(), 429, value);
            assert_eq!(outcome, Outcome::Trip(Duration::from_secs(wait)));
            b.reset();
            b.try_acquire().unwrap().record(outcome);
            assert!(refused_for(&b) > 584 * YEAR);
        }
    });
}

/// A deadline that saturates (a wait of `Duration::MAX`) used to land on the sentinel that
/// means "no deadline" (forced open, half-open full), so an `Open` rejection said it did not
/// know when it would retry.
#[test]
fn saturated_deadline_is_not_taken_for_no_deadline() {
    paused(async {
        let b = CircuitBreaker::builder("sat")
            .consecutive_failures(1)
            .max_open_duration(Duration::MAX)
            .build()
            .unwrap();
        b.trip(Duration::MAX);
        let refused = b.try_acquire().expect_err("open");
        let left = refused.retry_after().expect("a deadline, not none");
        assert!(left > 584 * YEAR && left <= HORIZON, "{left:?}");
        assert!(
            refused
                .to_string()
                .starts_with(r#"circuit "sat" is open; retry in "#),
            "{refused}"
        );
        let snapshot = b.snapshot();
        assert_eq!(snapshot.state, State::Open);
        assert_eq!(snapshot.retry_after, Some(left));
        assert_eq!(snapshot.open_for, Some(Duration::MAX));

        // A wait in force that saturated is never shortened by a later, shorter one.
        b.trip(S);
        assert_eq!(refused_for(&b), left);

        // Forced open still has no deadline.
        b.force_open();
        assert_eq!(b.try_acquire().unwrap_err().retry_after(), None);
    });
}

/// An open duration of `Duration::MAX` from the backoff itself (not a server's wait).
#[test]
fn open_duration_of_duration_max() {
    paused(async {
        let b = CircuitBreaker::builder("max")
            .consecutive_failures(1)
            .open_duration(Duration::MAX)
            .build()
            .unwrap();
        fail(&b);
        assert!(refused_for(&b) > 584 * YEAR);
        assert_eq!(b.snapshot().open_for, Some(Duration::MAX));
        b.reset();
        assert_eq!(b.state(), State::Closed);
        assert!(b.try_acquire().is_ok());
    });
}

/// `half_open_max_wait(Duration::MAX)` was added to an `Instant` (the time half-open last saw a
/// decision), which panics on overflow: the first call while a probe was in flight panicked.
/// Now a wait past what the clock can hold means half-open never gives up on its probes.
#[test]
fn half_open_max_wait_of_duration_max_does_not_overflow() {
    // `Duration::MAX`, and the value the `builder` target found (reached there through a
    // `trip_remote(0)`, a held probe and a `FailFast` service's `poll_ready`).
    for max_wait in [Duration::MAX, Duration::MAX - Duration::from_nanos(234_881_024)] {
        paused(async {
            let b = CircuitBreaker::builder("wait")
                .consecutive_failures(1)
                .open_duration(S)
                .half_open_max_wait(max_wait)
                .build()
                .unwrap();
            fail(&b);
            advance(S).await;
            let probe = b.try_acquire().expect("the probe");
            assert_eq!(b.state(), State::HalfOpen);
            let refused = b.try_acquire().expect_err("the probe is in flight");
            assert_eq!(refused.state(), State::HalfOpen);
            assert_eq!(refused.retry_after(), None);
            advance(500 * YEAR).await;
            assert_eq!(
                b.try_acquire().unwrap_err().state(),
                State::HalfOpen,
                "never gives up"
            );
            probe.record(Outcome::Success);
            assert_eq!(b.state(), State::Closed);

            // The same through `trip_remote(0)`: open for nothing, the next call probes.
            b.trip_remote(Duration::ZERO);
            let _held = b.try_acquire().expect("the probe");
            assert_eq!(b.try_acquire().unwrap_err().state(), State::HalfOpen);
        });
    }
}

/// A finite but long `half_open_max_wait` still times a hung probe out.
#[test]
fn half_open_max_wait_of_centuries_still_times_out() {
    paused(async {
        let b = CircuitBreaker::builder("wait")
            .consecutive_failures(1)
            .open_duration(S)
            .half_open_max_wait(200 * YEAR)
            .build()
            .unwrap();
        fail(&b);
        advance(S).await;
        let _hung = b.try_acquire().expect("the probe");
        advance(199 * YEAR).await;
        assert_eq!(b.try_acquire().unwrap_err().state(), State::HalfOpen);
        advance(YEAR).await;
        assert_eq!(
            b.try_acquire().unwrap_err().state(),
            State::Open,
            "the probe timed out"
        );
    });
}

/// The same wait through the service in `Wait` mode, which sleeps until the breaker's next
/// deadline: it used to compute that deadline with the same overflowing addition.
#[test]
fn waiting_service_with_half_open_max_wait_of_duration_max() {
    use tower::{Service, ServiceExt, service_fn};
    use tower_breaker::{CircuitBreakerLayer, Layer, Readiness};

    paused(async {
        let b = CircuitBreaker::builder("svc")
            .consecutive_failures(1)
            .open_duration(S)
            .half_open_max_wait(Duration::MAX)
            .build()
            .unwrap();
        let mut svc = CircuitBreakerLayer::new(b.clone())
            .readiness(Readiness::Wait)
            .layer(service_fn(|_: ()| async { Ok::<_, BoxError>(()) }));
        fail(&b);
        advance(S).await;
        let probe = b.try_acquire().expect("the probe");
        let waited = tokio::time::timeout(10 * S, svc.ready()).await;
        assert!(waited.is_err(), "waits while the probe is in flight");
        probe.record(Outcome::Success);
        svc.ready()
            .await
            .expect("ready once the probe closed the breaker");
        svc.call(()).await.expect("the call goes through");
    });
}

/// `Backoff::fixed(near Duration::MAX).with_jitter(..)`: the jittered wait was capped at
/// `max.as_secs_f64()`, which rounds up to 2^64 s, and `Duration::from_secs_f64` of that
/// panics. The wait now stays within the backoff's maximum.
#[test]
fn jitter_near_duration_max_stays_in_range() {
    paused(async {
        for wait in [
            Duration::MAX,
            Duration::MAX - Duration::from_nanos(1_375_731_711),
            Duration::from_secs(u64::MAX),
            Duration::from_secs(u64::MAX / 2),
        ] {
            for jitter in [1.0, 0.5, f64::MIN_POSITIVE] {
                let b = CircuitBreaker::builder("jitter")
                    .consecutive_failures(1)
                    .open_backoff(Backoff::fixed(wait).with_jitter(jitter))
                    .build()
                    .unwrap();
                for _ in 0..20 {
                    fail(&b);
                    let open_for = b.snapshot().open_for.expect("open");
                    assert!(open_for <= wait, "{open_for:?} > {wait:?}");
                    assert!(refused_for(&b) > Duration::ZERO);
                    b.reset();
                }
            }
        }
    });
}

/// The `builder` target's jitter crash as it found it: an exponential backoff with a base of
/// 10^19 s, factor 1 and a maximum 4.3 s short of `Duration::MAX`, full jitter.
#[test]
fn jitter_crash_from_the_builder_target() {
    let base = Duration::from_secs(10_778_685_752_873_424_277);
    let max = Duration::MAX - Duration::from_nanos(4_294_967_295);
    paused(async {
        let b = CircuitBreaker::builder("jitter")
            .consecutive_failures(1)
            .open_backoff(Backoff::exponential(base, 1.0, max).with_jitter(1.0))
            .max_open_duration(Duration::MAX)
            .build()
            .unwrap();
        for _ in 0..20 {
            fail(&b);
            let open_for = b.snapshot().open_for.expect("open");
            assert!(open_for <= max, "{open_for:?}");
            assert!(refused_for(&b) > Duration::ZERO);
            b.reset();
        }
    });
}

/// An exponential backoff that passes `Duration::MAX` on its second step and overflows `f64`
/// on its third, with full jitter and a maximum of `Duration::MAX`.
#[test]
fn exponential_backoff_overflowing_to_infinity() {
    // 1e300, not `f64::MAX`: Miri gives `powi` a random error, and on `f64::MAX` that error
    // overflows to inf, -inf or NaN (natively `f64::MAX.powi(1)` is exact).
    let backoff = Backoff::exponential(S, 1e300, Duration::MAX);
    assert_eq!(backoff.delay(0), S);
    assert_eq!(backoff.delay(1), Duration::MAX);
    assert_eq!(backoff.delay(2), Duration::MAX);
    assert_eq!(backoff.delay(u32::MAX), Duration::MAX);
    paused(async {
        let b = CircuitBreaker::builder("exp")
            .consecutive_failures(1)
            .open_backoff(backoff.with_jitter(1.0))
            .build()
            .unwrap();
        fail(&b);
        let first = b.snapshot().open_for.unwrap();
        assert!(first <= 2 * S, "{first:?}");
        advance(2 * S).await;
        b.try_acquire().expect("the probe").record(Outcome::Failure);
        assert_eq!(b.state(), State::Open);
        assert!(refused_for(&b) > Duration::ZERO);
    });
}

// ---------- builder: what the `builder` target's oracle pins ----------

#[test]
fn builder_refuses_non_finite_and_out_of_range_numbers() {
    let b = || CircuitBreaker::builder("x");
    let mut cases: Vec<(String, Result<CircuitBreaker, ConfigError>, &str)> = Vec::new();
    for bad in [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        -f64::MIN_POSITIVE,
        -1.0,
        1.0 + f64::EPSILON,
    ] {
        cases.push((
            format!("rate {bad}"),
            b().failure_rate(bad).build(),
            "failure_rate",
        ));
        cases.push((
            format!("slow {bad}"),
            b().slow_calls(S, bad).build(),
            "slow_calls",
        ));
        let jitter = Backoff::fixed(S).with_jitter(bad);
        cases.push((
            format!("jitter {bad}"),
            b().consecutive_failures(1).open_backoff(jitter).build(),
            "backoff jitter",
        ));
    }
    // A zero rate (either sign) trips on successes alone: refused, as resilience4j and Polly
    // refuse it (a zero jitter is fine: it is the default).
    for zero in [0.0, -0.0] {
        cases.push((
            format!("rate {zero}"),
            b().failure_rate(zero).build(),
            "failure_rate",
        ));
        cases.push((
            format!("slow {zero}"),
            b().slow_calls(S, zero).build(),
            "slow_calls",
        ));
    }
    for bad in [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        0.0,
        -2.0,
        1.0 - f64::EPSILON,
    ] {
        let backoff = Backoff::exponential(S, bad, Duration::MAX);
        cases.push((
            format!("factor {bad}"),
            b().consecutive_failures(1).open_backoff(backoff).build(),
            "backoff factor",
        ));
    }
    // The fuzzer's first finding was in its own oracle: a time window under 10 µs is refused
    // even when no rate rule reads it.
    cases.push((
        "time window 0 with only the consecutive rule".into(),
        b().consecutive_failures(4_294_946_815)
            .time_window(Duration::ZERO)
            .build(),
        "time_window",
    ));
    cases.push((
        "time window 9 µs".into(),
        b().failure_rate(0.5)
            .time_window(Duration::from_micros(9))
            .build(),
        "time_window",
    ));
    cases.push((
        "count window 32768".into(),
        b().failure_rate(0.5).count_window(32_768).build(),
        "count_window",
    ));
    cases.push((
        "backoff max < base near Duration::MAX".into(),
        b().consecutive_failures(1)
            .open_backoff(Backoff::exponential(
                Duration::MAX,
                2.0,
                Duration::MAX - Duration::from_nanos(1),
            ))
            .build(),
        "backoff max",
    ));
    for (what, result, setting) in cases {
        let err = result.expect_err(&what);
        assert_eq!(err.setting(), setting, "{what}: {err}");
        assert!(
            err.to_string().starts_with("invalid circuit breaker config: "),
            "{what}: {err}"
        );
    }
}

#[test]
fn builder_accepts_extreme_valid_values_and_the_breaker_works() {
    paused(async {
        let b = CircuitBreaker::builder("extreme")
            .consecutive_failures(u32::MAX)
            .failure_rate(f64::MIN_POSITIVE) // the smallest rate: one failure in the window trips
            .slow_calls(Duration::MAX, 1.0)
            .time_window(Duration::MAX)
            .min_calls(2)
            .open_backoff(Backoff::exponential(Duration::MAX, 1.0, Duration::MAX).with_jitter(1.0))
            .max_open_duration(Duration::MAX)
            .half_open_permits(u32::MAX)
            .half_open_successes(u32::MAX)
            .half_open_max_wait(Duration::MAX)
            .build()
            .expect("every value is in range");
        b.try_acquire().unwrap().record(Outcome::Success);
        b.try_acquire().unwrap().record(Outcome::Success);
        assert_eq!(b.state(), State::Closed, "min_calls are in, no failure");
        b.try_acquire().unwrap().record(Outcome::Failure);
        assert_eq!(b.state(), State::Open, "1 of 3 is above the smallest rate");
        assert!(refused_for(&b) > Duration::ZERO);
        let s = b.snapshot();
        assert!(s.failures <= s.calls);

        // The largest window (a smaller one under Miri, which is slow).
        let size = if cfg!(miri) { 100 } else { 32_767 };
        let b = CircuitBreaker::builder("count")
            .failure_rate(1.0)
            .count_window(size)
            .min_calls(u32::MAX) // capped at the window's size
            .build()
            .unwrap();
        for _ in 1..size {
            fail(&b);
        }
        assert_eq!(b.state(), State::Closed);
        fail(&b);
        assert_eq!(b.state(), State::Open);
    });
}

// ---------- classify: what the `retry_after` and `http_classify` targets check ----------

#[test]
fn malformed_retry_after_is_ignored() {
    let c = HttpClassifier::default();
    for bad in [
        &b""[..],
        b" \t ",
        b"-0",
        b"+1",
        b"1 2",
        b"0x10",
        b"\xd9\xa3",
        b"\xff",
        b"Wed, 21 Oct 2015 07:28:00",
        b"Wed, 21 Oct 2015 07:28:00 UTC",
        b"Mon, 31 Feb 2020 00:00:00 GMT",
        b"Fri, 31 Dec 10000 23:59:59 GMT",
        b"Wed, 21 Oct 2015 07:28:60 GMT",
    ] {
        assert_eq!(
            parse_retry_after(bad, now()),
            None,
            "{:?}",
            String::from_utf8_lossy(bad)
        );
        assert_eq!(classify(&c, 429, bad), Outcome::Failure, "{bad:?}");
        assert_eq!(classify(&c, 503, bad), Outcome::Failure, "{bad:?}");
    }
    // A zero wait, or a date not in the future, is not a pause either.
    for zero in [
        &b"0"[..],
        b"000",
        b"Thu, 01 Jan 1970 00:00:00 GMT",
        b"Wed, 21 Oct 2015 07:28:00 GMT",
    ] {
        assert_eq!(parse_retry_after(zero, now()), Some(Duration::ZERO));
        assert_eq!(classify(&c, 429, zero), Outcome::Failure);
    }
}

#[test]
fn retry_after_at_extreme_nows() {
    let date = b"Wed, 21 Oct 2015 07:29:00 GMT";
    // A clock before 1970, or far in the future.
    let before = SystemTime::UNIX_EPOCH - Duration::from_secs(86_400);
    assert_eq!(
        parse_retry_after(date, before),
        Some(Duration::from_secs(1_445_412_540 + 86_400))
    );
    let future = SystemTime::UNIX_EPOCH + Duration::from_secs(300_000_000_000);
    assert_eq!(parse_retry_after(date, future), Some(Duration::ZERO));
    assert_eq!(parse_retry_after(b"7", future), Some(7 * S));
}

#[test]
fn huge_retry_after_is_clamped_by_the_breaker() {
    paused(async {
        let c = HttpClassifier::default();
        for huge in [
            &b"99999999999999999999"[..],
            b"18446744073709551615",
            b"Fri, 31 Dec 9999 23:59:59 GMT",
        ] {
            let outcome = classify(&c, 503, huge);
            assert!(
                matches!(outcome, Outcome::Trip(d) if d > Duration::from_secs(250_000_000_000)),
                "{outcome:?}"
            );
            let b = CircuitBreaker::builder("clamp")
                .consecutive_failures(1)
                .build()
                .unwrap();
            b.try_acquire().unwrap().record(outcome);
            assert_eq!(refused_for(&b), 600 * S, "max_open_duration's default");
        }
    });
}

#[test]
fn statuses_outside_http_semantics_are_failures_even_with_retry_after() {
    let c = HttpClassifier::new().retry_after_statuses(0..=u16::MAX);
    for code in [600, 699, 929, 999] {
        assert_eq!(classify(&c, code, b"30"), Outcome::Failure, "{code}");
    }
    assert_eq!(classify(&c, 599, b"30"), Outcome::Trip(30 * S));
    assert_eq!(classify(&c, 100, b"30"), Outcome::Trip(30 * S));
}

#[test]
fn only_the_first_retry_after_counts() {
    let c = HttpClassifier::default();
    let mut res = Response::new(());
    *res.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    res.headers_mut()
        .append(RETRY_AFTER, HeaderValue::from_static("soon"));
    res.headers_mut()
        .append(RETRY_AFTER, HeaderValue::from_static("30"));
    assert_eq!(Classify::<_, BoxError>::classify(&c, Ok(&res)), Outcome::Failure);
    let mut res = Response::new(());
    *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    res.headers_mut()
        .append(RETRY_AFTER, HeaderValue::from_static("30"));
    res.headers_mut()
        .append(RETRY_AFTER, HeaderValue::from_static("soon"));
    assert_eq!(
        Classify::<_, BoxError>::classify(&c, Ok(&res)),
        Outcome::Trip(30 * S)
    );
}

/// An HTTP-client crash found by the `http_classify` target was in its own oracle (a 64 ns
/// trip on the real clock is over before the next call); the breaker side: a wait shorter than
/// the time to the next call opens and lets the next call probe.
#[test]
fn a_wait_shorter_than_the_next_call_lets_it_probe() {
    paused(async {
        let c = HttpClassifier::new().rate_limited_wait(Some(Duration::from_secs(48_696_096_828_019_981)));
        let outcome = classify(&c, 429, b"Q");
        assert_eq!(
            outcome,
            Outcome::Trip(Duration::from_secs(48_696_096_828_019_981))
        );
        let b = CircuitBreaker::builder("short")
            .consecutive_failures(1)
            .max_open_duration(Duration::from_nanos(64))
            .build()
            .unwrap();
        b.try_acquire().unwrap().record(outcome);
        assert_eq!(refused_for(&b), Duration::from_nanos(64));
        advance(Duration::from_nanos(64)).await;
        assert!(b.try_acquire().expect("the probe").is_probe());
    });
}
