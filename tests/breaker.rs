//! The core's semantics, boundary by boundary (DESIGN.md "Semantics"). All timing under
//! paused tokio time.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::time::advance;
use tower_breaker::{Backoff, CircuitBreaker, ConfigError, Event, Outcome, Reason, State};

const S: Duration = Duration::from_secs(1);

fn fail(b: &CircuitBreaker, n: usize) {
    for _ in 0..n {
        b.try_acquire().expect("admitted").record(Outcome::Failure);
    }
}

fn succeed(b: &CircuitBreaker, n: usize) {
    for _ in 0..n {
        b.try_acquire().expect("admitted").record(Outcome::Success);
    }
}

type Log = Arc<Mutex<Vec<(State, State, Reason)>>>;

fn logged(builder: tower_breaker::Builder) -> (CircuitBreaker, Log) {
    let log: Log = Arc::default();
    let l = log.clone();
    let b = builder
        .on_event(move |e| {
            if let Event::Transition { from, to, reason, .. } = *e {
                l.lock().unwrap().push((from, to, reason));
            }
        })
        .build()
        .unwrap();
    (b, log)
}

// ---------- builder ----------

#[test]
fn builder_rejects_every_invalid_value() {
    let b = || CircuitBreaker::builder("x");
    let cases: Vec<(&str, Result<CircuitBreaker, ConfigError>)> = vec![
        ("no rule", b().build()),
        ("consecutive 0", b().consecutive_failures(0).build()),
        ("rate > 1", b().failure_rate(1.5).build()),
        ("rate < 0", b().failure_rate(-0.1).build()),
        ("rate NaN", b().failure_rate(f64::NAN).build()),
        ("rate 0", b().failure_rate(0.0).build()),
        ("slow rate 0", b().slow_calls(S, 0.0).build()),
        ("slow rate NaN", b().slow_calls(S, f64::NAN).build()),
        ("slow rate > 1", b().slow_calls(S, 2.0).build()),
        ("count window 0", b().failure_rate(0.5).count_window(0).build()),
        (
            "count window huge",
            b().failure_rate(0.5).count_window(1 << 20).build(),
        ),
        (
            "time window 0",
            b().failure_rate(0.5).time_window(Duration::ZERO).build(),
        ),
        (
            "both windows",
            b().failure_rate(0.5).count_window(10).time_window(S).build(),
        ),
        ("min calls 0", b().failure_rate(0.5).min_calls(0).build()),
        (
            "open 0",
            b().consecutive_failures(1).open_duration(Duration::ZERO).build(),
        ),
        (
            "max open 0",
            b().consecutive_failures(1)
                .max_open_duration(Duration::ZERO)
                .build(),
        ),
        (
            "permits 0",
            b().consecutive_failures(1).half_open_permits(0).build(),
        ),
        (
            "successes 0",
            b().consecutive_failures(1).half_open_successes(0).build(),
        ),
        (
            "max wait 0",
            b().consecutive_failures(1)
                .half_open_max_wait(Duration::ZERO)
                .build(),
        ),
        (
            "backoff factor < 1",
            b().consecutive_failures(1)
                .open_backoff(Backoff::exponential(S, 0.5, 10 * S))
                .build(),
        ),
        (
            "backoff factor NaN",
            b().consecutive_failures(1)
                .open_backoff(Backoff::exponential(S, f64::NAN, 10 * S))
                .build(),
        ),
        (
            "backoff max < base",
            b().consecutive_failures(1)
                .open_backoff(Backoff::exponential(10 * S, 2.0, S))
                .build(),
        ),
        (
            "jitter > 1",
            b().consecutive_failures(1)
                .open_backoff(Backoff::fixed(S).with_jitter(1.5))
                .build(),
        ),
    ];
    for (what, result) in cases {
        let err = result.expect_err(what);
        assert!(
            err.to_string().starts_with("invalid circuit breaker config: "),
            "{what}: {err}"
        );
    }
}

/// Issue 14 ("decide and document"): a zero rate tripped on five successes out of five; it
/// is refused now (DESIGN), as resilience4j and Polly refuse it.
#[test]
fn zero_rates_are_a_config_error() {
    let b = || CircuitBreaker::builder("zero");
    for zero in [0.0, -0.0] {
        let err = b().failure_rate(zero).build().unwrap_err();
        assert_eq!(err.setting(), "failure_rate");
        assert_eq!(
            err.to_string(),
            r#"invalid circuit breaker config: failure_rate must be greater than 0 and at most 1 (breaker "zero")"#
        );
        let err = b().slow_calls(S, zero).build().unwrap_err();
        assert_eq!(err.setting(), "slow_calls");
        // Also beside a valid rule.
        let err = b()
            .consecutive_failures(3)
            .failure_rate(zero)
            .build()
            .unwrap_err();
        assert_eq!(err.setting(), "failure_rate");
    }
    assert!(b().failure_rate(f64::MIN_POSITIVE).build().is_ok());
    assert!(b().slow_calls(S, f64::MIN_POSITIVE).build().is_ok());
    assert!(b().failure_rate(1.0).slow_calls(S, 1.0).build().is_ok());
}

