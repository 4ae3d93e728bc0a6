//! Unit tests of the sampling, ranking and bounds, with samples taken at chosen instants (no
//! runtime runs here, so no sampling task starts: every sample is the test's).

use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use super::{Dashboard, hub::lock};
use crate::{CircuitBreaker, Outcome, State, keyed::KeyedRegistry};

fn json(d: &Dashboard) -> Value {
    serde_json::from_slice(&d.snapshot_json()).unwrap()
}

fn rejections(b: &CircuitBreaker, n: usize) {
    for _ in 0..n {
        assert!(b.try_acquire().is_err());
    }
}

#[test]
fn rates_are_the_counts_over_the_sample_interval() {
    let d = Dashboard::new();
    let b = d
        .build(CircuitBreaker::builder("openai").consecutive_failures(1))
        .unwrap();
    let t0 = Instant::now();
    d.hub.sample(t0);
    for _ in 0..9 {
        b.try_acquire().unwrap().record(Outcome::Success);
    }
    b.try_acquire().unwrap().record(Outcome::Failure); // trips
    rejections(&b, 4);
    d.hub.sample(t0 + Duration::from_secs(2));

    let v = json(&d);
    let view = &v["breakers"][0];
    assert_eq!(view["name"], "openai");
    assert_eq!(view["state"], "open");
    assert_eq!(view["instrumented"], true);
    assert_eq!(view["calls_per_sec"], 5.0);
    assert_eq!(view["rejections_per_sec"], 2.0);
    assert_eq!(view["history"]["state"], serde_json::json!(["closed", "open"]));
    assert_eq!(view["history"]["calls_per_sec"], serde_json::json!([null, 5.0]));
    assert_eq!(view["transitions"][0]["from"], "closed");
    assert_eq!(view["transitions"][0]["to"], "open");
    assert_eq!(view["transitions"][0]["reason"], "consecutive_failures");
    assert_eq!(view["transitions"][0]["open_for_secs"], 30.0);
}

#[test]
fn history_keeps_the_last_samples_only() {
    let d = Dashboard::builder()
        .sample_every(Duration::from_secs(1))
        .history(Duration::from_secs(3))
        .build()
        .unwrap();
    let b = d
        .build(CircuitBreaker::builder("openai").consecutive_failures(1))
        .unwrap();
    let t0 = Instant::now();
    for i in 0..10 {
        if i == 8 {
            b.force_open();
        }
        d.hub.sample(t0 + Duration::from_secs(i));
    }
    let v = json(&d);
    assert_eq!(v["history_len"], 3);
    assert_eq!(
        v["breakers"][0]["history"]["state"],
        serde_json::json!(["closed", "forced_open", "forced_open"])
    );
}

#[test]
fn transitions_keep_the_last_ones_newest_first() {
    let d = Dashboard::builder().transitions(2).build().unwrap();
    let b = d
        .build(CircuitBreaker::builder("openai").consecutive_failures(1))
        .unwrap();
    b.force_open();
    b.reset();
    b.disable();
    let v = json(&d);
    let t = &v["breakers"][0]["transitions"];
    assert_eq!(t.as_array().unwrap().len(), 2);
    assert_eq!(t[0]["to"], "disabled");
    assert_eq!(t[0]["reason"], "disabled");
    assert_eq!(t[1]["to"], "closed");
    assert_eq!(t[1]["reason"], "reset");
}

#[test]
fn a_watched_breaker_without_the_listener_shows_its_snapshot_only() {
    let d = Dashboard::new();
    let b = CircuitBreaker::builder("plain")
        .consecutive_failures(1)
        .build()
        .unwrap();
    d.watch(&b);
    b.try_acquire().unwrap().record(Outcome::Failure);
    let t0 = Instant::now();
    d.hub.sample(t0);
    d.hub.sample(t0 + Duration::from_secs(1));
    let v = json(&d);
    let view = &v["breakers"][0];
    assert_eq!(view["state"], "open");
    assert_eq!(view["instrumented"], false);
    assert_eq!(view["calls_per_sec"], Value::Null);
    assert_eq!(view["transitions"], serde_json::json!([]));
    assert_eq!(view["history"]["state"], serde_json::json!(["open", "open"]));
}

#[test]
fn instrumenting_before_watching_finds_the_counts_by_name() {
    let d = Dashboard::new();
    let b = d
        .instrument(CircuitBreaker::builder("late").consecutive_failures(1))
        .build()
        .unwrap();
    b.try_acquire().unwrap().record(Outcome::Failure);
    d.watch(&b);
    let v = json(&d);
    assert_eq!(v["breakers"][0]["instrumented"], true);
    assert_eq!(
        v["breakers"][0]["transitions"][0]["reason"],
        "consecutive_failures"
    );
}

#[test]
fn a_dropped_breaker_leaves_the_page() {
    let d = Dashboard::new();
    let b = d
        .build(CircuitBreaker::builder("gone").consecutive_failures(1))
        .unwrap();
    d.hub.sample(Instant::now());
    assert_eq!(json(&d)["breakers"].as_array().unwrap().len(), 1);
    drop(b);
    d.hub.sample(Instant::now());
    assert_eq!(json(&d)["breakers"], serde_json::json!([]));
    assert!(lock(&d.hub.registered).breakers.is_empty());
}

