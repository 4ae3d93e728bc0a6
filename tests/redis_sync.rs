//! `integrations::redis::RedisSync` against a real `redis-server`, which each test starts on a
//! free loopback port (and kills on drop). A missing `redis-server` fails the tests: run them
//! through `scripts/test.sh`, which installs it.
#![cfg(feature = "redis")]

#[path = "support/capture.rs"]
mod capture;
#[path = "support/redis.rs"]
mod redis_support;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use capture::Capture;
use redis_support::{RedisServer, connected, eventually, sync};

use tower_breaker::{CircuitBreaker, Event, Outcome, Reason, State, keyed::KeyedRegistry};
use tracing::Level;

fn breaker(name: &str) -> tower_breaker::Builder {
    CircuitBreaker::builder(name)
        .consecutive_failures(1)
        .open_duration(Duration::from_secs(30))
}

fn fail(b: &CircuitBreaker) {
    b.try_acquire().unwrap().record(Outcome::Failure);
}

#[tokio::test]
async fn a_trip_on_one_replica_opens_the_other_within_100ms() {
    let server = RedisServer::start();
    let (a, b) = (sync(&server, "t1"), sync(&server, "t1"));
    let on_a = a.attach(breaker("openai")).unwrap();
    let reasons = Arc::new(Mutex::new(Vec::new()));
    let seen = reasons.clone();
    let on_b = b
        .attach(breaker("openai").on_event(move |e| {
            if let Event::Transition { reason, .. } = e {
                seen.lock().unwrap().push(*reason);
            }
        }))
        .unwrap();
    connected(&[&a, &b]).await;

    fail(&on_a);
    assert_eq!(on_a.state(), State::Open);
    let latency = eventually("B rejects", || on_b.try_acquire().is_err()).await;
    println!("redis propagation latency (trip on A -> B rejects): {latency:?}");
    assert!(latency < Duration::from_millis(100), "{latency:?}");

    let refused = on_b.try_acquire().unwrap_err();
    let left = refused.retry_after().unwrap();
    assert!(
        left > Duration::from_secs(29) && left <= Duration::from_secs(30),
        "{left:?}"
    );
    assert_eq!(*reasons.lock().unwrap(), [Reason::Remote]);
    // Published once by A; B applied it and did not echo it back.
    let (sa, sb) = (a.status(), b.status());
    assert_eq!((sa.published, sa.received), (1, 0));
    assert_eq!((sb.published, sb.received, sb.applied), (0, 1, 1));
    assert_eq!((sa.outages, sb.outages, sa.malformed, sb.malformed), (0, 0, 0, 0));
}

#[tokio::test]
async fn a_replica_started_later_learns_the_trips_in_force() {
    let server = RedisServer::start();
    let a = sync(&server, "t2");
    let on_a = a.attach(breaker("openai")).unwrap();
    connected(&[&a]).await;
    on_a.trip(Duration::from_secs(20)); // e.g. a Retry-After of 20 s
    eventually("A published", || a.status().published == 1).await;

    // A replica that starts now, with the breaker attached at once ...
    let c = sync(&server, "t2");
    let on_c = c.attach(breaker("openai")).unwrap();
    let latency = eventually("C rejects", || on_c.try_acquire().is_err()).await;
    println!("late replica learned the trip in {latency:?} (connect included)");
    let left = on_c.try_acquire().unwrap_err().retry_after().unwrap();
    assert!(
        left > Duration::from_secs(18) && left <= Duration::from_secs(20),
        "{left:?}"
    );

    // ... and one whose breaker is attached after it connected.
    let d = sync(&server, "t2");
    connected(&[&d]).await;
    let on_d = d.attach(breaker("openai")).unwrap();
    assert_eq!(on_d.state(), State::Open);
    // Other names are untouched.
    assert!(d.attach(breaker("anthropic")).unwrap().try_acquire().is_ok());
}