#[tokio::test(start_paused = true)]
async fn the_smallest_rate_trips_on_one_failure_never_on_successes() {
    let b = CircuitBreaker::builder("tiny")
        .failure_rate(f64::MIN_POSITIVE)
        .count_window(5)
        .min_calls(5)
        .build()
        .unwrap();
    succeed(&b, 50);
    assert_eq!(b.state(), State::Closed, "successes alone never trip");
    fail(&b, 1);
    assert_eq!(b.state(), State::Open);
}

#[test]
fn builder_accepts_the_design_example() {
    let b = CircuitBreaker::builder("openai")
        .consecutive_failures(5)
        .failure_rate(0.5)
        .count_window(100)
        .min_calls(20)
        .slow_calls(Duration::from_secs(10), 0.8)
        .open_duration(Duration::from_secs(30))
        .max_open_duration(Duration::from_secs(600))
        .half_open_permits(1)
        .half_open_successes(2)
        .half_open_max_wait(Duration::from_secs(60))
        .build()
        .unwrap();
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.name(), "openai");
}

// ---------- consecutive failures ----------

#[tokio::test(start_paused = true)]
async fn consecutive_trips_on_the_nth_failure_not_before() {
    let (b, log) = logged(CircuitBreaker::builder("c").consecutive_failures(3));
    fail(&b, 2);
    assert_eq!(b.state(), State::Closed);
    fail(&b, 1);
    assert_eq!(b.state(), State::Open);
    assert_eq!(
        *log.lock().unwrap(),
        vec![(State::Closed, State::Open, Reason::ConsecutiveFailures)]
    );
}

#[tokio::test(start_paused = true)]
async fn success_resets_the_run_and_ignore_does_not() {
    let b = CircuitBreaker::builder("c")
        .consecutive_failures(3)
        .build()
        .unwrap();
    fail(&b, 2);
    succeed(&b, 1);
    fail(&b, 2);
    assert_eq!(b.state(), State::Closed, "a success reset the run");
    b.try_acquire().unwrap().record(Outcome::Ignore);
    assert_eq!(b.snapshot().consecutive_failures, 2, "ignore leaves the run");
    fail(&b, 1);
    assert_eq!(b.state(), State::Open);
}

// ---------- failure rate over a count window ----------

#[tokio::test(start_paused = true)]
async fn rate_trips_at_threshold_inclusive_only_after_min_calls() {
    let b = CircuitBreaker::builder("r")
        .failure_rate(0.5)
        .count_window(10)
        .min_calls(4)
        .build()
        .unwrap();
    fail(&b, 3);
    assert_eq!(b.state(), State::Closed, "3 calls < min_calls 4: no decision");
    succeed(&b, 1); // 3 of 4 fail: a success can complete min_calls and trip
    assert_eq!(b.state(), State::Open, "0.75 >= 0.5 once min_calls reached");

    let b = CircuitBreaker::builder("r")
        .failure_rate(0.5)
        .count_window(10)
        .min_calls(4)
        .build()
        .unwrap();
    succeed(&b, 2);
    fail(&b, 1);
    assert_eq!(b.state(), State::Closed);
    fail(&b, 1); // 2 of 4 = 0.5 exactly
    assert_eq!(b.state(), State::Open, "trips at >= threshold");
}

#[tokio::test(start_paused = true)]
async fn rate_just_below_threshold_stays_closed() {
    let b = CircuitBreaker::builder("r")
        .failure_rate(0.5)
        .count_window(10)
        .min_calls(10)
        .build()
        .unwrap();
    succeed(&b, 6);
    fail(&b, 4);
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.snapshot().failure_rate, Some(0.4));
}

