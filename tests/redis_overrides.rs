//! Manual overrides (force open, disable, reset, shadow switch) shared across replicas by
//! `integrations::redis::RedisSync`, against a real `redis-server` (started on a free loopback
//! port per test; `scripts/test.sh` installs it).
#![cfg(feature = "redis")]

#[path = "support/redis.rs"]
mod redis_support;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use redis_support::{Proxy, RedisServer, connected, eventually, sync_as, sync_via};
use tower_breaker::{CircuitBreaker, Event, Outcome, Override, Reason, State, keyed::KeyedRegistry};

fn breaker(name: &str) -> tower_breaker::Builder {
    CircuitBreaker::builder(name)
        .consecutive_failures(1)
        .open_duration(Duration::from_secs(30))
}

/// The overrides a breaker announced: (action, origin), `local` for its own.
type Audit = Arc<Mutex<Vec<(Override, String)>>>;

fn audited(name: &str) -> (tower_breaker::Builder, Audit) {
    let audit = Audit::default();
    let seen = audit.clone();
    let builder = breaker(name).on_event(move |e| {
        if let Event::Override { action, origin, .. } = e {
            seen.lock().unwrap().push((*action, origin.to_string()));
        }
    });
    (builder, audit)
}

#[tokio::test]
async fn force_open_and_reset_on_one_replica_apply_on_the_other_with_its_origin() {
    let server = RedisServer::start();
    let (a, b) = (
        sync_as(&server, "o1", "replica-a"),
        sync_as(&server, "o1", "replica-b"),
    );
    let (builder_a, audit_a) = audited("openai");
    let on_a = a.attach(builder_a).unwrap();
    let (builder_b, audit_b) = audited("openai");
    let on_b = b.attach(builder_b).unwrap();
    let other_b = b.attach(breaker("anthropic")).unwrap();
    connected(&[&a, &b]).await;

    on_a.force_open();
    assert_eq!(on_a.state(), State::ForcedOpen);
    let latency = eventually("B forced open", || on_b.state() == State::ForcedOpen).await;
    println!("override propagation latency (force_open on A -> B forced open): {latency:?}");
    assert!(on_b.try_acquire().is_err());
    assert_eq!(other_b.state(), State::Closed, "other names untouched");
    // The transition says why: another replica (the audit event says which, and what).
    assert_eq!(on_b.snapshot().reason, Some(Reason::Remote));
    assert_eq!(on_a.snapshot().reason, Some(Reason::Forced));

    on_a.reset();
    eventually("B closed", || on_b.state() == State::Closed).await;
    assert!(on_b.try_acquire().is_ok());

    // B's audit names A; A's says local; nothing was echoed back to A.
    let remote = |action| (action, "replica-a".to_string());
    assert_eq!(
        *audit_b.lock().unwrap(),
        [remote(Override::ForceOpen), remote(Override::Reset)]
    );
    let local = |action| (action, "local".to_string());
    assert_eq!(
        *audit_a.lock().unwrap(),
        [local(Override::ForceOpen), local(Override::Reset)]
    );
    let (sa, sb) = (a.status(), b.status());
    assert_eq!((sa.overrides_published, sa.overrides_received), (2, 0));
    assert_eq!((sb.overrides_published, sb.overrides_received), (0, 2));
    assert_eq!((sa.malformed, sb.malformed), (0, 0));
}

#[tokio::test]
async fn disable_on_one_replica_applies_on_the_other_and_a_reset_on_either_ends_it() {
    let server = RedisServer::start();
    let (a, b) = (sync_as(&server, "o2", "a"), sync_as(&server, "o2", "b"));
    let (on_a, on_b) = (a.attach(breaker("x")).unwrap(), b.attach(breaker("x")).unwrap());
    connected(&[&a, &b]).await;

    on_a.disable();
    eventually("B disabled", || on_b.state() == State::Disabled).await;
    // B's own operator resets it: that is shared back to A.
    on_b.reset();
    eventually("A closed", || on_a.state() == State::Closed).await;
    assert_eq!(a.status().overrides_received, 1);
    assert_eq!(b.status().overrides_received, 1);
}

