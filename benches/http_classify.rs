//! The HTTP classifier's cost: classifying a response or an error (with the clone the breaker
//! service makes per call), against the default `ErrorIsFailure`.
use std::{hint::black_box, time::Duration};

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

criterion_group!(benches, classify);
criterion_main!(benches);
