//! `HttpClassifier` on arbitrary statuses (100..=999), arbitrary headers (several
//! `Retry-After`s among others) and an arbitrary status table, checked against a model of the
//! table; then the outcome is recorded on a breaker with an arbitrary `max_open_duration`.
#![no_main]

use std::time::{Duration, SystemTime};

use arbitrary::Arbitrary;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header};
use libfuzzer_sys::fuzz_target;
use tower_breaker::{
    BoxError, CircuitBreaker, Classify, HttpClassifier, Outcome, State, classify::parse_retry_after,
};

#[derive(Arbitrary, Debug)]
enum Name {
    RetryAfter,
    ContentType,
    Date,
    XRateLimitReset,
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Dur {
    Zero,
    Max,
    Secs(u64),
    Nanos(u64),
    Parts(u64, u32),
}

impl Dur {
    fn get(&self) -> Duration {
        match *self {
            Dur::Zero => Duration::ZERO,
            Dur::Max => Duration::MAX,
            Dur::Secs(s) => Duration::from_secs(s),
            Dur::Nanos(n) => Duration::from_nanos(n),
            Dur::Parts(s, n) => Duration::new(s, n % 1_000_000_000),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Setting {
    Failure(Vec<u16>),
    Success(Vec<u16>),
    Ignore(Vec<u16>),
    RetryAfter(Vec<u16>),
    RateLimitedWait(Option<Dur>),
}

#[derive(Arbitrary, Debug)]
struct Input {
    status: u16,
    headers: Vec<(Name, Vec<u8>)>,
    settings: Vec<Setting>,
    now_secs: u32,
    max_open: Dur,
}

#[derive(Clone, Copy, PartialEq)]
enum Row {
    Success,
    Failure,
    Ignore,
}

/// The classifier's table, written out plainly.
struct Model {
    rows: [Row; 600],
    retry_after: [bool; 600],
    rate_limited_wait: Option<Duration>,
}

impl Model {
    fn new() -> Self {
        let mut rows = [Row::Success; 600];
        rows[500..=599].fill(Row::Failure);
        rows[429] = Row::Failure;
        rows[408] = Row::Failure;
        let mut retry_after = [false; 600];
        retry_after[429] = true;
        retry_after[503] = true;
        Model {
            rows,
            retry_after,
            rate_limited_wait: None,
        }
    }

    fn in_range(code: u16) -> Option<usize> {
        (100..=599).contains(&code).then_some(code as usize)
    }
}

fuzz_target!(|input: Input| {
    let code = 100 + input.status % 900;
    let status = StatusCode::from_u16(code).expect("100..=999 is a valid status");

    let mut classifier = HttpClassifier::new();
    let mut model = Model::new();
    for setting in input.settings.iter().take(16) {
        match setting {
            Setting::Failure(s) => {
                classifier = classifier.failure_statuses(s.iter().copied());
                s.iter()
                    .filter_map(|&c| Model::in_range(c))
                    .for_each(|c| model.rows[c] = Row::Failure);
            }
            Setting::Success(s) => {
                classifier = classifier.success_statuses(s.iter().copied());
                s.iter()
                    .filter_map(|&c| Model::in_range(c))
                    .for_each(|c| model.rows[c] = Row::Success);
            }
            Setting::Ignore(s) => {
                classifier = classifier.ignore_statuses(s.iter().copied());
                s.iter()
                    .filter_map(|&c| Model::in_range(c))
                    .for_each(|c| model.rows[c] = Row::Ignore);
            }
            Setting::RetryAfter(s) => {
                classifier = classifier.retry_after_statuses(s.iter().copied());
                model.retry_after = [false; 600];
                s.iter()
                    .filter_map(|&c| Model::in_range(c))
                    .for_each(|c| model.retry_after[c] = true);
            }
            Setting::RateLimitedWait(w) => {
                let w = w.as_ref().map(Dur::get);
                classifier = classifier.rate_limited_wait(w);
                model.rate_limited_wait = w;
            }
        }
    }

    let mut headers = HeaderMap::new();
    for (name, value) in input.headers.iter().take(16) {
        let name = match name {
            Name::RetryAfter => header::RETRY_AFTER,
            Name::ContentType => header::CONTENT_TYPE,
            Name::Date => header::DATE,
            Name::XRateLimitReset => HeaderName::from_static("x-ratelimit-reset"),
            Name::Raw(raw) => match HeaderName::from_bytes(raw) {
                Ok(n) => n,
                Err(_) => continue,
            },
        };
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(name, value);
        }
    }

    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(input.now_secs));
    let outcome = classifier.classify_status_at(status, &headers, || now);

    // The model: the first Retry-After counts.
    let expected = match Model::in_range(code) {
        None => Outcome::Failure,
        Some(c) => {
            let wait = headers
                .get(header::RETRY_AFTER)
                .and_then(|v| parse_retry_after(v.as_bytes(), now))
                .filter(|d| !d.is_zero());
            match (model.retry_after[c], wait, code == 429, model.rate_limited_wait) {
                (true, Some(d), _, _) => Outcome::Trip(d),
                (_, _, true, Some(w)) => Outcome::Trip(w),
                _ => match model.rows[c] {
                    Row::Success => Outcome::Success,
                    Row::Failure => Outcome::Failure,
                    Row::Ignore => Outcome::Ignore,
                },
            }
        }
    };
    assert_eq!(outcome, expected, "status {code}, headers {headers:?}");

    // Through the public `Classify` API on a real response (system clock: only the shape of
    // a date-based wait can differ, so compare only when no date is involved).
    let mut res = Response::new(());
    *res.status_mut() = status;
    *res.headers_mut() = headers.clone();
    let via_trait = Classify::<_, BoxError>::classify(&classifier, Ok(&res));
    let has_date = headers.get(header::RETRY_AFTER).is_some_and(|v| {
        !v.as_bytes()
            .iter()
            .all(|b| b.is_ascii_digit() || *b == b' ' || *b == b'\t')
    });
    if !has_date {
        assert_eq!(via_trait, outcome);
    }

    // The outcome on a breaker: a trip opens it for min(wait, max_open_duration).
    let max_open = input.max_open.get();
    let Ok(breaker) = CircuitBreaker::builder("fuzz")
        .consecutive_failures(1)
        .max_open_duration(max_open)
        .build()
    else {
        assert!(max_open.is_zero());
        return;
    };
    breaker
        .try_acquire()
        .expect("a new breaker admits")
        .record(outcome);
    match outcome {
        Outcome::Trip(d) if !d.is_zero() => {
            assert_eq!(breaker.state(), State::Open);
            let want = d.min(max_open);
            if want < Duration::from_secs(1) {
                return; // the real clock may be past so short a wait already
            }
            let refused = breaker.try_acquire().expect_err("a tripped breaker refuses");
            let left = refused.retry_after().expect("an open breaker knows its deadline");
            assert!(left <= want, "{left:?} > {want:?}");
            // The clock runs (no runtime here): allow a second, and the ~584-year horizon.
            let horizon = Duration::from_nanos(u64::MAX / 2);
            assert!(
                left + Duration::from_secs(1) >= want.min(horizon),
                "{left:?} << {want:?}"
            );
            let _ = refused.to_string();
        }
        Outcome::Failure => assert_eq!(breaker.state(), State::Open),
        Outcome::Success | Outcome::Ignore => assert_eq!(breaker.state(), State::Closed),
        Outcome::Trip(_) => {} // a zero wait: open for nothing, or already half-open
    }
});
