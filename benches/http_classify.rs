//! The HTTP classifier's cost: classifying a response or an error (with the clone the breaker
//! service makes per call), against the default `ErrorIsFailure`.
use std::{future::Future, hint::black_box, time::Duration};

use criterion::{Criterion, criterion_group, criterion_main};
use http::{Response, header::RETRY_AFTER};
use tower_breaker::{BoxError, Classify, ErrorIsFailure, HttpClassifier};

fn classify(c: &mut Criterion) {
    let mut g = c.benchmark_group("classify");
    let ok = Response::builder().status(200).body(()).unwrap();
    let unavailable = Response::builder()
        .status(503)
        .header(RETRY_AFTER, "30")
        .body(())
        .unwrap();
    let date = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(3600));
    let limited = Response::builder()
        .status(429)
        .header(RETRY_AFTER, date)
        .body(())
        .unwrap();
    let timeout: BoxError = Box::new(tower::timeout::error::Elapsed::new());
    let http = HttpClassifier::default();

    g.bench_function("error_is_failure/200", |b| {
        b.iter(|| {
            Classify::<_, BoxError>::classify(&black_box(ErrorIsFailure::new()).clone(), Ok(black_box(&ok)))
        })
    });
    g.bench_function("http/200 (clone + classify)", |b| {
        b.iter(|| Classify::<_, BoxError>::classify(&black_box(&http).clone(), Ok(black_box(&ok))))
    });
    g.bench_function("http/200 (classify only)", |b| {
        b.iter(|| Classify::<_, BoxError>::classify(black_box(&http), Ok(black_box(&ok))))
    });
    g.bench_function("http/clone only", |b| {
        b.iter(|| black_box(black_box(&http).clone()))
    });
    g.bench_function("http/503 retry-after seconds", |b| {
        b.iter(|| Classify::<_, BoxError>::classify(black_box(&http), Ok(black_box(&unavailable))))
    });
    g.bench_function("http/429 retry-after date", |b| {
        b.iter(|| Classify::<_, BoxError>::classify(black_box(&http), Ok(black_box(&limited))))
    });
    g.bench_function("http/error elapsed", |b| {
        b.iter(|| Classify::<Response<()>, _>::classify(black_box(&http), Err(black_box(&timeout))))
    });
    g.finish();
}

/// A closed call through the breaker layer over a ready service, per classifier.
fn layer(c: &mut Criterion) {
    use std::task::{Context, Poll};
    use tower::{Layer, Service, service_fn};
    use tower_breaker::{CircuitBreaker, CircuitBreakerLayer};

    fn run<S: Service<(), Response = Response<()>>>(svc: &mut S, cx: &mut Context<'_>) {
        assert!(matches!(svc.poll_ready(cx), Poll::Ready(Ok(()))));
        let mut fut = std::pin::pin!(svc.call(()));
        assert!(matches!(fut.as_mut().poll(cx), Poll::Ready(Ok(_))));
    }

    let mut g = c.benchmark_group("layer_closed_call");
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let inner = || service_fn(|()| std::future::ready(Ok::<_, BoxError>(Response::new(()))));
    let breaker = || {
        CircuitBreaker::builder("b")
            .consecutive_failures(5)
            .build()
            .unwrap()
    };

    let mut bare = inner();
    g.bench_function("bare", |b| b.iter(|| run(&mut bare, &mut cx)));
    let mut plain = CircuitBreakerLayer::new(breaker()).layer(inner());
    g.bench_function("error_is_failure", |b| b.iter(|| run(&mut plain, &mut cx)));
    let mut http = CircuitBreakerLayer::new(breaker())
        .classify(HttpClassifier::default())
        .layer(inner());
    g.bench_function("http_classifier", |b| b.iter(|| run(&mut http, &mut cx)));
    // The same table behind a `&'static`: what the per-call clone costs.
    let table: &'static HttpClassifier = Box::leak(Box::new(HttpClassifier::default()));
    let by_ref = move |r: Result<&Response<()>, &BoxError>| table.classify(r);
    let mut http_ref = CircuitBreakerLayer::new(breaker())
        .classify(by_ref)
        .layer(inner());
    g.bench_function("http_classifier_by_ref", |b| {
        b.iter(|| run(&mut http_ref, &mut cx))
    });
    g.finish();
}

criterion_group!(benches, classify, layer);
criterion_main!(benches);
