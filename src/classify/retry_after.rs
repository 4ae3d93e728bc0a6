//! `Retry-After` parsing (RFC 9110 §10.2.3): delay-seconds or an HTTP-date.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use tower_breaker::classify::parse_retry_after;
//!
//! let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480); // Wed, 21 Oct 2015 07:28:00 GMT
//! assert_eq!(parse_retry_after(b"120", now), Some(Duration::from_secs(120)));
//! assert_eq!(
//!     parse_retry_after(b"Wed, 21 Oct 2015 07:29:00 GMT", now),
//!     Some(Duration::from_secs(60)),
//! );
//! assert_eq!(parse_retry_after(b"soon", now), None);
//! ```

use std::time::{Duration, SystemTime};

/// Parses a `Retry-After` value, relative to `now` for the HTTP-date form.
///
/// - delay-seconds (`1*DIGIT`, surrounding spaces allowed): that many seconds; a number too
///   large for `u64` saturates to `u64::MAX` seconds (the breaker clamps it to its
///   `max_open_duration`).
/// - HTTP-date (IMF-fixdate, and the obsolete RFC 850 and asctime forms, via `httpdate`): the
///   time from `now` until that date; a date in the past gives [`Duration::ZERO`].
/// - anything else (a sign, a fraction, garbage, non-UTF-8, empty): `None`.
///
/// Never panics.
pub fn parse_retry_after(value: &[u8], now: SystemTime) -> Option<Duration> {
    let s = std::str::from_utf8(value).ok()?.trim_matches([' ', '\t']);
    if s.is_empty() {
        return None;
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        // Only digits: `parse` can fail only by overflow, which saturates.
        return Some(Duration::from_secs(s.parse::<u64>().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(s).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// Wed, 21 Oct 2015 07:28:00 GMT
    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480)
    }

    #[test]
    fn delay_seconds() {
        assert_eq!(parse_retry_after(b"0", now()), Some(Duration::ZERO));
        assert_eq!(parse_retry_after(b"7", now()), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(b"  30\t", now()), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after(b"007", now()), Some(Duration::from_secs(7)));
    }

    #[test]
    fn huge_delay_saturates() {
        let max = Some(Duration::from_secs(u64::MAX));
        assert_eq!(parse_retry_after(b"18446744073709551615", now()), max);
        assert_eq!(parse_retry_after(b"18446744073709551616", now()), max);
        assert_eq!(parse_retry_after(&[b'9'; 400], now()), max);
    }

    #[test]
    fn http_date_forms() {
        let minute = Some(Duration::from_secs(60));
        assert_eq!(parse_retry_after(b"Wed, 21 Oct 2015 07:29:00 GMT", now()), minute);
        // obsolete RFC 850 and asctime forms
        assert_eq!(
            parse_retry_after(b"Wednesday, 21-Oct-15 07:29:00 GMT", now()),
            minute
        );
        assert_eq!(parse_retry_after(b"Wed Oct 21 07:29:00 2015", now()), minute);
    }

    #[test]
    fn past_or_present_date_is_zero() {
        let zero = Some(Duration::ZERO);
        assert_eq!(parse_retry_after(b"Wed, 21 Oct 2015 07:28:00 GMT", now()), zero);
        assert_eq!(parse_retry_after(b"Thu, 01 Jan 1970 00:00:00 GMT", now()), zero);
    }

    #[test]
    fn far_future_date() {
        let d = parse_retry_after(b"Fri, 31 Dec 9999 23:59:59 GMT", now()).unwrap();
        assert!(d > Duration::from_secs(250_000_000_000));
    }

    #[test]
    fn malformed_is_none() {
        for bad in [
            &b""[..],
            b"   ",
            b"-1",
            b"+5",
            b"1.5",
            b"5s",
            b"1e3",
            b"soon",
            b"Wed, 21 Oct 2015 25:61:00 GMT",
            b"Wed, 32 Oct 2015 07:29:00 GMT",
            b"21 Oct 2015",
            b"\xff\xfe",
            b"\xd9\xa3", // an Arabic-Indic digit: not ASCII
        ] {
            assert_eq!(
                parse_retry_after(bad, now()),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