#[tokio::test]
async fn redis_down_replicas_work_locally_and_resync_when_it_is_back() {
    let capture = Capture::start();
    let mut server = RedisServer::start();
    let port = server.port;
    let (a, b) = (sync(&server, "t3"), sync(&server, "t3"));
    let (ax, ay) = (a.attach(breaker("x")).unwrap(), a.attach(breaker("y")).unwrap());
    let (bx, by) = (b.attach(breaker("x")).unwrap(), b.attach(breaker("y")).unwrap());
    connected(&[&a, &b]).await;

    server.kill();
    eventually("both see the outage", || !a.is_connected() && !b.is_connected()).await;
    // Several reconnection attempts fail ...
    eventually("reconnection attempts", || {
        capture.count(Level::DEBUG, "reconnection failed") >= 6
    })
    .await;
    // ... and each replica warned once.
    assert_eq!(capture.count(Level::WARN, "redis is unreachable"), 2);
    assert_eq!((a.status().outages, b.status().outages), (1, 1));
    assert!(a.status().last_error.is_some());

    // Both keep serving on their local breakers; a local trip stays local for now.
    for br in [&ax, &ay, &bx, &by] {
        br.try_acquire().unwrap().record(Outcome::Success);
    }
    fail(&ax);
    assert_eq!(ax.state(), State::Open);
    assert!(bx.try_acquire().is_ok());

    // Redis is back on the same port (empty: no persistence).
    let _server = RedisServer::start_on(port);
    connected(&[&a, &b]).await;
    // A re-published its trip still in force: B learns it.
    let resync = eventually("B learns x", || bx.try_acquire().is_err()).await;
    println!("after reconnection, B learned A's outage-time trip in {resync:?}");
    // And a new trip propagates.
    fail(&by);
    let latency = eventually("A learns y", || ay.try_acquire().is_err()).await;
    println!("redis propagation latency after restart: {latency:?}");
    assert!(latency < Duration::from_millis(100), "{latency:?}");
    assert_eq!(capture.count(Level::INFO, "reconnected"), 2);
    assert_eq!(capture.count(Level::WARN, "redis is unreachable"), 2);
}

#[tokio::test]
async fn a_malformed_message_is_ignored_and_logged() {
    let capture = Capture::start();
    let server = RedisServer::start();
    let (a, b) = (sync(&server, "t4"), sync(&server, "t4"));
    let on_a = a.attach(breaker("openai")).unwrap();
    let on_b = b.attach(breaker("openai")).unwrap();
    connected(&[&a, &b]).await;

    let client = redis::Client::open(server.url()).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    for junk in [
        "this is not json",
        r#"{"v":1,"name":"openai"}"#,
        r#"{"v":99,"name":"openai","deadline":1,"reason":"r","origin":"o"}"#,
    ] {
        let _: i64 = redis::cmd("PUBLISH")
            .arg("t4:trips")
            .arg(junk)
            .query_async(&mut raw)
            .await
            .unwrap();
    }
    eventually("both count 3 malformed", || {
        a.status().malformed == 3 && b.status().malformed == 3
    })
    .await;
    assert_eq!(capture.count(Level::WARN, "malformed trip message"), 4);
    assert_eq!(capture.count(Level::WARN, "unknown version"), 2);
    assert_eq!((on_a.state(), on_b.state()), (State::Closed, State::Closed));

    // The subscription survived: a real trip still propagates.
    fail(&on_a);
    eventually("B rejects", || on_b.try_acquire().is_err()).await;
}

#[tokio::test]
async fn keyed_breakers_share_trips_per_key() {
    let server = RedisServer::start();
    let (a, b) = (sync(&server, "t5"), sync(&server, "t5"));
    let registry = || KeyedRegistry::<String>::builder(breaker("openai"));
    let (ra, rb) = (
        a.attach_keyed(registry()).unwrap(),
        b.attach_keyed(registry()).unwrap(),
    );
    connected(&[&a, &b]).await;

    ra.try_acquire("gpt-4o").unwrap().record(Outcome::Failure);
    // B has never seen the key: the trip creates its breaker, open.
    let latency = eventually("B rejects gpt-4o", || rb.try_acquire("gpt-4o").is_err()).await;
    println!("keyed propagation latency: {latency:?}");
    let refused = rb.try_acquire("gpt-4o").unwrap_err();
    assert!(refused.to_string().contains("openai:gpt-4o"), "{refused}");
    // Other keys still flow, on both.
    assert!(rb.try_acquire("gpt-4o-mini").is_ok());
    assert!(ra.try_acquire("gpt-4o-mini").is_ok());
    assert_eq!(b.status().applied, 1);

    // A replica started later learns the key's trip too.
    let c = sync(&server, "t5");
    let rc = c.attach_keyed(registry()).unwrap();
    eventually("C rejects gpt-4o", || rc.try_acquire("gpt-4o").is_err()).await;
}

