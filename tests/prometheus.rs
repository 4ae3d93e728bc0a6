//! The prometheus-client integration: counters from the listener, gauges read from the
//! breakers at scrape time.
#![cfg(feature = "prometheus-client")]

use std::time::Duration;

use prometheus_client::{encoding::text::encode, registry::Registry};
use tokio::time::advance;
use tower_breaker::{
    CircuitBreaker, Outcome, integrations::prometheus::BreakerMetrics, keyed::KeyedRegistry,
};

fn scrape(registry: &Registry) -> String {
    let mut text = String::new();
    encode(&mut text, registry).unwrap();
    text
}

fn line<'a>(text: &'a str, series: &str) -> Option<&'a str> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .map(|l| &l[series.len() + 1..])
}

#[tokio::test(start_paused = true)]
async fn gauges_read_the_breaker_and_counters_count_events() {
    let mut registry = Registry::default();
    let metrics = BreakerMetrics::register(&mut registry);
    let breaker = metrics
        .build(
            CircuitBreaker::builder("openai")
                .consecutive_failures(2)
                .failure_rate(1.0)
                .min_calls(10)
                .open_duration(Duration::from_secs(30)),
        )
        .unwrap();
    breaker.try_acquire().unwrap().record(Outcome::Success);
    breaker.try_acquire().unwrap().record(Outcome::Failure);
    let text = scrape(&registry);
    assert_eq!(
        line(&text, r#"circuit_breaker_state{breaker="openai"}"#),
        Some("0.0")
    );
    assert_eq!(
        line(&text, r#"circuit_breaker_failure_rate{breaker="openai"}"#),
        Some("0.5")
    );
    assert_eq!(
        line(&text, r#"circuit_breaker_consecutive_failures{breaker="openai"}"#),
        Some("1.0")
    );
    assert_eq!(
        line(
            &text,
            r#"circuit_breaker_calls_total{breaker="openai",outcome="success"}"#
        ),
        Some("1")
    );
    assert!(text.contains("# HELP circuit_breaker_state Circuit breaker state"));
    assert!(text.contains("# TYPE circuit_breaker_calls counter"));

    breaker.try_acquire().unwrap().record(Outcome::Failure); // trips
    assert!(breaker.try_acquire().is_err());
    let text = scrape(&registry);
    assert_eq!(
        line(&text, r#"circuit_breaker_state{breaker="openai"}"#),
        Some("1.0")
    );
    assert_eq!(
        line(
            &text,
            r#"circuit_breaker_calls_total{breaker="openai",outcome="failure"}"#
        ),
        Some("2")
    );
    assert_eq!(
        line(
            &text,
            r#"circuit_breaker_calls_total{breaker="openai",outcome="rejected"}"#
        ),
        Some("1")
    );
    assert_eq!(
        line(
            &text,
            r#"circuit_breaker_transitions_total{breaker="openai",from="closed",to="open",reason="consecutive_failures",shadow="false"}"#
        ),
        Some("1")
    );

    // The gauge is the breaker's state now, not a copy kept by events: the lazy
    // open → half-open move shows as soon as a call makes it.
    advance(Duration::from_secs(30)).await;
    let probe = breaker.try_acquire().unwrap();
    let text = scrape(&registry);
    assert_eq!(
        line(&text, r#"circuit_breaker_state{breaker="openai"}"#),
        Some("2.0")
    );
    drop(probe);
    let text = scrape(&registry);
    assert_eq!(
        line(
            &text,
            r#"circuit_breaker_calls_total{breaker="openai",outcome="cancelled"}"#
        ),
        Some("1")
    );

    // Watched breakers are held weakly: dropped, their gauges go.
    drop(breaker);
    let text = scrape(&registry);
    assert_eq!(line(&text, r#"circuit_breaker_state{breaker="openai"}"#), None);
}

#[tokio::test(start_paused = true)]
async fn shadow_mode_has_its_gauge_its_would_be_rejections_and_labelled_transitions() {
    let mut registry = Registry::default();
    let metrics = BreakerMetrics::register(&mut registry);
    let breaker = metrics
        .build(
            CircuitBreaker::builder("openai")
                .consecutive_failures(1)
                .shadow(true),
        )
        .unwrap();
    breaker.try_acquire().unwrap().record(Outcome::Failure); // notionally opens
    let _ = breaker.try_acquire().unwrap(); // passes: a would-be rejection
    let text = scrape(&registry);
    assert_eq!(
        line(&text, r#"circuit_breaker_shadow{breaker="openai"}"#),
        Some("1.0")
    );
    assert_eq!(
        line(&text, r#"circuit_breaker_state{breaker="openai"}"#),
        Some("1.0")
    );
    assert_eq!(
        line(
            &text,
            r#"circuit_breaker_calls_total{breaker="openai",outcome="would_reject"}"#
        ),
        Some("1")
    );
    assert_eq!(
        line(
            &text,
            r#"circuit_breaker_transitions_total{breaker="openai",from="closed",to="open",reason="consecutive_failures",shadow="true"}"#
        ),
        Some("1")
    );

    breaker.set_shadow(false);
    let text = scrape(&registry);
    assert_eq!(
        line(&text, r#"circuit_breaker_shadow{breaker="openai"}"#),
        Some("0.0")
    );
    assert_eq!(
        line(
            &text,
            r#"circuit_breaker_overrides_total{breaker="openai",action="shadow_off",origin="local"}"#
        ),
        Some("1")
    );
    assert!(breaker.try_acquire().is_err(), "enforcing");
}

#[tokio::test(start_paused = true)]
async fn keyed_registries_are_read_key_by_key() {
    let mut registry = Registry::default();
    let metrics = BreakerMetrics::register(&mut registry);
    let m = metrics.clone();
    let keyed = KeyedRegistry::<String>::builder(CircuitBreaker::builder("openai").consecutive_failures(1))
        .map_builder(move |b, key| m.instrument_keyed(b, key))
        .build()
        .unwrap();
    metrics.watch_keyed(&keyed);
    keyed.try_acquire("gpt-4o").unwrap().record(Outcome::Failure);
    keyed.try_acquire("gpt-4o-mini").unwrap().record(Outcome::Success);
    let text = scrape(&registry);
    assert_eq!(
        line(
            &text,
            r#"circuit_breaker_state{breaker="openai:gpt-4o",key="gpt-4o"}"#
        ),
        Some("1.0")
    );
    assert_eq!(
        line(
            &text,
            r#"circuit_breaker_state{breaker="openai:gpt-4o-mini",key="gpt-4o-mini"}"#
        ),
        Some("0.0")
    );
    assert_eq!(
        line(
            &text,
            r#"circuit_breaker_calls_total{breaker="openai:gpt-4o-mini",key="gpt-4o-mini",outcome="success"}"#
        ),
        Some("1")
    );
    assert_eq!(
        line(&text, r#"circuit_breaker_keys{registry="openai"}"#),
        Some("2")
    );
}

/// The distinct `key` labels in a scrape.
fn keys_in(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter_map(|l| {
            l.split_once("key=\"")
                .map(|(_, rest)| rest.split('"').next().unwrap().to_string())
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn evicted_keys_take_their_series_with_them_so_key_churn_keeps_a_scrape_bounded() {
    let mut registry = Registry::default();
    let metrics = BreakerMetrics::register(&mut registry);
    let m = metrics.clone();
    let keyed = KeyedRegistry::<String>::builder(
        CircuitBreaker::builder("up")
            .consecutive_failures(1)
            .open_duration(Duration::from_secs(10)),
    )
    .max_keys(8)
    .idle_timeout(Duration::from_secs(60))
    .map_builder(move |b, key| m.instrument_keyed(b, key))
    .build()
    .unwrap();
    metrics.watch_keyed(&keyed);

    // 1,000 hosts come and go; some trip (a transition series) and come back.
    for i in 0..1_000 {
        let key = format!("host-{i}");
        let outcome = if i % 10 == 0 {
            Outcome::Failure
        } else {
            Outcome::Success
        };
        if let Ok(permit) = keyed.try_acquire(key.as_str()) {
            permit.record(outcome);
        }
        if i % 100 == 99 {
            advance(Duration::from_secs(61)).await; // the tripped ones' periods end
        }
    }
    let text = scrape(&registry);
    let held: std::collections::BTreeSet<String> = keyed.snapshot().into_iter().map(|(k, _)| k).collect();
    assert!(held.len() <= 8);
    assert_eq!(keys_in(&text), held, "only the keys held have series");
    let series = text.lines().filter(|l| !l.starts_with('#')).count();
    // Per key: 6 outcomes, slow calls, 5 gauges (state, shadow, rates, run); a few transitions.
    assert!(series <= 8 * 13 + 8, "{series} series:\n{text}");
    assert_eq!(
        line(
            &text,
            r#"circuit_breaker_calls_total{breaker="up:host-1",key="host-1",outcome="success"}"#
        ),
        None,
        "an evicted key's counters are gone"
    );
    assert!(!text.contains(r#"key="host-0""#));

    // A key held by a call in flight keeps its series until the call ends and it is evicted.
    let last = held.iter().next().unwrap().clone();
    let permit = keyed.try_acquire(last.as_str()).unwrap();
    advance(Duration::from_secs(61)).await;
    for i in 0..16 {
        let _ = keyed.try_acquire(format!("later-{i}").as_str());
    }
    assert!(keys_in(&scrape(&registry)).contains(&last));
    permit.record(Outcome::Success);
}

#[tokio::test(start_paused = true)]
async fn credentials_in_a_uri_never_reach_a_label() {
    use tower::{Layer, ServiceExt, service_fn};
    use tower_breaker::keyed::{Authority, KeyedCircuitBreakerLayer};

    let mut registry = Registry::default();
    let metrics = BreakerMetrics::register(&mut registry);
    let m = metrics.clone();
    let keyed = KeyedRegistry::<String>::builder(CircuitBreaker::builder("up").consecutive_failures(1))
        .map_builder(move |b, key| m.instrument_keyed(b, key))
        .build()
        .unwrap();
    metrics.watch_keyed(&keyed);
    let svc = KeyedCircuitBreakerLayer::new(keyed, Authority::new()).layer(service_fn(
        |_: http::Request<()>| async { Err::<(), tower_breaker::BoxError>("503".into()) },
    ));
    let req = http::Request::get("https://alice:s3cr3t@api.example.com/")
        .body(())
        .unwrap();
    assert!(svc.oneshot(req).await.is_err());
    let text = scrape(&registry);
    assert_eq!(
        line(
            &text,
            r#"circuit_breaker_state{breaker="up:api.example.com",key="api.example.com"}"#
        ),
        Some("1.0")
    );
    assert!(!text.contains("s3cr3t") && !text.contains("alice"), "{text}");
}