#[test]
fn top_keys_are_ranked_by_rejections_and_lose_history_when_they_leave() {
    let d = Dashboard::builder().top_keys(2).build().unwrap();
    let dd = d.clone();
    let registry =
        KeyedRegistry::<String>::builder(CircuitBreaker::builder("models").consecutive_failures(1))
            .map_builder(move |b, key| dd.instrument_keyed(b, key))
            .build()
            .unwrap();
    d.watch_keyed(&registry);
    for key in ["a", "b", "c", "d"] {
        registry.try_acquire(key).unwrap().record(Outcome::Failure); // every key trips
    }
    let t0 = Instant::now();
    d.hub.sample(t0);
    let (a, b, c) = (
        registry.get("a").unwrap(),
        registry.get("b").unwrap(),
        registry.get("c").unwrap(),
    );
    rejections(&a, 3);
    rejections(&b, 1);
    d.hub.sample(t0 + Duration::from_secs(1));

    let v = json(&d);
    let reg = &v["registries"][0];
    assert_eq!(reg["name"], "models");
    assert_eq!(reg["keys"], 4);
    let top = reg["top"].as_array().unwrap();
    assert_eq!(top.len(), 2);
    assert_eq!(top[0]["key"], "a");
    assert_eq!(top[0]["name"], "models:a");
    assert_eq!(top[0]["rejections_per_sec"], 3.0);
    assert_eq!(top[0]["transitions"][0]["reason"], "consecutive_failures");
    assert_eq!(top[1]["key"], "b");
    assert_eq!(
        top[1]["history"]["state"].as_array().unwrap().last().unwrap(),
        "open"
    );
    let stats_b = d.hub.find("models:b").unwrap();
    assert!(lock(&stats_b.track).history.is_some());

    // Next interval: c overtakes both; b leaves the top and its history goes.
    rejections(&c, 5);
    rejections(&a, 2);
    d.hub.sample(t0 + Duration::from_secs(2));
    let v = json(&d);
    let keys: Vec<&str> = v["registries"][0]["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["c", "a"]);
    assert!(lock(&stats_b.track).history.is_none());
    assert_eq!(b.state(), State::Open);
    let history = v["registries"][0]["top"][1]["history"]["rejections_per_sec"]
        .as_array()
        .unwrap();
    assert_eq!(history[history.len() - 2..], [3.0, 2.0]);
}

#[test]
fn open_keys_rank_before_closed_ones_among_equals() {
    let d = Dashboard::builder().top_keys(1).build().unwrap();
    let registry =
        KeyedRegistry::<String>::new(CircuitBreaker::builder("hosts").consecutive_failures(1)).unwrap();
    d.watch_keyed(&registry);
    registry.get("up").unwrap();
    registry.try_acquire("down").unwrap().record(Outcome::Failure);
    d.hub.sample(Instant::now());
    let v = json(&d);
    assert_eq!(v["registries"][0]["top"][0]["key"], "down");
    assert_eq!(v["registries"][0]["top"][0]["instrumented"], false);
}

#[test]
fn the_builder_refuses_what_it_cannot_work_with() {
    let setting = |b: super::DashboardBuilder| b.build().unwrap_err().setting();
    assert_eq!(
        setting(Dashboard::builder().sample_every(Duration::ZERO)),
        "sample_every"
    );
    assert_eq!(
        setting(
            Dashboard::builder()
                .sample_every(Duration::from_secs(2))
                .history(Duration::from_secs(1))
        ),
        "history"
    );
    assert_eq!(
        setting(
            Dashboard::builder()
                .sample_every(Duration::from_millis(10))
                .history(Duration::from_secs(60))
        ),
        "history"
    );
    assert_eq!(setting(Dashboard::builder().transitions(0)), "transitions");
    assert_eq!(setting(Dashboard::builder().top_keys(1001)), "top_keys");
    assert!(Dashboard::builder().top_keys(0).build().is_ok());
}

#[test]
fn a_shadow_breaker_shows_its_notional_state_and_its_would_be_rejections() {
    let d = Dashboard::new();
    let b = d
        .build(
            CircuitBreaker::builder("observed")
                .consecutive_failures(1)
                .shadow(true),
        )
        .unwrap();
    b.try_acquire().unwrap().record(Outcome::Failure); // notionally open
    for _ in 0..3 {
        drop(b.try_acquire().expect("a shadow breaker refuses nothing"));
    }
    let v = json(&d);
    let view = &v["breakers"][0];
    assert_eq!(view["state"], "open");
    assert_eq!(view["shadow"], true);
    assert_eq!(view["would_reject"], 3);
    assert_eq!(view["recovery_probe"], false);
    assert_eq!(view["transitions"][0]["to"], "open");
    assert_eq!(view["transitions"][0]["shadow"], true);

    b.set_shadow(false); // enforce
    rejections(&b, 1);
    b.reset();
    let v = json(&d);
    let view = &v["breakers"][0];
    assert_eq!(view["shadow"], false);
    assert_eq!(view["transitions"][0]["to"], "closed");
    assert_eq!(view["transitions"][0]["shadow"], false);
}

#[test]
fn overrides_and_reloads_are_kept_newest_first_with_their_origin() {
    let d = Dashboard::builder().transitions(3).build().unwrap();
    let b = d
        .build(CircuitBreaker::builder("openai").consecutive_failures(1))
        .unwrap();
    b.apply_override(
        crate::breaker::Override::ForceOpen,
        crate::breaker::Origin::Remote("web-2-4242"),
    );
    b.reset();
    b.reconfigure(
        CircuitBreaker::builder("openai")
            .consecutive_failures(2)
            .shadow(true),
    )
    .unwrap();
    let v = json(&d);
    let view = &v["breakers"][0];
    assert_eq!(view["shadow"], true);
    let actions = view["actions"].as_array().unwrap();
    assert_eq!(actions.len(), 3);
    for (a, (action, origin, local, shadow)) in actions.iter().zip([
        ("reload", "local", true, Value::Bool(true)),
        ("reset", "local", true, Value::Null),
        ("force_open", "web-2-4242", false, Value::Null),
    ]) {
        assert_eq!(a["action"], action, "{a}");
        assert_eq!(a["origin"], origin, "{a}");
        assert_eq!(a["local"], local, "{a}");
        assert_eq!(a["shadow"], shadow, "{a}");
        assert!(a["at_unix_ms"].as_u64().unwrap() > 0, "{a}");
    }
    // The transitions they caused, the remote one with its reason.
    let t = &view["transitions"];
    assert_eq!(
        (&t[0]["to"], &t[0]["reason"]),
        (&"closed".into(), &"reset".into())
    );
    assert_eq!(
        (&t[1]["to"], &t[1]["reason"]),
        (&"forced_open".into(), &"remote".into())
    );
    // In the order they happened: each action, then the transition it caused.
    let seq = |v: &Value| v["seq"].as_u64().unwrap();
    assert_eq!(
        [
            seq(&actions[2]),
            seq(&t[1]),
            seq(&actions[1]),
            seq(&t[0]),
            seq(&actions[0])
        ],
        [0, 1, 2, 3, 4]
    );

    // Bounded as the transitions are: the oldest goes.
    b.set_shadow(false);
    let v = json(&d);
    let actions: Vec<&str> = v["breakers"][0]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["shadow_off", "reload", "reset"]);
}

