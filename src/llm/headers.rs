//! The rate-limit headers LLM providers send, and the wait they ask for on a 429 or a 503.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use http::HeaderMap;
//! use tower_breaker::llm::{parse_go_duration, parse_rfc3339, server_wait};
//!
//! assert_eq!(parse_go_duration(b"6m0s"), Some(Duration::from_secs(360)));
//! assert_eq!(parse_go_duration(b"1h2m3.5s"), Some(Duration::from_millis(3_723_500)));
//!
//! let now = parse_rfc3339(b"2025-01-01T00:00:00Z").unwrap();
//! let mut headers = HeaderMap::new();
//! headers.insert("anthropic-ratelimit-tokens-remaining", "0".parse().unwrap());
//! headers.insert("anthropic-ratelimit-tokens-reset", "2025-01-01T00:00:42Z".parse().unwrap());
//! assert_eq!(server_wait(&headers, now), Some(Duration::from_secs(42)));
//! headers.insert("retry-after-ms", "1500".parse().unwrap()); // the most precise header wins
//! assert_eq!(server_wait(&headers, now), Some(Duration::from_millis(1500)));
//! ```
//!
//! Sources:
//! - `retry-after-ms`, then `retry-after` (seconds, fractions allowed, or an HTTP-date): the
//!   official SDKs' `_parse_retry_after_header` (openai-python and anthropic-sdk-python,
//!   `src/*/_base_client.py`). Azure OpenAI also sends `x-ms-retry-after-ms` (Azure's
//!   "Azure OpenAI quotas and limits" page).
//! - `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`: OpenAI's "Rate limits" guide
//!   (resets are Go durations such as `1s`, `6m0s`, `20ms`).
//! - `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}`:
//!   Anthropic's "Rate limits" page (resets are RFC 3339 instants).

use std::time::{Duration, SystemTime};

use http::HeaderMap;

use crate::classify::parse_retry_after;

/// The budgets whose reset counts as a wait when their `remaining` header is `0`:
/// `(remaining header, reset header, reset format)`.
const BUDGETS: [(&str, &str, ResetFormat); 6] = [
    (
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
        ResetFormat::GoDuration,
    ),
    (
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
        ResetFormat::GoDuration,
    ),
    (
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-requests-reset",
        ResetFormat::Rfc3339,
    ),
    (
        "anthropic-ratelimit-tokens-remaining",
        "anthropic-ratelimit-tokens-reset",
        ResetFormat::Rfc3339,
    ),
    (
        "anthropic-ratelimit-input-tokens-remaining",
        "anthropic-ratelimit-input-tokens-reset",
        ResetFormat::Rfc3339,
    ),
    (
        "anthropic-ratelimit-output-tokens-remaining",
        "anthropic-ratelimit-output-tokens-reset",
        ResetFormat::Rfc3339,
    ),
];

#[derive(Clone, Copy)]
enum ResetFormat {
    /// OpenAI: the time left, `6m0s`.
    GoDuration,
    /// Anthropic: the instant, `2025-01-01T00:00:42Z`.
    Rfc3339,
}

/// The wait a provider asks for, read from a response's headers, first usable one wins:
///
/// 1. `retry-after-ms` (OpenAI, Azure): milliseconds, fractions allowed;
/// 2. `x-ms-retry-after-ms` (Azure): the same;
/// 3. `Retry-After`: seconds or an HTTP-date ([`parse_retry_after`]), or fractional seconds
///    (which the official SDKs accept);
/// 4. the reset of the exhausted budget: among OpenAI's `x-ratelimit-reset-{requests,tokens}`
///    and Anthropic's `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-reset`,
///    those whose `remaining` header is `0`; with several, the latest (every exhausted budget
///    must have reset before a call can pass).
///
/// A header that is malformed, zero, or an instant not after `now` is skipped; `None` when no
/// header gives a wait. Huge values saturate (the breaker clamps a `Trip` to its
/// `max_open_duration`). Never panics.
///
/// This reads the headers of any response: call it for the statuses that mean "wait" (429,
/// 503). Reset headers come with successes too, where they are no wait at all (a daily budget's
/// reset can be hours away); [`LlmClassifier`](super::LlmClassifier) only reads them on its
/// wait statuses.
pub fn server_wait(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let nonzero = |d: Duration| (!d.is_zero()).then_some(d);
    for name in ["retry-after-ms", "x-ms-retry-after-ms"] {
        if let Some(d) = headers
            .get(name)
            .and_then(|v| parse_millis(v.as_bytes()))
            .and_then(nonzero)
        {
            return Some(d);
        }
    }
    if let Some(d) = headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| {
            let v = v.as_bytes();
            parse_retry_after(v, now).or_else(|| parse_decimal(v, NANOS_PER_SEC))
        })
        .and_then(nonzero)
    {
        return Some(d);
    }
    exhausted_budget_reset(headers, now)
}

