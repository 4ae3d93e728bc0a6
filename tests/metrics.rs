//! The `metrics` listener, checked with metrics-util's debugging recorder.
#![cfg(feature = "metrics")]

use std::{collections::HashMap, time::Duration};

use metrics_util::{
    MetricKind,
    debugging::{DebugValue, DebuggingRecorder, Snapshotter},
};
use tokio::time::advance;
use tower_breaker::{CircuitBreaker, Outcome, State, integrations::metrics as m, keyed::KeyedRegistry};

type Values = HashMap<(MetricKind, String, Vec<(String, String)>), DebugValue>;

/// Reads every metric once (the debugging recorder resets values it hands out).
fn take(snap: &Snapshotter) -> Values {
    snap.snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, v)| {
            let (kind, key) = key.into_parts();
            let mut labels: Vec<(String, String)> = key
                .labels()
                .map(|l| (l.key().to_string(), l.value().to_string()))
                .collect();
            labels.sort();
            ((kind, key.name().to_string(), labels), v)
        })
        .collect()
}

fn lookup<'v>(
    values: &'v Values,
    kind: MetricKind,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<&'v DebugValue> {
    let mut want: Vec<(String, String)> = labels
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    want.sort();
    values.get(&(kind, name.to_string(), want))
}

fn counter(values: &Values, name: &str, labels: &[(&str, &str)]) -> u64 {
    match lookup(values, MetricKind::Counter, name, labels) {
        Some(DebugValue::Counter(n)) => *n,
        None => 0,
        other => panic!("{name}: {other:?}"),
    }
}

