//! Per-call cost of the breaker: a closed call through the layer against the bare inner
//! service, a rejection, and `try_acquire` + `record` on the core, each with the consecutive
//! rule, a count window and a time window.
//!
//! Run: `cargo bench --bench breaker`

use std::{
    convert::Infallible,
    future::{Future, Ready, ready},
    hint::black_box,
    pin::pin,
    task::{Context, Poll},
    time::Duration,
};

use criterion::{Criterion, criterion_group, criterion_main};
use tower::{Layer, Service};
use tower_breaker::{CircuitBreaker, CircuitBreakerLayer, Outcome};

/// Always ready, answers at once: the cheapest possible inner service.
#[derive(Clone, Copy)]
struct Bare;

impl Service<u64> for Bare {
    type Response = u64;
    type Error = Infallible;
    type Future = Ready<Result<u64, Infallible>>;
    #[inline]
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    #[inline]
    fn call(&mut self, x: u64) -> Self::Future {
        ready(Ok(x))
    }
}

/// One request: `poll_ready`, `call`, poll the future to completion (it is ready at once).
#[inline]
fn request<S: Service<u64>>(svc: &mut S, cx: &mut Context<'_>, x: u64) -> bool {
    match svc.poll_ready(cx) {
        Poll::Ready(Ok(())) => {}
        _ => return false,
    }
    let fut = pin!(svc.call(x));
    matches!(fut.poll(cx), Poll::Ready(Ok(_)))
}

fn configs() -> [(&'static str, CircuitBreaker); 3] {
    let b = |name| CircuitBreaker::builder(name);
    [
        (
            "consecutive",
            b("consecutive").consecutive_failures(5).build().unwrap(),
        ),
        (
            "count_window",
            b("count_window")
                .failure_rate(0.5)
                .count_window(100)
                .build()
                .unwrap(),
        ),
        (
            "time_window",
            b("time_window")
                .failure_rate(0.5)
                .time_window(Duration::from_secs(60))
                .build()
                .unwrap(),
        ),
    ]
}

fn closed(c: &mut Criterion) {
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut g = c.benchmark_group("closed_call");
    g.bench_function("bare", |bch| {
        let mut svc = Bare;
        let mut x = 0u64;
        bch.iter(|| {
            x += 1;
            black_box(request(&mut svc, &mut cx, black_box(x)))
        })
    });
    for (name, breaker) in configs() {
        g.bench_function(name, |bch| {
            let mut svc = CircuitBreakerLayer::new(breaker.clone()).layer(Bare);
            let mut x = 0u64;
            bch.iter(|| {
                x += 1;
                black_box(request(&mut svc, &mut cx, black_box(x)))
            })
        });
    }
    g.finish();
}

fn rejection(c: &mut Criterion) {
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut g = c.benchmark_group("rejection");
    for (name, breaker) in configs() {
        breaker.trip(Duration::from_secs(3600));
        g.bench_function(format!("layer_{name}"), |bch| {
            let mut svc = CircuitBreakerLayer::new(breaker.clone()).layer(Bare);
            bch.iter(|| black_box(request(&mut svc, &mut cx, 1)))
        });
        g.bench_function(format!("core_{name}"), |bch| {
            bch.iter(|| black_box(breaker.try_acquire().is_err()))
        });
    }
    g.finish();
}

fn core(c: &mut Criterion) {
    let mut g = c.benchmark_group("core_acquire_record");
    for (name, breaker) in configs() {
        g.bench_function(name, |bch| {
            bch.iter(|| {
                if let Ok(p) = breaker.try_acquire() {
                    p.record(black_box(Outcome::Success));
                }
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = closed, rejection, core
}
criterion_main!(benches);