/// The latest reset among the budgets whose `remaining` header is `0` (step 4 of
/// [`server_wait`]).
fn exhausted_budget_reset(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let mut wait: Option<Duration> = None;
    for (remaining, reset, format) in BUDGETS {
        let exhausted = headers
            .get(remaining)
            .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
            .and_then(|s| s.trim_matches([' ', '\t']).parse::<u64>().ok())
            == Some(0);
        if !exhausted {
            continue;
        }
        let Some(value) = headers.get(reset) else { continue };
        let d = match format {
            ResetFormat::GoDuration => parse_go_duration(value.as_bytes()),
            ResetFormat::Rfc3339 => {
                parse_rfc3339(value.as_bytes()).and_then(|at| at.duration_since(now).ok())
            }
        };
        if let Some(d) = d.filter(|d| !d.is_zero()) {
            wait = Some(wait.map_or(d, |w| w.max(d)));
        }
    }
    wait
}

const NANOS_PER_SEC: u128 = 1_000_000_000;
const NANOS_PER_MILLI: u128 = 1_000_000;

/// Milliseconds, maybe with a fraction (`1500`, `20.5`), surrounding spaces allowed.
fn parse_millis(value: &[u8]) -> Option<Duration> {
    parse_decimal(value, NANOS_PER_MILLI)
}