fn gauge(values: &Values, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    match lookup(values, MetricKind::Gauge, name, labels) {
        Some(DebugValue::Gauge(g)) => Some(g.into_inner()),
        None => None,
        other => panic!("{name}: {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn the_listener_counts_outcomes_rejections_transitions_and_tracks_state() {
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    // Transition counters are registered on first use: keep the recorder for the whole test.
    let _guard = metrics::set_default_local_recorder(&recorder);
    let breaker = m::instrument(
        CircuitBreaker::builder("openai")
            .consecutive_failures(2)
            .slow_calls(Duration::from_secs(1), 1.0)
            .open_duration(Duration::from_secs(30)),
    )
    .build()
    .unwrap();
    let b = [("breaker", "openai")];
    assert_eq!(gauge(&take(&snap), m::STATE, &b), Some(0.0), "registered closed");

    breaker.try_acquire().unwrap().record(Outcome::Success);
    breaker.try_acquire().unwrap().record(Outcome::Ignore);
    drop(breaker.try_acquire().unwrap()); // cancelled
    let slow = breaker.try_acquire().unwrap();
    advance(Duration::from_secs(2)).await;
    slow.record(Outcome::Success);
    breaker.try_acquire().unwrap().record(Outcome::Failure);
    breaker.try_acquire().unwrap().record(Outcome::Failure); // trips
    assert!(breaker.try_acquire().is_err());
    assert!(breaker.try_acquire().is_err());

    let v = take(&snap);
    let calls = |o: &str| counter(&v, m::CALLS, &[("breaker", "openai"), ("outcome", o)]);
    assert_eq!(calls("success"), 2);
    assert_eq!(calls("ignored"), 1);
    assert_eq!(calls("cancelled"), 1);
    assert_eq!(calls("failure"), 2);
    assert_eq!(calls("rejected"), 2);
    assert_eq!(counter(&v, m::SLOW_CALLS, &b), 1);
    assert_eq!(gauge(&v, m::STATE, &b), Some(1.0));
    let t = |v: &Values, from: &str, to: &str, reason: &str| {
        counter(
            v,
            m::TRANSITIONS,
            &[
                ("breaker", "openai"),
                ("from", from),
                ("to", to),
                ("reason", reason),
                ("shadow", "false"),
            ],
        )
    };
    assert_eq!(t(&v, "closed", "open", "consecutive_failures"), 1);

    advance(Duration::from_secs(30)).await;
    breaker.try_acquire().unwrap().record(Outcome::Success);
    assert_eq!(breaker.state(), State::Closed);
    let v = take(&snap);
    assert_eq!(t(&v, "open", "half_open", "open_elapsed"), 1);
    assert_eq!(t(&v, "half_open", "closed", "probes_succeeded"), 1);
    assert_eq!(gauge(&v, m::STATE, &b), Some(0.0));

    breaker.force_open();
    assert_eq!(gauge(&take(&snap), m::STATE, &b), Some(3.0));
    breaker.disable();
    let v = take(&snap);
    assert_eq!(gauge(&v, m::STATE, &b), Some(4.0));
    assert_eq!(t(&v, "forced_open", "disabled", "disabled"), 1);
}

#[tokio::test(start_paused = true)]
async fn shadow_mode_counts_would_be_rejections_labels_transitions_and_sets_a_gauge() {
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let breaker = m::instrument(
        CircuitBreaker::builder("openai")
            .consecutive_failures(1)
            .shadow(true),
    )
    .build()
    .unwrap();
    let b = [("breaker", "openai")];
    let v = take(&snap);
    assert_eq!(gauge(&v, m::SHADOW, &b), Some(1.0), "set when instrumented");

    breaker.try_acquire().unwrap().record(Outcome::Failure); // notionally opens
    breaker.try_acquire().unwrap().record(Outcome::Success); // passes: a would-be rejection
    let _ = breaker.try_acquire().unwrap();
    let v = take(&snap);
    let calls = |v: &Values, o: &str| counter(v, m::CALLS, &[("breaker", "openai"), ("outcome", o)]);
    assert_eq!(calls(&v, "would_reject"), 2);
    assert_eq!(calls(&v, "rejected"), 0);
    assert_eq!(
        calls(&v, "success"),
        0,
        "a would-be rejection's outcome is not recorded"
    );
    let transition = |v: &Values, shadow: &str| {
        counter(
            v,
            m::TRANSITIONS,
            &[
                ("breaker", "openai"),
                ("from", "closed"),
                ("to", "open"),
                ("reason", "consecutive_failures"),
                ("shadow", shadow),
            ],
        )
    };
    assert_eq!(transition(&v, "true"), 1);
    assert_eq!(transition(&v, "false"), 0);

    // Enforce: the gauge follows, and the switch is counted as an operator's action.
    breaker.set_shadow(false);
    breaker.reset();
    let v = take(&snap);
    assert_eq!(gauge(&v, m::SHADOW, &b), Some(0.0));
    let overrides = |v: &Values, action: &str| {
        counter(
            v,
            m::OVERRIDES,
            &[("breaker", "openai"), ("action", action), ("origin", "local")],
        )
    };
    assert_eq!(overrides(&v, "shadow_off"), 1);
    assert_eq!(overrides(&v, "reset"), 1);
    breaker.try_acquire().unwrap().record(Outcome::Failure);
    assert!(breaker.try_acquire().is_err());
    let v = take(&snap);
    assert_eq!(transition(&v, "false"), 1);
    assert_eq!(calls(&v, "rejected"), 1);

    // An action from another replica says so.
    breaker.apply_override(
        tower_breaker::Override::ForceOpen,
        tower_breaker::Origin::Remote("web-2"),
    );
    let v = take(&snap);
    assert_eq!(
        counter(
            &v,
            m::OVERRIDES,
            &[
                ("breaker", "openai"),
                ("action", "force_open"),
                ("origin", "remote")
            ],
        ),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn report_sets_the_rate_gauges_from_a_snapshot() {
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    let breaker = CircuitBreaker::builder("rates")
        .failure_rate(0.9)
        .slow_calls(Duration::from_secs(1), 0.9)
        .min_calls(100)
        .build()
        .unwrap();
    for i in 0..4 {
        let p = breaker.try_acquire().unwrap();
        if i == 0 {
            advance(Duration::from_secs(2)).await;
        }
        p.record(if i < 3 { Outcome::Success } else { Outcome::Failure });
    }
    metrics::with_local_recorder(&recorder, || m::report(&breaker));
    let v = take(&snap);
    let b = [("breaker", "rates")];
    assert_eq!(gauge(&v, m::FAILURE_RATE, &b), Some(0.25));
    assert_eq!(gauge(&v, m::SLOW_CALL_RATE, &b), Some(0.25));
    assert_eq!(gauge(&v, m::STATE, &b), Some(0.0));
}

#[tokio::test(start_paused = true)]
async fn keyed_breakers_are_labelled_with_their_key() {
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    let registry =
        KeyedRegistry::<String>::builder(CircuitBreaker::builder("openai").consecutive_failures(1))
            .map_builder(m::instrument_keyed)
            .build()
            .unwrap();
    metrics::with_local_recorder(&recorder, || {
        registry.try_acquire("gpt-4o").unwrap().record(Outcome::Failure);
        registry
            .try_acquire("gpt-4o-mini")
            .unwrap()
            .record(Outcome::Success);
    });
    assert!(registry.try_acquire("gpt-4o").is_err());
    let v = take(&snap);
    let calls = |key: &str, name: &str, o: &str| {
        counter(&v, m::CALLS, &[("breaker", name), ("key", key), ("outcome", o)])
    };
    assert_eq!(calls("gpt-4o", "openai:gpt-4o", "failure"), 1);
    assert_eq!(calls("gpt-4o", "openai:gpt-4o", "rejected"), 1);
    assert_eq!(calls("gpt-4o-mini", "openai:gpt-4o-mini", "success"), 1);
    assert_eq!(
        gauge(&v, m::STATE, &[("breaker", "openai:gpt-4o"), ("key", "gpt-4o")]),
        Some(1.0)
    );

    metrics::with_local_recorder(&recorder, || m::report_keyed(&registry));
    assert_eq!(gauge(&take(&snap), m::KEYS, &[("registry", "openai")]), Some(2.0));
}

#[test]
fn describe_registers_help_text() {
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        m::describe();
        metrics::gauge!(m::STATE).set(0.0);
    });
    let described = snap
        .snapshot()
        .into_vec()
        .into_iter()
        .any(|(k, _, desc, _)| k.key().name() == m::STATE && desc.is_some());
    assert!(described);
}