#[tokio::test]
async fn a_shadow_switch_on_one_replica_flips_the_other() {
    let server = RedisServer::start();
    let (a, b) = (sync_as(&server, "o3", "a"), sync_as(&server, "o3", "b"));
    let on_a = a.attach(breaker("openai").shadow(true)).unwrap();
    let (builder_b, audit_b) = audited("openai");
    let on_b = b.attach(builder_b.shadow(true)).unwrap();
    connected(&[&a, &b]).await;

    // A shadow breaker's trip is not shared ...
    on_a.try_acquire().unwrap().record(Outcome::Failure);
    // ... but its switch is: enforce everywhere.
    on_a.set_shadow(false);
    eventually("B enforces", || !on_b.is_shadow()).await;
    on_b.try_acquire().unwrap().record(Outcome::Failure);
    assert!(on_b.try_acquire().is_err(), "enforcing: refused");
    assert_eq!(a.status().published, 0, "the shadow trip was not published");

    on_a.set_shadow(true);
    eventually("B back in shadow", || on_b.is_shadow()).await;
    assert!(on_b.try_acquire().is_ok(), "shadow: passes");
    assert_eq!(
        *audit_b.lock().unwrap(),
        [
            (Override::Shadow(false), "a".to_string()),
            (Override::Shadow(true), "a".to_string())
        ]
    );
}

#[tokio::test]
async fn a_replica_that_starts_after_the_override_starts_forced_open() {
    let server = RedisServer::start();
    let a = sync_as(&server, "o4", "a");
    let on_a = a.attach(breaker("openai")).unwrap();
    let shadowed = a.attach(breaker("anthropic")).unwrap();
    let reset_only = a.attach(breaker("mistral")).unwrap();
    connected(&[&a]).await;
    on_a.force_open();
    shadowed.set_shadow(true);
    reset_only.reset();
    eventually("A published 3", || a.status().overrides_published == 3).await;

    // A replica that starts now, with its breakers attached at once ...
    let c = sync_as(&server, "o4", "c");
    let (builder_c, audit_c) = audited("openai");
    let on_c = c.attach(builder_c).unwrap();
    let shadowed_c = c.attach(breaker("anthropic")).unwrap();
    let (builder_reset, audit_reset) = audited("mistral");
    let reset_c = c.attach(builder_reset).unwrap();
    eventually("C forced open", || on_c.state() == State::ForcedOpen).await;
    eventually("C in shadow", || shadowed_c.is_shadow()).await;
    assert_eq!(*audit_c.lock().unwrap(), [(Override::ForceOpen, "a".to_string())]);
    // A standing reset has nothing to undo on a replica that starts.
    assert_eq!(reset_c.state(), State::Closed);
    assert!(audit_reset.lock().unwrap().is_empty());

    // ... and one whose breaker is attached after it connected.
    let d = sync_as(&server, "o4", "d");
    connected(&[&d]).await;
    let on_d = d.attach(breaker("openai")).unwrap();
    assert_eq!(on_d.state(), State::ForcedOpen);

    // A reset on A ends the standing force-open: a replica started after it starts closed.
    on_a.reset();
    eventually("C closed", || on_c.state() == State::Closed).await;
    eventually("D closed", || on_d.state() == State::Closed).await;
    let e = sync_as(&server, "o4", "e");
    connected(&[&e]).await;
    assert_eq!(e.attach(breaker("openai")).unwrap().state(), State::Closed);
}

#[tokio::test]
async fn a_replica_disconnected_during_the_override_learns_it_on_reconnection() {
    let server = RedisServer::start();
    let proxy = Proxy::start(&server).await;
    let a = sync_as(&server, "o5", "a");
    let b = sync_via(&proxy, "o5", "b"); // B reaches Redis through a link we can cut
    let (on_a, on_b) = (a.attach(breaker("x")).unwrap(), b.attach(breaker("x")).unwrap());
    let (y_a, y_b) = (a.attach(breaker("y")).unwrap(), b.attach(breaker("y")).unwrap());
    connected(&[&a, &b]).await;

    // Forced open while B is away: B learns it when it is back.
    proxy.cut();
    eventually("B sees the outage", || !b.is_connected()).await;
    on_a.force_open();
    y_a.force_open();
    eventually("A published", || a.status().overrides_published == 2).await;
    assert_eq!(on_b.state(), State::Closed);
    proxy.restore().await;
    connected(&[&b]).await;
    eventually("B learns x", || on_b.state() == State::ForcedOpen).await;
    assert_eq!(y_b.state(), State::ForcedOpen);

    // Reset while B is away again: B's standing force-open ends when it is back.
    proxy.cut();
    eventually("B sees the second outage", || !b.is_connected()).await;
    on_a.reset();
    eventually("A published", || a.status().overrides_published == 3).await;
    assert_eq!(on_b.state(), State::ForcedOpen);
    proxy.restore().await;
    connected(&[&b]).await;
    eventually("B learns the reset", || on_b.state() == State::Closed).await;
    assert_eq!(y_b.state(), State::ForcedOpen, "y was not reset");
    assert_eq!(b.status().outages, 2);
}