#[test]
fn shadow_keys_rank_after_refusing_ones_and_before_the_others() {
    let d = Dashboard::builder().top_keys(7).build().unwrap();
    let registry =
        KeyedRegistry::<String>::new(CircuitBreaker::builder("hosts").consecutive_failures(1)).unwrap();
    d.watch_keyed(&registry);
    registry.get("up").unwrap();
    for key in ["shadow-1", "shadow-2", "shadow-3", "shadow-4", "shadow-5", "down"] {
        registry.get(key).unwrap().set_shadow(key.starts_with("shadow"));
        registry.try_acquire(key).unwrap().record(Outcome::Failure); // each (notionally) open
    }
    assert!(
        registry.try_acquire("shadow-1").is_ok(),
        "shadow mode refuses nothing"
    );
    d.hub.sample(Instant::now());
    let v = json(&d);
    let keys: Vec<&str> = v["registries"][0]["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys.len(), 7);
    assert_eq!(keys[0], "down", "{keys:?}");
    assert!(keys[1..6].iter().all(|k| k.starts_with("shadow")), "{keys:?}");
    assert_eq!(keys[6], "up", "{keys:?}");
}

#[tokio::test(start_paused = true)]
async fn a_recovery_probe_in_flight_shows_with_the_time_left_for_its_verdict() {
    let d = Dashboard::new();
    let b = d
        .build(
            CircuitBreaker::builder("openai")
                .consecutive_failures(1)
                .open_duration(Duration::from_secs(30))
                // A probe that never answers: its timeout decides.
                .recovery_probe(
                    std::future::pending::<Result<(), std::io::Error>>,
                    Duration::from_secs(5),
                ),
        )
        .unwrap();
    b.try_acquire().unwrap().record(Outcome::Failure);
    assert_eq!(json(&d)["breakers"][0]["recovery_probe"], false);

    tokio::time::sleep(Duration::from_secs(30)).await; // the probe starts at the deadline
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let v = json(&d);
    let view = &v["breakers"][0];
    assert_eq!(view["state"], "open");
    assert_eq!(view["recovery_probe"], true);
    assert_eq!(view["retry_after_secs"], 5.0);

    // Its timeout reopens the breaker: no probe in flight any more.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let v = json(&d);
    let view = &v["breakers"][0];
    assert_eq!(view["recovery_probe"], false);
    assert_eq!(view["transitions"][0]["reason"], "recovery_probe_timed_out");
}
