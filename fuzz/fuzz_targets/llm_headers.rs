//! The `llm` header parsers: `parse_go_duration` and `parse_rfc3339` on arbitrary bytes and on
//! well-formed values built from structured input (a round trip against a plain model: Go's
//! `Duration.String()` and a day count written independently), and `server_wait`'s precedence
//! on headers that are well-formed (checked against a model) or raw bytes (no panic, no zero
//! wait); then `LlmClassifier` on a 429, a 503 and a 200 with those headers.
#![no_main]

use std::time::{Duration, SystemTime};

use arbitrary::Arbitrary;
use http::{Extensions, HeaderMap, HeaderName, HeaderValue, StatusCode};
use libfuzzer_sys::fuzz_target;
use tower_breaker::{
    Outcome,
    llm::{LlmClassifier, parse_go_duration, parse_rfc3339, server_wait},
};

#[derive(Arbitrary, Debug)]
struct Civil {
    year: u16,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
    /// Fraction digits (0: none), at most 12.
    frac_digits: u8,
    frac: u64,
    /// Minutes east of UTC, `None` for `Z`.
    offset: Option<i16>,
    lower_case: bool,
}

#[derive(Arbitrary, Debug)]
enum Value<T> {
    Good(T),
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Budget<R> {
    remaining: Option<Value<u32>>,
    reset: Option<Value<R>>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    go_raw: Vec<u8>,
    rfc_raw: Vec<u8>,
    go_nanos: u64,
    micro_sign: u8,
    civil: Civil,
    now_secs: u32,
    retry_after_ms: Option<Value<u32>>,
    x_ms_retry_after_ms: Option<Value<u32>>,
    retry_after: Option<Value<u32>>,
    openai: [Budget<u64>; 2],
    anthropic: [Budget<Civil>; 4],
}

const OPENAI: [(&str, &str); 2] = [
    ("x-ratelimit-remaining-requests", "x-ratelimit-reset-requests"),
    ("x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"),
];
const ANTHROPIC: [(&str, &str); 4] = [
    ("anthropic-ratelimit-requests-remaining", "anthropic-ratelimit-requests-reset"),
    ("anthropic-ratelimit-tokens-remaining", "anthropic-ratelimit-tokens-reset"),
    ("anthropic-ratelimit-input-tokens-remaining", "anthropic-ratelimit-input-tokens-reset"),
    ("anthropic-ratelimit-output-tokens-remaining", "anthropic-ratelimit-output-tokens-reset"),
];

/// Go's `time.Duration.String()` for `0 <= nanos < 2^63`, with a choice of micro sign.
fn go_format(nanos: u64, micro: u8) -> String {
    fn frac(whole: u64, rest: u64, digits: usize) -> String {
        let f = format!("{rest:0digits$}");
        let f = f.trim_end_matches('0');
        if f.is_empty() { whole.to_string() } else { format!("{whole}.{f}") }
    }
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        let mu = ["µs", "μs", "us"][usize::from(micro % 3)];
        return format!("{}{mu}", frac(nanos / 1_000, nanos % 1_000, 3));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", frac(nanos / 1_000_000, nanos % 1_000_000, 6));
    }
    let (h, m) = (nanos / 3_600_000_000_000, nanos / 60_000_000_000 % 60);
    let s = frac(nanos / 1_000_000_000 % 60, nanos % 1_000_000_000, 9);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, m) => format!("{m}m{s}s"),
        (h, m) => format!("{h}h{m}m{s}s"),
    }
}

fn leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

fn month_len(y: i64, m: u8) -> u8 {
    [31, if leap(y) { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][usize::from(m - 1)]
}

/// Days from 0000-01-01 to `y`-01-01, by counting leap years (not the parser's algorithm).
fn days_to_year(y: i64) -> i64 {
    let leaps = if y > 0 { (y - 1) / 4 - (y - 1) / 100 + (y - 1) / 400 + 1 } else { 0 };
    365 * y + leaps
}

/// A valid instant from `c` (fields folded into range), its RFC 3339 text and its time.
fn civil(c: &Civil) -> (String, Option<SystemTime>) {
    let y = i64::from(c.year % 10_000);
    let m = c.month % 12 + 1;
    let d = c.day % month_len(y, m) + 1;
    let (hh, mm, ss) = (c.hour % 24, c.minute % 60, c.second % 61);
    let digits = usize::from(c.frac_digits % 13);
    let frac_value = c.frac % 10u64.pow(digits as u32);
    let mut text = format!(
        "{y:04}-{m:02}-{d:02}{}{hh:02}:{mm:02}:{ss:02}",
        if c.lower_case { 't' } else { 'T' }
    );
    if digits > 0 {
        text += &format!(".{frac_value:0digits$}");
    }
    let offset_min = c.offset.map_or(0, |o| i64::from(o) % (24 * 60));
    match c.offset {
        None => text.push(if c.lower_case { 'z' } else { 'Z' }),
        Some(_) => {
            let sign = if offset_min < 0 { '-' } else { '+' };
            let a = offset_min.abs();
            text += &format!("{sign}{:02}:{:02}", a / 60, a % 60);
        }
    }
    let day_of_year: i64 = (1..m).map(|mo| i64::from(month_len(y, mo))).sum::<i64>() + i64::from(d) - 1;
    let days = days_to_year(y) - days_to_year(1970) + day_of_year;
    let unix = days * 86_400 + i64::from(hh) * 3600 + i64::from(mm) * 60 + i64::from(ss) - offset_min * 60;
    // Nanoseconds: the first 9 fraction digits.
    let nanos = if digits <= 9 {
        frac_value * 10u64.pow(9 - digits as u32)
    } else {
        frac_value / 10u64.pow(digits as u32 - 9)
    };
    let base = if unix >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(unix as u64))
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(Duration::from_secs(unix.unsigned_abs()))
    };
    (text, base.and_then(|b| b.checked_add(Duration::from_nanos(nanos))))
}

