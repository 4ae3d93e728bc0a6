//! Shadow mode: a breaker that runs its state machine and publishes every event, but never
//! refuses a call (issue 18, point 3). Paused time throughout.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tower::{Layer, ServiceExt, service_fn, util::BoxCloneService};
use tower_breaker::{
    BoxError, CircuitBreaker, CircuitBreakerLayer, Event, Failover, Fallback, Outcome, Readiness, Reason,
    State,
};

/// What listeners saw, owned.
#[derive(Clone, Debug, PartialEq)]
enum Seen {
    Transition {
        from: State,
        to: State,
        reason: Reason,
        shadow: bool,
    },
    Rejected(State),
    WouldReject(State),
    Recorded(Outcome),
    Released,
}

fn recorder() -> (Arc<Mutex<Vec<Seen>>>, impl Fn(&Event<'_>) + Send + Sync + 'static) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let listener = move |e: &Event<'_>| {
        let item = match *e {
            Event::Transition {
                from,
                to,
                reason,
                shadow,
                ..
            } => Seen::Transition {
                from,
                to,
                reason,
                shadow,
            },
            Event::Rejected { state, .. } => Seen::Rejected(state),
            Event::WouldReject { state, .. } => Seen::WouldReject(state),
            Event::Recorded { outcome, .. } => Seen::Recorded(outcome),
            Event::Released { .. } => Seen::Released,
            _ => return,
        };
        s.lock().unwrap().push(item);
    };
    (seen, listener)
}

fn shadow_breaker(listener: impl Fn(&Event<'_>) + Send + Sync + 'static) -> CircuitBreaker {
    CircuitBreaker::builder("openai")
        .consecutive_failures(3)
        .open_duration(Duration::from_secs(30))
        .half_open_permits(2)
        .half_open_successes(2)
        .shadow(true)
        .on_event(listener)
        .build()
        .unwrap()
}

fn trip(breaker: &CircuitBreaker) {
    for _ in 0..3 {
        breaker.try_acquire().unwrap().record(Outcome::Failure);
    }
}

fn transitions(seen: &Mutex<Vec<Seen>>) -> Vec<Seen> {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|s| matches!(s, Seen::Transition { .. }))
        .cloned()
        .collect()
}

#[tokio::test(start_paused = true)]
async fn trips_notionally_passes_every_call_and_counts_would_be_rejections() {
    let (seen, listener) = recorder();
    let breaker = shadow_breaker(listener);
    assert!(breaker.is_shadow());
    assert!(breaker.snapshot().shadow);
    trip(&breaker);

    // Notionally open: the state machine tripped, with the usual deadline and reason.
    assert_eq!(breaker.state(), State::Open);
    let snapshot = breaker.snapshot();
    assert_eq!(snapshot.reason, Some(Reason::ConsecutiveFailures));
    assert_eq!(snapshot.retry_after, Some(Duration::from_secs(30)));
    assert_eq!(snapshot.would_reject, 0);
    assert_eq!(
        transitions(&seen),
        [Seen::Transition {
            from: State::Closed,
            to: State::Open,
            reason: Reason::ConsecutiveFailures,
            shadow: true,
        }]
    );

    // Every call passes; each is a would-be rejection, and its outcome decides nothing.
    seen.lock().unwrap().clear();
    for _ in 0..5 {
        let permit = breaker.try_acquire().expect("a shadow breaker never refuses");
        assert!(!permit.is_probe());
        permit.record(Outcome::Failure);
    }
    assert_eq!(breaker.state(), State::Open);
    assert_eq!(breaker.snapshot().would_reject, 5);
    assert_eq!(*seen.lock().unwrap(), vec![Seen::WouldReject(State::Open); 5]);
    // The open period is not extended by the would-be rejections' failures.
    assert_eq!(breaker.snapshot().retry_after, Some(Duration::from_secs(30)));
}

