//! `integrations::webhook` (feature `webhook`) against real hyper receivers on 127.0.0.1:
//! JSON and Slack bodies, a failing receiver (retried), a slow one (timed out, retried), an
//! absent one (dropped after retries, counted), a flapping breaker (rate limited), a full
//! queue (dropped, counted), keyed breakers, remote openings, https through rustls.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::mpsc, time::timeout};
use tower_breaker::{
    CircuitBreaker, Outcome, State,
    integrations::webhook::{AlertKind, Format, WebhookAlerts, WebhookStatus},
    keyed::KeyedRegistry,
};

/// What the receiver does with one request.
#[derive(Clone, Debug)]
enum Answer {
    Status(u16),
    /// `status` with `Retry-After: value`.
    RetryAfter(u16, &'static str),
    /// Reads the request and never answers.
    Hang,
}

/// One request the receiver got.
#[derive(Debug)]
struct Hit {
    path: String,
    content_type: String,
    user_agent: String,
    token: Option<String>,
    body: Value,
}

/// A real hyper server on 127.0.0.1 that records every request, then answers with the next
/// scripted answer (200 when the script is empty).
struct Receiver {
    addr: SocketAddr,
    hits: mpsc::UnboundedReceiver<Hit>,
    script: Arc<Mutex<VecDeque<Answer>>>,
}

impl Receiver {
    async fn start(script: impl IntoIterator<Item = Answer>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, hits) = mpsc::unbounded_channel();
        let script = Arc::new(Mutex::new(script.into_iter().collect::<VecDeque<_>>()));
        let answers = script.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (tx, answers) = (tx.clone(), answers.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: http::Request<Incoming>| {
                        let (tx, answers) = (tx.clone(), answers.clone());
                        async move {
                            let header = |name: http::header::HeaderName| {
                                req.headers().get(name).map(|v| v.to_str().unwrap().to_string())
                            };
                            let hit = Hit {
                                path: req.uri().path().to_string(),
                                content_type: header(http::header::CONTENT_TYPE).unwrap_or_default(),
                                user_agent: header(http::header::USER_AGENT).unwrap_or_default(),
                                token: header(http::header::AUTHORIZATION),
                                body: Value::Null,
                            };
                            let body = req.into_body().collect().await?.to_bytes();
                            let _ = tx.send(Hit {
                                body: serde_json::from_slice(&body).unwrap(),
                                ..hit
                            });
                            let answer = answers.lock().unwrap().pop_front().unwrap_or(Answer::Status(200));
                            let (status, retry_after) = match answer {
                                Answer::Status(s) => (s, None),
                                Answer::RetryAfter(s, v) => (s, Some(v)),
                                Answer::Hang => std::future::pending().await,
                            };
                            let mut res = http::Response::builder().status(status);
                            if let Some(v) = retry_after {
                                res = res.header(http::header::RETRY_AFTER, v);
                            }
                            Ok::<_, hyper::Error>(res.body(Full::new(Bytes::from_static(b"ok"))).unwrap())
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self { addr, hits, script }
    }

    fn url(&self) -> String {
        format!("http://{}/services/T000/B000/secret", self.addr)
    }

    /// The next request (a generous bound that is never what is tested: it comes in
    /// milliseconds).
    async fn next(&mut self) -> Hit {
        timeout(Duration::from_secs(30), self.hits.recv())
            .await
            .expect("a request")
            .unwrap()
    }

    fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.script.lock().unwrap().extend(answers);
    }
}

/// Moves the breakers' and the task's clocks without sleeping: pause, advance, resume (real
/// sockets need a running clock).
async fn skip(d: Duration) {
    tokio::time::pause();
    tokio::time::advance(d).await;
    tokio::time::resume();
}

/// Waits (bounded) until the alerts' status satisfies `f`, and returns it.
async fn status_until(alerts: &WebhookAlerts, f: impl Fn(&WebhookStatus) -> bool) -> WebhookStatus {
    timeout(Duration::from_secs(30), async {
        loop {
            let status = alerts.status();
            if f(&status) {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("status never came: {:?}", alerts.status()))
}

/// A port where nothing listens: connections are refused.
async fn closed_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

fn fast_retries(
    b: tower_breaker::integrations::webhook::WebhookBuilder,
) -> tower_breaker::integrations::webhook::WebhookBuilder {
    b.retry_delay(Duration::from_millis(5), Duration::from_millis(20))
}

#[tokio::test]
async fn json_alerts_on_open_reopen_and_recovery_carry_the_counts() {
    let mut receiver = Receiver::start([]).await;
    let alerts = WebhookAlerts::builder(receiver.url())
        .rate_limit(Duration::ZERO)
        .header(http::header::AUTHORIZATION, "Bearer t0ken".parse().unwrap())
        .build()
        .unwrap();
    let breaker = alerts
        .attach(
            CircuitBreaker::builder("openai")
                .failure_rate(0.5)
                .count_window(4)
                .min_calls(4)
                .open_duration(Duration::from_secs(30)),
        )
        .unwrap();

    for outcome in [
        Outcome::Success,
        Outcome::Failure,
        Outcome::Success,
        Outcome::Failure,
    ] {
        breaker.try_acquire().unwrap().record(outcome);
    }
    assert_eq!(breaker.state(), State::Open);
    let hit = receiver.next().await;
    assert_eq!(hit.path, "/services/T000/B000/secret");
    assert_eq!(hit.content_type, "application/json");
    assert!(hit.user_agent.starts_with("tower-breaker/"), "{}", hit.user_agent);
    assert_eq!(hit.token.as_deref(), Some("Bearer t0ken"));
    let mut body = hit.body;
    assert!(body["at_unix_ms"].as_u64().unwrap() > 1_600_000_000_000);
    body.as_object_mut().unwrap().remove("at_unix_ms");
    assert_eq!(
        body,
        json!({
            "breaker": "openai", "alert": "opened", "from": "closed", "to": "open",
            "reason": "failure_rate", "shadow": false, "open_for_secs": 30.0, "outage_secs": null,
            "consecutive_failures": 0, "calls": 4, "failures": 2, "slow_calls": 0,
            "failure_rate": 0.5, "suppressed": 0
        })
    );

    // Open → half-open is not alerted; the failed probe is: "reopened".
    skip(Duration::from_secs(30)).await;
    breaker.try_acquire().unwrap().record(Outcome::Failure);
    let body = receiver.next().await.body;
    assert_eq!(
        (
            &body["alert"],
            &body["from"],
            &body["reason"],
            &body["open_for_secs"]
        ),
        (
            &json!("reopened"),
            &json!("half_open"),
            &json!("probe_failed"),
            &json!(30.0)
        )
    );

    // The probe succeeds: "recovered", with the outage's length.
    skip(Duration::from_secs(30)).await;
    breaker.try_acquire().unwrap().record(Outcome::Success);
    let body = receiver.next().await.body;
    assert_eq!(
        (&body["alert"], &body["reason"]),
        (&json!("recovered"), &json!("probes_succeeded"))
    );
    assert_eq!(body["open_for_secs"], Value::Null);
    let outage = body["outage_secs"].as_f64().unwrap();
    assert!((60.0..61.0).contains(&outage), "the two open periods: {outage}");
    assert_eq!(body["calls"], 0, "closing cleared the window");

    let status = status_until(&alerts, |s| s.sent == 3).await;
    assert_eq!(
        (status.failed, status.retried, status.dropped, status.suppressed),
        (0, 0, 0, 0)
    );
}

#[tokio::test]
async fn slack_bodies_are_one_line_of_text() {
    let mut receiver = Receiver::start([]).await;
    let alerts = WebhookAlerts::builder(receiver.url())
        .format(Format::Slack)
        .source("web-1")
        .rate_limit(Duration::ZERO)
        .build()
        .unwrap();
    let openai = alerts
        .attach(CircuitBreaker::builder("openai").consecutive_failures(3))
        .unwrap();
    for _ in 0..3 {
        openai.try_acquire().unwrap().record(Outcome::Failure);
    }
    assert_eq!(
        receiver.next().await.body,
        json!({"text": "[web-1] :red_circle: Circuit breaker *openai* opened (consecutive_failures): 3 consecutive failures. Calls are refused for 30s."})
    );
    openai.reset();
    let text = receiver.next().await.body["text"].as_str().unwrap().to_string();
    assert!(
        text.starts_with(
            "[web-1] :large_green_circle: Circuit breaker *openai* recovered (reset). Calls flow again after "
        ),
        "{text}"
    );

    let payments = alerts
        .attach(CircuitBreaker::builder("payments").consecutive_failures(1))
        .unwrap();
    payments.force_open();
    assert_eq!(
        receiver.next().await.body["text"],
        "[web-1] :red_circle: Circuit breaker *payments* opened (forced). Calls are refused until an operator resets it."
    );
}

#[tokio::test]
async fn a_shadow_breakers_alerts_say_it_would_have_opened_or_are_left_out() {
    let mut receiver = Receiver::start([]).await;
    let json = WebhookAlerts::builder(receiver.url())
        .rate_limit(Duration::ZERO)
        .build()
        .unwrap();
    let slack = WebhookAlerts::builder(receiver.url())
        .format(Format::Slack)
        .rate_limit(Duration::ZERO)
        .build()
        .unwrap();
    let quiet = WebhookAlerts::builder(receiver.url())
        .rate_limit(Duration::ZERO)
        .shadow_alerts(false)
        .build()
        .unwrap();
    let shadow = |name: &str| CircuitBreaker::builder(name).consecutive_failures(3).shadow(true);
    let (a, b, c) = (
        json.attach(shadow("a")).unwrap(),
        slack.attach(shadow("b")).unwrap(),
        quiet.attach(shadow("c")).unwrap(),
    );

    // Left out by the quiet alerts: opened and recovered.
    for _ in 0..3 {
        c.try_acquire().unwrap().record(Outcome::Failure);
    }
    assert_eq!(c.state(), State::Open);
    c.reset();
    // By default, sent and marked: JSON ...
    for _ in 0..3 {
        a.try_acquire().unwrap().record(Outcome::Failure);
    }
    let body = receiver.next().await.body;
    assert_eq!(
        (&body["breaker"], &body["alert"], &body["shadow"]),
        (&json!("a"), &json!("opened"), &json!(true))
    );
    // ... and Slack.
    for _ in 0..3 {
        b.try_acquire().unwrap().record(Outcome::Failure);
    }
    assert_eq!(
        receiver.next().await.body,
        json!({"text": ":large_blue_circle: Circuit breaker *b* (shadow: would have opened) (consecutive_failures): 3 consecutive failures. Calls still pass (shadow mode); it would refuse them for 30s."})
    );
    b.reset();
    assert_eq!(
        receiver.next().await.body,
        json!({"text": ":large_blue_circle: Circuit breaker *b* (shadow: would have recovered) (reset). Calls passed throughout (shadow mode)."})
    );
    // An enforcing breaker's alerts on the quiet alerts still go out: nothing of c's came
    // before this one.
    let enforcing = quiet
        .attach(CircuitBreaker::builder("d").consecutive_failures(1))
        .unwrap();
    enforcing.try_acquire().unwrap().record(Outcome::Failure);
    let body = receiver.next().await.body;
    assert_eq!((&body["breaker"], &body["shadow"]), (&json!("d"), &json!(false)));
    let status = status_until(&quiet, |s| s.sent == 1).await;
    assert_eq!((status.sent, status.dropped, status.suppressed), (1, 0, 0));
}

#[tokio::test]
async fn a_failing_receiver_is_retried_until_it_accepts() {
    let mut receiver = Receiver::start([
        Answer::Status(500),
        Answer::RetryAfter(429, "0"),
        Answer::Status(503),
    ])
    .await;
    let alerts = fast_retries(WebhookAlerts::builder(receiver.url()).retries(3))
        .rate_limit(Duration::ZERO)
        .build()
        .unwrap();
    let breaker = alerts
        .attach(CircuitBreaker::builder("openai").consecutive_failures(1))
        .unwrap();
    breaker.try_acquire().unwrap().record(Outcome::Failure);
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(receiver.next().await.body);
    }
    assert!(got.iter().all(|b| *b == got[0]), "the same alert, four times");
    let status = status_until(&alerts, |s| s.sent == 1).await;
    assert_eq!((status.retried, status.failed), (3, 0));

    // A 4xx other than 429 and 408 is not retried: the alert is dropped and counted.
    receiver.script([Answer::Status(404)]);
    breaker.reset();
    receiver.next().await;
    let status = status_until(&alerts, |s| s.failed == 1).await;
    assert_eq!((status.sent, status.retried), (1, 3));
    assert_eq!(
        status.last_error.as_deref(),
        Some("the receiver answered 404 Not Found")
    );
    assert!(receiver.hits.try_recv().is_err(), "not retried");
}

#[tokio::test]
async fn a_slow_receiver_times_out_is_retried_and_holds_back_no_call() {
    let mut receiver = Receiver::start([Answer::Hang]).await;
    let alerts = fast_retries(
        WebhookAlerts::builder(receiver.url())
            .timeout(Duration::from_millis(200))
            .rate_limit(Duration::ZERO),
    )
    .build()
    .unwrap();
    let breaker = alerts
        .attach(CircuitBreaker::builder("openai").consecutive_failures(1))
        .unwrap();
    breaker.try_acquire().unwrap().record(Outcome::Failure);
    assert_eq!(receiver.next().await.body["alert"], "opened"); // and hangs
    // While the receiver hangs, the breaker works as ever, and its next alert waits its turn.
    breaker.reset();
    for _ in 0..1000 {
        breaker.try_acquire().unwrap().record(Outcome::Success);
    }
    assert_eq!(breaker.state(), State::Closed);
    assert_eq!(
        receiver.next().await.body["alert"],
        "opened",
        "the attempt timed out: retried"
    );
    assert_eq!(receiver.next().await.body["alert"], "recovered", "in order");
    let status = status_until(&alerts, |s| s.sent == 2).await;
    assert_eq!((status.retried, status.failed), (1, 0));
}

#[tokio::test]
async fn an_absent_receiver_drops_the_alert_after_retries_and_the_breaker_is_unaffected() {
    let addr = closed_addr().await;
    let alerts = fast_retries(WebhookAlerts::builder(format!("http://{addr}/hook")).retries(2))
        .rate_limit(Duration::ZERO)
        .build()
        .unwrap();
    let breaker = alerts
        .attach(
            CircuitBreaker::builder("openai")
                .consecutive_failures(1)
                .open_duration(Duration::from_secs(5)),
        )
        .unwrap();
    breaker.try_acquire().unwrap().record(Outcome::Failure);
    assert_eq!(breaker.state(), State::Open);
    let status = status_until(&alerts, |s| s.failed == 1).await;
    assert_eq!((status.sent, status.retried), (0, 2), "three attempts");
    let error = status.last_error.unwrap();
    assert!(error.contains("Connect"), "{error}");
    assert!(!error.contains("/hook"), "never the URL's path: {error}");

    skip(Duration::from_secs(5)).await;
    breaker.try_acquire().unwrap().record(Outcome::Success);
    assert_eq!(breaker.state(), State::Closed, "the breaker works as ever");
    status_until(&alerts, |s| s.failed == 2).await;
}

#[tokio::test]
async fn a_flapping_breaker_is_rate_limited_and_its_last_alert_tells_its_state() {
    let mut receiver = Receiver::start([]).await;
    let alerts = WebhookAlerts::builder(receiver.url())
        .rate_limit(Duration::from_secs(60))
        .build()
        .unwrap();
    let breaker = alerts
        .attach(CircuitBreaker::builder("flappy").consecutive_failures(1))
        .unwrap();
    let other = alerts
        .attach(CircuitBreaker::builder("steady").consecutive_failures(1))
        .unwrap();
    for _ in 0..5 {
        breaker.force_open();
        breaker.reset();
    }
    let first = receiver.next().await.body;
    assert_eq!(
        (&first["breaker"], &first["alert"]),
        (&json!("flappy"), &json!("opened"))
    );
    // The other nine are held, each replacing the one before: eight folded.
    status_until(&alerts, |s| s.suppressed == 8 && s.sent == 1).await;
    // Another breaker is not held back by this one's limit.
    other.force_open();
    assert_eq!(receiver.next().await.body["breaker"], "steady");

    skip(Duration::from_secs(60)).await;
    let last = receiver.next().await.body;
    assert_eq!(
        (&last["breaker"], &last["alert"], &last["suppressed"]),
        (&json!("flappy"), &json!("recovered"), &json!(8)),
        "the latest state, and how many alerts it stands for"
    );
    status_until(&alerts, |s| s.sent == 3).await;
    assert!(receiver.hits.try_recv().is_err(), "nothing else was sent");
}

#[tokio::test]
async fn when_the_last_handle_goes_the_held_alerts_are_posted() {
    let mut receiver = Receiver::start([]).await;
    let alerts = WebhookAlerts::builder(receiver.url())
        .rate_limit(Duration::from_secs(3600))
        .build()
        .unwrap();
    let breaker = alerts
        .attach(CircuitBreaker::builder("openai").consecutive_failures(1))
        .unwrap();
    breaker.force_open();
    breaker.reset(); // held for an hour by the rate limit
    assert_eq!(receiver.next().await.body["alert"], "opened");
    drop((breaker, alerts)); // the queue closes: the task posts what it holds, then ends
    assert_eq!(receiver.next().await.body["alert"], "recovered");
}

#[tokio::test]
async fn a_full_queue_drops_alerts_and_counts_them() {
    let mut receiver = Receiver::start([Answer::Hang]).await;
    let alerts = WebhookAlerts::builder(receiver.url())
        .queue_capacity(1)
        .timeout(Duration::from_secs(600))
        .retries(0)
        .build()
        .unwrap();
    let breakers: Vec<_> = (0..8)
        .map(|i| {
            alerts
                .attach(CircuitBreaker::builder(format!("b{i}")).consecutive_failures(1))
                .unwrap()
        })
        .collect();
    // The test's thread runs the task only when it waits: five alerts in a row fill the
    // queue of one, and four are dropped on the spot.
    for b in &breakers[..5] {
        b.force_open();
    }
    assert_eq!(alerts.status().dropped, 4);
    assert_eq!(receiver.next().await.body["breaker"], "b0"); // and hangs
    // While it hangs, one alert waits behind it; the queue holds no more.
    for b in &breakers[5..] {
        b.force_open();
        tokio::task::yield_now().await;
    }
    assert_eq!(status_until(&alerts, |s| s.dropped == 6).await.sent, 0);
    for b in &breakers {
        assert_eq!(b.state(), State::ForcedOpen);
        b.reset();
        assert!(b.try_acquire().is_ok(), "calls never wait for an alert");
    }
}

#[tokio::test]
async fn keyed_breakers_alert_per_key_with_their_counts() {
    let mut receiver = Receiver::start([]).await;
    let alerts = WebhookAlerts::builder(receiver.url()).build().unwrap();
    let registry = alerts
        .attach_keyed(KeyedRegistry::<String>::builder(
            CircuitBreaker::builder("openai").consecutive_failures(2),
        ))
        .unwrap();
    for _ in 0..2 {
        registry.try_acquire("gpt-4o").unwrap().record(Outcome::Failure);
        registry
            .try_acquire("gpt-4o-mini")
            .unwrap()
            .record(Outcome::Success);
    }
    let body = receiver.next().await.body;
    assert_eq!(
        (&body["breaker"], &body["alert"], &body["consecutive_failures"]),
        (&json!("openai:gpt-4o"), &json!("opened"), &json!(2))
    );
}

#[tokio::test]
async fn an_opening_learned_from_another_replica_is_not_alerted() {
    let mut receiver = Receiver::start([]).await;
    let alerts = WebhookAlerts::builder(receiver.url())
        .rate_limit(Duration::ZERO)
        .build()
        .unwrap();
    let breaker = alerts
        .attach(CircuitBreaker::builder("openai").consecutive_failures(1))
        .unwrap();
    breaker.trip_remote(Duration::from_secs(30)); // as RedisSync does
    breaker.reset(); // its recovery is not alerted either
    breaker.try_acquire().unwrap().record(Outcome::Failure); // a local trip is
    let body = receiver.next().await.body;
    assert_eq!(
        (&body["alert"], &body["reason"]),
        (&json!("opened"), &json!("consecutive_failures"))
    );
    assert_eq!(status_until(&alerts, |s| s.sent == 1).await.sent, 1);
    assert!(receiver.hits.try_recv().is_err());

    // Unless asked for.
    let alerts = WebhookAlerts::builder(receiver.url())
        .alert_remote_openings(true)
        .alert_on([AlertKind::Opened])
        .build()
        .unwrap();
    let breaker = alerts
        .attach(CircuitBreaker::builder("anthropic").consecutive_failures(1))
        .unwrap();
    breaker.trip_remote(Duration::from_secs(30));
    assert_eq!(receiver.next().await.body["reason"], "remote");
}

/// Issue 18 point 5: an operator's force-open on one replica applies on every replica (Redis);
/// only the acting replica alerts, by default, as for trips.
#[tokio::test]
async fn an_override_from_another_replica_is_not_alerted() {
    use tower_breaker::{Origin, Override};

    let mut receiver = Receiver::start([]).await;
    let alerts = WebhookAlerts::builder(receiver.url())
        .rate_limit(Duration::ZERO)
        .build()
        .unwrap();
    let breaker = alerts
        .attach(CircuitBreaker::builder("openai").consecutive_failures(1))
        .unwrap();
    // As RedisSync applies another replica's force-open and reset.
    breaker.apply_override(Override::ForceOpen, Origin::Remote("web-2"));
    assert_eq!(breaker.state(), State::ForcedOpen);
    breaker.apply_override(Override::Reset, Origin::Remote("web-2"));
    // The acting replica's (here: a local force-open) is alerted.
    breaker.force_open();
    let body = receiver.next().await.body;
    assert_eq!(
        (&body["alert"], &body["reason"]),
        (&json!("opened"), &json!("forced"))
    );
    assert_eq!(status_until(&alerts, |s| s.sent == 1).await.sent, 1);
    assert!(receiver.hits.try_recv().is_err());
}

#[tokio::test]
async fn https_goes_through_rustls() {
    // A plain-http receiver behind an https:// URL: the TLS handshake fails (rustls, no panic
    // choosing a crypto provider), the alert is dropped after its attempts, nothing arrives.
    let mut receiver = Receiver::start([]).await;
    let alerts = fast_retries(WebhookAlerts::builder(format!("https://{}/hook", receiver.addr)).retries(1))
        .build()
        .unwrap();
    alerts
        .attach(CircuitBreaker::builder("openai").consecutive_failures(1))
        .unwrap()
        .force_open();
    let status = status_until(&alerts, |s| s.failed == 1).await;
    assert_eq!(status.retried, 1);
    assert!(receiver.hits.try_recv().is_err(), "no request was read");
}

#[tokio::test]
async fn the_builder_refuses_bad_settings() {
    let setting = |b: tower_breaker::integrations::webhook::WebhookBuilder| b.build().unwrap_err().setting();
    assert_eq!(setting(WebhookAlerts::builder("ftp://example.com/x")), "url");
    assert_eq!(setting(WebhookAlerts::builder("/relative")), "url");
    assert_eq!(
        setting(WebhookAlerts::builder("http://h/").timeout(Duration::ZERO)),
        "timeout"
    );
    assert_eq!(
        setting(WebhookAlerts::builder("http://h/").queue_capacity(0)),
        "queue_capacity"
    );
    assert_eq!(
        setting(
            WebhookAlerts::builder("http://h/").retry_delay(Duration::from_secs(2), Duration::from_secs(1))
        ),
        "retry_delay"
    );
    let debug = format!(
        "{:?}",
        WebhookAlerts::builder("https://hooks.slack.com/services/T0/B0/s3cret")
    );
    assert!(
        debug.contains("https://hooks.slack.com/…") && !debug.contains("s3cret"),
        "{debug}"
    );
}

#[test]
fn the_builder_needs_a_runtime() {
    let err = WebhookAlerts::builder("http://127.0.0.1:1/").build().unwrap_err();
    assert_eq!(err.setting(), "runtime");
}

#[test]
fn which_transitions_alert() {
    use State::*;
    let of = AlertKind::of;
    assert_eq!(of(Closed, Open), Some(AlertKind::Opened));
    assert_eq!(of(Closed, ForcedOpen), Some(AlertKind::Opened));
    assert_eq!(of(Disabled, ForcedOpen), Some(AlertKind::Opened));
    assert_eq!(of(HalfOpen, Open), Some(AlertKind::Reopened));
    // A recovery probe that failed or timed out: open again, for the next backoff period.
    assert_eq!(of(Open, Open), Some(AlertKind::Reopened));
    assert_eq!(of(HalfOpen, Closed), Some(AlertKind::Recovered));
    assert_eq!(of(ForcedOpen, Closed), Some(AlertKind::Recovered));
    assert_eq!(of(Open, Closed), Some(AlertKind::Recovered));
    assert_eq!(of(Open, HalfOpen), None);
    assert_eq!(of(Open, ForcedOpen), None);
    assert_eq!(of(Closed, Disabled), None);
    assert_eq!(of(Disabled, Closed), None);
}