#[tokio::test]
async fn a_shorter_trip_never_overwrites_a_longer_one_in_force() {
    let server = RedisServer::start();
    let (a, b) = (sync(&server, "t6"), sync(&server, "t6"));
    let on_a = a.attach(breaker("x")).unwrap();
    // B clamps remote trips to 300 ms and reopens for 300 ms.
    let on_b = b
        .attach(
            breaker("x")
                .open_duration(Duration::from_millis(300))
                .max_open_duration(Duration::from_millis(300)),
        )
        .unwrap();
    connected(&[&a, &b]).await;

    fail(&on_a); // 30 s
    eventually("B opens", || on_b.state() == State::Open).await;
    let left = on_b.snapshot().retry_after.unwrap();
    assert!(
        left <= Duration::from_millis(300),
        "clamped to max_open_duration: {left:?}"
    );
    // B's open period ends first; its probe fails: B trips again, for 300 ms.
    let mut probe = None;
    eventually("B probes", || {
        probe = on_b.try_acquire().ok();
        probe.is_some()
    })
    .await;
    probe.unwrap().record(Outcome::Failure);
    assert_eq!(on_b.state(), State::Open);
    // Redis keeps A's 30 s trip.
    eventually("B's trip superseded", || b.status().superseded == 1).await;
    assert_eq!(b.status().published, 0);
    let c = sync(&server, "t6");
    let on_c = c.attach(breaker("x")).unwrap();
    eventually("C opens", || on_c.state() == State::Open).await;
    let left = on_c.snapshot().retry_after.unwrap();
    assert!(left > Duration::from_secs(28), "{left:?}");
    // No spurious reconnections (the test outlasts several pings).
    assert_eq!((a.status().outages, b.status().outages), (0, 0));
    // A's own period is untouched.
    assert!(on_a.snapshot().retry_after.unwrap() > Duration::from_secs(28));
}

#[tokio::test]
async fn a_saturated_trip_is_clamped_to_what_redis_accepts_and_the_sync_stays_connected() {
    let server = RedisServer::start();
    let (a, b) = (sync(&server, "t8"), sync(&server, "t8"));
    // `max_open_duration(Duration::MAX)` clamps nothing: a saturated `Retry-After` opens the
    // breaker for `u64::MAX` seconds.
    let forever = || breaker("forever").max_open_duration(Duration::MAX);
    let (on_a, on_b) = (a.attach(forever()).unwrap(), b.attach(forever()).unwrap());
    let (xa, xb) = (a.attach(breaker("x")).unwrap(), b.attach(breaker("x")).unwrap());
    connected(&[&a, &b]).await;

    on_a.trip(Duration::from_secs(u64::MAX));
    eventually("B learns the long trip", || on_b.state() == State::Open).await;
    let centuries = Duration::from_secs(100 * 365 * 86_400);
    assert!(on_b.snapshot().retry_after.unwrap() > centuries);
    // Redis holds it, expiring at the clamp (2^53 - 1 ms since 1970: the year 287,396).
    let client = redis::Client::open(server.url()).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    let expires: i64 = redis::cmd("PEXPIRETIME")
        .arg("t8:trip:forever")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(expires, (1 << 53) - 1);

    // The sync stayed connected, and other trips still propagate.
    fail(&xa);
    eventually("B learns x", || xb.try_acquire().is_err()).await;
    let s = a.status();
    assert!(s.connected);
    assert_eq!((s.outages, s.published, s.refused), (0, 2, 0));
    // A replica started now reads it from the store.
    let c = sync(&server, "t8");
    let on_c = c.attach(forever()).unwrap();
    eventually("C learns the long trip", || on_c.state() == State::Open).await;
}

#[tokio::test]
async fn a_trip_redis_refuses_is_dropped_logged_and_the_sync_carries_on() {
    let capture = Capture::start();
    let server = RedisServer::start();
    let (a, b) = (sync(&server, "t9"), sync(&server, "t9"));
    let (xa, xb) = (a.attach(breaker("x")).unwrap(), b.attach(breaker("x")).unwrap());
    let (ya, yb) = (a.attach(breaker("y")).unwrap(), b.attach(breaker("y")).unwrap());
    connected(&[&a, &b]).await;

    // A string where the index's sorted set should be: Redis refuses to store trips
    // (WRONGTYPE).
    let client = redis::Client::open(server.url()).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    let () = redis::cmd("SET")
        .arg("t9:index")
        .arg("junk")
        .query_async(&mut raw)
        .await
        .unwrap();
    fail(&xa);
    eventually("A counts the refusal", || a.status().refused == 1).await;
    assert_eq!(capture.count(Level::WARN, "redis refused to store a trip"), 1);
    let s = a.status();
    assert!(s.connected, "{s:?}");
    assert_eq!((s.outages, s.published), (0, 0));
    assert!(xb.try_acquire().is_ok(), "the refused trip did not reach B");

    // The session carries on: once Redis accepts trips again, the next one propagates ...
    let () = redis::cmd("DEL")
        .arg("t9:index")
        .query_async(&mut raw)
        .await
        .unwrap();
    fail(&ya);
    eventually("B learns y", || yb.try_acquire().is_err()).await;
    assert_eq!(
        (a.status().published, a.status().outages, a.status().refused),
        (1, 0, 1)
    );
    // ... and the refused one is not retried at every reconnection.
    assert!(xb.try_acquire().is_ok());
}

