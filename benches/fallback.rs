//! The fallback's cost on the hot path: a request through a `Fallback` or `Failover` whose
//! first member serves, against the breaker service alone, and the cost of routing around an
//! open primary. Every inner service answers at once; run with `cargo bench --bench fallback`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use futures::FutureExt;
use tower::{Service, ServiceExt, service_fn};
use tower_breaker::{
    BoxError, CircuitBreaker, CircuitBreakerLayer, Failover, Fallback, Layer, fallback::CloneRequest,
};

fn upstream()
-> impl Service<u64, Response = u64, Error = BoxError, Future = std::future::Ready<Result<u64, BoxError>>> + Clone
{
    service_fn(|x: u64| std::future::ready(Ok::<_, BoxError>(x + 1)))
}

fn guarded(
    name: &str,
) -> (
    CircuitBreaker,
    impl Service<u64, Response = u64, Error = BoxError, Future = impl Send> + Clone,
) {
    let breaker = CircuitBreaker::builder(name)
        .consecutive_failures(5)
        .build()
        .unwrap();
    (
        breaker.clone(),
        CircuitBreakerLayer::new(breaker).layer(upstream()),
    )
}

fn once<S: Service<u64, Response = u64>>(svc: &mut S, x: u64) -> u64
where
    S::Error: std::fmt::Debug,
{
    let ready = svc.ready().now_or_never().unwrap().unwrap();
    ready.call(x).now_or_never().unwrap().unwrap()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("fallback");

    let (_, mut svc) = guarded("a");
    g.bench_function("breaker service alone", |b| {
        b.iter(|| once(&mut svc, black_box(1)))
    });

    let (_, p) = guarded("a");
    let mut svc = Fallback::new(p, upstream());
    g.bench_function("Fallback, primary serves", |b| {
        b.iter(|| once(&mut svc, black_box(1)))
    });

    let (_, p) = guarded("a");
    let mut svc = Fallback::new(p, upstream()).on_failure(CloneRequest::new());
    g.bench_function("Fallback on_failure, primary serves", |b| {
        b.iter(|| once(&mut svc, black_box(1)))
    });

    let (breaker, p) = guarded("a");
    breaker.force_open();
    let mut svc = Fallback::new(p, upstream());
    g.bench_function("Fallback, primary open", |b| {
        b.iter(|| once(&mut svc, black_box(1)))
    });

    let members: Vec<_> = ["a", "b", "c"].into_iter().map(|n| (n, guarded(n))).collect();
    members[0].1.0.force_open();
    members[1].1.0.force_open();
    let mut svc = Failover::new(members.into_iter().map(|(n, (_, s))| (n, s)));
    g.bench_function("Failover of 3, first two open", |b| {
        b.iter(|| once(&mut svc, black_box(1)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