#[tokio::test(start_paused = true)]
async fn goes_half_open_at_the_deadline_and_closes_after_probe_successes() {
    let (seen, listener) = recorder();
    let breaker = shadow_breaker(listener);
    trip(&breaker);
    tokio::time::advance(Duration::from_secs(29)).await;
    assert!(!breaker.try_acquire().unwrap().is_probe()); // still notionally open
    assert_eq!(breaker.state(), State::Open);

    tokio::time::advance(Duration::from_secs(1)).await;
    let p1 = breaker.try_acquire().unwrap();
    assert_eq!(breaker.state(), State::HalfOpen);
    let p2 = breaker.try_acquire().unwrap();
    assert!(p1.is_probe() && p2.is_probe(), "half_open_permits(2): two probes");
    // The probes are all in flight: the next call passes as a would-be rejection.
    let extra = breaker.try_acquire().unwrap();
    assert!(!extra.is_probe());
    assert_eq!(breaker.snapshot().would_reject, 2);
    assert_eq!(breaker.snapshot().probes_in_flight, 2);
    assert!(seen.lock().unwrap().contains(&Seen::WouldReject(State::HalfOpen)));

    extra.record(Outcome::Failure); // not a probe: decides nothing
    assert_eq!(breaker.state(), State::HalfOpen);
    p1.record(Outcome::Success);
    assert_eq!(breaker.state(), State::HalfOpen);
    p2.record(Outcome::Success);
    assert_eq!(breaker.state(), State::Closed);
    assert_eq!(
        transitions(&seen),
        [
            Seen::Transition {
                from: State::Closed,
                to: State::Open,
                reason: Reason::ConsecutiveFailures,
                shadow: true,
            },
            Seen::Transition {
                from: State::Open,
                to: State::HalfOpen,
                reason: Reason::OpenElapsed,
                shadow: true,
            },
            Seen::Transition {
                from: State::HalfOpen,
                to: State::Closed,
                reason: Reason::ProbesSucceeded,
                shadow: true,
            },
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_reopens_notionally_with_the_next_backoff() {
    let (_, listener) = recorder();
    let breaker = CircuitBreaker::builder("openai")
        .consecutive_failures(1)
        .open_backoff(tower_breaker::Backoff::exponential(
            Duration::from_secs(10),
            2.0,
            Duration::from_secs(600),
        ))
        .shadow(true)
        .on_event(listener)
        .build()
        .unwrap();
    breaker.try_acquire().unwrap().record(Outcome::Failure);
    assert_eq!(breaker.snapshot().open_for, Some(Duration::from_secs(10)));
    tokio::time::advance(Duration::from_secs(10)).await;
    let probe = breaker.try_acquire().unwrap();
    assert!(probe.is_probe());
    probe.record(Outcome::Failure);
    assert_eq!(breaker.state(), State::Open);
    assert_eq!(breaker.snapshot().open_for, Some(Duration::from_secs(20)));
    assert!(breaker.try_acquire().is_ok());
}

#[tokio::test(start_paused = true)]
async fn switching_to_enforce_while_notionally_open_refuses_at_once_and_back_passes_again() {
    let (seen, listener) = recorder();
    let breaker = shadow_breaker(listener);
    trip(&breaker);
    assert!(breaker.try_acquire().is_ok());

    breaker.set_shadow(false);
    assert!(!breaker.is_shadow());
    assert!(!breaker.snapshot().shadow);
    let refused = breaker
        .try_acquire()
        .expect_err("enforcing: the open breaker refuses");
    assert_eq!(refused.retry_after(), Some(Duration::from_secs(30)));
    assert_eq!(breaker.state(), State::Open); // the state and deadline were kept
    assert_eq!(seen.lock().unwrap().last(), Some(&Seen::Rejected(State::Open)));

    breaker.set_shadow(true);
    assert!(breaker.try_acquire().is_ok());
    assert_eq!(seen.lock().unwrap().last(), Some(&Seen::WouldReject(State::Open)));
    assert_eq!(breaker.snapshot().would_reject, 2);
    // Transitions after the switch say the breaker is enforcing.
    breaker.set_shadow(false);
    tokio::time::advance(Duration::from_secs(30)).await;
    let probe = breaker.try_acquire().unwrap();
    assert_eq!(
        transitions(&seen).last(),
        Some(&Seen::Transition {
            from: State::Open,
            to: State::HalfOpen,
            reason: Reason::OpenElapsed,
            shadow: false,
        })
    );
    let _second = breaker.try_acquire().unwrap();
    assert!(
        breaker.try_acquire().is_err(),
        "enforcing: the third call finds the probes full"
    );
    drop(probe);
}

#[tokio::test(start_paused = true)]
async fn a_breaker_switched_to_shadow_at_runtime_passes_forced_open_and_server_waits() {
    let breaker = CircuitBreaker::builder("openai")
        .consecutive_failures(1)
        .build()
        .unwrap();
    assert!(!breaker.snapshot().shadow);
    breaker.force_open();
    assert!(breaker.try_acquire().is_err());
    breaker.set_shadow(true);
    assert!(breaker.try_acquire().is_ok());
    assert!(breaker.try_probe_early().is_ok());
    breaker.reset();
    breaker.trip(Duration::from_secs(60));
    assert_eq!(breaker.state(), State::Open);
    assert!(breaker.try_acquire().is_ok());
    assert_eq!(breaker.snapshot().would_reject, 3);
}

type Svc = BoxCloneService<String, String, BoxError>;

fn answering(name: &'static str, fail: bool) -> (Arc<AtomicUsize>, Svc) {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let svc = service_fn(move |req: String| {
        c.fetch_add(1, Ordering::SeqCst);
        async move {
            if fail {
                Err::<String, BoxError>(format!("{name} failed").into())
            } else {
                Ok(format!("{name}: {req}"))
            }
        }
    });
    (calls, BoxCloneService::new(svc))
}

#[tokio::test(start_paused = true)]
async fn fallback_and_failover_never_treat_a_shadow_breaker_as_open() {
    for readiness in [Readiness::FailFast, Readiness::RejectOnCall] {
        let breaker = CircuitBreaker::builder("openai")
            .consecutive_failures(1)
            .shadow(true)
            .build()
            .unwrap();
        breaker.try_acquire().unwrap().record(Outcome::Failure);
        assert_eq!(breaker.state(), State::Open);

        let guarded = |inner: Svc| -> Svc {
            BoxCloneService::new(
                CircuitBreakerLayer::new(breaker.clone())
                    .readiness(readiness)
                    .layer(inner),
            )
        };
        let (primary_calls, primary) = answering("openai", false);
        let (secondary_calls, secondary) = answering("cache", false);
        let fallback = Fallback::new(guarded(primary), secondary);
        assert_eq!(fallback.oneshot("q".to_owned()).await.unwrap(), "openai: q");

        let (_, primary2) = answering("openai", false);
        let (_, other) = answering("anthropic", false);
        let chain = Failover::new([("openai", guarded(primary2)), ("anthropic", other)]);
        assert_eq!(chain.oneshot("q".to_owned()).await.unwrap(), "openai: q");

        assert_eq!(primary_calls.load(Ordering::SeqCst), 1);
        assert_eq!(secondary_calls.load(Ordering::SeqCst), 0);
        assert_eq!(breaker.snapshot().would_reject, 2, "{readiness:?}");
    }
}

/// Issue 18 point 3: a registry-wide switch, for live keys and keys created later.
#[tokio::test(start_paused = true)]
async fn a_keyed_registry_switches_shadow_mode_for_live_and_new_keys() {
    use tower_breaker::keyed::KeyedRegistry;

    let registry = KeyedRegistry::<String>::builder(
        CircuitBreaker::builder("openai")
            .consecutive_failures(1)
            .open_duration(Duration::from_secs(30)),
    )
    .override_key(
        "o3".to_string(),
        CircuitBreaker::builder("openai").consecutive_failures(2),
    )
    .build()
    .unwrap();
    registry.try_acquire("gpt-4o").unwrap().record(Outcome::Failure);
    assert!(registry.try_acquire("gpt-4o").is_err(), "enforcing: open refuses");

    registry.set_shadow(true);
    // The live key lets calls through while notionally open ...
    assert!(registry.try_acquire("gpt-4o").is_ok());
    assert_eq!(registry.get("gpt-4o").unwrap().snapshot().would_reject, 1);
    // ... and keys created later start in shadow mode, an overridden one too.
    for key in ["gpt-4o-mini", "o3"] {
        let breaker = registry.get(key).unwrap();
        assert!(breaker.is_shadow(), "{key}");
        breaker.force_open();
        assert!(registry.try_acquire(key).is_ok(), "{key}");
    }

    registry.set_shadow(false);
    for key in ["gpt-4o", "gpt-4o-mini", "o3", "later"] {
        assert!(!registry.get(key).unwrap().is_shadow(), "{key}");
    }
    assert!(registry.try_acquire("gpt-4o").is_err(), "enforcing again");
    assert!(registry.try_acquire("later").is_ok(), "a new key, closed");
}
