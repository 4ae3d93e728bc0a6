//! Per-key breakers: isolation, overrides, extractors, the bounded registry and its eviction
//! order, the refusal in `call`.

#[path = "support/capture.rs"]
mod capture;
use capture::Capture;

use std::{sync::Arc, time::Duration};

use tokio::time::advance;
use tower::{Service, ServiceExt, service_fn};
use tower_breaker::{
    BoxError, CircuitBreaker, CircuitOpen, Layer, Outcome, State,
    keyed::{
        Authority, ExtractKey, Header, KeyedCircuitBreakerLayer, KeyedError, KeyedRegistry, PathPrefix,
        RegistryFull, WhenFull,
    },
};

fn template() -> tower_breaker::Builder {
    CircuitBreaker::builder("up")
        .consecutive_failures(1)
        .open_duration(Duration::from_secs(30))
}

fn open(registry: &KeyedRegistry<String>, key: &str) {
    registry.try_acquire(key).unwrap().record(Outcome::Failure);
    assert_eq!(registry.get(key).unwrap().state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn each_key_has_its_own_breaker_named_after_the_key() {
    let registry = KeyedRegistry::<String>::new(template()).unwrap();
    open(&registry, "a");
    assert!(registry.try_acquire("b").is_ok(), "b is unaffected by a");
    assert_eq!(registry.get("a").unwrap().name(), "up:a");
    assert_eq!(registry.get("b").unwrap().name(), "up:b");
    match registry.try_acquire("a") {
        Err(KeyedError::Open(e)) => assert_eq!(e.name(), "up:a"),
        other => panic!("expected the open breaker, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn name_with_and_map_builder_shape_each_breaker() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    let registry = KeyedRegistry::<String>::builder(template())
        .name_with(|base, key| format!("{base}/{key}"))
        .map_builder(move |b, key| {
            s.lock().unwrap().push(key.clone());
            b
        })
        .build()
        .unwrap();
    assert_eq!(registry.get("gpt-4o").unwrap().name(), "up/gpt-4o");
    registry.get("gpt-4o").unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        vec!["gpt-4o".to_string()],
        "built once per key"
    );
}

/// `map_builder` may change a key's settings, not only add listeners: the breaker is built
/// from what it returns (the settings were the template's whatever the hook did); settings it
/// makes invalid fall back to the template's.
#[tokio::test(start_paused = true)]
async fn map_builder_settings_shape_the_keys_breaker() {
    let registry = KeyedRegistry::<String>::builder(template())
        .map_builder(|b, key| match key.as_str() {
            "patient" => b.consecutive_failures(3).open_duration(Duration::from_secs(5)),
            "observed" => b.shadow(true),
            "broken" => b.consecutive_failures(0),
            _ => b,
        })
        .build()
        .unwrap();
    open(&registry, "chat"); // the template: open at the first failure, for 30 s
    for _ in 0..2 {
        registry.try_acquire("patient").unwrap().record(Outcome::Failure);
    }
    assert_eq!(
        registry.get("patient").unwrap().state(),
        State::Closed,
        "3 failures, not 1"
    );
    registry.try_acquire("patient").unwrap().record(Outcome::Failure);
    let refused = registry.get("patient").unwrap().try_acquire().unwrap_err();
    assert_eq!(refused.retry_after(), Some(Duration::from_secs(5)));

    registry.try_acquire("observed").unwrap().record(Outcome::Failure);
    let observed = registry.get("observed").unwrap();
    assert!(observed.is_shadow());
    assert_eq!(observed.state(), State::Open);
    assert!(
        registry.try_acquire("observed").is_ok(),
        "a shadow breaker refuses nothing"
    );

    // An invalid setting from the hook: the template's settings, not a panic nor a refusal.
    open(&registry, "broken");
}

#[tokio::test(start_paused = true)]
async fn an_override_builds_its_key_from_another_builder() {
    let registry = KeyedRegistry::<String>::builder(template())
        .override_key(
            "embeddings".into(),
            CircuitBreaker::builder("slow-trip").consecutive_failures(3),
        )
        .build()
        .unwrap();
    open(&registry, "chat"); // the template trips on the first failure
    for _ in 0..2 {
        registry
            .try_acquire("embeddings")
            .unwrap()
            .record(Outcome::Failure);
    }
    let embeddings = registry.get("embeddings").unwrap();
    assert_eq!(
        embeddings.state(),
        State::Closed,
        "two failures do not trip the override"
    );
    assert_eq!(embeddings.name(), "slow-trip:embeddings");
    registry
        .try_acquire("embeddings")
        .unwrap()
        .record(Outcome::Failure);
    assert_eq!(embeddings.state(), State::Open);
}

#[test]
fn invalid_settings_are_config_errors() {
    let err = KeyedRegistry::<String>::builder(template())
        .max_keys(0)
        .build()
        .unwrap_err();
    assert_eq!(err.setting(), "max_keys");
    let err = KeyedRegistry::<String>::builder(template())
        .idle_timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err.setting(), "idle_timeout");
    let err = KeyedRegistry::<String>::new(CircuitBreaker::builder("no rule")).unwrap_err();
    assert_eq!(err.setting(), "trip rules");
    let err = KeyedRegistry::<String>::builder(template())
        .override_key("x".into(), CircuitBreaker::builder("x").failure_rate(2.0))
        .build()
        .unwrap_err();
    assert_eq!(err.setting(), "failure_rate");
}

#[test]
fn http_extractors_pick_authority_path_prefix_and_header() {
    let req = |uri: &str| http::Request::get(uri).body(()).unwrap();
    let a = Authority::new();
    assert_eq!(
        a.extract(&req("https://API.OpenAI.com:443/v1/x")),
        "api.openai.com:443"
    );
    assert!(matches!(
        a.extract(&req("https://api.openai.com/")),
        std::borrow::Cow::Borrowed(_)
    ));
    let host_only = http::Request::get("/v1/x")
        .header("host", "Example.org")
        .body(())
        .unwrap();
    assert_eq!(a.extract(&host_only), "example.org");
    assert_eq!(a.extract(&req("/v1/x")), "unknown");
    assert_eq!(a.fallback("none").extract(&req("/v1/x")), "none");

    let p = PathPrefix::new(2);
    assert_eq!(p.extract(&req("/v1/chat/completions")), "/v1/chat");
    assert_eq!(p.extract(&req("/v1/chat/completions?stream=true")), "/v1/chat");
    assert_eq!(p.extract(&req("/v1/embeddings")), "/v1/embeddings");
    assert_eq!(p.extract(&req("/v1/")), "/v1");
    assert_eq!(p.extract(&req("/")), "/");
    assert_eq!(PathPrefix::new(1).extract(&req("/v1/chat")), "/v1");
    assert_eq!(PathPrefix::new(0).extract(&req("/v1/chat")), "/");

    let h = Header::new("x-model");
    let with = http::Request::get("/")
        .header("x-model", "gpt-4o")
        .body(())
        .unwrap();
    assert_eq!(h.extract(&with), "gpt-4o");
    assert_eq!(h.extract(&req("/")), "unknown");
    let bad = http::Request::get("/")
        .header("x-model", &b"\xff"[..])
        .body(())
        .unwrap();
    assert_eq!(h.clone().fallback("default").extract(&bad), "default");
}

#[tokio::test(start_paused = true)]
async fn the_service_rejects_in_call_naming_the_key_and_lets_other_keys_through() {
    let registry = KeyedRegistry::<String>::new(template()).unwrap();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = calls.clone();
    let inner = service_fn(move |req: http::Request<()>| {
        c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move {
            if req.uri().host() == Some("down.example") {
                Err::<http::Response<()>, BoxError>("503".into())
            } else {
                Ok(http::Response::new(()))
            }
        }
    });
    let mut svc = KeyedCircuitBreakerLayer::new(registry.clone(), Authority::new()).layer(inner);
    let req = |host: &str| http::Request::get(format!("http://{host}/")).body(()).unwrap();

    assert!(
        svc.ready()
            .await
            .unwrap()
            .call(req("down.example"))
            .await
            .is_err()
    );
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    // poll_ready is the inner service's: it succeeds; the refusal comes from call.
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(req("down.example"))
        .await
        .unwrap_err();
    let open = err.downcast_ref::<CircuitOpen>().expect("a CircuitOpen");
    assert_eq!(open.name(), "up:down.example");
    assert_eq!(open.retry_after(), Some(Duration::from_secs(30)));
    assert!(tower_breaker::is_circuit_open(&err));
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the inner service was not called"
    );
    assert!(svc.ready().await.unwrap().call(req("up.example")).await.is_ok());

    advance(Duration::from_secs(30)).await;
    // The probe goes through (and fails again).
    assert!(
        svc.ready()
            .await
            .unwrap()
            .call(req("down.example"))
            .await
            .is_err()
    );
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn a_closure_extractor_and_a_custom_classifier() {
    let registry = KeyedRegistry::<u32>::new(template()).unwrap();
    let inner = service_fn(|(_tenant, status): (u32, u16)| async move { Ok::<_, BoxError>(status) });
    let mut svc = KeyedCircuitBreakerLayer::new(registry.clone(), |req: &(u32, u16)| req.0)
        .classify(|r: Result<&u16, &BoxError>| match r {
            Ok(s) if *s >= 500 => Outcome::Failure,
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        })
        .layer(inner);
    assert_eq!(svc.ready().await.unwrap().call((7, 500)).await.unwrap(), 500);
    let err = svc.ready().await.unwrap().call((7, 200)).await.unwrap_err();
    assert_eq!(err.downcast_ref::<CircuitOpen>().unwrap().name(), "up:7");
    assert_eq!(svc.ready().await.unwrap().call((8, 200)).await.unwrap(), 200);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_call_releases_its_permit() {
    let registry = KeyedRegistry::<String>::new(template()).unwrap();
    let inner = service_fn(|_: String| std::future::pending::<Result<(), BoxError>>());
    let mut svc = KeyedCircuitBreakerLayer::new(registry.clone(), |k: &String| k.clone()).layer(inner);
    let b = registry.get("k").unwrap();
    b.force_open();
    b.reset();
    // Open it, let it go half-open, start a probe and drop it.
    open(&registry, "k");
    advance(Duration::from_secs(30)).await;
    let fut = svc.ready().await.unwrap().call("k".into());
    assert_eq!(b.state(), State::HalfOpen);
    assert!(registry.try_acquire("k").is_err(), "the one probe slot is taken");
    drop(fut);
    assert!(
        registry.try_acquire("k").is_ok(),
        "the dropped probe gave its slot back"
    );
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_distinct_keys_stays_within_max_keys() {
    let registry = KeyedRegistry::<String>::builder(template())
        .max_keys(1_000)
        .build()
        .unwrap();
    assert_eq!(registry.max_keys(), 1_000);
    for i in 0..50_000 {
        drop(
            registry
                .try_acquire(&*format!("host-{i}.attacker.example"))
                .unwrap(),
        );
    }
    let len = registry.len();
    assert!(len <= 1_000, "{len} keys held");
    assert!(
        len >= 800,
        "eviction frees about an eighth of a shard at a time, not more: {len}"
    );
    assert!(
        registry.overflow().is_none(),
        "closed keys were evicted, no overflow needed"
    );
}

fn keys(registry: &KeyedRegistry<String>) -> Vec<String> {
    let mut keys: Vec<_> = registry.snapshot().into_iter().map(|(k, _)| k).collect();
    keys.sort();
    keys
}

#[tokio::test(start_paused = true)]
async fn unused_closed_keys_go_first_when_a_shard_is_full() {
    // 4 keys: one shard of 4, making room one key at a time.
    let registry = KeyedRegistry::<String>::builder(template())
        .max_keys(4)
        .idle_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    for k in ["a", "b", "c", "d"] {
        registry.get(k).unwrap();
    }
    advance(Duration::from_secs(60)).await;
    assert_eq!(
        registry.evict_idle(),
        0,
        "every key was used since the last sweep"
    );
    advance(Duration::from_secs(30)).await;
    for k in ["c", "b", "d"] {
        registry.get(k).unwrap(); // a stays unused
    }
    registry.get("e").unwrap();
    assert_eq!(keys(&registry), ["b", "c", "d", "e"], "the unused key went first");
    // Every key was used since the last sweep: some closed key makes room.
    registry.get("f").unwrap();
    let now = keys(&registry);
    assert_eq!(now.len(), 4);
    assert!(now.contains(&"f".to_string()));
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_is_never_evicted_before_its_deadline() {
    let registry = KeyedRegistry::<String>::builder(template())
        .max_keys(4)
        .idle_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    open(&registry, "down");
    registry.get("forced").unwrap().force_open();
    registry.get("off").unwrap().disable();
    advance(Duration::from_secs(10)).await; // all idle
    for i in 0..1_000 {
        registry.get(&*format!("flood-{i}")).unwrap();
    }
    let down = registry.get("down").unwrap();
    assert_eq!(down.state(), State::Open, "still the same open breaker");
    assert_eq!(down.snapshot().retry_after, Some(Duration::from_secs(20)));
    drop(down); // a breaker held outside the registry is never evicted
    assert_eq!(registry.get("forced").unwrap().state(), State::ForcedOpen);
    assert_eq!(registry.get("off").unwrap().state(), State::Disabled);
    assert!(registry.len() <= 4);

    // Past its deadline, and unused for a whole sweep period: now it may go.
    advance(Duration::from_secs(21)).await;
    assert_eq!(
        registry.evict_idle(),
        0,
        "every key was used since the last sweep"
    );
    assert_eq!(registry.evict_idle(), 0, "a sweep period is not over");
    advance(Duration::from_secs(1)).await;
    assert_eq!(
        registry.evict_idle(),
        2,
        "the open breaker past its deadline and the last flood key"
    );
    let keys: Vec<_> = registry.snapshot().into_iter().map(|(k, _)| k).collect();
    assert!(!keys.contains(&"down".to_string()));
    assert!(keys.contains(&"forced".to_string()) && keys.contains(&"off".to_string()));
}

#[tokio::test(start_paused = true)]
async fn when_full_of_open_breakers_new_keys_share_the_overflow_breaker() {
    let registry = KeyedRegistry::<String>::builder(template())
        .max_keys(2)
        .build()
        .unwrap();
    open(&registry, "a");
    open(&registry, "b");
    let c = registry.get("c").unwrap();
    assert_eq!(c.name(), "up:<overflow>");
    assert_eq!(registry.len(), 2, "no key was added");
    assert_eq!(registry.overflow().unwrap().name(), "up:<overflow>");
    // The overflow breaker still guards: its failures open it for every key that shares it.
    registry.try_acquire("c").unwrap().record(Outcome::Failure);
    match registry.try_acquire("d") {
        Err(KeyedError::Open(e)) => assert_eq!(e.name(), "up:<overflow>"),
        other => panic!("expected the overflow breaker open, got {other:?}"),
    }
    // Once a's deadline passes and it is idle, a new key takes its place again.
    advance(Duration::from_secs(31 + 600)).await;
    assert_eq!(registry.get("e").unwrap().name(), "up:e");
}

#[tokio::test(start_paused = true)]
async fn when_full_with_reject_the_call_fails_with_registry_full() {
    let registry = KeyedRegistry::<String>::builder(template())
        .max_keys(1)
        .when_full(WhenFull::Reject)
        .build()
        .unwrap();
    open(&registry, "a");
    match registry.try_acquire("b") {
        Err(KeyedError::Full(e)) => assert_eq!(e.registry(), "up"),
        other => panic!("expected RegistryFull, got {other:?}"),
    }
    let inner = service_fn(|_: String| async { Ok::<_, BoxError>(()) });
    let mut svc = KeyedCircuitBreakerLayer::new(registry.clone(), |k: &String| k.clone()).layer(inner);
    let err = svc.ready().await.unwrap().call("b".into()).await.unwrap_err();
    assert!(err.is::<RegistryFull>());
    assert!(!tower_breaker::is_circuit_open(&err));
    assert_eq!(
        err.to_string(),
        r#"circuit breaker registry "up" is full of breakers that cannot be evicted"#
    );
}

#[tokio::test(start_paused = true)]
async fn idle_keys_are_swept_when_a_new_key_arrives_a_sweep_period_later() {
    let registry = KeyedRegistry::<String>::builder(template())
        .max_keys(100)
        .idle_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    for i in 0..10 {
        registry.get(&*format!("k{i}")).unwrap();
    }
    advance(Duration::from_secs(60)).await;
    registry.get("x").unwrap(); // sweeps: every key was used since the start, none goes
    assert_eq!(registry.len(), 11);
    advance(Duration::from_secs(30)).await;
    registry.get("k0").unwrap(); // used 30 s ago at the next sweep: stays
    advance(Duration::from_secs(30)).await;
    registry.get("new").unwrap(); // sweeps: k1..k9 were unused for 120 s
    assert_eq!(keys(&registry), ["k0", "new", "x"]);
    // Not a sweep period later: nothing goes, however many keys arrive.
    advance(Duration::from_secs(59)).await;
    registry.get("y").unwrap();
    assert_eq!(keys(&registry), ["k0", "new", "x", "y"]);
}

#[tokio::test(start_paused = true)]
async fn snapshot_lists_every_key_with_its_state() {
    let registry = KeyedRegistry::<String>::new(template()).unwrap();
    for k in ["a", "b", "c"] {
        registry.get(k).unwrap();
    }
    open(&registry, "b");
    let mut snap = registry.snapshot();
    snap.sort_by(|x, y| x.0.cmp(&y.0));
    let view: Vec<_> = snap
        .iter()
        .map(|(k, s)| (k.as_str(), s.name.as_str(), s.state))
        .collect();
    assert_eq!(
        view,
        [
            ("a", "up:a", State::Closed),
            ("b", "up:b", State::Open),
            ("c", "up:c", State::Closed)
        ]
    );
    assert_eq!(registry.len(), 3);
    assert!(!registry.is_empty());
}

#[test]
fn concurrent_first_use_of_a_key_builds_one_breaker() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let _guard = rt.enter();
    let built = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let b = built.clone();
    let registry2 = KeyedRegistry::<String>::builder(template())
        .map_builder(move |builder, _| {
            b.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            builder
        })
        .build()
        .unwrap();
    std::thread::scope(|s| {
        for _ in 0..8 {
            let r = registry2.clone();
            let h = rt.handle().clone();
            s.spawn(move || {
                let _g = h.enter();
                for i in 0..1_000 {
                    r.get(&*format!("k{}", i % 50)).unwrap();
                }
            });
        }
    });
    assert_eq!(built.load(std::sync::atomic::Ordering::SeqCst), 50);
    assert_eq!(registry2.len(), 50);
}

#[tokio::test(start_paused = true)]
async fn listeners_may_use_the_registry_no_lock_is_held_while_they_run() {
    let cell: Arc<std::sync::OnceLock<KeyedRegistry<String>>> = Arc::default();
    let c = cell.clone();
    let registry = KeyedRegistry::<String>::builder(template())
        .max_keys(4) // one shard: the listener's key lands where the call's key is
        .map_builder(move |b, key| {
            let c = c.clone();
            let key = key.clone();
            b.on_event(move |event| {
                if let tower_breaker::Event::Transition { .. } = event {
                    // A new key: takes the shard's write lock.
                    c.get().unwrap().get(&*format!("{key}-seen")).unwrap();
                }
            })
        })
        .build()
        .unwrap();
    cell.set(registry.clone()).unwrap();
    open(&registry, "a"); // closed → open, published from `record`
    advance(Duration::from_secs(30)).await;
    let probe = registry.try_acquire("a").unwrap(); // open → half-open, published from `try_acquire`
    drop(probe);
    assert!(registry.snapshot().iter().any(|(k, _)| k == "a-seen"));
}

/// `set_shadow` announces each key's switch (`Event::Override`) with no registry lock held:
/// a listener may use the registry, even create a key in the same shard. (It ran the
/// listeners under the shard's shared lock: a new key there deadlocked. The thread and its
/// deadline only keep a regression from hanging the suite; nothing waits on the clock.)
#[test]
fn set_shadow_runs_the_listeners_with_no_registry_lock_held() {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let cell: Arc<std::sync::OnceLock<KeyedRegistry<String>>> = Arc::default();
        let c = cell.clone();
        let registry = KeyedRegistry::<String>::builder(template())
            .max_keys(4) // one shard: the listener's key lands where the switched key is
            .map_builder(move |b, key| {
                let c = c.clone();
                let key = key.clone();
                b.on_event(move |event| {
                    if let tower_breaker::Event::Override { .. } = event {
                        // A new key: takes the shard's write lock.
                        c.get().unwrap().get(&*format!("{key}-seen")).unwrap();
                    }
                })
            })
            .build()
            .unwrap();
        cell.set(registry.clone()).unwrap();
        drop(registry.get("a").unwrap());
        registry.set_shadow(true);
        let seen = registry.get("a-seen").unwrap();
        done.send(seen.is_shadow()).unwrap();
    });
    let shadow = finished
        .recv_timeout(Duration::from_secs(60))
        .expect("set_shadow deadlocked: a listener ran under the shard's lock");
    assert!(shadow, "the key the listener made is created in shadow mode");
}

#[tokio::test(start_paused = true)]
async fn a_half_open_breaker_nobody_probes_may_go_but_not_while_a_probe_is_out() {
    let registry = KeyedRegistry::<String>::builder(template())
        .max_keys(4)
        .idle_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    open(&registry, "left");
    open(&registry, "probing");
    advance(Duration::from_secs(30)).await;
    drop(registry.try_acquire("left").unwrap()); // half-open, its probe released
    let probe = registry.try_acquire("probing").unwrap(); // half-open, probe out
    assert_eq!(registry.get("left").unwrap().state(), State::HalfOpen);
    advance(Duration::from_secs(60)).await;
    assert_eq!(registry.evict_idle(), 0, "both were used since the last sweep");
    advance(Duration::from_secs(60)).await;
    assert_eq!(registry.evict_idle(), 1);
    assert_eq!(keys(&registry), ["probing"], "the breaker with a probe out stays");
    probe.record(Outcome::Success);
}

#[tokio::test(start_paused = true)]
async fn credentials_in_a_uri_never_reach_a_key_a_name_a_message_or_a_log() {
    const SECRET: &str = "s3cr3t";
    let capture = Capture::start();
    let a = Authority::new();
    let req = |uri: &str| http::Request::get(uri).body(()).unwrap();
    assert_eq!(
        a.extract(&req("https://alice:s3cr3t@api.example.com/v1")),
        "api.example.com"
    );
    assert_eq!(
        a.extract(&req("https://alice:s3cr3t@API.example.com:8443/")),
        "api.example.com:8443"
    );
    assert_eq!(
        a.extract(&req("https://alice@api.example.com/")),
        "api.example.com"
    );
    // A malformed Host header with userinfo: the same rule.
    let host = http::Request::get("/")
        .header("host", "bob:s3cr3t@h.example")
        .body(())
        .unwrap();
    assert_eq!(a.extract(&host), "h.example");

    let registry = KeyedRegistry::<String>::new(template()).unwrap();
    let inner =
        service_fn(|_: http::Request<()>| async { Err::<http::Response<()>, BoxError>("503".into()) });
    let mut svc = KeyedCircuitBreakerLayer::new(registry.clone(), Authority::new()).layer(inner);
    let with_credentials = || req("https://alice:s3cr3t@api.example.com/v1/chat");
    assert!(svc.ready().await.unwrap().call(with_credentials()).await.is_err());
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(with_credentials())
        .await
        .unwrap_err();
    let open = err.downcast_ref::<CircuitOpen>().expect("a CircuitOpen");
    assert_eq!(open.name(), "up:api.example.com");
    for text in [err.to_string(), format!("{err:?}"), format!("{registry:?}")] {
        assert!(!text.contains(SECRET), "{text}");
    }
    let snapshot = registry.snapshot();
    assert_eq!(snapshot.len(), 1);
    assert_eq!(snapshot[0].0, "api.example.com");
    assert_eq!(snapshot[0].1.name, "up:api.example.com");
    let logs = format!("{:?}", capture.events());
    assert!(logs.contains("up:api.example.com"), "the breaker logged: {logs}");
    assert!(!logs.contains(SECRET), "{logs}");
}

#[tokio::test(start_paused = true)]
async fn a_key_that_cannot_fit_is_refused_until_a_protected_breakers_deadline_passes() {
    let registry = KeyedRegistry::<String>::builder(template())
        .max_keys(1)
        .idle_timeout(Duration::from_secs(10))
        .when_full(WhenFull::Reject)
        .build()
        .unwrap();
    registry.get("a").unwrap().trip(Duration::from_secs(15));
    advance(Duration::from_secs(10)).await;
    // A sweep clears "a"'s used bit (nobody called it since): it may go once its open period
    // ends, not before.
    for i in 0..1_000 {
        let refused = registry.try_acquire(format!("new-{i}").as_str()).unwrap_err();
        assert!(matches!(refused, KeyedError::Full(_)), "{refused:?}");
    }
    advance(Duration::from_millis(4_999)).await;
    assert!(matches!(registry.try_acquire("b"), Err(KeyedError::Full(_))));
    advance(Duration::from_millis(1)).await;
    drop(
        registry
            .try_acquire("b")
            .expect("the open period of \"a\" ended: \"b\" takes its place"),
    );
    assert_eq!(keys(&registry), ["b"]);
}

#[tokio::test(start_paused = true)]
async fn a_full_shard_without_deadlines_looks_again_a_moment_later() {
    let registry = KeyedRegistry::<String>::builder(template())
        .max_keys(1)
        .when_full(WhenFull::Reject)
        .build()
        .unwrap();
    registry.get("a").unwrap().force_open();
    assert!(matches!(registry.try_acquire("b"), Err(KeyedError::Full(_))));
    // The operator resets "a": nothing tells the registry, which looks again after 100 ms.
    registry.get("a").unwrap().reset();
    assert!(matches!(registry.try_acquire("b"), Err(KeyedError::Full(_))));
    advance(Duration::from_millis(100)).await;
    drop(registry.try_acquire("b").unwrap());
    assert_eq!(keys(&registry), ["b"]);
}

#[tokio::test(start_paused = true)]
async fn a_breaker_with_a_call_in_flight_is_not_evicted_so_its_outcome_reaches_the_key() {
    let registry = KeyedRegistry::<String>::builder(template())
        .max_keys(1)
        .build()
        .unwrap();
    let (answer, answered) = tokio::sync::oneshot::channel::<Outcome>();
    let answered = Arc::new(std::sync::Mutex::new(Some(answered)));
    // "a" answers when the test says so (a 429 with Retry-After: 60); "b" answers at once.
    let inner = service_fn(move |key: String| {
        let answered = answered.clone();
        async move {
            if key == "a" {
                let rx = answered.lock().unwrap().take().unwrap();
                Ok::<_, BoxError>(rx.await.unwrap())
            } else {
                Ok(Outcome::Success)
            }
        }
    });
    let mut svc = KeyedCircuitBreakerLayer::new(registry.clone(), |k: &String| k.clone())
        .classify(|r: Result<&Outcome, &BoxError>| r.map_or(Outcome::Failure, |o| *o))
        .layer(inner);
    let in_flight = tokio::spawn(svc.ready().await.unwrap().call("a".to_string()));
    tokio::task::yield_now().await;
    // "b" arrives while "a"'s call is in flight: "a" is not evicted, "b" shares the overflow
    // breaker.
    svc.ready().await.unwrap().call("b".to_string()).await.unwrap();
    assert_eq!(keys(&registry), ["a"]);
    assert!(registry.overflow().is_some(), "b went to the overflow breaker");
    // "a"'s call ends with a server's wait: it lands on the key's breaker.
    answer.send(Outcome::Trip(Duration::from_secs(60))).unwrap();
    in_flight.await.unwrap().unwrap();
    let err = svc
        .ready()
        .await
        .unwrap()
        .call("a".to_string())
        .await
        .unwrap_err();
    let open = err.downcast_ref::<CircuitOpen>().expect("\"a\" is open");
    assert_eq!(open.name(), "up:a");
    assert_eq!(open.retry_after(), Some(Duration::from_secs(60)));

    // Once no call holds it, a closed breaker may make room again (looked at again 100 ms
    // after the shard was found full).
    let registry = KeyedRegistry::<String>::builder(template())
        .max_keys(1)
        .build()
        .unwrap();
    let permit = registry.try_acquire("a").unwrap();
    assert_eq!(registry.get("b").unwrap().name(), "up:<overflow>");
    permit.record(Outcome::Success);
    assert_eq!(registry.get("b").unwrap().name(), "up:<overflow>");
    advance(Duration::from_millis(100)).await;
    assert_eq!(registry.get("b").unwrap().name(), "up:b");
    assert_eq!(keys(&registry), ["b"]);
}

#[test]
fn the_extension_extractor_reads_a_typed_value_the_request_builder_put_there() {
    use tower_breaker::keyed::Extension;

    #[derive(Clone)]
    struct Model(&'static str);
    impl AsRef<str> for Model {
        fn as_ref(&self) -> &str {
            self.0
        }
    }
    #[derive(Clone)]
    struct Tenant(String);
    impl AsRef<str> for Tenant {
        fn as_ref(&self) -> &str {
            &self.0
        }
    }
    let req = http::Request::post("/v1/chat/completions")
        .extension(Model("gpt-4o"))
        .body(())
        .unwrap();
    let by_model = Extension::<Model>::new();
    assert_eq!(by_model.extract(&req), "gpt-4o");
    assert!(matches!(by_model.extract(&req), std::borrow::Cow::Borrowed(_)));
    // Another type's extension is another key; a missing or empty one is the fallback.
    assert_eq!(Extension::<Tenant>::new().extract(&req), "unknown");
    assert_eq!(
        Extension::<Tenant>::new().fallback("anonymous").extract(&req),
        "anonymous"
    );
    let empty = http::Request::get("/").extension(Model("")).body(()).unwrap();
    assert_eq!(by_model.extract(&empty), "unknown");
    assert!(format!("{by_model:?}").contains("Model"));
}
