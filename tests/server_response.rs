//! `CircuitOpenResponse`: the 503 (or 429) a server sends for a refused call, with
//! `Retry-After` rounded up and a body that says the same wait. Paused tokio time throughout.

use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode, header::RETRY_AFTER};
use http_body_util::{BodyExt, Full};
use tower::{ServiceExt, service_fn};
use tower_breaker::{
    BoxError, CircuitBreaker, CircuitBreakerLayer, CircuitOpen, CircuitOpenResponse, Failover, Layer,
    Outcome, service::retry_after_secs,
};

fn breaker(name: &str, open_for: Duration) -> CircuitBreaker {
    CircuitBreaker::builder(name)
        .consecutive_failures(1)
        .open_duration(open_for)
        .build()
        .unwrap()
}

/// Opens `b` with one failure and returns its refusal.
fn refuse(b: &CircuitBreaker) -> CircuitOpen {
    if let Ok(permit) = b.try_acquire() {
        permit.record(Outcome::Failure);
    }
    b.try_acquire().unwrap_err()
}

fn retry_after<B>(res: &Response<B>) -> Option<&str> {
    res.headers().get(RETRY_AFTER).map(|v| v.to_str().unwrap())
}

#[tokio::test(start_paused = true)]
async fn open_answers_503_with_retry_after_rounded_up_and_the_same_wait_in_the_body() {
    let b = breaker("payments", Duration::from_millis(29_001));
    let open = refuse(&b);
    let res: Response<String> = CircuitOpenResponse::new().for_circuit_open(&open);
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        retry_after(&res),
        Some("30"),
        "29.001 s rounds up, never down to 29"
    );
    assert_eq!(res.body(), r#"circuit "payments" is open; retry in 30s"#);
    assert_eq!(
        res.body(),
        &open.to_string(),
        "the same words as the error's message"
    );
    assert_eq!(
        res.headers()[http::header::CONTENT_TYPE],
        "text/plain; charset=utf-8"
    );
}

#[tokio::test(start_paused = true)]
async fn header_and_body_agree_at_every_point_of_the_open_period() {
    let b = breaker("db", Duration::from_secs(5));
    let open = refuse(&b);
    let step = Duration::from_millis(137);
    let mut elapsed = Duration::ZERO;
    while elapsed <= Duration::from_secs(5) {
        let res: Response<String> = CircuitOpenResponse::new().for_circuit_open(&open);
        let secs: u64 = retry_after(&res).unwrap().parse().unwrap();
        let left = Duration::from_secs(5) - elapsed;
        assert_eq!(secs, retry_after_secs(left), "at {elapsed:?}");
        assert!(
            Duration::from_secs(secs) >= left,
            "a client never comes back too early"
        );
        if secs > 0 {
            assert_eq!(res.body(), &format!(r#"circuit "db" is open; retry in {secs}s"#));
        }
        tokio::time::advance(step).await;
        elapsed += step;
    }
}

#[tokio::test(start_paused = true)]
async fn an_ended_open_period_says_so_with_retry_after_zero() {
    let b = breaker("db", Duration::from_secs(10));
    let open = refuse(&b);
    tokio::time::advance(Duration::from_secs(10)).await;
    let res: Response<String> = CircuitOpenResponse::new().for_circuit_open(&open);
    assert_eq!(retry_after(&res), Some("0"));
    assert_eq!(res.body(), r#"circuit "db" was open; its open period has ended"#);
    assert_eq!(res.body(), &open.to_string(), "the error's own words");
    let anonymous: Response<String> = CircuitOpenResponse::new().hide_name().for_circuit_open(&open);
    assert_eq!(anonymous.body(), "temporarily unavailable; retry now");
}

#[tokio::test(start_paused = true)]
async fn an_unknown_wait_sends_no_retry_after() {
    let forced = breaker("forced", Duration::from_secs(10));
    forced.force_open();
    let res: Response<String> =
        CircuitOpenResponse::new().for_circuit_open(&forced.try_acquire().unwrap_err());
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(retry_after(&res), None);
    assert_eq!(res.body(), r#"circuit "forced" is forced open"#);

    // Half-open, its one probe in flight: the next caller is refused with no known wait.
    let probing = breaker("probing", Duration::from_secs(10));
    refuse(&probing);
    tokio::time::advance(Duration::from_secs(10)).await;
    let _probe = probing.try_acquire().unwrap();
    let res: Response<String> =
        CircuitOpenResponse::new().for_circuit_open(&probing.try_acquire().unwrap_err());
    assert_eq!(retry_after(&res), None);
    assert_eq!(
        res.body(),
        r#"circuit "probing" is half-open and its probes are all in flight"#
    );
}

#[tokio::test(start_paused = true)]
async fn status_429_and_a_hidden_name() {
    let b = breaker("internal-ledger", Duration::from_secs(30));
    let open = refuse(&b);
    let res: Response<String> = CircuitOpenResponse::new()
        .status(StatusCode::TOO_MANY_REQUESTS)
        .hide_name()
        .for_circuit_open(&open);
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(retry_after(&res), Some("30"));
    assert_eq!(res.body(), "temporarily unavailable; retry in 30s");
    assert!(!res.body().contains("ledger"));
}

#[tokio::test(start_paused = true)]
async fn for_error_finds_the_refusal_in_a_box_error_from_the_layer() {
    let b = breaker("upstream", Duration::from_secs(30));
    let svc = CircuitBreakerLayer::new(b.clone())
        .layer(service_fn(|_: ()| async { Err::<(), BoxError>("boom".into()) }));
    let first = svc.clone().oneshot(()).await.unwrap_err();
    assert!(
        CircuitOpenResponse::new()
            .for_error::<_, String>(&first)
            .is_none(),
        "the inner service's own error is not a refusal"
    );
    let refused = svc.oneshot(()).await.unwrap_err();
    let res: Response<Full<Bytes>> = CircuitOpenResponse::new().for_error(&refused).unwrap();
    assert_eq!(retry_after(&res), Some("30"));
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, r#"circuit "upstream" is open; retry in 30s"#);
}

#[tokio::test(start_paused = true)]
async fn for_error_on_all_unavailable_uses_the_member_that_reopens_first() {
    let (a, b) = (
        breaker("a", Duration::from_secs(60)),
        breaker("b", Duration::from_secs(12)),
    );
    refuse(&a);
    refuse(&b);
    let member = |breaker: &CircuitBreaker| {
        CircuitBreakerLayer::new(breaker.clone()).layer(service_fn(|_: ()| async { Ok::<_, BoxError>("ok") }))
    };
    let err = Failover::new([("a", member(&a)), ("b", member(&b))])
        .oneshot(())
        .await
        .unwrap_err();
    assert!(err.is::<tower_breaker::AllUnavailable>());
    let res: Response<String> = CircuitOpenResponse::new().for_error(&err).unwrap();
    assert_eq!(retry_after(&res), Some("12"));
    assert_eq!(res.body(), r#"circuit "b" is open; retry in 12s"#);
}
