//! Hot reload ([`CircuitBreaker::reconfigure`], the keyed registry's, the config files'):
//! the state, the open deadline, the probes in flight, the shadow flag and the documented part
//! of the window survive; the new settings act when the crate docs' "Hot reload" says. Paused
//! time throughout.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::time::advance;
use tower_breaker::{Builder, CircuitBreaker, Event, Outcome, Reason, State, keyed::KeyedRegistry};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn b() -> Builder {
    CircuitBreaker::builder("up")
}

fn record(breaker: &CircuitBreaker, outcomes: &[Outcome]) {
    for &o in outcomes {
        breaker.try_acquire().expect("admitted").record(o);
    }
}

const S: Outcome = Outcome::Success;
const F: Outcome = Outcome::Failure;

fn counts(breaker: &CircuitBreaker) -> (u32, u32) {
    let s = breaker.snapshot();
    (s.calls, s.failures)
}

// ------------------------------------------------------------------ state

#[tokio::test(start_paused = true)]
async fn a_closed_breaker_stays_closed_with_its_window_and_run() {
    let breaker = b()
        .consecutive_failures(5)
        .failure_rate(0.9)
        .count_window(10)
        .build()
        .unwrap();
    record(&breaker, &[S, F, F]);
    breaker
        .reconfigure(b().consecutive_failures(4).failure_rate(0.9).count_window(10))
        .unwrap();
    assert_eq!(breaker.state(), State::Closed);
    assert_eq!(counts(&breaker), (3, 2), "same shape: the window as is");
    assert_eq!(breaker.snapshot().consecutive_failures, 2, "the run is kept");
    record(&breaker, &[F]);
    assert_eq!(breaker.state(), State::Closed);
    record(&breaker, &[F]);
    assert_eq!(
        breaker.snapshot().reason,
        Some(Reason::ConsecutiveFailures),
        "the 4th consecutive failure under the new threshold trips"
    );
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_keeps_its_deadline_and_the_new_open_duration_applies_next_time() {
    let breaker = b()
        .consecutive_failures(1)
        .open_duration(secs(30))
        .build()
        .unwrap();
    record(&breaker, &[F]);
    advance(secs(10)).await;
    breaker
        .reconfigure(b().consecutive_failures(1).open_duration(secs(100)))
        .unwrap();
    assert_eq!(breaker.state(), State::Open);
    assert_eq!(
        breaker.snapshot().retry_after,
        Some(secs(20)),
        "the deadline it had"
    );
    assert_eq!(breaker.snapshot().open_for, Some(secs(30)));
    advance(secs(20)).await;
    let probe = breaker.try_acquire().expect("half-open at the old deadline");
    assert!(probe.is_probe());
    probe.record(F);
    assert_eq!(breaker.snapshot().open_for, Some(secs(100)), "the next opening");
    assert_eq!(breaker.try_acquire().unwrap_err().retry_after(), Some(secs(100)));
}

#[tokio::test(start_paused = true)]
async fn the_backoff_continues_from_its_attempt_count() {
    let exp = |base| tower_breaker::Backoff::exponential(secs(base), 2.0, secs(1000));
    let breaker = b().consecutive_failures(1).open_backoff(exp(10)).build().unwrap();
    record(&breaker, &[F]); // open 10 s (attempt 0)
    breaker
        .reconfigure(b().consecutive_failures(1).open_backoff(exp(1)))
        .unwrap();
    assert_eq!(breaker.snapshot().retry_after, Some(secs(10)));
    advance(secs(10)).await;
    breaker.try_acquire().unwrap().record(F);
    assert_eq!(
        breaker.snapshot().open_for,
        Some(secs(2)),
        "the new backoff's second value: the attempt count is kept"
    );
}

#[tokio::test(start_paused = true)]
async fn a_half_open_breaker_keeps_its_probes_in_flight() {
    let breaker = b()
        .consecutive_failures(1)
        .open_duration(secs(5))
        .half_open_permits(2)
        .half_open_successes(2)
        .build()
        .unwrap();
    record(&breaker, &[F]);
    advance(secs(5)).await;
    let first = breaker.try_acquire().unwrap();
    let second = breaker.try_acquire().unwrap();
    assert!(first.is_probe() && second.is_probe());
    first.record(S);
    breaker
        .reconfigure(
            b().consecutive_failures(1)
                .open_duration(secs(5))
                .half_open_permits(1)
                .half_open_successes(3),
        )
        .unwrap();
    assert_eq!(breaker.state(), State::HalfOpen);
    assert_eq!(
        breaker.snapshot().probes_in_flight,
        1,
        "the probe in flight is kept"
    );
    assert!(
        breaker.try_acquire().is_err(),
        "one permit now: the one in flight"
    );
    second.record(S);
    assert_eq!(
        breaker.state(),
        State::HalfOpen,
        "two successes of the three now needed"
    );
    breaker.try_acquire().unwrap().record(S);
    assert_eq!(breaker.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn forced_open_and_disabled_stay_until_reset() {
    for (manual, state) in [
        (
            CircuitBreaker::force_open as fn(&CircuitBreaker),
            State::ForcedOpen,
        ),
        (CircuitBreaker::disable, State::Disabled),
    ] {
        let breaker = b().consecutive_failures(3).build().unwrap();
        manual(&breaker);
        breaker.reconfigure(b().consecutive_failures(1)).unwrap();
        assert_eq!(breaker.state(), state);
        breaker.reset();
        record(&breaker, &[F]);
        assert_eq!(breaker.state(), State::Open, "the new rule, once reset");
    }
}

#[tokio::test(start_paused = true)]
async fn the_shadow_flag_is_kept_unless_the_builder_sets_it() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let breaker = b()
        .consecutive_failures(1)
        .shadow(true)
        .on_event(move |e| match e {
            Event::Reconfigured { shadow, .. } => log.lock().unwrap().push(format!("shadow {shadow}")),
            Event::Override { .. } => log.lock().unwrap().push("override".into()),
            _ => {}
        })
        .build()
        .unwrap();
    record(&breaker, &[F]);
    breaker.reconfigure(b().consecutive_failures(2)).unwrap();
    assert!(breaker.is_shadow(), "unset: kept");
    assert_eq!(breaker.state(), State::Open, "notionally");
    assert!(breaker.try_acquire().is_ok(), "still a would-be rejection");
    breaker
        .reconfigure(b().consecutive_failures(2).shadow(false))
        .unwrap();
    assert!(!breaker.is_shadow());
    assert!(breaker.try_acquire().is_err(), "enforced from the next call");
    assert_eq!(breaker.snapshot().would_reject, 1, "kept");
    assert_eq!(
        *seen.lock().unwrap(),
        ["shadow true", "shadow false"],
        "each reload says the flag it leaves; a setting, not an operator's override"
    );
}

// ------------------------------------------------------------------ count window

#[tokio::test(start_paused = true)]
async fn a_shrunk_count_window_keeps_the_latest_calls() {
    let breaker = b()
        .failure_rate(0.6)
        .count_window(10)
        .min_calls(3)
        .build()
        .unwrap();
    record(&breaker, &[S, F, S, F, S, S]);
    breaker
        .reconfigure(b().failure_rate(0.6).count_window(3).min_calls(3))
        .unwrap();
    assert_eq!(counts(&breaker), (3, 1), "the latest three: F, S, S");
    record(&breaker, &[F]); // S, S, F
    assert_eq!(counts(&breaker), (3, 1));
    assert_eq!(breaker.state(), State::Closed);
    record(&breaker, &[F]); // S, F, F: 2/3 >= 0.6
    assert_eq!(breaker.state(), State::Open, "trips when the latest three say so");
}

#[tokio::test(start_paused = true)]
async fn a_grown_count_window_keeps_every_call_in_order() {
    let breaker = b()
        .failure_rate(0.5)
        .count_window(4)
        .min_calls(8)
        .build()
        .unwrap();
    record(&breaker, &[S, F, S, S]);
    breaker
        .reconfigure(b().failure_rate(0.5).count_window(8).min_calls(8))
        .unwrap();
    assert_eq!(counts(&breaker), (4, 1), "all four kept");
    record(&breaker, &[S, S, S, S]);
    assert_eq!(counts(&breaker), (8, 1), "no eviction before the eighth call");
    record(&breaker, &[S]);
    assert_eq!(counts(&breaker), (8, 1), "the oldest (a success) goes first");
    record(&breaker, &[S]);
    assert_eq!(counts(&breaker), (8, 0), "then the failure, in order");
}

#[tokio::test(start_paused = true)]
async fn a_count_window_of_the_same_shape_is_kept_as_is() {
    let breaker = b()
        .failure_rate(0.5)
        .count_window(4)
        .min_calls(4)
        .build()
        .unwrap();
    record(&breaker, &[F, S, S]);
    breaker
        .reconfigure(b().failure_rate(0.75).count_window(4).min_calls(4))
        .unwrap();
    assert_eq!(counts(&breaker), (3, 1));
    record(&breaker, &[F]);
    assert_eq!(breaker.state(), State::Closed, "2/4 < the new 0.75");
    record(&breaker, &[F]); // S, S, F, F
    assert_eq!(breaker.state(), State::Closed);
    record(&breaker, &[F]); // S, F, F, F
    assert_eq!(breaker.state(), State::Open);
}

// ------------------------------------------------------------------ time window

#[tokio::test(start_paused = true)]
async fn a_lengthened_time_window_keeps_every_call() {
    let breaker = b()
        .failure_rate(0.9)
        .time_window(secs(10))
        .min_calls(100)
        .build()
        .unwrap();
    record(&breaker, &[F]); // at 0 s
    advance(secs(7)).await;
    record(&breaker, &[S, S]); // at 7 s
    advance(secs(2)).await;
    breaker
        .reconfigure(b().failure_rate(0.9).time_window(secs(60)).min_calls(100))
        .unwrap();
    assert_eq!(counts(&breaker), (3, 1));
    advance(secs(10)).await; // 19 s
    assert_eq!(
        counts(&breaker),
        (3, 1),
        "past the old window's length: still counted"
    );
    // Buckets of 6 s now: the failure counts in 0..6 s, the successes in 6..12 s.
    advance(secs(41)).await; // 60 s
    assert_eq!(
        counts(&breaker),
        (2, 0),
        "the first call's bucket left the new window"
    );
    advance(secs(6)).await; // 66 s
    assert_eq!(counts(&breaker), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_shortened_time_window_keeps_the_calls_still_inside_it() {
    let breaker = b()
        .failure_rate(0.9)
        .time_window(secs(60))
        .min_calls(100)
        .build()
        .unwrap();
    record(&breaker, &[F, F]); // at 0 s
    advance(secs(50)).await;
    record(&breaker, &[S]); // at 50 s
    advance(secs(5)).await;
    record(&breaker, &[F]); // at 55 s
    breaker
        .reconfigure(b().failure_rate(0.9).time_window(secs(10)).min_calls(100))
        .unwrap();
    // The new window at 55 s: buckets of 1 s, 46 s ..= 55 s. The calls at 0 s are out.
    assert_eq!(counts(&breaker), (2, 1));
    advance(secs(1)).await;
    assert_eq!(counts(&breaker), (2, 1));
    // The call of 50 s was in the old bucket 48..54 s, counted whole in the new 48 s bucket.
    advance(secs(3)).await; // 59 s
    assert_eq!(counts(&breaker), (1, 1), "the 48 s bucket left at 58 s");
    advance(secs(6)).await; // 65 s
    assert_eq!(counts(&breaker), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn count_to_time_starts_an_empty_window_and_keeps_the_run() {
    let breaker = b()
        .consecutive_failures(3)
        .failure_rate(0.5)
        .count_window(10)
        .build()
        .unwrap();
    record(&breaker, &[S, F, F]);
    breaker
        .reconfigure(
            b().consecutive_failures(3)
                .failure_rate(0.5)
                .time_window(secs(10)),
        )
        .unwrap();
    assert_eq!(counts(&breaker), (0, 0), "another kind of window: empty");
    assert_eq!(breaker.snapshot().consecutive_failures, 2);
    record(&breaker, &[F]);
    assert_eq!(breaker.snapshot().reason, Some(Reason::ConsecutiveFailures));
}

// ------------------------------------------------------------------ thresholds

#[tokio::test(start_paused = true)]
async fn a_consecutive_threshold_lowered_to_the_run_opens_in_the_reload() {
    let breaker = b().consecutive_failures(5).build().unwrap();
    record(&breaker, &[F, F, F]);
    breaker.reconfigure(b().consecutive_failures(4)).unwrap();
    assert_eq!(breaker.state(), State::Closed, "3 < 4");
    breaker.reconfigure(b().consecutive_failures(3)).unwrap();
    assert_eq!(breaker.state(), State::Open, "3 >= 3: judged at once");
    assert_eq!(breaker.snapshot().reason, Some(Reason::ConsecutiveFailures));
}

#[tokio::test(start_paused = true)]
async fn a_rate_threshold_change_takes_effect_at_once_and_on_the_next_call() {
    let breaker = b()
        .failure_rate(0.5)
        .count_window(10)
        .min_calls(5)
        .build()
        .unwrap();
    record(&breaker, &[S, S, S, F, S]); // 1/5
    breaker
        .reconfigure(b().failure_rate(0.3).count_window(10).min_calls(5))
        .unwrap();
    assert_eq!(breaker.state(), State::Closed, "0.2 < 0.3");
    record(&breaker, &[F]); // 2/6 >= 0.3
    assert_eq!(breaker.state(), State::Open);
    assert_eq!(breaker.snapshot().reason, Some(Reason::FailureRate));

    let breaker = b()
        .failure_rate(0.5)
        .count_window(10)
        .min_calls(5)
        .build()
        .unwrap();
    record(&breaker, &[S, S, S, F, S]);
    breaker
        .reconfigure(b().failure_rate(0.2).count_window(10).min_calls(5))
        .unwrap();
    assert_eq!(breaker.state(), State::Open, "1/5 >= 0.2: judged in the reload");
}

#[tokio::test(start_paused = true)]
async fn a_slow_call_rule_switched_on_does_not_judge_calls_admitted_before() {
    let breaker = b().consecutive_failures(5).build().unwrap();
    advance(secs(100)).await;
    let before = breaker.try_acquire().unwrap();
    breaker
        .reconfigure(
            b().consecutive_failures(5)
                .slow_calls(secs(1), 0.5)
                .count_window(4)
                .min_calls(1),
        )
        .unwrap();
    let after = breaker.try_acquire().unwrap();
    advance(secs(2)).await;
    before.record(S);
    assert_eq!(
        (breaker.snapshot().calls, breaker.snapshot().slow_calls),
        (1, 0),
        "untimed"
    );
    after.record(S);
    assert_eq!(
        breaker.state(),
        State::Open,
        "timed from its admission: slow, 1/2 >= 0.5"
    );
    assert_eq!(breaker.snapshot().reason, Some(Reason::SlowCalls));
}

/// A new slow-call threshold judges every call recorded after the reload, those admitted
/// before it too (a permit carries its start, not the threshold of its admission); only a
/// rule switched on spares the calls admitted before (previous test).
#[tokio::test(start_paused = true)]
async fn a_new_slow_call_threshold_judges_the_calls_recorded_after_the_reload() {
    let rule = |threshold| b().slow_calls(secs(threshold), 0.5).count_window(4).min_calls(1);
    let breaker = rule(10).build().unwrap();
    let before = breaker.try_acquire().unwrap();
    advance(secs(7)).await;
    breaker.reconfigure(rule(5)).unwrap();
    before.record(S); // 7 s: fast by the old threshold, slow by the new one
    assert_eq!(breaker.snapshot().slow_calls, 1);
    assert_eq!(breaker.state(), State::Open);
    assert_eq!(breaker.snapshot().reason, Some(Reason::SlowCalls));
}

// ------------------------------------------------------------------ identity, errors, events

#[tokio::test(start_paused = true)]
async fn another_name_or_a_bad_setting_is_refused_and_changes_nothing() {
    let breaker = b().consecutive_failures(2).build().unwrap();
    record(&breaker, &[F]);
    let err = breaker
        .reconfigure(CircuitBreaker::builder("other").consecutive_failures(1))
        .unwrap_err();
    assert_eq!((err.breaker(), err.setting()), (Some("up"), "name"));
    let err = breaker.reconfigure(b().failure_rate(1.5)).unwrap_err();
    assert_eq!((err.breaker(), err.setting()), (Some("up"), "failure_rate"));
    assert_eq!(breaker.state(), State::Closed);
    record(&breaker, &[F]);
    assert_eq!(breaker.state(), State::Open, "the old threshold, 2");
}

#[tokio::test(start_paused = true)]
async fn listeners_are_kept_and_hear_the_reload() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let breaker = b()
        .consecutive_failures(3)
        .on_event(move |e| match e {
            Event::Reconfigured { name, .. } => log.lock().unwrap().push(format!("reconfigured {name}")),
            Event::Transition { to, reason, .. } => log.lock().unwrap().push(format!("{to} {reason}")),
            _ => {}
        })
        .build()
        .unwrap();
    record(&breaker, &[F, F]);
    let ignored = Arc::new(Mutex::new(0));
    let count = ignored.clone();
    breaker
        .reconfigure(
            b().consecutive_failures(2)
                .on_event(move |_| *count.lock().unwrap() += 1),
        )
        .unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        ["reconfigured up", "open consecutive_failures"],
        "the reload, then the transition it caused"
    );
    assert_eq!(
        *ignored.lock().unwrap(),
        0,
        "the builder's listener is not installed"
    );
}

#[tokio::test(start_paused = true)]
async fn a_breaker_has_at_most_sixteen_window_shapes() {
    let breaker = b().failure_rate(0.5).count_window(1).build().unwrap();
    for n in 2..=16 {
        breaker
            .reconfigure(b().failure_rate(0.5).count_window(n))
            .unwrap();
        breaker
            .reconfigure(b().failure_rate(0.5).count_window(n))
            .unwrap(); // same shape: free
    }
    let err = breaker
        .reconfigure(b().failure_rate(0.5).count_window(17))
        .unwrap_err();
    assert_eq!(err.setting(), "window");
    record(&breaker, &[F]);
    assert_eq!(counts(&breaker), (1, 1), "the sixteenth window still counts");
}

// ------------------------------------------------------------------ keyed registry

#[tokio::test(start_paused = true)]
async fn a_registry_reload_reaches_every_key_and_keeps_overrides() {
    let registry = KeyedRegistry::<String>::builder(
        CircuitBreaker::builder("models")
            .consecutive_failures(3)
            .open_duration(secs(30)),
    )
    .override_key(
        "embed".to_string(),
        CircuitBreaker::builder("models").consecutive_failures(10),
    )
    .build()
    .unwrap();
    for key in ["a", "b", "embed"] {
        registry.try_acquire(key).unwrap().record(F);
    }
    registry.try_acquire("b").unwrap().record(F);
    registry
        .reconfigure(
            CircuitBreaker::builder("models")
                .consecutive_failures(2)
                .open_duration(secs(60)),
        )
        .unwrap();
    let state = |k: &str| registry.get(k).unwrap().state();
    assert_eq!(
        state("b"),
        State::Open,
        "its run of 2 meets the new threshold at once"
    );
    assert_eq!(registry.get("b").unwrap().snapshot().open_for, Some(secs(60)));
    assert_eq!(state("a"), State::Closed);
    registry.try_acquire("a").unwrap().record(F);
    assert_eq!(state("a"), State::Open, "the run of 1 was kept");
    for _ in 0..8 {
        registry.try_acquire("embed").unwrap().record(F);
    }
    assert_eq!(state("embed"), State::Closed, "the override (10) is kept");
    registry.try_acquire("new").unwrap().record(F);
    registry.try_acquire("new").unwrap().record(F);
    assert_eq!(state("new"), State::Open, "new keys take the new template");

    let err = registry
        .reconfigure(CircuitBreaker::builder("other").consecutive_failures(2))
        .unwrap_err();
    assert_eq!(err.setting(), "name");
}

#[cfg(feature = "serde")]
#[tokio::test(start_paused = true)]
async fn a_reloaded_file_applies_in_one_call() {
    use tower_breaker::config::{BreakerConfig, KeyedConfig};

    let v1: BreakerConfig = toml::from_str(
        r#"
        failure_rate = 0.5
        count_window = 10
        min_calls = 4
        open_duration = "30s"
        shadow = true
        "#,
    )
    .unwrap();
    let breaker = v1.builder("openai").unwrap().build().unwrap();
    record(&breaker, &[S, S, F, S, S, S]);
    let v2: BreakerConfig = toml::from_str(
        r#"
        failure_rate = 0.5
        count_window = 4
        min_calls = 4
        open_duration = "1m"
        "#,
    )
    .unwrap();
    v2.reconfigure(&breaker).unwrap();
    assert_eq!(counts(&breaker), (4, 1), "the latest four");
    assert!(breaker.is_shadow(), "the file does not say: kept");
    record(&breaker, &[F]); // S, S, S, F ... then F: S, S, F, F
    record(&breaker, &[F]);
    assert_eq!(breaker.state(), State::Open);
    assert_eq!(breaker.snapshot().open_for, Some(secs(60)));

    let bad: BreakerConfig = toml::from_str("failure_rate = 2.0").unwrap();
    let err = bad.reconfigure(&breaker).unwrap_err();
    assert_eq!((err.breaker(), err.setting()), (Some("openai"), "failure_rate"));

    // A registry: template and overrides from the file, in one call.
    let file = |t: u32, o: u32| {
        toml::from_str::<KeyedConfig>(&format!(
            "[template]\nconsecutive_failures = {t}\n[overrides.embed]\nconsecutive_failures = {o}\n"
        ))
        .unwrap()
    };
    let registry = file(3, 10).build::<String>("models").unwrap();
    registry.try_acquire("chat").unwrap().record(F);
    registry.try_acquire("embed").unwrap().record(F);
    file(1, 2).reconfigure(&registry).unwrap();
    assert_eq!(
        registry.get("chat").unwrap().state(),
        State::Open,
        "template 1: at once"
    );
    assert_eq!(registry.get("embed").unwrap().state(), State::Closed);
    registry.try_acquire("embed").unwrap().record(F);
    assert_eq!(registry.get("embed").unwrap().state(), State::Open, "override 2");
}

#[tokio::test(start_paused = true)]
async fn a_registry_reload_from_a_builder_replaces_the_overrides_and_reapplies_map_builder() {
    let template = |n| CircuitBreaker::builder("hosts").consecutive_failures(n);
    let registry = KeyedRegistry::<String>::builder(template(5))
        .override_key("slow".to_string(), template(10))
        .map_builder(|b, key: &String| {
            if key == "strict" {
                b.consecutive_failures(1)
            } else {
                b
            }
        })
        .build()
        .unwrap();
    registry.try_acquire("a").unwrap().record(F);
    registry.try_acquire("slow").unwrap().record(F);
    registry.try_acquire("strict").unwrap().record(S);
    registry
        .reconfigure_from(KeyedRegistry::builder(template(2)))
        .unwrap();
    let state = |k: &str| registry.get(k).unwrap().state();
    assert_eq!((state("a"), state("slow")), (State::Closed, State::Closed));
    registry.try_acquire("slow").unwrap().record(F);
    assert_eq!(state("slow"), State::Open, "its override went: the template's 2");
    registry.try_acquire("strict").unwrap().record(F);
    assert_eq!(state("strict"), State::Open, "map_builder's 1, applied again");
    registry.try_acquire("a").unwrap().record(F);
    assert_eq!(state("a"), State::Open);
}

#[tokio::test(start_paused = true)]
async fn adding_or_dropping_the_rate_rules_keeps_the_consecutive_run() {
    let breaker = b().consecutive_failures(3).build().unwrap();
    record(&breaker, &[F, F]);
    breaker
        .reconfigure(
            b().consecutive_failures(3)
                .failure_rate(0.9)
                .count_window(4)
                .min_calls(4),
        )
        .unwrap();
    assert_eq!(counts(&breaker), (0, 0), "a window from none: it starts empty");
    assert_eq!(breaker.snapshot().consecutive_failures, 2);
    record(&breaker, &[S, F]);
    assert_eq!(counts(&breaker), (2, 1));
    breaker.reconfigure(b().consecutive_failures(3)).unwrap();
    assert_eq!(counts(&breaker), (0, 0), "no rate rule: no window");
    record(&breaker, &[F, F]);
    assert_eq!(breaker.state(), State::Open, "the run of 1 before, then 2 more");
}

#[tokio::test(start_paused = true)]
async fn a_time_window_of_the_same_length_is_kept_as_is() {
    let breaker = b()
        .failure_rate(0.5)
        .time_window(secs(10))
        .min_calls(4)
        .build()
        .unwrap();
    record(&breaker, &[F, S, S]);
    advance(secs(5)).await;
    breaker
        .reconfigure(b().failure_rate(0.25).time_window(secs(10)).min_calls(4))
        .unwrap();
    assert_eq!(counts(&breaker), (3, 1));
    assert_eq!(breaker.state(), State::Closed, "3 calls < min_calls 4");
    record(&breaker, &[S]);
    assert_eq!(
        breaker.state(),
        State::Open,
        "1/4 >= the new 0.25 on the next call"
    );
    assert_eq!(breaker.snapshot().reason, Some(Reason::FailureRate));
}

#[tokio::test(start_paused = true)]
async fn a_recovery_probe_is_kept_and_runs_at_the_deadline_the_breaker_kept() {
    let runs = Arc::new(Mutex::new(0));
    let count = runs.clone();
    let breaker = b()
        .consecutive_failures(1)
        .open_duration(secs(30))
        .recovery_probe(
            move || {
                *count.lock().unwrap() += 1;
                async { Ok::<(), std::io::Error>(()) }
            },
            secs(5),
        )
        .build()
        .unwrap();
    record(&breaker, &[F]);
    advance(secs(10)).await;
    breaker
        .reconfigure(b().consecutive_failures(1).open_duration(secs(60)))
        .unwrap();
    advance(secs(20) - Duration::from_millis(1)).await;
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    assert_eq!(*runs.lock().unwrap(), 0, "not before the deadline it had");
    advance(Duration::from_millis(1)).await;
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        *runs.lock().unwrap(),
        1,
        "the builder had none: the breaker's own ran"
    );
    assert_eq!(
        breaker.state(),
        State::HalfOpen,
        "its success lets live probes in"
    );
}
