//! The health report: verdicts, and its JSON shape with the `serde` feature.

use std::time::Duration;

use tower_breaker::{
    CircuitBreaker, Outcome, State,
    integrations::health::{HealthReport, Overall},
    keyed::KeyedRegistry,
};

fn breaker(name: &str) -> CircuitBreaker {
    CircuitBreaker::builder(name)
        .consecutive_failures(1)
        .failure_rate(0.5)
        .open_duration(Duration::from_secs(30))
        .build()
        .unwrap()
}

#[test]
fn verdicts_cover_every_state() {
    use State::*;
    assert_eq!(HealthReport::verdict([]), Overall::Healthy);
    assert_eq!(HealthReport::verdict([Closed, Disabled]), Overall::Healthy);
    assert_eq!(HealthReport::verdict([Closed, Open]), Overall::Degraded);
    assert_eq!(HealthReport::verdict([Closed, HalfOpen]), Overall::Degraded);
    assert_eq!(HealthReport::verdict([Disabled, ForcedOpen]), Overall::Degraded);
    assert_eq!(
        HealthReport::verdict([Open, ForcedOpen, HalfOpen]),
        Overall::Critical
    );
    assert_eq!(HealthReport::verdict([Open]), Overall::Critical);
}

#[tokio::test(start_paused = true)]
async fn a_report_over_breakers_and_keyed_registries() {
    let openai = breaker("openai");
    let keyed =
        KeyedRegistry::<String>::new(CircuitBreaker::builder("model").consecutive_failures(1)).unwrap();
    keyed.get("a").unwrap();
    keyed.try_acquire("b").unwrap().record(Outcome::Failure);
    let report = HealthReport::new().breaker(&openai).keyed(&keyed);
    assert_eq!(
        report.breakers.keys().collect::<Vec<_>>(),
        ["model:a", "model:b", "openai"]
    );
    assert_eq!(report.overall, Overall::Degraded);
    assert_eq!(report.status(), http::StatusCode::OK);

    openai.force_open();
    keyed.get("a").unwrap().force_open();
    let report = HealthReport::new().breaker(&openai).keyed(&keyed);
    assert_eq!(report.overall, Overall::Critical);
    assert_eq!(report.status(), http::StatusCode::SERVICE_UNAVAILABLE);

    let again = HealthReport::from_snapshots(report.breakers.values().cloned());
    assert_eq!(again, report);
}

#[cfg(feature = "serde")]
#[tokio::test(start_paused = true)]
async fn the_report_serialises_with_durations_in_seconds() {
    let openai = breaker("openai");
    let anthropic = breaker("anthropic");
    anthropic.try_acquire().unwrap().record(Outcome::Success);
    openai.try_acquire().unwrap().record(Outcome::Failure);
    tokio::time::advance(Duration::from_millis(12_500)).await;
    let report = HealthReport::new().breaker(&openai).breaker(&anthropic);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "breakers": {
                "anthropic": {
                    "name": "anthropic", "state": "closed", "consecutive_failures": 0,
                    "calls": 1, "failures": 0, "slow_calls": 0,
                    "failure_rate": 0.0, "slow_call_rate": 0.0, "probes_in_flight": 0,
                    "retry_after_secs": null, "open_for_secs": null, "reason": null,
                    "shadow": false, "would_reject": 0, "recovery_probe": false
                },
                "openai": {
                    // The window and the run keep the calls that tripped it until it closes.
                    "name": "openai", "state": "open", "consecutive_failures": 1,
                    "calls": 1, "failures": 1, "slow_calls": 0,
                    "failure_rate": 1.0, "slow_call_rate": 0.0, "probes_in_flight": 0,
                    "retry_after_secs": 17.5, "open_for_secs": 30.0,
                    "reason": "consecutive_failures", "shadow": false, "would_reject": 0, "recovery_probe": false
                }
            },
            "overall": "degraded",
            "would_refuse": []
        })
    );
}