/// A non-negative decimal number (`12`, `0.5`, `3.`; no sign, no exponent) of `unit_nanos`
/// each, surrounding spaces and tabs allowed; saturates. Precision past a nanosecond is
/// dropped.
fn parse_decimal(value: &[u8], unit_nanos: u128) -> Option<Duration> {
    let s = trim(value);
    let (nanos, rest) = decimal_nanos(s, unit_nanos)?;
    rest.is_empty().then(|| nanos_to_duration(nanos))
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Reads `digits [. digits]` (at least one digit in all) at the start of `s`, times
/// `unit_nanos`, saturating; returns the nanoseconds and the rest of `s`.
fn decimal_nanos(s: &[u8], unit_nanos: u128) -> Option<(u128, &[u8])> {
    let int_len = s.iter().take_while(|b| b.is_ascii_digit()).count();
    let (int, rest) = s.split_at(int_len);
    let (frac, rest) = match rest {
        [b'.', after @ ..] => {
            let n = after.iter().take_while(|b| b.is_ascii_digit()).count();
            after.split_at(n)
        }
        _ => (&[][..], rest),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let mut nanos: u128 = 0;
    for &d in int {
        nanos = nanos
            .saturating_mul(10)
            .saturating_add(u128::from(d - b'0') * unit_nanos);
    }
    // The fraction: digit i (from 1) is worth unit / 10^i; past a nanosecond it is dropped.
    let mut scale = unit_nanos;
    for &d in frac {
        scale /= 10;
        if scale == 0 {
            break;
        }
        nanos = nanos.saturating_add(u128::from(d - b'0') * scale);
    }
    Some((nanos, rest))
}

fn nanos_to_duration(nanos: u128) -> Duration {
    let secs = nanos / NANOS_PER_SEC;
    match u64::try_from(secs) {
        Ok(secs) => Duration::new(secs, (nanos % NANOS_PER_SEC) as u32),
        Err(_) => Duration::MAX,
    }
}

/// Parses a Go duration as Go's `time.Duration.String()` writes it and OpenAI sends it in
/// `x-ratelimit-reset-*`: a sequence of decimal numbers, each with a unit (`ns`, `us`, `µs`,
/// `μs`, `ms`, `s`, `m`, `h`), such as `1s`, `6m0s`, `20ms`, `1h2m3.5s`; a bare `0` is zero.
///
/// A sign (Go accepts `+` and `-`), a missing or unknown unit, spaces inside, or anything else
/// is `None`; surrounding spaces are allowed. Huge values saturate. Never panics.
pub fn parse_go_duration(value: &[u8]) -> Option<Duration> {
    let mut s = trim(value);
    if s == b"0" {
        return Some(Duration::ZERO);
    }
    if s.is_empty() {
        return None;
    }
    let mut total: u128 = 0;
    while !s.is_empty() {
        let number_len = s.iter().take_while(|b| b.is_ascii_digit() || **b == b'.').count();
        let (number, rest) = s.split_at(number_len);
        let (unit, unit_len) = go_unit(rest)?;
        let (nanos, left) = decimal_nanos(number, unit)?;
        if !left.is_empty() {
            return None; // `1..5s`
        }
        total = total.saturating_add(nanos);
        s = &rest[unit_len..];
    }
    Some(nanos_to_duration(total))
}

/// The unit at the start of `s` and its length in bytes.
fn go_unit(s: &[u8]) -> Option<(u128, usize)> {
    Some(match s {
        [b'n', b's', ..] => (1, 2),
        [b'u', b's', ..] => (1_000, 2),
        [0xC2, 0xB5, b's', ..] | [0xCE, 0xBC, b's', ..] => (1_000, 3), // µ (U+00B5), μ (U+03BC)
        [b'm', b's', ..] => (NANOS_PER_MILLI, 2),
        [b's', ..] => (NANOS_PER_SEC, 1),
        [b'm', ..] => (60 * NANOS_PER_SEC, 1),
        [b'h', ..] => (3_600 * NANOS_PER_SEC, 1),
        _ => return None,
    })
}

/// Parses an RFC 3339 date-time (as Anthropic sends in `anthropic-ratelimit-*-reset`):
/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`, `T` and `Z` in either case, surrounding spaces
/// allowed. Every field is range-checked (February 29 only in leap years; a leap second `:60`
/// is read as the next second); fractions past a nanosecond are dropped.
///
/// Anything else is `None`; never panics. (A small exact parser rather than `time`, `chrono` or
/// `jiff`: the format is fixed, and this is all the crate needs of a date library.)
pub fn parse_rfc3339(value: &[u8]) -> Option<SystemTime> {
    let s = trim(value);
    let num = |range: std::ops::Range<usize>| -> Option<u32> {
        let digits = s.get(range)?;
        digits.iter().try_fold(0u32, |n, &b| {
            b.is_ascii_digit().then(|| n * 10 + u32::from(b - b'0'))
        })
    };
    let sep = |i: usize, ok: &[u8]| s.get(i).is_some_and(|b| ok.contains(b));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &s[19..];
    let mut nanos: u32 = 0;
    if let [b'.', after @ ..] = rest {
        let n = after.iter().take_while(|b| b.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        let mut scale = 100_000_000;
        for &d in &after[..n] {
            nanos += u32::from(d - b'0') * scale;
            scale /= 10;
        }
        rest = &after[n..];
    }
    let offset_secs: i64 = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let two = |a: u8, b: u8| {
                (a.is_ascii_digit() && b.is_ascii_digit()).then(|| i64::from((a - b'0') * 10 + (b - b'0')))
            };
            let (h, m) = (two(*h1, *h2)?, two(*m1, *m2)?);
            if h > 23 || m > 59 {
                return None;
            }
            let secs = h * 3600 + m * 60;
            if *sign == b'-' { -secs } else { secs }
        }
        _ => return None,
    };
    let days = days_from_civil(i64::from(year), month, day);
    let unix = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second) - offset_secs;
    let at = Duration::new(unix.unsigned_abs(), 0);
    let base = if unix >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(at)?
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(at)?
    };
    base.checked_add(Duration::from_nanos(u64::from(nanos)))
}

const fn is_leap(year: u32) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

const fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
const fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = month as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use http::HeaderValue;

    const MS: Duration = Duration::from_millis(1);
    const S: Duration = Duration::from_secs(1);

    /// 2025-01-01T00:00:00Z
    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_735_689_600)
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_static(k),
                    HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn go_durations_as_openai_sends_them() {
        for (text, want) in [
            ("1s", S),
            ("6m0s", 360 * S),
            ("20ms", 20 * MS),
            ("1h2m3.5s", Duration::from_millis(3_723_500)),
            ("0s", Duration::ZERO),
            ("0", Duration::ZERO),
            ("59.999s", Duration::from_millis(59_999)),
            ("1.5h", 5400 * S),
            ("100ns", Duration::from_nanos(100)),
            ("3us", Duration::from_micros(3)),
            ("3µs", Duration::from_micros(3)),
            ("3μs", Duration::from_micros(3)),
            ("1.0000000001s", S), // past a nanosecond: dropped
            (" 2s\t", 2 * S),
            ("1m1m", 120 * S), // Go accepts repeated units
            (".5s", 500 * MS),
            ("5.s", 5 * S),
        ] {
            assert_eq!(parse_go_duration(text.as_bytes()), Some(want), "{text:?}");
        }
    }

    #[test]
    fn malformed_go_durations_are_none() {
        for bad in [
            "", " ", "1", "12", "-1s", "+1s", "1 s", "1x", "s", "1..5s", ".s", "1S", "1sec", "1e3s", "ms",
            "1m s", "abc", "1d", "\u{b5}s",
        ] {
            assert_eq!(parse_go_duration(bad.as_bytes()), None, "{bad:?}");
        }
        assert_eq!(parse_go_duration(b"\xff"), None);
    }

    #[test]
    fn huge_go_durations_saturate() {
        assert_eq!(
            parse_go_duration(b"99999999999999999999999h"),
            Some(Duration::MAX)
        );
        let many = "9".repeat(200) + "s";
        assert_eq!(parse_go_duration(many.as_bytes()), Some(Duration::MAX));
        let sum = "5000000000000000000s".repeat(5);
        assert_eq!(parse_go_duration(sum.as_bytes()), Some(Duration::MAX));
    }

    #[test]
    fn rfc3339_instants() {
        let at = |s: &str| parse_rfc3339(s.as_bytes());
        assert_eq!(at("2025-01-01T00:00:00Z"), Some(now()));
        assert_eq!(at("2025-01-01t00:00:00z"), Some(now()));
        assert_eq!(at("2025-01-01T00:00:42Z"), Some(now() + 42 * S));
        assert_eq!(at("2025-01-01T00:00:00.25Z"), Some(now() + 250 * MS));
        assert_eq!(at("2025-01-01T01:00:00+01:00"), Some(now()));
        assert_eq!(at("2024-12-31T23:00:00-01:00"), Some(now()));
        assert_eq!(at("1970-01-01T00:00:00Z"), Some(SystemTime::UNIX_EPOCH));
        assert_eq!(at("1969-12-31T23:59:59Z"), SystemTime::UNIX_EPOCH.checked_sub(S));
        assert!(at("2024-02-29T00:00:00Z").is_some()); // leap year
        assert!(at("2000-02-29T00:00:00Z").is_some()); // divisible by 400
        assert_eq!(at("2024-12-31T23:59:60Z"), Some(now())); // a leap second
        assert_eq!(
            at("2025-01-01T00:00:00.123456789123Z"),
            Some(now() + Duration::from_nanos(123_456_789))
        );
        assert!(at("9999-12-31T23:59:59Z").is_some());
        assert!(at("0000-01-01T00:00:00Z").is_some());
    }

    #[test]
    fn malformed_rfc3339_is_none() {
        for bad in [
            "",
            "2025-01-01",
            "2025-01-01T00:00:00",  // no offset
            "2025-01-01 00:00:00Z", // a space: not RFC 3339's `T`
            "2025-13-01T00:00:00Z",
            "2025-00-01T00:00:00Z",
            "2025-01-32T00:00:00Z",
            "2025-02-29T00:00:00Z", // not a leap year
            "1900-02-29T00:00:00Z", // divisible by 100
            "2025-01-01T24:00:00Z",
            "2025-01-01T00:60:00Z",
            "2025-01-01T00:00:61Z",
            "2025-01-01T00:00:00.Z",
            "2025-01-01T00:00:00+24:00",
            "2025-01-01T00:00:00+01:60",
            "2025-01-01T00:00:00+0100",
            "2025-01-01T00:00:00ZZ",
            "+2025-01-01T00:00:00Z",
            "2025-1-01T00:00:00Z",
            "Wed, 01 Jan 2025 00:00:00 GMT",
            "1735689600",
        ] {
            assert_eq!(parse_rfc3339(bad.as_bytes()), None, "{bad:?}");
        }
        assert_eq!(parse_rfc3339("2025-01-01T00:00:00\u{ff10}Z".as_bytes()), None);
    }

    #[test]
    fn precedence_of_the_wait_headers() {
        let all = [
            ("retry-after-ms", "1500"),
            ("x-ms-retry-after-ms", "2500"),
            ("retry-after", "3"),
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "4s"),
        ];
        let wait = |skip: usize| server_wait(&headers(&all[skip..]), now());
        assert_eq!(wait(0), Some(1500 * MS));
        assert_eq!(wait(1), Some(2500 * MS));
        assert_eq!(wait(2), Some(3 * S));
        assert_eq!(wait(3), Some(4 * S));
        assert_eq!(wait(5), None);
    }

    #[test]
    fn a_malformed_or_zero_header_gives_way_to_the_next() {
        let h = headers(&[
            ("retry-after-ms", "soon"),
            ("x-ms-retry-after-ms", "0"),
            ("retry-after", "-1"),
            ("anthropic-ratelimit-tokens-remaining", "0"),
            ("anthropic-ratelimit-tokens-reset", "2025-01-01T00:00:07Z"),
        ]);
        assert_eq!(server_wait(&h, now()), Some(7 * S));
    }

    #[test]
    fn retry_after_forms() {
        let wait = |v: &str| server_wait(&headers(&[("retry-after", v)]), now());
        assert_eq!(wait("20"), Some(20 * S));
        assert_eq!(wait("1.5"), Some(1500 * MS)); // the SDKs accept fractions
        assert_eq!(wait("Wed, 01 Jan 2025 00:01:00 GMT"), Some(60 * S));
        assert_eq!(wait("Tue, 31 Dec 2024 00:01:00 GMT"), None); // in the past
        assert_eq!(wait("0"), None);
        let ms = |v: &str| server_wait(&headers(&[("retry-after-ms", v)]), now());
        assert_eq!(ms("20.5"), Some(Duration::from_micros(20_500)));
        assert_eq!(ms(" 7 "), Some(7 * MS));
        assert_eq!(ms("1e3"), None);
        assert_eq!(ms("99999999999999999999999999999"), Some(Duration::MAX));
    }

    #[test]
    fn only_exhausted_budgets_count_and_the_latest_reset_wins() {
        // Tokens exhausted, requests not: the tokens' reset.
        let h = headers(&[
            ("x-ratelimit-remaining-requests", "12"),
            ("x-ratelimit-reset-requests", "1s"),
            ("x-ratelimit-remaining-tokens", "0"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ]);
        assert_eq!(server_wait(&h, now()), Some(360 * S));
        // Both exhausted: the later one.
        let h = headers(&[
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", "2025-01-01T00:00:30Z"),
            ("anthropic-ratelimit-input-tokens-remaining", "0"),
            ("anthropic-ratelimit-input-tokens-reset", "2025-01-01T00:00:45Z"),
            ("anthropic-ratelimit-output-tokens-remaining", "5"),
            ("anthropic-ratelimit-output-tokens-reset", "2025-01-01T02:00:00Z"),
        ]);
        assert_eq!(server_wait(&h, now()), Some(45 * S));
        // None exhausted: resets are no wait.
        let h = headers(&[
            ("x-ratelimit-remaining-requests", "1"),
            ("x-ratelimit-reset-requests", "1s"),
            ("anthropic-ratelimit-tokens-remaining", "100"),
            ("anthropic-ratelimit-tokens-reset", "2025-01-01T00:00:30Z"),
        ]);
        assert_eq!(server_wait(&h, now()), None);
        // A malformed remaining is not zero; a reset in the past is no wait.
        let h = headers(&[
            ("x-ratelimit-remaining-requests", "zero"),
            ("x-ratelimit-reset-requests", "1s"),
            ("anthropic-ratelimit-tokens-remaining", "0"),
            ("anthropic-ratelimit-tokens-reset", "2024-12-31T23:59:00Z"),
        ]);
        assert_eq!(server_wait(&h, now()), None);
    }
}
