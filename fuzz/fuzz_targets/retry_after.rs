//! `Retry-After` parsing on arbitrary bytes at an arbitrary "now", directly and through a
//! `HeaderValue` on a 429 (what a real response hands the classifier).
#![no_main]

use std::time::{Duration, SystemTime};

use arbitrary::Arbitrary;
use http::{HeaderMap, HeaderValue, StatusCode, header::RETRY_AFTER};
use libfuzzer_sys::fuzz_target;
use tower_breaker::{HttpClassifier, Outcome, classify::parse_retry_after};

/// 9999-12-31T23:59:59Z, the last date an HTTP-date can name.
const LAST_DATE_SECS: u64 = 253_402_300_799;

#[derive(Arbitrary, Debug)]
struct Input {
    /// Seconds from the Unix epoch; negative: before it.
    now_secs: i64,
    now_nanos: u32,
    value: Vec<u8>,
}

fuzz_target!(|input: Input| {
    let offset = Duration::new(input.now_secs.unsigned_abs(), input.now_nanos % 1_000_000_000);
    let now = if input.now_secs >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(offset)
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(offset)
    };
    let Some(now) = now else { return };
    let parsed = parse_retry_after(&input.value, now);

    // Delay-seconds: exactly the number, saturating.
    let text = std::str::from_utf8(&input.value).ok();
    let trimmed = text.map(|s| s.trim_matches([' ', '\t']));
    if let Some(t) = trimmed.filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit())) {
        let secs = t.parse::<u64>().unwrap_or(u64::MAX);
        assert_eq!(parsed, Some(Duration::from_secs(secs)), "{t:?}");
    } else if let Some(d) = parsed {
        // An HTTP-date: at most the distance from `now` to the last nameable date.
        let before_epoch = if input.now_secs < 0 {
            offset.as_secs() + 1
        } else {
            0
        };
        assert!(
            d.as_secs() <= LAST_DATE_SECS + before_epoch,
            "{d:?} from {:?}",
            String::from_utf8_lossy(&input.value)
        );
        assert!(trimmed.is_some(), "non-UTF-8 must not parse");
    }

    // Through a header on a 429: a usable (non-zero) wait trips for exactly that long,
    // anything else falls back to 429's row (a failure).
    if let Ok(value) = HeaderValue::from_bytes(&input.value) {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, value);
        let outcome =
            HttpClassifier::default().classify_status_at(StatusCode::TOO_MANY_REQUESTS, &headers, || now);
        match parsed {
            Some(d) if !d.is_zero() => assert_eq!(outcome, Outcome::Trip(d)),
            _ => assert_eq!(outcome, Outcome::Failure),
        }
    }
});