#[tokio::test(start_paused = true)]
async fn count_window_slides_the_oldest_out() {
    let b = CircuitBreaker::builder("r")
        .failure_rate(0.5)
        .count_window(4)
        .min_calls(4)
        .build()
        .unwrap();
    fail(&b, 1);
    succeed(&b, 3); // window [F S S S] = 0.25
    assert_eq!(b.state(), State::Closed);
    succeed(&b, 1); // F leaves: [S S S S]
    let s = b.snapshot();
    assert_eq!((s.calls, s.failures), (4, 0));
    fail(&b, 1); // [S S S F]
    assert_eq!(b.state(), State::Closed);
    fail(&b, 1); // [S S F F] = 0.5
    assert_eq!(b.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn many_successes_then_a_window_of_failures_trips() {
    // A cumulative "window" (a peer's bug) would need ~1000 failures here.
    let b = CircuitBreaker::builder("r")
        .failure_rate(0.5)
        .count_window(100)
        .build()
        .unwrap();
    succeed(&b, 1000);
    fail(&b, 49);
    assert_eq!(b.state(), State::Closed);
    fail(&b, 1);
    assert_eq!(b.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn min_calls_larger_than_the_window_is_capped() {
    let b = CircuitBreaker::builder("r")
        .failure_rate(1.0)
        .count_window(5)
        .min_calls(50)
        .build()
        .unwrap();
    fail(&b, 5);
    assert_eq!(b.state(), State::Open, "min_calls capped at the window size 5");
}

#[tokio::test(start_paused = true)]
async fn rate_rules_default_to_a_count_window_of_100_and_min_calls_10() {
    let b = CircuitBreaker::builder("r").failure_rate(1.0).build().unwrap();
    fail(&b, 9);
    assert_eq!(b.state(), State::Closed);
    fail(&b, 1);
    assert_eq!(b.state(), State::Open);
    let b = CircuitBreaker::builder("r").failure_rate(0.5).build().unwrap();
    succeed(&b, 150);
    assert_eq!(b.snapshot().calls, 100, "window of 100");
    fail(&b, 49);
    assert_eq!(b.state(), State::Closed);
    fail(&b, 1);
    assert_eq!(b.state(), State::Open);
}

// ---------- time window ----------

#[tokio::test(start_paused = true)]
async fn time_window_forgets_old_outcomes() {
    let b = CircuitBreaker::builder("t")
        .failure_rate(0.5)
        .time_window(Duration::from_secs(10))
        .min_calls(4)
        .build()
        .unwrap();
    fail(&b, 3);
    advance(Duration::from_secs(11)).await; // those failures leave the window
    succeed(&b, 2);
    fail(&b, 1);
    let s = b.snapshot();
    assert_eq!((s.calls, s.failures), (3, 1));
    assert_eq!(b.state(), State::Closed);
    fail(&b, 1); // 2 of 4
    assert_eq!(b.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn time_window_keeps_outcomes_within_the_window() {
    let b = CircuitBreaker::builder("t")
        .failure_rate(0.5)
        .time_window(Duration::from_secs(10))
        .min_calls(4)
        .build()
        .unwrap();
    fail(&b, 2);
    advance(Duration::from_secs(8)).await;
    succeed(&b, 1);
    fail(&b, 1);
    assert_eq!(b.state(), State::Open, "all four within 10 s");
}

// ---------- slow calls ----------

#[tokio::test(start_paused = true)]
async fn slow_is_strictly_greater_than_the_threshold() {
    let b = CircuitBreaker::builder("s")
        .slow_calls(S, 0.5)
        .count_window(2)
        .min_calls(2)
        .build()
        .unwrap();
    for _ in 0..2 {
        let p = b.try_acquire().unwrap();
        advance(S).await; // exactly the threshold: not slow
        p.record(Outcome::Success);
    }
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.snapshot().slow_calls, 0);
    let p = b.try_acquire().unwrap();
    advance(S + Duration::from_millis(1)).await;
    p.record(Outcome::Success);
    assert_eq!(b.state(), State::Open, "1 slow of 2 = 0.5");
}

#[tokio::test(start_paused = true)]
async fn slow_probe_reopens() {
    let b = CircuitBreaker::builder("s")
        .slow_calls(S, 1.0)
        .count_window(1)
        .min_calls(1)
        .open_duration(10 * S)
        .build()
        .unwrap();
    let p = b.try_acquire().unwrap();
    advance(2 * S).await;
    p.record(Outcome::Success);
    assert_eq!(b.state(), State::Open);
    advance(10 * S).await;
    let probe = b.try_acquire().unwrap();
    advance(2 * S).await;
    probe.record(Outcome::Success);
    assert_eq!(b.state(), State::Open);
}

/// Issue 14 point 7: durations to the nanosecond (they were whole microseconds, truncated at
/// both ends).
#[tokio::test(start_paused = true)]
async fn slow_calls_are_timed_to_the_nanosecond() {
    let ns = Duration::from_nanos;
    // (threshold, call duration, slow?)
    let cases = [
        (Duration::from_millis(100), Duration::from_millis(100), false),
        (
            Duration::from_millis(100),
            Duration::from_millis(100) + ns(1),
            true,
        ),
        (ns(10_500), ns(10_400), false),
        (ns(10_500), ns(10_500), false),
        (ns(10_500), ns(10_501), true),
        (ns(1), ns(1), false),
        (ns(1), ns(2), true),
    ];
    for (threshold, call, slow) in cases {
        let (b, _) = logged(
            CircuitBreaker::builder("ns")
                .slow_calls(threshold, 1.0)
                .count_window(1)
                .min_calls(1),
        );
        // Start 900 ns into a microsecond: truncated stamps read 10.4 µs as 11 µs here.
        advance(ns(900)).await;
        let p = b.try_acquire().unwrap();
        advance(call).await;
        p.record(Outcome::Success);
        let what = format!("a call of {call:?} against {threshold:?}");
        assert_eq!(b.snapshot().slow_calls, u32::from(slow), "{what}");
        assert_eq!(b.state() == State::Open, slow, "{what}");
    }
}

/// Long calls: nanosecond stamps reach 2^47 ns (39 hours); a call of 18.3 min + 1 s (past
/// 2^40 ns) or of 30 hours is slow, however long the breaker has lived.
#[tokio::test(start_paused = true)]
async fn long_calls_are_slow() {
    for (age, call) in [
        (Duration::ZERO, Duration::from_nanos(1 << 40) + S),
        (Duration::ZERO, Duration::from_secs(30 * 3600)),
        (Duration::from_nanos(3 << 47) - S, Duration::from_secs(600)),
    ] {
        let b = CircuitBreaker::builder("long")
            .slow_calls(Duration::from_secs(60), 1.0)
            .count_window(1)
            .min_calls(1)
            .build()
            .unwrap();
        advance(age).await;
        let p = b.try_acquire().unwrap();
        advance(call).await;
        p.record(Outcome::Success);
        assert_eq!(b.snapshot().slow_calls, 1, "a call of {call:?} at {age:?}");
    }
}

// ---------- open → half-open ----------

#[tokio::test(start_paused = true)]
async fn open_lasts_exactly_open_duration_inclusive() {
    let (b, log) = logged(
        CircuitBreaker::builder("o")
            .consecutive_failures(1)
            .open_duration(10 * S),
    );
    fail(&b, 1);
    advance(10 * S - Duration::from_nanos(1)).await;
    let err = b.try_acquire().unwrap_err();
    assert_eq!(err.retry_after(), Some(Duration::from_nanos(1)));
    advance(Duration::from_nanos(1)).await;
    assert_eq!(b.state(), State::Open, "lazy: nothing happens without a call");
    let probe = b.try_acquire().expect("at the deadline a probe goes through");
    assert!(probe.is_probe());
    assert_eq!(b.state(), State::HalfOpen);
    assert_eq!(
        log.lock().unwrap()[1],
        (State::Open, State::HalfOpen, Reason::OpenElapsed)
    );
}

#[tokio::test(start_paused = true)]
async fn open_rejection_names_the_breaker_and_the_wait() {
    let b = CircuitBreaker::builder("openai")
        .consecutive_failures(1)
        .open_duration(12 * S)
        .build()
        .unwrap();
    fail(&b, 1);
    let err = b.try_acquire().unwrap_err();
    assert_eq!(err.name(), "openai");
    assert_eq!(err.state(), State::Open);
    assert_eq!(err.retry_after(), Some(12 * S));
    assert_eq!(err.to_string(), "circuit \"openai\" is open; retry in 12s");
}

// ---------- half-open ----------

#[tokio::test(start_paused = true)]
async fn half_open_admits_at_most_its_permits() {
    let b = CircuitBreaker::builder("h")
        .consecutive_failures(1)
        .half_open_permits(2)
        .build()
        .unwrap();
    fail(&b, 1);
    advance(30 * S).await;
    let p1 = b.try_acquire().unwrap();
    let p2 = b.try_acquire().unwrap();
    let err = b.try_acquire().unwrap_err();
    assert_eq!(err.state(), State::HalfOpen);
    assert_eq!(b.snapshot().probes_in_flight, 2);
    drop(p1); // released, neutral
    let p3 = b.try_acquire().expect("a dropped probe gives its slot back");
    assert_eq!(b.state(), State::HalfOpen);
    drop((p2, p3));
}

#[tokio::test(start_paused = true)]
async fn half_open_closes_after_enough_successes_and_resets_stats() {
    let (b, log) = logged(
        CircuitBreaker::builder("h")
            .consecutive_failures(2)
            .half_open_successes(2)
            .open_duration(10 * S),
    );
    fail(&b, 2);
    advance(10 * S).await;
    b.try_acquire().unwrap().record(Outcome::Success);
    assert_eq!(b.state(), State::HalfOpen);
    b.try_acquire().unwrap().record(Outcome::Success);
    assert_eq!(b.state(), State::Closed);
    assert_eq!(
        log.lock().unwrap().last(),
        Some(&(State::HalfOpen, State::Closed, Reason::ProbesSucceeded))
    );
    assert_eq!(b.snapshot().consecutive_failures, 0);
    fail(&b, 1);
    assert_eq!(b.state(), State::Closed, "the run restarted from zero");
}

#[tokio::test(start_paused = true)]
async fn half_open_failure_reopens_with_the_next_backoff() {
    let b = CircuitBreaker::builder("h")
        .consecutive_failures(1)
        .open_backoff(Backoff::exponential(10 * S, 2.0, 35 * S))
        .build()
        .unwrap();
    fail(&b, 1);
    assert_eq!(b.snapshot().open_for, Some(10 * S));
    advance(10 * S).await;
    b.try_acquire().unwrap().record(Outcome::Failure);
    assert_eq!(b.snapshot().open_for, Some(20 * S));
    advance(20 * S).await;
    b.try_acquire().unwrap().record(Outcome::Failure);
    assert_eq!(b.snapshot().open_for, Some(35 * S), "capped at max");
    advance(35 * S).await;
    b.try_acquire().unwrap().record(Outcome::Success);
    assert_eq!(b.state(), State::Closed);
    fail(&b, 1);
    assert_eq!(b.snapshot().open_for, Some(10 * S), "closing reset the backoff");
}

#[tokio::test(start_paused = true)]
async fn half_open_ignore_gives_the_permit_back() {
    let b = CircuitBreaker::builder("h")
        .consecutive_failures(1)
        .build()
        .unwrap();
    fail(&b, 1);
    advance(30 * S).await;
    b.try_acquire().unwrap().record(Outcome::Ignore);
    assert_eq!(b.state(), State::HalfOpen);
    assert_eq!(b.snapshot().probes_in_flight, 0);
    b.try_acquire()
        .expect("slot is free again")
        .record(Outcome::Success);
    assert_eq!(b.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn hung_probe_cannot_wedge_the_breaker() {
    let (b, log) = logged(
        CircuitBreaker::builder("h")
            .consecutive_failures(1)
            .half_open_max_wait(60 * S)
            .open_duration(S),
    );
    fail(&b, 1);
    advance(S).await;
    let hung = b.try_acquire().unwrap();
    advance(60 * S - Duration::from_nanos(1)).await;
    assert_eq!(b.try_acquire().unwrap_err().state(), State::HalfOpen);
    advance(Duration::from_nanos(1)).await;
    let err = b.try_acquire().unwrap_err();
    assert_eq!(err.state(), State::Open, "no decision for max wait: back to open");
    assert_eq!(
        log.lock().unwrap().last(),
        Some(&(State::HalfOpen, State::Open, Reason::ProbeTimedOut))
    );
    hung.record(Outcome::Success); // stale: changes nothing
    assert_eq!(b.state(), State::Open);
    advance(S).await;
    b.try_acquire().expect("probing resumes").record(Outcome::Success);
    assert_eq!(b.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn idle_half_open_does_not_time_out() {
    let b = CircuitBreaker::builder("h")
        .consecutive_failures(1)
        .half_open_max_wait(S)
        .build()
        .unwrap();
    fail(&b, 1);
    advance(30 * S).await;
    b.try_acquire().unwrap().record(Outcome::Ignore);
    advance(10 * S).await; // no probe in flight, nothing is wedged
    assert!(b.try_acquire().unwrap().is_probe());
}

/// Issue 14 point 3: the wait runs from the admission of the oldest probe in flight, not from
/// the last decision. An idle half-open (its first probe ignored or dropped) admits a new probe
/// much later; a second caller in the same instant must not declare that probe hung.
#[tokio::test(start_paused = true)]
async fn a_probe_admitted_a_moment_ago_is_not_hung() {
    for dropped in [false, true] {
        let (b, log) = logged(
            CircuitBreaker::builder("h")
                .consecutive_failures(1)
                .open_duration(10 * S)
                .half_open_max_wait(60 * S),
        );
        fail(&b, 1);
        advance(10 * S).await;
        let first = b.try_acquire().unwrap();
        if dropped {
            drop(first);
        } else {
            first.record(Outcome::Ignore);
        }
        advance(120 * S).await;
        let probe = b.try_acquire().expect("the next caller becomes the probe");
        let err = b.try_acquire().unwrap_err();
        assert_eq!(
            err.state(),
            State::HalfOpen,
            "dropped={dropped}: half-open is full, not hung"
        );
        assert_eq!(b.state(), State::HalfOpen);
        probe.record(Outcome::Success);
        assert_eq!(
            b.state(),
            State::Closed,
            "dropped={dropped}: the probe's success counts"
        );
        assert!(
            !log.lock().unwrap().iter().any(|t| t.2 == Reason::ProbeTimedOut),
            "dropped={dropped}: {:?}",
            log.lock().unwrap()
        );
        assert_eq!(b.snapshot().open_for, None);
    }
}

#[tokio::test(start_paused = true)]
async fn max_wait_follows_the_oldest_probe_still_in_flight() {
    let ns = Duration::from_nanos(1);
    let (b, log) = logged(
        CircuitBreaker::builder("h")
            .consecutive_failures(1)
            .open_duration(S)
            .half_open_permits(2)
            .half_open_successes(3)
            .half_open_max_wait(60 * S),
    );
    fail(&b, 1);
    advance(S).await;
    let first = b.try_acquire().unwrap(); // t = 0
    advance(30 * S).await;
    let second = b.try_acquire().unwrap(); // t = 30
    advance(30 * S - ns).await;
    assert_eq!(b.try_acquire().unwrap_err().state(), State::HalfOpen);
    first.record(Outcome::Success); // a decision: the oldest in flight is now `second`
    assert_eq!(b.state(), State::HalfOpen);
    advance(ns).await; // t = 60: `first`'s wait would be over, `second`'s is not
    let third = b.try_acquire().expect("a free slot; nothing hung");
    assert_eq!(b.try_acquire().unwrap_err().state(), State::HalfOpen);
    advance(30 * S - ns).await; // just before t = 90
    assert_eq!(b.try_acquire().unwrap_err().state(), State::HalfOpen);
    advance(ns).await; // t = 90: `second` brought no decision within 60 s
    assert_eq!(b.try_acquire().unwrap_err().state(), State::Open);
    assert_eq!(
        log.lock().unwrap().last(),
        Some(&(State::HalfOpen, State::Open, Reason::ProbeTimedOut))
    );
    drop((second, third));
}

#[tokio::test(start_paused = true)]
async fn max_wait_of_a_probe_released_out_of_order_follows_the_one_left() {
    let (b, _) = logged(
        CircuitBreaker::builder("h")
            .consecutive_failures(1)
            .open_duration(S)
            .half_open_permits(2)
            .half_open_max_wait(60 * S),
    );
    fail(&b, 1);
    advance(S).await;
    let first = b.try_acquire().unwrap(); // t = 0
    advance(30 * S).await;
    let second = b.try_acquire().unwrap(); // t = 30
    drop(second); // the younger one leaves; `first` is still the oldest
    advance(30 * S).await; // t = 60: `first` hung for its whole wait
    let _ = b.try_acquire().unwrap_err();
    assert_eq!(b.state(), State::Open, "the oldest probe's wait did not restart");
    drop(first);
}

// ---------- generations ----------

#[tokio::test(start_paused = true)]
async fn outcomes_from_before_a_change_never_cause_a_transition() {
    let b = CircuitBreaker::builder("g")
        .consecutive_failures(2)
        .open_duration(S)
        .build()
        .unwrap();
    let stale: Vec<_> = (0..5).map(|_| b.try_acquire().unwrap()).collect();
    fail(&b, 2);
    assert_eq!(b.state(), State::Open);
    advance(S).await;
    b.try_acquire().unwrap().record(Outcome::Success);
    assert_eq!(b.state(), State::Closed);
    for p in stale {
        p.record(Outcome::Failure); // admitted two generations ago
    }
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.snapshot().consecutive_failures, 0);
}

/// Permits carry 16 bits of the generation (beside a nanosecond start stamp, in two words):
/// held across 65,535 changes, a permit is still stale.
#[tokio::test(start_paused = true)]
async fn a_permit_held_across_65535_changes_is_still_stale() {
    let b = CircuitBreaker::builder("g")
        .consecutive_failures(1)
        .failure_rate(0.5)
        .count_window(2)
        .min_calls(1)
        .build()
        .unwrap();
    let stale = b.try_acquire().unwrap();
    for _ in 0..65_535 {
        b.reset(); // a fresh start: a new generation each time
    }
    stale.record(Outcome::Failure);
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.snapshot().calls, 0);
}

#[tokio::test(start_paused = true)]
async fn stale_outcomes_do_not_leak_into_a_fresh_window() {
    let b = CircuitBreaker::builder("g")
        .failure_rate(0.5)
        .count_window(4)
        .min_calls(4)
        .open_duration(S)
        .build()
        .unwrap();
    let stale: Vec<_> = (0..4).map(|_| b.try_acquire().unwrap()).collect();
    fail(&b, 4);
    advance(S).await;
    b.try_acquire().unwrap().record(Outcome::Success);
    assert_eq!(b.state(), State::Closed);
    for p in stale {
        p.record(Outcome::Failure);
    }
    let s = b.snapshot();
    assert_eq!((s.calls, s.failures), (0, 0));
    succeed(&b, 2);
    fail(&b, 1);
    assert_eq!(b.state(), State::Closed, "1 of 3, and below min_calls");
}

#[tokio::test(start_paused = true)]
async fn stale_probe_outcome_is_ignored() {
    let b = CircuitBreaker::builder("g")
        .consecutive_failures(1)
        .half_open_permits(2)
        .build()
        .unwrap();
    fail(&b, 1);
    advance(30 * S).await;
    let p1 = b.try_acquire().unwrap();
    let p2 = b.try_acquire().unwrap();
    p1.record(Outcome::Failure); // reopens
    assert_eq!(b.state(), State::Open);
    p2.record(Outcome::Success); // from the old half-open period
    assert_eq!(b.state(), State::Open);
}

// ---------- Trip ----------

#[tokio::test(start_paused = true)]
async fn trip_opens_from_closed_for_the_servers_wait() {
    let (b, log) = logged(CircuitBreaker::builder("t").consecutive_failures(5));
    b.try_acquire().unwrap().record(Outcome::Trip(7 * S));
    assert_eq!(b.state(), State::Open);
    assert_eq!(b.try_acquire().unwrap_err().retry_after(), Some(7 * S));
    assert_eq!(
        *log.lock().unwrap(),
        vec![(State::Closed, State::Open, Reason::ServerWait)]
    );
    advance(7 * S).await;
    assert!(b.try_acquire().unwrap().is_probe());
}

#[tokio::test(start_paused = true)]
async fn trip_is_clamped_to_max_open_duration() {
    let b = CircuitBreaker::builder("t")
        .consecutive_failures(5)
        .max_open_duration(60 * S)
        .build()
        .unwrap();
    b.try_acquire()
        .unwrap()
        .record(Outcome::Trip(Duration::from_secs(86_400)));
    assert_eq!(b.try_acquire().unwrap_err().retry_after(), Some(60 * S));
}

#[tokio::test(start_paused = true)]
async fn a_longer_trip_extends_a_shorter_one_never_the_reverse() {
    let (b, log) = logged(CircuitBreaker::builder("t").consecutive_failures(5));
    let (p1, p2, p3) = (
        b.try_acquire().unwrap(),
        b.try_acquire().unwrap(),
        b.try_acquire().unwrap(),
    );
    p1.record(Outcome::Trip(10 * S));
    p2.record(Outcome::Trip(30 * S)); // stale generation, still applies
    assert_eq!(b.try_acquire().unwrap_err().retry_after(), Some(30 * S));
    p3.record(Outcome::Trip(5 * S));
    assert_eq!(b.try_acquire().unwrap_err().retry_after(), Some(30 * S));
    assert_eq!(log.lock().unwrap().len(), 1, "extending is not a transition");
}

#[tokio::test(start_paused = true)]
async fn trip_from_half_open_and_over_an_open_backoff() {
    let b = CircuitBreaker::builder("t")
        .consecutive_failures(1)
        .open_duration(10 * S)
        .build()
        .unwrap();
    fail(&b, 1);
    b.trip(20 * S);
    assert_eq!(
        b.try_acquire().unwrap_err().retry_after(),
        Some(20 * S),
        "extends the open period"
    );
    advance(20 * S).await;
    let probe = b.try_acquire().unwrap();
    probe.record(Outcome::Trip(3 * S));
    assert_eq!(b.state(), State::Open);
    assert_eq!(b.try_acquire().unwrap_err().retry_after(), Some(3 * S));
}

// ---------- try_probe_early ----------

#[tokio::test(start_paused = true)]
async fn try_probe_early_admits_one_probe_now_and_its_outcome_decides() {
    let (b, log) = logged(
        CircuitBreaker::builder("e")
            .consecutive_failures(1)
            .open_backoff(Backoff::exponential(10 * S, 2.0, 100 * S)),
    );
    fail(&b, 1);
    assert_eq!(b.try_acquire().unwrap_err().retry_after(), Some(10 * S));

    // A failed early probe reopens with the backoff's next period, as a probe does.
    let probe = b.try_probe_early().expect("the open period is cut short");
    assert!(probe.is_probe());
    assert_eq!(b.state(), State::HalfOpen);
    let second = b.try_probe_early().unwrap_err();
    assert_eq!(second.state(), State::HalfOpen, "one probe slot, taken");
    assert!(b.try_acquire().is_err());
    probe.record(Outcome::Failure);
    assert_eq!(b.state(), State::Open);
    assert_eq!(b.snapshot().open_for, Some(20 * S));

    // A successful one closes the breaker at once.
    advance(S).await;
    b.try_probe_early().unwrap().record(Outcome::Success);
    assert_eq!(b.state(), State::Closed);
    assert_eq!(
        *log.lock().unwrap(),
        vec![
            (State::Closed, State::Open, Reason::ConsecutiveFailures),
            (State::Open, State::HalfOpen, Reason::EarlyProbe),
            (State::HalfOpen, State::Open, Reason::ProbeFailed),
            (State::Open, State::HalfOpen, Reason::EarlyProbe),
            (State::HalfOpen, State::Closed, Reason::ProbesSucceeded),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn try_probe_early_dropped_unrecorded_gives_the_slot_back() {
    let b = CircuitBreaker::builder("e")
        .consecutive_failures(1)
        .build()
        .unwrap();
    fail(&b, 1);
    drop(b.try_probe_early().unwrap());
    assert_eq!(b.state(), State::HalfOpen);
    let probe = b.try_acquire().expect("the released slot admits the next caller");
    assert!(probe.is_probe());
}

#[tokio::test(start_paused = true)]
async fn try_probe_early_keeps_a_servers_wait_and_an_operators_choice() {
    let b = CircuitBreaker::builder("e")
        .consecutive_failures(1)
        .build()
        .unwrap();

    // Closed: an ordinary permit.
    let permit = b.try_probe_early().unwrap();
    assert!(!permit.is_probe());
    drop(permit);

    // A server's wait (Retry-After, a quota error) is kept ...
    b.try_acquire().unwrap().record(Outcome::Trip(5 * S));
    let refused = b.try_probe_early().unwrap_err();
    assert_eq!(
        (refused.state(), refused.retry_after()),
        (State::Open, Some(5 * S))
    );
    // ... and ends when it says, as always.
    advance(5 * S).await;
    b.try_probe_early().unwrap().record(Outcome::Failure);
    // The breaker's own open period (a failed probe) may be cut short.
    assert_eq!(b.state(), State::Open);
    assert!(b.try_probe_early().unwrap().is_probe());
    b.reset();

    // A wait that extends the breaker's own open period is a server's wait too.
    fail(&b, 1);
    b.trip(60 * S);
    assert!(b.try_probe_early().is_err());
    b.reset();

    // A trip shared by another replica: kept.
    b.trip_remote(5 * S);
    assert!(b.try_probe_early().is_err());
    b.reset();

    // Forced open: never bypassed.
    b.force_open();
    assert_eq!(b.try_probe_early().unwrap_err().state(), State::ForcedOpen);
    b.reset();

    // Disabled: admits, records nothing.
    b.disable();
    b.try_probe_early().unwrap().record(Outcome::Failure);
    assert_eq!(b.state(), State::Disabled);
}

// ---------- forced, disabled, reset ----------

#[tokio::test(start_paused = true)]
async fn forced_open_is_sticky_until_reset() {
    let (b, log) = logged(CircuitBreaker::builder("f").consecutive_failures(1));
    b.force_open();
    b.force_open();
    let err = b.try_acquire().unwrap_err();
    assert_eq!(err.state(), State::ForcedOpen);
    assert_eq!(err.retry_after(), None);
    advance(Duration::from_secs(3600)).await;
    assert!(b.try_acquire().is_err());
    b.trip(S);
    assert_eq!(b.state(), State::ForcedOpen, "a trip does not override forced");
    b.reset();
    assert_eq!(b.state(), State::Closed);
    assert_eq!(
        *log.lock().unwrap(),
        vec![
            (State::Closed, State::ForcedOpen, Reason::Forced),
            (State::ForcedOpen, State::Closed, Reason::Reset)
        ],
        "only real changes are published"
    );
}

#[tokio::test(start_paused = true)]
async fn disabled_admits_everything_and_records_nothing() {
    let b = CircuitBreaker::builder("d")
        .consecutive_failures(1)
        .build()
        .unwrap();
    b.disable();
    fail(&b, 100);
    b.try_acquire().unwrap().record(Outcome::Trip(S));
    assert_eq!(b.state(), State::Disabled);
    b.reset();
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.snapshot().consecutive_failures, 0);
}

#[tokio::test(start_paused = true)]
async fn reset_clears_statistics_and_backoff() {
    let b = CircuitBreaker::builder("r")
        .consecutive_failures(3)
        .open_backoff(Backoff::exponential(S, 2.0, 100 * S))
        .build()
        .unwrap();
    fail(&b, 3);
    advance(S).await;
    fail(&b, 1); // reopen: next backoff 2 s
    b.reset();
    fail(&b, 2);
    assert_eq!(b.state(), State::Closed);
    fail(&b, 1);
    assert_eq!(b.snapshot().open_for, Some(S));
}

// ---------- permits ----------

#[tokio::test(start_paused = true)]
async fn dropped_closed_permit_is_neutral() {
    let b = CircuitBreaker::builder("p")
        .consecutive_failures(2)
        .failure_rate(0.5)
        .min_calls(5)
        .build()
        .unwrap();
    fail(&b, 1);
    drop(b.try_acquire().unwrap());
    let s = b.snapshot();
    assert_eq!((s.consecutive_failures, s.calls), (1, 1));
}

// ---------- events and snapshot ----------

#[tokio::test(start_paused = true)]
async fn listeners_hear_rejections_records_and_releases() {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let s2 = seen.clone();
    let b = CircuitBreaker::builder("e")
        .consecutive_failures(1)
        .on_event(move |e| {
            let line = match e {
                Event::Transition { from, to, reason, .. } => format!("{from}->{to}:{reason}"),
                Event::Rejected { state, .. } => format!("rejected:{state}"),
                Event::Recorded { outcome, .. } => format!("recorded:{outcome:?}"),
                Event::Released { .. } => "released".to_string(),
                _ => unreachable!(),
            };
            s2.lock().unwrap().push(format!("{}:{line}", e.name()));
        })
        .build()
        .unwrap();
    drop(b.try_acquire().unwrap());
    fail(&b, 1);
    let _ = b.try_acquire();
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "e:released",
            "e:recorded:Failure",
            "e:closed->open:consecutive_failures",
            "e:rejected:open"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn snapshot_reports_counts_rates_and_time_until_half_open() {
    let b = CircuitBreaker::builder("snap")
        .failure_rate(0.5)
        .count_window(10)
        .min_calls(10)
        .build()
        .unwrap();
    succeed(&b, 3);
    fail(&b, 1);
    let s = b.snapshot();
    assert_eq!(s.name, "snap");
    assert_eq!(
        (s.state, s.calls, s.failures, s.slow_calls),
        (State::Closed, 4, 1, 0)
    );
    assert_eq!(s.failure_rate, Some(0.25));
    assert_eq!(s.slow_call_rate, Some(0.0));
    assert_eq!(s.retry_after, None);
    b.trip(10 * S);
    advance(4 * S).await;
    assert_eq!(b.snapshot().retry_after, Some(6 * S));
    advance(10 * S).await;
    assert_eq!(b.snapshot().retry_after, Some(Duration::ZERO));
}

#[test]
fn breaker_is_send_sync_clone_and_small() {
    fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
    assert_send_sync::<CircuitBreaker>();
    assert_eq!(
        std::mem::size_of::<CircuitBreaker>(),
        std::mem::size_of::<usize>()
    );
    // Two words: a permit moves in registers (the nanosecond start stamp shares a word with
    // the generation and the probe bit).
    assert_eq!(
        std::mem::size_of::<tower_breaker::Permit>(),
        2 * std::mem::size_of::<usize>()
    );
}

#[test]
fn backoff_jitter_stays_within_its_fraction() {
    let b = CircuitBreaker::builder("j")
        .consecutive_failures(1)
        .open_backoff(Backoff::fixed(10 * S).with_jitter(0.2))
        .build()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            fail(&b, 1);
            let d = b.snapshot().open_for.unwrap();
            assert!(d >= 8 * S && d <= 12 * S, "{d:?}");
            seen.insert(d);
            b.reset();
        }
        assert!(seen.len() > 1, "jitter varies the wait");
    });
}

/// Issue 18 point 5: every operator action is announced (the audit trail), with its origin,
/// before the transition it causes, and even when it changes nothing.
#[test]
fn operator_actions_are_announced_with_their_origin_before_their_transition() {
    use tower_breaker::{Origin, Override};

    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let log = seen.clone();
    let breaker = CircuitBreaker::builder("openai")
        .consecutive_failures(1)
        .on_event(move |e| {
            let line = match e {
                Event::Override { action, origin, .. } => format!("{action} from {origin}"),
                Event::Transition { from, to, .. } => format!("{from} -> {to}"),
                _ => return,
            };
            log.lock().unwrap().push(line);
        })
        .build()
        .unwrap();
    breaker.force_open();
    breaker.force_open(); // no change: announced, no transition
    breaker.apply_override(Override::Reset, Origin::Remote("web-2"));
    breaker.reset(); // closed already: announced, no transition
    breaker.set_shadow(true);
    breaker.set_shadow(true);
    breaker.disable();
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "force_open from local",
            "closed -> forced_open",
            "force_open from local",
            "reset from web-2",
            "forced_open -> closed",
            "reset from local",
            "shadow_on from local",
            "shadow_on from local",
            "disable from local",
            "closed -> disabled",
        ]
    );
    assert!(breaker.is_shadow());
    assert_eq!(Override::from_name("shadow_off"), Some(Override::Shadow(false)));
    assert_eq!(Override::from_name("nope"), None);
}