/// Puts a header; its model value when well-formed, `Err(())` for raw bytes.
fn put<T>(
    headers: &mut HeaderMap,
    name: &'static str,
    value: &Option<Value<T>>,
    good: impl FnOnce(&T) -> (String, Option<Duration>),
) -> Result<Option<Duration>, ()> {
    let name = HeaderName::from_static(name);
    match value {
        None => Ok(None),
        Some(Value::Good(v)) => {
            let (text, model) = good(v);
            headers.insert(name, HeaderValue::from_str(&text).unwrap());
            Ok(model)
        }
        Some(Value::Raw(raw)) => {
            if let Ok(v) = HeaderValue::from_bytes(raw) {
                headers.insert(name, v);
                return Err(());
            }
            Ok(None)
        }
    }
}

fuzz_target!(|input: Input| {
    // Arbitrary bytes: no panic; only the alphabet parses.
    if parse_go_duration(&input.go_raw).is_some() {
        let t = std::str::from_utf8(&input.go_raw).expect("only UTF-8 parses");
        let t = t.trim_matches([' ', '\t']);
        assert!(
            t.chars().all(|c| c.is_ascii_digit() || ".nsuµμmh".contains(c)),
            "{t:?}"
        );
    }
    if parse_rfc3339(&input.rfc_raw).is_some() {
        let t = std::str::from_utf8(&input.rfc_raw).expect("only UTF-8 parses");
        assert!(t.trim_matches([' ', '\t']).len() >= 20, "{t:?}");
    }

    // Round trips.
    let nanos = input.go_nanos >> 1; // < 2^63, as Go's durations
    let text = go_format(nanos, input.micro_sign);
    assert_eq!(parse_go_duration(text.as_bytes()), Some(Duration::from_nanos(nanos)), "{text}");
    let (text, at) = civil(&input.civil);
    assert_eq!(parse_rfc3339(text.as_bytes()), at, "{text}");

    // `server_wait`'s precedence against the model.
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(input.now_secs));
    let mut headers = HeaderMap::new();
    let ms = |v: &u32| (v.to_string(), Some(Duration::from_millis(u64::from(*v))));
    let secs = |v: &u32| (v.to_string(), Some(Duration::from_secs(u64::from(*v))));
    let mut steps = vec![
        put(&mut headers, "retry-after-ms", &input.retry_after_ms, ms),
        put(&mut headers, "x-ms-retry-after-ms", &input.x_ms_retry_after_ms, ms),
        put(&mut headers, "retry-after", &input.retry_after, secs),
    ];
    let mut resets: Vec<Result<Option<Duration>, ()>> = Vec::new();
    for ((remaining, reset), budget) in OPENAI.iter().zip(&input.openai) {
        let left = put(&mut headers, remaining, &budget.remaining, |v| (v.to_string(), Some(Duration::from_secs(u64::from(*v)))));
        let wait = put(&mut headers, reset, &budget.reset, |n| {
            let n = n >> 1;
            (go_format(n, 0), Some(Duration::from_nanos(n)))
        });
        resets.push(match (left, wait) {
            (Ok(Some(left)), Ok(w)) => Ok(if left.is_zero() { w } else { None }),
            (Ok(None), Ok(_)) => Ok(None),
            _ => Err(()),
        });
    }
    for ((remaining, reset), budget) in ANTHROPIC.iter().zip(&input.anthropic) {
        let left = put(&mut headers, remaining, &budget.remaining, |v| (v.to_string(), Some(Duration::from_secs(u64::from(*v)))));
        let wait = put(&mut headers, reset, &budget.reset, |c| {
            let (text, at) = civil(c);
            (text, at.and_then(|at| at.duration_since(now).ok()))
        });
        resets.push(match (left, wait) {
            (Ok(Some(left)), Ok(w)) => Ok(if left.is_zero() { w } else { None }),
            (Ok(None), Ok(_)) => Ok(None),
            _ => Err(()),
        });
    }
    let wait = server_wait(&headers, now);
    assert_ne!(wait, Some(Duration::ZERO));
    // The first non-zero of the three wait headers, else the latest exhausted reset; the
    // model is silent once a raw value comes before the answer.
    let nonzero = |d: &Option<Duration>| d.filter(|d| !d.is_zero());
    steps.push(if resets.iter().any(Result::is_err) {
        Err(())
    } else {
        Ok(resets.iter().filter_map(|r| nonzero(r.as_ref().unwrap())).max())
    });
    let mut model = Some(None);
    for step in steps {
        match step {
            Err(()) => {
                model = None;
                break;
            }
            Ok(d) => {
                if let Some(d) = nonzero(&d) {
                    model = Some(Some(d));
                    break;
                }
            }
        }
    }
    if let Some(model) = model {
        assert_eq!(wait, model, "{headers:?}");
    }

    // The classifier: a wait trips a 429 or a 503, never a 200.
    let c = LlmClassifier::new();
    let ext = Extensions::new();
    for (status, otherwise) in [
        (StatusCode::TOO_MANY_REQUESTS, Outcome::Failure),
        (StatusCode::SERVICE_UNAVAILABLE, Outcome::Failure),
    ] {
        let want = wait.map_or(otherwise, Outcome::Trip);
        assert_eq!(c.classify_parts_at(status, &headers, &ext, || now), want);
    }
    assert_eq!(c.classify_parts_at(StatusCode::OK, &headers, &ext, || now), Outcome::Success);
});