#[tokio::test]
async fn an_override_taken_while_redis_is_down_is_shared_when_it_is_back() {
    let mut server = RedisServer::start();
    let port = server.port;
    let (a, b) = (sync_as(&server, "o6", "a"), sync_as(&server, "o6", "b"));
    let (on_a, on_b) = (a.attach(breaker("x")).unwrap(), b.attach(breaker("x")).unwrap());
    connected(&[&a, &b]).await;

    server.kill();
    eventually("both see the outage", || !a.is_connected() && !b.is_connected()).await;
    on_a.force_open(); // applies here at once, queued for the others
    assert_eq!(on_a.state(), State::ForcedOpen);
    assert_eq!(on_b.state(), State::Closed);

    let _server = RedisServer::start_on(port); // empty: no persistence
    connected(&[&a, &b]).await;
    eventually("B learns the outage-time override", || {
        on_b.state() == State::ForcedOpen
    })
    .await;
}

#[tokio::test]
async fn keyed_breakers_share_overrides_per_key() {
    let server = RedisServer::start();
    let (a, b) = (sync_as(&server, "o7", "a"), sync_as(&server, "o7", "b"));
    let registry = || KeyedRegistry::<String>::builder(breaker("openai"));
    let (ra, rb) = (
        a.attach_keyed(registry()).unwrap(),
        b.attach_keyed(registry()).unwrap(),
    );
    connected(&[&a, &b]).await;

    ra.get("gpt-4o").unwrap().force_open();
    // B has never seen the key: the override creates its breaker, forced open.
    eventually("B forced gpt-4o", || {
        rb.get("gpt-4o").unwrap().state() == State::ForcedOpen
    })
    .await;
    assert!(rb.try_acquire("gpt-4o-mini").is_ok(), "other keys flow");

    // A reset of a key B does not hold does not create it there.
    ra.get("o1").unwrap().reset();
    ra.get("gpt-4o").unwrap().reset();
    eventually("B closed gpt-4o", || {
        rb.get("gpt-4o").unwrap().state() == State::Closed
    })
    .await;
    let mut keys = Vec::new();
    rb.for_each(|k, _| keys.push(k.clone()));
    keys.sort();
    assert_eq!(keys, ["gpt-4o", "gpt-4o-mini"]);
}

#[tokio::test]
async fn remote_overrides_are_not_echoed_back() {
    let server = RedisServer::start();
    let (a, b) = (sync_as(&server, "o8", "a"), sync_as(&server, "o8", "b"));
    let (builder_a, audit_a) = audited("x");
    let on_a = a.attach(builder_a).unwrap();
    let on_b = b.attach(breaker("x")).unwrap();
    connected(&[&a, &b]).await;

    // Count every message on the overrides channel.
    let client = redis::Client::open(server.url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe("o8:overrides").await.unwrap();
    let messages = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = messages.clone();
    let listen = tokio::spawn(async move {
        use futures_util::StreamExt;
        let mut stream = pubsub.on_message();
        while let Some(msg) = stream.next().await {
            seen.lock().unwrap().push(msg.get_payload().unwrap());
        }
    });

    on_a.force_open();
    eventually("B forced", || on_b.state() == State::ForcedOpen).await;
    // Something from B after it, on the same channel: once it is here, an echo of A's
    // override by B (before it) would be too.
    b.attach(breaker("marker")).unwrap().disable();
    eventually("the marker", || messages.lock().unwrap().len() >= 2).await;
    let messages = messages.lock().unwrap().clone();
    listen.abort();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(messages[0].contains(r#""origin":"a""#) && messages[0].contains("force_open"));
    assert!(messages[1].contains("marker"));
    assert_eq!(
        *audit_a.lock().unwrap(),
        [(Override::ForceOpen, "local".to_string())]
    );
    assert_eq!(a.status().overrides_received, 1, "the marker only");
}

#[tokio::test]
async fn a_replica_restarted_under_the_same_origin_learns_its_own_standing_override() {
    let server = RedisServer::start();
    let a = sync_as(&server, "o9", "web-1");
    let on_a = a.attach(breaker("x")).unwrap();
    connected(&[&a]).await;
    on_a.force_open();
    eventually("A published", || a.status().overrides_published == 1).await;
    // A breaker of the same name registered later on the same replica follows it too.
    assert_eq!(a.attach(breaker("x")).unwrap().state(), State::ForcedOpen);
    drop((a, on_a));

    // The same replica restarts (a stable pod name as its origin).
    let again = sync_as(&server, "o9", "web-1");
    let (builder, audit) = audited("x");
    let x = again.attach(builder).unwrap();
    eventually("forced open again", || x.state() == State::ForcedOpen).await;
    assert_eq!(
        *audit.lock().unwrap(),
        [(Override::ForceOpen, "web-1".to_string())]
    );
    // Not published again: it is the standing one.
    assert_eq!(again.status().overrides_published, 0);
}