/// Issue 15 point 7: a consecutive-only breaker has no window, so its counts stay zero while
/// it is open; the report shows what opened it: the run of failures and the reason.
#[tokio::test(start_paused = true)]
async fn an_open_consecutive_only_breaker_shows_what_tripped_it() {
    use tower_breaker::Reason;

    let openai = CircuitBreaker::builder("openai")
        .consecutive_failures(5)
        .open_duration(Duration::from_secs(30))
        .build()
        .unwrap();
    for _ in 0..5 {
        openai.try_acquire().unwrap().record(Outcome::Failure);
    }
    let report = HealthReport::new().breaker(&openai);
    let snapshot = &report.breakers["openai"];
    assert_eq!(snapshot.state, State::Open);
    assert_eq!(
        (snapshot.calls, snapshot.failures),
        (0, 0),
        "no window configured"
    );
    assert_eq!(snapshot.consecutive_failures, 5);
    assert_eq!(snapshot.reason, Some(Reason::ConsecutiveFailures));

    // Half-open, the probe fails: open again, for that reason; the run still shows.
    tokio::time::advance(Duration::from_secs(30)).await;
    openai.try_acquire().unwrap().record(Outcome::Failure);
    let snapshot = openai.snapshot();
    assert_eq!(
        (snapshot.state, snapshot.reason),
        (State::Open, Some(Reason::ProbeFailed))
    );
    assert_eq!(snapshot.consecutive_failures, 5);

    // Closed again after a good probe: the run restarts, the reason says why it closed.
    tokio::time::advance(Duration::from_secs(60)).await;
    openai.try_acquire().unwrap().record(Outcome::Success);
    let snapshot = openai.snapshot();
    assert_eq!(snapshot.state, State::Closed);
    assert_eq!(snapshot.consecutive_failures, 0);
    assert_eq!(snapshot.reason, Some(Reason::ProbesSucceeded));

    openai.force_open();
    assert_eq!(openai.snapshot().reason, Some(Reason::Forced));
}

#[cfg(feature = "serde")]
#[tokio::test(start_paused = true)]
async fn the_json_of_an_open_consecutive_only_breaker_says_what_tripped_it() {
    let openai = CircuitBreaker::builder("openai")
        .consecutive_failures(5)
        .open_duration(Duration::from_secs(30))
        .build()
        .unwrap();
    for _ in 0..5 {
        openai.try_acquire().unwrap().record(Outcome::Failure);
    }
    let json = serde_json::to_value(HealthReport::new().breaker(&openai)).unwrap();
    let openai = &json["breakers"]["openai"];
    assert_eq!(openai["state"], "open");
    assert_eq!(openai["calls"], 0);
    assert_eq!(openai["consecutive_failures"], 5);
    assert_eq!(openai["reason"], "consecutive_failures");
    assert_eq!(json["overall"], "critical");
}

/// Issue 18 point 3: a shadow breaker refuses nothing, so a notionally open one leaves the
/// verdict healthy; the report lists it under `would_refuse`.
#[tokio::test(start_paused = true)]
async fn a_notionally_open_shadow_breaker_keeps_the_report_healthy_and_is_listed() {
    let observed = CircuitBreaker::builder("openai")
        .consecutive_failures(1)
        .shadow(true)
        .build()
        .unwrap();
    let enforcing = breaker("anthropic");
    observed.try_acquire().unwrap().record(Outcome::Failure);
    assert_eq!(observed.state(), State::Open); // notionally
    let report = HealthReport::new().breaker(&observed).breaker(&enforcing);
    assert_eq!(report.overall, Overall::Healthy);
    assert_eq!(report.status(), http::StatusCode::OK);
    assert_eq!(report.would_refuse, ["openai"]);

    // Alone, forced open: still serving, still listed.
    observed.force_open();
    let report = HealthReport::new().breaker(&observed);
    assert_eq!(
        (report.overall, report.would_refuse.as_slice()),
        (Overall::Healthy, ["openai".to_string()].as_slice())
    );

    // Enforcing, it counts: the verdict is what `would_refuse` foretold.
    observed.set_shadow(false);
    let report = HealthReport::new().breaker(&observed).breaker(&enforcing);
    assert_eq!(report.overall, Overall::Degraded);
    assert!(report.would_refuse.is_empty());
}

#[cfg(feature = "serde")]
#[test]
fn the_json_lists_the_shadow_breakers_that_would_refuse() {
    let observed = CircuitBreaker::builder("openai")
        .consecutive_failures(1)
        .shadow(true)
        .build()
        .unwrap();
    observed.force_open();
    let json = serde_json::to_value(HealthReport::new().breaker(&observed)).unwrap();
    assert_eq!(json["overall"], "healthy");
    assert_eq!(json["would_refuse"], serde_json::json!(["openai"]));
    assert_eq!(json["breakers"]["openai"]["shadow"], true);
    assert_eq!(json["breakers"]["openai"]["state"], "forced_open");
}
