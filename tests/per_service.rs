//! `CircuitBreakerLayer::per_service`: each service's breaker has its own name
//! (`"{base}-{index}"`, or `name_with`), its builder can be adjusted per service
//! (`map_builder`), and `breakers()` reaches the breakers in use for health and metrics.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use tower::{Service, ServiceExt, service_fn};
use tower_breaker::{
    BoxError, CircuitBreaker, CircuitBreakerLayer, Layer, State, integrations::health::HealthReport,
};

fn ok_service() -> impl Service<u32, Response = u32, Error = BoxError, Future: Send> + Clone {
    service_fn(|x: u32| async move { Ok::<_, BoxError>(x) })
}

fn names(layer: &CircuitBreakerLayer) -> Vec<String> {
    layer.breakers().iter().map(|b| b.name().to_owned()).collect()
}

#[test]
fn default_names_are_base_dash_index_and_clones_of_the_layer_keep_counting() {
    let layer =
        CircuitBreakerLayer::per_service(CircuitBreaker::builder("route").consecutive_failures(1)).unwrap();
    let a = layer.layer(ok_service());
    // A router clones the layer for each route: the clone continues the count.
    let b = layer.clone().layer(ok_service());
    assert_eq!(a.breaker().name(), "route-0");
    assert_eq!(b.breaker().name(), "route-1");
    assert_eq!(names(&layer), ["route-0", "route-1"]);
}

#[test]
fn name_with_names_each_breaker() {
    let routes = ["/checkout", "/search"];
    let layer = CircuitBreakerLayer::per_service(CircuitBreaker::builder("api").consecutive_failures(1))
        .unwrap()
        .name_with(move |base, i| format!("{base} {}", routes[i]));
    let _svcs: Vec<_> = routes.iter().map(|_| layer.layer(ok_service())).collect();
    assert_eq!(names(&layer), ["api /checkout", "api /search"]);
}

#[tokio::test]
async fn map_builder_adjusts_each_builder_but_not_its_rules() {
    let events = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (e, s) = (events.clone(), seen.clone());
    let layer = CircuitBreakerLayer::per_service(CircuitBreaker::builder("ep").consecutive_failures(2))
        .unwrap()
        .map_builder(move |builder, i| {
            s.lock().unwrap().push(i);
            let e = e.clone();
            builder
                .on_event(move |_| {
                    e.fetch_add(1, Ordering::Relaxed);
                })
                .consecutive_failures(1) // not applied: the template's rules hold
        });
    let failing = service_fn(|_: u32| async { Err::<u32, BoxError>("down".into()) });
    let mut svc = layer.layer(failing);
    let _keep = layer.layer(ok_service());
    assert_eq!(*seen.lock().unwrap(), [0, 1]);

    let _ = svc.ready().await.unwrap().call(1).await;
    assert_eq!(
        svc.breaker().state(),
        State::Closed,
        "the template's 2 failures, not 1"
    );
    let _ = svc.ready().await.unwrap().call(1).await;
    assert_eq!(svc.breaker().state(), State::Open);
    assert!(
        events.load(Ordering::Relaxed) > 0,
        "the listener added in map_builder runs"
    );
}

#[test]
fn breakers_lists_only_the_breakers_in_use() {
    let layer =
        CircuitBreakerLayer::per_service(CircuitBreaker::builder("ep").consecutive_failures(1)).unwrap();
    let a = layer.layer(ok_service());
    let b = layer.layer(ok_service());
    let c = layer.layer(ok_service());
    assert_eq!(names(&layer), ["ep-0", "ep-1", "ep-2"]);
    drop(b);
    assert_eq!(
        names(&layer),
        ["ep-0", "ep-2"],
        "a dropped service's breaker is gone"
    );
    let handle = a.breaker().clone();
    drop(a);
    assert_eq!(
        names(&layer),
        ["ep-0", "ep-2"],
        "a handle held elsewhere keeps it listed"
    );
    drop((handle, c));
    assert!(layer.breakers().is_empty());
}

#[test]
fn a_shared_layer_lists_its_one_breaker_and_keeps_its_name() {
    let breaker = CircuitBreaker::builder("shared")
        .consecutive_failures(1)
        .build()
        .unwrap();
    let layer = CircuitBreakerLayer::new(breaker).name_with(|_, i| format!("ignored-{i}"));
    let a = layer.layer(ok_service());
    assert_eq!(a.breaker().name(), "shared");
    assert_eq!(names(&layer), ["shared"]);
}

#[tokio::test]
async fn health_report_has_an_entry_per_service() {
    let layer =
        CircuitBreakerLayer::per_service(CircuitBreaker::builder("ep").consecutive_failures(1)).unwrap();
    let failing = service_fn(|_: u32| async { Err::<u32, BoxError>("down".into()) });
    let svc = layer.layer(failing);
    let _healthy = layer.layer(ok_service());
    let _ = svc.clone().oneshot(1).await; // `svc` stays: its breaker is in use

    let report = layer
        .breakers()
        .iter()
        .fold(HealthReport::new(), |r, b| r.breaker(b));
    assert_eq!(
        report.breakers.len(),
        2,
        "distinct names: no entry overwrites another"
    );
    assert_eq!(report.breakers["ep-0"].state, State::Open);
    assert_eq!(report.breakers["ep-1"].state, State::Closed);
}

#[cfg(feature = "prometheus-client")]
#[tokio::test]
async fn prometheus_series_per_service_through_map_builder() {
    use prometheus_client::{encoding::text::encode, registry::Registry};
    use tower_breaker::integrations::prometheus::BreakerMetrics;

    let mut registry = Registry::default();
    let metrics = BreakerMetrics::register(&mut registry);
    let m = metrics.clone();
    let layer = CircuitBreakerLayer::per_service(CircuitBreaker::builder("ep").consecutive_failures(1))
        .unwrap()
        .map_builder(move |builder, _| m.instrument(builder));
    let failing = service_fn(|_: u32| async { Err::<u32, BoxError>("down".into()) });
    let svc = layer.layer(failing);
    let healthy = layer.layer(ok_service());
    for b in layer.breakers() {
        metrics.watch(&b);
    }
    let _ = svc.clone().oneshot(1).await;
    let _ = healthy.clone().oneshot(1).await;

    let mut text = String::new();
    encode(&mut text, &registry).unwrap();
    assert!(
        text.contains(r#"circuit_breaker_calls_total{breaker="ep-0",outcome="failure"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"circuit_breaker_calls_total{breaker="ep-1",outcome="success"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"circuit_breaker_state{breaker="ep-0"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"circuit_breaker_state{breaker="ep-1"} 0"#),
        "{text}"
    );
}