#[tokio::test]
async fn credentials_in_a_uri_never_reach_redis() {
    use futures::StreamExt;
    use tower::{Layer, ServiceExt, service_fn};
    use tower_breaker::keyed::{Authority, KeyedCircuitBreakerLayer};

    let server = RedisServer::start();
    let a = sync(&server, "t10");
    let registry = a
        .attach_keyed(KeyedRegistry::<String>::builder(breaker("up")))
        .unwrap();
    connected(&[&a]).await;
    let client = redis::Client::open(server.url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe("t10:trips").await.unwrap();

    let svc = KeyedCircuitBreakerLayer::new(registry, Authority::new()).layer(service_fn(
        |_: http::Request<()>| async { Err::<(), tower_breaker::BoxError>("503".into()) },
    ));
    let req = http::Request::get("https://alice:s3cr3t@api.example.com/v1/chat")
        .body(())
        .unwrap();
    assert!(svc.oneshot(req).await.is_err()); // the key's breaker trips and publishes

    let message: String = pubsub.on_message().next().await.unwrap().get_payload().unwrap();
    assert!(message.contains(r#""name":"up:api.example.com""#), "{message}");
    assert!(message.contains(r#""key":"api.example.com""#), "{message}");
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("t10:*")
        .query_async(&mut raw)
        .await
        .unwrap();
    let stored: Option<String> = redis::cmd("GET")
        .arg("t10:trip:up:api.example.com")
        .query_async(&mut raw)
        .await
        .unwrap();
    let index: Vec<String> = redis::cmd("ZRANGE")
        .arg("t10:index")
        .arg(0)
        .arg(-1)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(index, ["up:api.example.com"]);
    let everything = format!("{message} {keys:?} {stored:?} {index:?}");
    assert!(stored.is_some(), "{everything}");
    assert!(
        !everything.contains("s3cr3t") && !everything.contains("alice"),
        "{everything}"
    );
}

#[cfg(feature = "metrics")]
#[tokio::test]
async fn the_connection_state_is_a_metric() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use tower_breaker::integrations::redis::{CONNECTED, OUTAGES};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let read = |name: &str| {
        snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .find_map(|(key, _, _, value)| {
                let key = key.key().clone();
                let labelled = key.labels().any(|l| l.key() == "prefix" && l.value() == "t7");
                (key.name() == name && labelled).then_some(value)
            })
    };
    let mut server = RedisServer::start();
    // Handles are taken from the recorder in place when the sync is built.
    let a = metrics::with_local_recorder(&recorder, || sync(&server, "t7"));
    assert_eq!(read(CONNECTED), Some(DebugValue::Gauge(0.0.into())));
    connected(&[&a]).await;
    assert_eq!(read(CONNECTED), Some(DebugValue::Gauge(1.0.into())));
    server.kill();
    eventually("outage seen", || !a.is_connected()).await;
    // (A snapshot resets counters: the counter is read first.)
    assert_eq!(read(OUTAGES), Some(DebugValue::Counter(1)));
    assert_eq!(read(CONNECTED), Some(DebugValue::Gauge(0.0.into())));
}

#[tokio::test]
async fn a_shadow_breaker_never_publishes_its_trips() {
    let server = RedisServer::start();
    let (a, b) = (sync(&server, "t-shadow"), sync(&server, "t-shadow"));
    let shadow_a = a.attach(breaker("openai").shadow(true)).unwrap();
    let enforcing_a = a.attach(breaker("anthropic")).unwrap();
    let (shadow_b, enforcing_b) = (
        b.attach(breaker("openai")).unwrap(),
        b.attach(breaker("anthropic")).unwrap(),
    );
    connected(&[&a, &b]).await;

    fail(&shadow_a);
    assert_eq!(shadow_a.state(), State::Open); // notionally
    assert!(shadow_a.try_acquire().is_ok());
    // A trip of an enforcing breaker after it, on the same replica: once B has it, B would
    // have had the shadow trip too, had it been published (one queue, in order).
    fail(&enforcing_a);
    eventually("B rejects anthropic", || enforcing_b.try_acquire().is_err()).await;
    assert_eq!(a.status().published, 1, "only the enforcing breaker's trip");
    assert_eq!(b.status().received, 1);
    assert_eq!(shadow_b.state(), State::Closed);
    assert!(shadow_b.try_acquire().is_ok());
}
