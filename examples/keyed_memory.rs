//! Measures the heap used by a keyed registry of 100,000 keys, with a counting allocator.
//!
//! ```sh
//! cargo run --release --example keyed_memory
//! ```

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::atomic::{AtomicIsize, Ordering},
};

use tower_breaker::{CircuitBreaker, keyed::KeyedRegistry};

/// Counts the bytes currently allocated.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const KEYS: usize = 100_000;

fn measure(label: &str, template: tower_breaker::Builder) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let keys: Vec<String> = (0..KEYS).map(|i| format!("host-{i:06}.example.com")).collect();
    let key_bytes: usize = keys.iter().map(String::len).sum();
    let before = LIVE.load(Ordering::Relaxed);
    let registry = KeyedRegistry::<String>::builder(template)
        .max_keys(2 * KEYS)
        .build()
        .unwrap();
    for k in &keys {
        registry.get(k.as_str()).unwrap();
    }
    assert_eq!(registry.len(), KEYS);
    let used = LIVE.load(Ordering::Relaxed) - before;
    println!(
        "{label}: {KEYS} keys use {:.1} MiB: {} bytes per key (of which {} bytes of key text)",
        used as f64 / (1024.0 * 1024.0),
        used as usize / KEYS,
        key_bytes / KEYS,
    );
    drop(registry);
}

/// The same number of breakers built directly, for reference: what the breakers themselves
/// weigh, without the registry.
fn bare(label: &str, template: tower_breaker::Builder) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let before = LIVE.load(Ordering::Relaxed);
    let breakers: Vec<CircuitBreaker> = (0..KEYS).map(|_| template.build().unwrap()).collect();
    let used = LIVE.load(Ordering::Relaxed) - before;
    println!(
        "{label}, bare breakers (no registry): {} bytes per breaker",
        used as usize / KEYS
    );
    drop(breakers);
}

fn main() {
    bare(
        "consecutive_failures(5)",
        CircuitBreaker::builder("up").consecutive_failures(5),
    );
    measure(
        "consecutive_failures(5)",
        CircuitBreaker::builder("up").consecutive_failures(5),
    );
    measure(
        "failure_rate(0.5) over count_window(100)",
        CircuitBreaker::builder("up").failure_rate(0.5).count_window(100),
    );
    measure(
        "failure_rate(0.5) over time_window(60s)",
        CircuitBreaker::builder("up")
            .failure_rate(0.5)
            .time_window(std::time::Duration::from_secs(60)),
    );
}
