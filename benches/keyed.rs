//! Keyed lookups at 10, 10,000 and 100,000 keys, a new key that does not fit a registry full
//! of open breakers, and the cost of an unused listener hook.
//!
//! ```sh
//! cargo bench --bench keyed --features metrics
//! ```

use std::{hint::black_box, time::Duration};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tower_breaker::{
    CircuitBreaker, Outcome,
    keyed::{Authority, ExtractKey, KeyedRegistry, WhenFull},
};

fn template() -> tower_breaker::Builder {
    CircuitBreaker::builder("up").consecutive_failures(5)
}

fn keyed(c: &mut Criterion) {
    let mut group = c.benchmark_group("keyed");
    group.throughput(Throughput::Elements(1));
    for n in [10usize, 10_000, 100_000] {
        // Room to spare: the bound is enforced per shard.
        let registry = KeyedRegistry::<String>::builder(template())
            .max_keys(2 * n)
            .build()
            .unwrap();
        let keys: Vec<String> = (0..n).map(|i| format!("host-{i}.example.com")).collect();
        for k in &keys {
            registry.get(k.as_str()).unwrap();
        }
        assert_eq!(registry.len(), n);
        // Keys visited in a scrambled order, so large registries miss the CPU caches as they
        // would under real traffic.
        let order: Vec<usize> = {
            let mut rng = fastrand::Rng::with_seed(7);
            (0..n.max(1024)).map(|_| rng.usize(..n)).collect()
        };
        group.bench_with_input(BenchmarkId::new("try_acquire_record", n), &n, |b, _| {
            let mut i = 0;
            b.iter(|| {
                let key = keys[order[i % order.len()]].as_str();
                i += 1;
                registry
                    .try_acquire(black_box(key))
                    .unwrap()
                    .record(Outcome::Success);
            })
        });
        // The same random walk over a plain `std` map of the same keys: the part of the cost
        // that is the memory traffic of a big table, not the registry.
        let plain: std::collections::HashMap<String, u64> = keys.iter().cloned().zip(0..).collect();
        group.bench_with_input(BenchmarkId::new("std_hashmap_get_reference", n), &n, |b, _| {
            let mut i = 0;
            b.iter(|| {
                let key = keys[order[i % order.len()]].as_str();
                i += 1;
                black_box(plain.get(black_box(key)));
            })
        });
        // Ten hot keys in a registry of n: what a gateway with a few busy upstreams sees.
        group.bench_with_input(BenchmarkId::new("try_acquire_record_hot", n), &n, |b, _| {
            let hot: Vec<&str> = keys.iter().take(10).map(String::as_str).collect();
            let mut i = 0;
            b.iter(|| {
                let key = hot[i % hot.len()];
                i += 1;
                registry
                    .try_acquire(black_box(key))
                    .unwrap()
                    .record(Outcome::Success);
            })
        });
    }
    // A registry full of open breakers (an outage that tripped every key): what a call for a
    // key that does not fit costs, refused (`WhenFull::Reject`) or sent to the overflow
    // breaker, against a known key's refusal.
    for policy in [WhenFull::Reject, WhenFull::Overflow] {
        let registry = KeyedRegistry::<String>::builder(template())
            .max_keys(1_024)
            .idle_timeout(Duration::from_secs(1))
            .when_full(policy)
            .build()
            .unwrap();
        for i in 0..1_024 {
            registry
                .get(format!("host-{i}").as_str())
                .unwrap()
                .trip(Duration::from_secs(3_600));
        }
        assert_eq!(registry.len(), 1_024);
        // One idle period later a sweep has passed: nobody called these keys since (their
        // "used" bits are clear), as in an outage where clients gave up on them.
        std::thread::sleep(Duration::from_millis(1_100));
        assert_eq!(registry.evict_idle(), 0, "open breakers are never evicted");
        let fresh: Vec<String> = (0..1_024).map(|i| format!("new-{i}")).collect();
        let name = format!("new_key_when_full_of_open/{policy:?}");
        group.bench_function(&name, |b| {
            let mut i = 0;
            b.iter(|| {
                i += 1;
                let refused = registry.try_acquire(black_box(fresh[i % fresh.len()].as_str()));
                black_box(refused.is_err());
            })
        });
        if policy == WhenFull::Reject {
            group.bench_function("known_open_key_refused", |b| {
                b.iter(|| black_box(registry.try_acquire(black_box("host-7")).is_err()))
            });
        }
    }
    // The extractor on top of a lookup: Authority borrows the key from the request.
    let registry = KeyedRegistry::<String>::new(template()).unwrap();
    let req = http::Request::get("https://api.openai.com/v1/chat/completions")
        .body(())
        .unwrap();
    let authority = Authority::new();
    group.bench_function("authority_extract_try_acquire_record", |b| {
        b.iter(|| {
            let key = authority.extract(black_box(&req));
            registry.try_acquire(&*key).unwrap().record(Outcome::Success);
        })
    });
    group.finish();
}

fn unused_costs_nothing(c: &mut Criterion) {
    let mut group = c.benchmark_group("breaker");
    let plain = template().build().unwrap();
    group.bench_function("try_acquire_record/no_listener", |b| {
        b.iter(|| black_box(&plain).try_acquire().unwrap().record(Outcome::Success))
    });
    #[cfg(feature = "metrics")]
    {
        // Instrumented, with no recorder installed: the handles are no-ops.
        let instrumented = tower_breaker::integrations::metrics::instrument(template())
            .build()
            .unwrap();
        group.bench_function("try_acquire_record/metrics_listener_no_recorder", |b| {
            b.iter(|| {
                black_box(&instrumented)
                    .try_acquire()
                    .unwrap()
                    .record(Outcome::Success)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, keyed, unused_costs_nothing);
criterion_main!(benches);
