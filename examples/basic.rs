//! A breaker opening on a failing service, failing fast, half-opening and recovering,
//! printed step by step.
//!
//! Run: `cargo run --example basic`

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
use tower_breaker::{BoxError, CircuitBreaker, CircuitBreakerLayer, CircuitOpen, Event};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    // Print every transition as it happens.
    let breaker = CircuitBreaker::builder("upstream")
        .consecutive_failures(3)
        .open_duration(Duration::from_millis(500))
        .half_open_successes(2)
        .on_event(|e| {
            if let Event::Transition {
                from,
                to,
                reason,
                open_for,
                ..
            } = e
            {
                let extra = open_for.map(|d| format!(" for {d:?}")).unwrap_or_default();
                println!("    [breaker] {from} -> {to} ({reason}){extra}");
            }
        })
        .build()?;

    // An upstream we can break and mend.
    let healthy = Arc::new(AtomicBool::new(false));
    let upstream = {
        let healthy = healthy.clone();
        service_fn(move |n: u32| {
            let ok = healthy.load(Ordering::SeqCst);
            async move {
                if ok {
                    Ok::<_, BoxError>(format!("answer #{n}"))
                } else {
                    Err("HTTP 500 from upstream".into())
                }
            }
        })
    };
    let mut svc = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(breaker.clone()))
        .service(upstream);

    println!("1. The upstream is down; each call goes out and fails:");
    for n in 1..=3 {
        let result = svc.ready().await?.call(n).await;
        println!(
            "  call {n}: {:?}  (state: {})",
            result.unwrap_err().to_string(),
            breaker.state()
        );
    }

    println!("2. The breaker is open: calls fail fast, the upstream is not touched:");
    for n in 4..=5 {
        match svc.ready().await {
            Err(e) if e.is::<CircuitOpen>() => println!("  call {n}: refused at once: {e}"),
            other => println!("  call {n}: unexpected {:?}", other.map(|_| ())),
        }
    }

    println!("3. The upstream recovers; after the open period the breaker lets probes through:");
    healthy.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for n in 6..=8 {
        let answer = svc.ready().await?.call(n).await?;
        println!("  call {n}: {answer}  (state: {})", breaker.state());
    }

    let s = breaker.snapshot();
    println!(
        "4. Recovered: state {}, consecutive failures {}",
        s.state, s.consecutive_failures
    );
    Ok(())
}
