//! Issue 13: a rate equal to its threshold trips. The rule, pinned: trip iff
//! `bad as f64 / calls as f64 >= threshold`, the quotient `snapshot()` reports, for the failure
//! rate and the slow-call rate, over count and time windows. Every threshold `k/n` (written as
//! the decimal `f64` of that ratio) with `n` up to 100: `k` of `n` trip, `k - 1` of `n` do not.
//! All timing under paused tokio time.

use std::time::Duration;

use tokio::time::advance;
use tower_breaker::{Builder, CircuitBreaker, Outcome, State};

const SLOW: Duration = Duration::from_millis(100);

/// The decimal `f64` of `k/n`: long division to 40 digits, parsed (not `k as f64 / n as f64`,
/// so that the threshold comes from the decimal a user writes, not from the crate's formula).
fn decimal(k: u32, n: u32) -> f64 {
    let mut s = format!("{}.", k / n);
    let mut r = k % n;
    for _ in 0..40 {
        r *= 10;
        s.push(char::from(b'0' + (r / n) as u8));
        r %= n;
    }
    s.parse().unwrap()
}

#[derive(Clone, Copy, Debug)]
enum Rule {
    FailureRate,
    SlowRate,
}

#[derive(Clone, Copy, Debug)]
enum Win {
    Count,
    Time,
}

fn builder(rule: Rule, win: Win, threshold: f64, n: u32) -> Builder {
    let b = CircuitBreaker::builder("rate").min_calls(n);
    let b = match rule {
        Rule::FailureRate => b.failure_rate(threshold),
        Rule::SlowRate => b.slow_calls(SLOW, threshold),
    };
    match win {
        Win::Count => b.count_window(n),
        Win::Time => b.time_window(Duration::from_secs(3600)),
    }
}

/// `n` calls of which `bad` are failures (or slow successes), good ones first; whether the
/// breaker opened. Before the `n`-th call it must be closed (`min_calls` is `n`). Checks that
/// the breaker agrees with its own snapshot's rate.
async fn opens(rule: Rule, win: Win, threshold: f64, n: u32, bad: u32) -> bool {
    let b = builder(rule, win, threshold, n).build().unwrap();
    for _ in 0..n - bad {
        b.try_acquire().unwrap().record(Outcome::Success);
    }
    let permits: Vec<_> = (0..bad).map(|_| b.try_acquire().unwrap()).collect();
    if let Rule::SlowRate = rule {
        advance(SLOW + Duration::from_nanos(1)).await;
    }
    for (i, p) in permits.into_iter().enumerate() {
        assert_eq!(
            b.state(),
            State::Closed,
            "{rule:?} {win:?} {threshold} {bad}/{n}: early at {i}"
        );
        p.record(match rule {
            Rule::FailureRate => Outcome::Failure,
            Rule::SlowRate => Outcome::Success,
        });
    }
    let open = b.state() == State::Open;
    if !open {
        let s = b.snapshot();
        assert_eq!(s.calls, n);
        let rate = match rule {
            Rule::FailureRate => s.failure_rate,
            Rule::SlowRate => s.slow_call_rate,
        };
        assert!(
            rate.unwrap() < threshold,
            "{rule:?} {win:?}: closed although its snapshot's rate {rate:?} >= {threshold}"
        );
    }
    open
}

const ALL: [(Rule, Win); 4] = [
    (Rule::FailureRate, Win::Count),
    (Rule::FailureRate, Win::Time),
    (Rule::SlowRate, Win::Count),
    (Rule::SlowRate, Win::Time),
];

#[test]
fn decimal_is_the_nearest_f64_to_the_ratio() {
    assert_eq!(decimal(7, 100), 0.07);
    assert_eq!(decimal(1, 3), 0.333_333_333_333_333_3);
    assert_eq!(decimal(14, 25), 0.56);
    assert_eq!(decimal(5, 5), 1.0);
}

#[tokio::test(start_paused = true)]
async fn the_thresholds_of_issue_13_trip_at_equality() {
    // (threshold, failures, calls), from the issue: each trips at exactly this count.
    let cases = [
        (0.07, 7, 100),
        (0.14, 7, 50),
        (0.28, 7, 25),
        (0.55, 55, 100),
        (0.56, 14, 25),
        (0.1, 1, 10),
        (0.33, 1, 3),
    ];
    for (rule, win) in ALL {
        for (t, k, n) in cases {
            assert!(
                opens(rule, win, t, n, k).await,
                "{rule:?} {win:?}: {k} of {n} at {t} must trip"
            );
            assert!(
                !opens(rule, win, t, n, k - 1).await,
                "{rule:?} {win:?}: {} of {n} at {t} must not trip",
                k - 1
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_rate_of_7_in_100_trips_on_the_7th_failure_as_its_snapshot_says() {
    let b = CircuitBreaker::builder("r")
        .failure_rate(0.07)
        .count_window(100)
        .min_calls(100)
        .build()
        .unwrap();
    for _ in 0..93 {
        b.try_acquire().unwrap().record(Outcome::Success);
    }
    for _ in 0..6 {
        b.try_acquire().unwrap().record(Outcome::Failure);
    }
    assert_eq!(b.state(), State::Closed);
    b.try_acquire().unwrap().record(Outcome::Failure);
    assert_eq!(b.state(), State::Open, "7 of 100 is 0.07");
}

async fn every_k_of_n(rule: Rule, win: Win) {
    for n in 1..=100 {
        for k in 1..=n {
            let t = decimal(k, n);
            assert!(
                opens(rule, win, t, n, k).await,
                "{rule:?} {win:?}: {k} of {n} at {t} must trip"
            );
            assert!(
                !opens(rule, win, t, n, k - 1).await,
                "{rule:?} {win:?}: {} of {n} at {t} must not trip",
                k - 1
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn every_k_of_n_up_to_100_failure_rate_count_window() {
    every_k_of_n(Rule::FailureRate, Win::Count).await;
}

#[tokio::test(start_paused = true)]
async fn every_k_of_n_up_to_100_failure_rate_time_window() {
    every_k_of_n(Rule::FailureRate, Win::Time).await;
}

#[tokio::test(start_paused = true)]
async fn every_k_of_n_up_to_100_slow_rate_count_window() {
    every_k_of_n(Rule::SlowRate, Win::Count).await;
}

#[tokio::test(start_paused = true)]
async fn every_k_of_n_up_to_100_slow_rate_time_window() {
    every_k_of_n(Rule::SlowRate, Win::Time).await;
}

/// A window of `m` calls whose rate equals a threshold of smaller terms (2 of 6 at 1/3, 14 of
/// 100 at 0.14): the same `f64` quotient, so it trips too.
#[tokio::test(start_paused = true)]
async fn equal_ratios_of_other_terms_trip_too() {
    for (rule, win) in ALL {
        for n in 1..=20 {
            for k in 1..=n {
                let t = decimal(k, n);
                for m in [2 * n, 3 * n, 5 * n].into_iter().filter(|&m| m <= 100) {
                    let bad = k * m / n;
                    assert!(
                        opens(rule, win, t, m, bad).await,
                        "{rule:?} {win:?}: {bad} of {m} at {k}/{n}"
                    );
                    assert!(
                        !opens(rule, win, t, m, bad - 1).await,
                        "{rule:?} {win:?}: {} of {m} at {k}/{n}",
                        bad - 1
                    );
                }
            }
        }
    }
}
