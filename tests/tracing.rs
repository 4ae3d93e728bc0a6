//! The breaker's `tracing` events: WARN when it opens, INFO when it recovers, DEBUG per
//! rejection.

#[path = "support/capture.rs"]
mod capture;
use capture::Capture;

use std::time::Duration;

use tower_breaker::{CircuitBreaker, Outcome};
use tracing::Level;

#[tokio::test(start_paused = true)]
async fn warn_on_open_info_on_recovery_debug_per_rejection() {
    let capture = Capture::start();

    let b = CircuitBreaker::builder("traced")
        .consecutive_failures(1)
        .open_duration(Duration::from_secs(1))
        .build()
        .unwrap();
    b.try_acquire().unwrap().record(Outcome::Failure);
    assert!(b.try_acquire().is_err());
    tokio::time::advance(Duration::from_secs(1)).await;
    b.try_acquire().unwrap().record(Outcome::Success);

    let events = capture.0.lock().unwrap().clone();
    let find = |level: Level, needle: &str| events.iter().any(|(l, m)| *l == level && m.contains(needle));
    assert!(find(Level::WARN, "circuit breaker opened"), "{events:?}");
    assert!(
        find(Level::WARN, "breaker=\"traced\""),
        "the event names the breaker: {events:?}"
    );
    assert!(find(Level::WARN, "reason=consecutive_failures"), "{events:?}");
    assert!(
        find(Level::DEBUG, "circuit breaker rejected a call"),
        "{events:?}"
    );
    assert!(find(Level::INFO, "circuit breaker closed"), "{events:?}");
    let opened = events.iter().filter(|(l, _)| *l == Level::WARN).count();
    assert_eq!(opened, 1, "one WARN for one opening: {events:?}");
}

/// Issue 18 point 5: an operator's action is traced at INFO with its origin.
#[test]
fn an_override_is_traced_with_its_origin() {
    use tower_breaker::{Origin, Override};

    let capture = Capture::start();
    let b = CircuitBreaker::builder("traced")
        .consecutive_failures(1)
        .build()
        .unwrap();
    b.force_open();
    b.apply_override(Override::Reset, Origin::Remote("web-2-4242"));
    let overrides: Vec<String> = capture
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|(l, m)| *l == Level::INFO && m.contains("circuit breaker override"))
        .map(|(_, m)| m.clone())
        .collect();
    assert_eq!(overrides.len(), 2, "{overrides:?}");
    assert!(
        overrides[0].contains("action=\"force_open\"") && overrides[0].contains("origin=local"),
        "{overrides:?}"
    );
    assert!(
        overrides[1].contains("action=\"reset\"") && overrides[1].contains("origin=web-2-4242"),
        "{overrides:?}"
    );
}
