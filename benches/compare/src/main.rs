//! tower-breaker against the peer circuit-breaker crates: per-call cost while closed (always
//! ok, 1% failures), per rejection while open, throughput of 64 tasks sharing one breaker on a
//! 2-worker runtime, keyed lookup at 10 / 10k / 100k keys, bytes per breaker and per key.
//!
//! Run from the repository root:
//!
//! ```text
//! cargo run --release --manifest-path benches/compare/Cargo.toml            # ~1-2 min
//! cargo run --release --manifest-path benches/compare/Cargo.toml -- --quick # ~20 s
//! cargo run --release --manifest-path benches/compare/Cargo.toml -- --primitives
//! cargo run --release --manifest-path benches/compare/Cargo.toml -- --keyed
//! ```
//!
//! Method: every subject is first validated (it really trips and rejects; clones share one
//! state). Then the single-task scenarios and the contention scenario run in interleaved
//! rounds (every subject once per round, a fresh breaker each time, built and tripped outside
//! the timed region) and the table shows the median over the rounds, with the spread.
//! One request = `svc.ready().await` + `svc.call(x).await` for tower services; the non-tower
//! peers wrap the inner call in their own async API, the most direct form each offers.
//! Every timed loop also tallies its results and the run fails if a tally is off (a closed
//! breaker that rejected, an open one that let a call through).
//!
//! This crate does not enable tokio's `test-util` feature (the main crate's dev-dependencies
//! do, and it makes `tokio::time::Instant::now()` a few ns slower); the figures are what users
//! get.

// The trait spells out `+ Send` on the request futures; the impls keep that form.
#![allow(clippy::manual_async_fn)]

use std::{
    alloc::{GlobalAlloc, Layout, System},
    collections::HashMap,
    convert::Infallible,
    fmt,
    future::{Future, Ready, ready},
    hint::black_box,
    sync::atomic::{AtomicBool, AtomicIsize, Ordering},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use tower::{Layer, Service, ServiceExt};
use tower_breaker::{
    BoxError, CircuitBreaker, CircuitBreakerLayer, CircuitOpen, Outcome, keyed::KeyedRegistry,
};

// ---------------------------------------------------------------------------------------------
// Counting allocator: counts live heap bytes, only while `COUNTING` is set (so the timed runs
// pay one relaxed load of a read-only flag, and no shared counter is written under contention).

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if COUNTING.load(Ordering::Relaxed) {
            LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        }
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Live heap bytes allocated by `f`'s result (what `f` allocated and did not free).
fn heap_bytes<T>(f: impl FnOnce() -> T) -> (T, isize) {
    LIVE.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    let t = f();
    COUNTING.store(false, Ordering::SeqCst);
    (t, LIVE.load(Ordering::SeqCst))
}

/// This thread's CPU time: the single-task scenarios are timed with it, so time the thread
/// spends descheduled (the machine is shared) does not count.
#[derive(Clone, Copy)]
struct CpuClock(libc::timespec);

impl CpuClock {
    fn now() -> Self {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid out-pointer for clock_gettime.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        Self(ts)
    }
    fn elapsed(self) -> Duration {
        let now = Self::now().0;
        Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
            .saturating_sub(Duration::new(self.0.tv_sec as u64, self.0.tv_nsec as u32))
    }
}

// ---------------------------------------------------------------------------------------------
// The inner service: always ready, answers at once; `N = 100` fails iff `x % 100 == 99`.

#[derive(Debug)]
struct BenchErr;
impl fmt::Display for BenchErr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("inner failure")
    }
}
impl std::error::Error for BenchErr {}

#[derive(Clone, Copy)]
struct Inner<const N: u64>;

impl<const N: u64> Service<u64> for Inner<N> {
    type Response = u64;
    type Error = BenchErr;
    type Future = Ready<Result<u64, BenchErr>>;
    #[inline]
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BenchErr>> {
        Poll::Ready(Ok(()))
    }
    #[inline]
    fn call(&mut self, x: u64) -> Self::Future {
        ready(if N != 0 && x % N == N - 1 {
            Err(BenchErr)
        } else {
            Ok(x)
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Clients: one request through a subject, tallied.

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Res {
    Ok,
    Err,
    Rejected,
}

trait Client: Clone + Send + 'static {
    fn req(&mut self, x: u64) -> impl Future<Output = Res> + Send + '_;
}

trait Rejection {
    fn res(&self) -> Res;
}
impl Rejection for BenchErr {
    fn res(&self) -> Res {
        Res::Err
    }
}
impl Rejection for Infallible {
    fn res(&self) -> Res {
        match *self {}
    }
}
impl Rejection for BoxError {
    #[inline]
    fn res(&self) -> Res {
        if self.is::<CircuitOpen>() {
            Res::Rejected
        } else {
            Res::Err
        }
    }
}
impl<E> Rejection for tower_resilience::circuitbreaker::CircuitBreakerError<E> {
    #[inline]
    fn res(&self) -> Res {
        match self {
            Self::OpenCircuit => Res::Rejected,
            Self::Inner(_) => Res::Err,
        }
    }
}

/// Any tower service.
#[derive(Clone)]
struct Tower<S>(S);

impl<S> Client for Tower<S>
where
    S: Service<u64, Response = u64> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Rejection + Send,
{
    #[inline]
    fn req(&mut self, x: u64) -> impl Future<Output = Res> + Send + '_ {
        async move {
            match self.0.ready().await {
                Err(e) => e.res(),
                Ok(svc) => match svc.call(x).await {
                    Ok(v) => {
                        black_box(v);
                        Res::Ok
                    }
                    Err(e) => e.res(),
                },
            }
        }
    }
}

/// failsafe's futures API around the inner call.
#[derive(Clone)]
struct Failsafe<const N: u64, CB>(CB);

impl<const N: u64, CB> Client for Failsafe<N, CB>
where
    CB: failsafe::futures::CircuitBreaker + Clone + Send + Sync + 'static,
{
    #[inline]
    fn req(&mut self, x: u64) -> impl Future<Output = Res> + Send + '_ {
        async move {
            let mut inner = Inner::<N>;
            if inner.ready().await.is_err() {
                return Res::Err;
            }
            match self.0.call(inner.call(x)).await {
                Ok(v) => {
                    black_box(v);
                    Res::Ok
                }
                Err(failsafe::Error::Inner(_)) => Res::Err,
                Err(failsafe::Error::Rejected) => Res::Rejected,
            }
        }
    }
}

/// recloser's `AsyncRecloser` around the inner call.
#[derive(Clone)]
struct Recloser<const N: u64>(recloser::AsyncRecloser);

impl<const N: u64> Client for Recloser<N> {
    #[inline]
    fn req(&mut self, x: u64) -> impl Future<Output = Res> + Send + '_ {
        async move {
            let mut inner = Inner::<N>;
            if inner.ready().await.is_err() {
                return Res::Err;
            }
            match self.0.call(inner.call(x)).await {
                Ok(v) => {
                    black_box(v);
                    Res::Ok
                }
                Err(recloser::Error::Inner(_)) => Res::Err,
                Err(recloser::Error::Rejected) => Res::Rejected,
            }
        }
    }
}

type CbRs = circuitbreaker_rs::CircuitBreaker<circuitbreaker_rs::DefaultPolicy, BenchErr>;

/// circuitbreaker-rs's `call_async` around the inner call.
#[derive(Clone)]
struct CbRsClient<const N: u64>(CbRs);

impl<const N: u64> Client for CbRsClient<N> {
    #[inline]
    fn req(&mut self, x: u64) -> impl Future<Output = Res> + Send + '_ {
        async move {
            let mut inner = Inner::<N>;
            if inner.ready().await.is_err() {
                return Res::Err;
            }
            match self.0.call_async(|| inner.call(x)).await {
                Ok(v) => {
                    black_box(v);
                    Res::Ok
                }
                Err(circuitbreaker_rs::BreakerError::Open) => Res::Rejected,
                Err(_) => Res::Err,
            }
        }
    }
}

/// The floor for a tower service on the core API: `poll_ready` takes the permit, the future
/// records the outcome. No readiness modes, no classifier, no `BoxError` on the ok path.
/// Not a subject of the comparison: it shows how much of the layer's cost is the core's.
struct Minimal<S> {
    inner: S,
    breaker: CircuitBreaker,
    permit: Option<tower_breaker::Permit>,
}

impl<S: Clone> Clone for Minimal<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            breaker: self.breaker.clone(),
            permit: None,
        }
    }
}

impl<S> Service<u64> for Minimal<S>
where
    S: Service<u64, Response = u64, Error = BenchErr>,
    S::Future: Unpin,
{
    type Response = S::Response;
    type Error = BenchErr;
    type Future = MinimalFuture<S::Future>;
    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BenchErr>> {
        if self.permit.is_none() {
            match self.breaker.try_acquire() {
                Ok(p) => self.permit = Some(p),
                Err(_) => return Poll::Ready(Err(BenchErr)),
            }
        }
        self.inner.poll_ready(cx)
    }
    #[inline]
    fn call(&mut self, x: u64) -> Self::Future {
        MinimalFuture {
            inner: self.inner.call(x),
            permit: self.permit.take(),
        }
    }
}

struct MinimalFuture<F> {
    inner: F,
    permit: Option<tower_breaker::Permit>,
}

impl<F: Future<Output = Result<u64, BenchErr>> + Unpin> Future for MinimalFuture<F> {
    type Output = F::Output;
    #[inline]
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let r = std::task::ready!(std::pin::Pin::new(&mut self.inner).poll(cx));
        if let Some(p) = self.permit.take() {
            p.record(if r.is_ok() {
                Outcome::Success
            } else {
                Outcome::Failure
            });
        }
        Poll::Ready(r)
    }
}

// ---------------------------------------------------------------------------------------------
// Subjects.

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bare,
    Ours,
    Peer,
}

trait Bench {
    fn name(&self) -> &'static str;
    fn kind(&self) -> Kind;
    /// ns per request of `iters` requests on a current-thread runtime.
    fn single(&self, rt: &tokio::runtime::Runtime, sc: Single, iters: u64) -> Result<f64, String>;
    /// Requests per second of 64 tasks sharing one breaker, `per_task` requests each.
    fn contended(&self, rt: &tokio::runtime::Runtime, per_task: u64) -> Result<Rate, String> {
        self.contended_with(rt, per_task, true)
    }
    /// `shared = false`: a breaker per task, the ceiling that striping could reach.
    fn contended_with(
        &self,
        rt: &tokio::runtime::Runtime,
        per_task: u64,
        shared: bool,
    ) -> Result<Rate, String>;
    /// Like `contended`, on a tripped breaker: every call is a rejection (`--profile` only).
    fn contended_open(&self, _rt: &tokio::runtime::Runtime, _per_task: u64) -> Result<Rate, String> {
        Err("no open state".into())
    }
    fn verify(&self, rt: &tokio::runtime::Runtime) -> Result<(), String>;
    /// (heap bytes per breaker, size of the handle)
    fn bytes(&self) -> (f64, usize);
}

struct Subject<C0, C1> {
    name: &'static str,
    kind: Kind,
    /// Always-ok inner.
    ok: fn() -> C0,
    /// Inner failing 1%.
    fail: fn() -> C1,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Single {
    ClosedOk,
    Closed1Pct,
    Open,
}

const TASKS: u64 = 64;

async fn run<C: Client>(c: &mut C, iters: u64, x: impl Fn(u64) -> u64) -> [u64; 3] {
    let mut tally = [0u64; 3];
    for i in 0..iters {
        let r = c.req(black_box(x(i))).await;
        tally[r as usize] += 1;
    }
    tally
}

/// Runs `per_task` requests (`x(i)`) on each client in a task of its own, all at once; every
/// result must be `expect`. Returns results per second of wall time, and per second of the
/// process's CPU time spread over the runtime's `WORKERS` (what `WORKERS` dedicated cores
/// would do: time the workers spend descheduled, on a shared machine, does not count, and
/// time spent bouncing contended cache lines does).
async fn in_tasks<C: Client>(
    clients: impl Iterator<Item = C>,
    per_task: u64,
    x: fn(u64) -> u64,
    expect: Res,
    what: &str,
) -> Result<Rate, String> {
    let t = Instant::now();
    let cpu = ProcessCpu::now();
    let handles: Vec<_> = clients
        .map(|mut c| tokio::spawn(async move { run(&mut c, per_task, x).await }))
        .collect();
    let (mut matched, n) = (0, handles.len() as u64 * per_task);
    for h in handles {
        matched += h.await.map_err(|e| e.to_string())?[expect as usize];
    }
    let secs = t.elapsed().as_secs_f64();
    let cpu_secs = cpu.elapsed().as_secs_f64() / WORKERS as f64;
    if matched != n {
        return Err(format!("{what}: {matched} of {n} were {expect:?}"));
    }
    Ok(Rate {
        wall: matched as f64 / secs,
        cpu: matched as f64 / cpu_secs,
    })
}

/// A contended run's throughput: per second of wall time, and per second of CPU time per
/// worker (see `in_tasks`).
#[derive(Clone, Copy)]
struct Rate {
    wall: f64,
    cpu: f64,
}

/// The multi-thread runtime's worker threads.
const WORKERS: usize = 2;

/// The process's CPU time (all threads).
#[derive(Clone, Copy)]
struct ProcessCpu(libc::timespec);

impl ProcessCpu {
    fn now() -> Self {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid out-pointer for clock_gettime.
        unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
        Self(ts)
    }
    fn elapsed(self) -> Duration {
        let now = Self::now().0;
        Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
            .saturating_sub(Duration::new(self.0.tv_sec as u64, self.0.tv_nsec as u32))
    }
}

/// Trips a client built on the 1%-failing inner with failing requests; `Err` if it never rejects.
async fn trip<C: Client>(c: &mut C) -> Result<u64, String> {
    for n in 1..=100_000 {
        if c.req(99).await == Res::Rejected {
            return Ok(n);
        }
    }
    Err("never rejected after 100000 failures".into())
}

impl<C0: Client, C1: Client> Bench for Subject<C0, C1> {
    fn name(&self) -> &'static str {
        self.name
    }
    fn kind(&self) -> Kind {
        self.kind
    }

    fn single(&self, rt: &tokio::runtime::Runtime, sc: Single, iters: u64) -> Result<f64, String> {
        rt.block_on(async {
            let (tally, ns, expect) = match sc {
                Single::ClosedOk => {
                    let mut c = (self.ok)();
                    let t = CpuClock::now();
                    let tally = run(&mut c, iters, |i| i).await;
                    (tally, t.elapsed(), [iters, 0, 0])
                }
                Single::Closed1Pct => {
                    let mut c = (self.fail)();
                    let t = CpuClock::now();
                    let tally = run(&mut c, iters, |i| i).await;
                    // `i % 100 == 99` once in every full hundred of 0..iters; never in the rest.
                    let fails = iters / 100;
                    (tally, t.elapsed(), [iters - fails, fails, 0])
                }
                Single::Open => {
                    let mut c = (self.fail)();
                    if self.kind != Kind::Bare {
                        trip(&mut c).await?;
                    }
                    let t = CpuClock::now();
                    let tally = run(&mut c, iters, |i| i * 100).await;
                    let expect = if self.kind == Kind::Bare {
                        [iters, 0, 0]
                    } else {
                        [0, 0, iters]
                    };
                    (tally, t.elapsed(), expect)
                }
            };
            if tally != expect {
                return Err(format!(
                    "{sc:?}: tally [ok, err, rejected] = {tally:?}, expected {expect:?}"
                ));
            }
            Ok(ns.as_nanos() as f64 / iters as f64)
        })
    }

    fn contended_with(
        &self,
        rt: &tokio::runtime::Runtime,
        per_task: u64,
        shared: bool,
    ) -> Result<Rate, String> {
        let c = (self.ok)();
        let clients = (0..TASKS).map(|_| if shared { c.clone() } else { (self.ok)() });
        rt.block_on(in_tasks(clients, per_task, |i| i, Res::Ok, "contended"))
    }

    fn contended_open(&self, rt: &tokio::runtime::Runtime, per_task: u64) -> Result<Rate, String> {
        if self.kind == Kind::Bare {
            return Err("no open state".into());
        }
        rt.block_on(async {
            let mut c = (self.fail)();
            trip(&mut c).await?;
            let clients = (0..TASKS).map(|_| c.clone());
            in_tasks(clients, per_task, |i| i * 100, Res::Rejected, "contended open").await
        })
    }

    fn verify(&self, rt: &tokio::runtime::Runtime) -> Result<(), String> {
        rt.block_on(async {
            // Closed, always ok / 1%: exact tallies, nothing rejected.
            let mut c = (self.ok)();
            let t = run(&mut c, 10_000, |i| i).await;
            if t != [10_000, 0, 0] {
                return Err(format!("always-ok: {t:?}"));
            }
            let mut c = (self.fail)();
            let t = run(&mut c, 100_000, |i| i).await;
            if t != [99_000, 1_000, 0] {
                return Err(format!("1% failures: {t:?} (the breaker must stay closed)"));
            }
            if self.kind == Kind::Bare {
                return Ok(());
            }
            // Trips on failures, then rejects calls that would succeed.
            let mut c = (self.fail)();
            let n = trip(&mut c).await?;
            let t = run(&mut c, 10_000, |i| i * 100).await;
            if t != [0, 0, 10_000] {
                return Err(format!("open after {n} failures: {t:?}"));
            }
            // Clones share the state: tripping one makes a sibling reject.
            let mut a = (self.fail)();
            let mut b = a.clone();
            if b.req(0).await != Res::Ok {
                return Err("sibling refused before the trip".into());
            }
            trip(&mut a).await?;
            if b.req(0).await != Res::Rejected {
                return Err("a clone of a tripped breaker still admits: state not shared".into());
            }
            println!(
                "  ok  {:<32} trips after {n} failures, rejects 10000/10000, clones share state",
                self.name
            );
            Ok(())
        })
    }

    fn bytes(&self) -> (f64, usize) {
        const N: usize = 1000;
        let mut v = Vec::with_capacity(N);
        let ((), bytes) = heap_bytes(|| {
            for _ in 0..N {
                v.push((self.ok)());
            }
        });
        drop(v);
        (bytes as f64 / N as f64, size_of::<C0>())
    }
}

const OPEN: Duration = Duration::from_secs(600);

fn tb(b: tower_breaker::Builder) -> CircuitBreaker {
    b.open_duration(OPEN).build().expect("valid config")
}
fn tb_consecutive() -> CircuitBreaker {
    tb(CircuitBreaker::builder("bench").consecutive_failures(5))
}
fn tb_count() -> CircuitBreaker {
    tb(CircuitBreaker::builder("bench")
        .failure_rate(0.5)
        .count_window(100))
}
fn tb_time() -> CircuitBreaker {
    tb(CircuitBreaker::builder("bench")
        .failure_rate(0.5)
        .time_window(Duration::from_secs(60)))
}

fn tr_layer()
-> tower_resilience::circuitbreaker::CircuitBreakerLayer<tower_resilience::circuitbreaker::DefaultClassifier>
{
    tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
        .consecutive_failures(5)
        .wait_duration_in_open(OPEN)
        .build()
        .expect("valid config")
}

type FsPolicy = failsafe::failure_policy::ConsecutiveFailures<failsafe::backoff::Constant>;
fn fs() -> failsafe::StateMachine<FsPolicy, ()> {
    failsafe::Config::new()
        .failure_policy(failsafe::failure_policy::consecutive_failures(
            5,
            failsafe::backoff::constant(OPEN),
        ))
        .build()
}

fn rc() -> recloser::AsyncRecloser {
    recloser::AsyncRecloser::from(recloser::Recloser::custom().open_wait(OPEN).build())
}

fn cbrs() -> CbRs {
    CbRs::builder().cooldown(OPEN).build()
}

fn subjects() -> Vec<Box<dyn Bench>> {
    vec![
        Box::new(Subject {
            name: "bare service",
            kind: Kind::Bare,
            ok: || Tower(Inner::<0>),
            fail: || Tower(Inner::<100>),
        }),
        Box::new(Subject {
            name: "tower-breaker consecutive(5)",
            kind: Kind::Ours,
            ok: || Tower(CircuitBreakerLayer::new(tb_consecutive()).layer(Inner::<0>)),
            fail: || Tower(CircuitBreakerLayer::new(tb_consecutive()).layer(Inner::<100>)),
        }),
        Box::new(Subject {
            name: "(reference) minimal service on core, consecutive(5)",
            kind: Kind::Bare,
            ok: || {
                Tower(Minimal {
                    inner: Inner::<0>,
                    breaker: tb_consecutive(),
                    permit: None,
                })
            },
            fail: || {
                Tower(Minimal {
                    inner: Inner::<100>,
                    breaker: tb_consecutive(),
                    permit: None,
                })
            },
        }),
        Box::new(Subject {
            name: "tower-breaker count_window(100)",
            kind: Kind::Ours,
            ok: || Tower(CircuitBreakerLayer::new(tb_count()).layer(Inner::<0>)),
            fail: || Tower(CircuitBreakerLayer::new(tb_count()).layer(Inner::<100>)),
        }),
        Box::new(Subject {
            name: "tower-breaker time_window(60s)",
            kind: Kind::Ours,
            ok: || Tower(CircuitBreakerLayer::new(tb_time()).layer(Inner::<0>)),
            fail: || Tower(CircuitBreakerLayer::new(tb_time()).layer(Inner::<100>)),
        }),
        Box::new(Subject {
            name: "tower-resilience 0.13 consec(5)",
            kind: Kind::Peer,
            ok: || Tower(tr_layer().layer(Inner::<0>)),
            fail: || Tower(tr_layer().layer(Inner::<100>)),
        }),
        Box::new(Subject {
            name: "failsafe 1.3 consecutive(5)",
            kind: Kind::Peer,
            ok: || Failsafe::<0, _>(fs()),
            fail: || Failsafe::<100, _>(fs()),
        }),
        Box::new(Subject {
            name: "recloser 1.4",
            kind: Kind::Peer,
            ok: || Recloser::<0>(rc()),
            fail: || Recloser::<100>(rc()),
        }),
        Box::new(Subject {
            name: "circuitbreaker-rs 0.1",
            kind: Kind::Peer,
            ok: || CbRsClient::<0>(cbrs()),
            fail: || CbRsClient::<100>(cbrs()),
        }),
    ]
}

// ---------------------------------------------------------------------------------------------
// Keyed lookup: tower-breaker's `KeyedRegistry` (sharded, one shared lock per lookup) against a
// plain `RwLock<HashMap<String, CircuitBreaker>>` as a reference. Keys are host-like strings,
// looked up in a pseudo-random order (so at 100k keys most lookups miss the CPU caches, as
// they would in a busy gateway); each lookup is `try_acquire(key)` + `record(Success)`.

fn keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("api-{i}.upstream.example.com")).collect()
}

fn order(n: usize, len: usize) -> Vec<u32> {
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % n as u64) as u32
        })
        .collect()
}

fn registry(n: usize) -> KeyedRegistry<String> {
    KeyedRegistry::builder(CircuitBreaker::builder("bench").consecutive_failures(5))
        .max_keys((n * 2).max(1024))
        .build()
        .expect("valid config")
}

fn keyed_ours(reg: &KeyedRegistry<String>, keys: &[String], order: &[u32]) -> f64 {
    let t = CpuClock::now();
    for &i in order {
        let key = black_box(keys[i as usize].as_str());
        match reg.try_acquire(key) {
            Ok(p) => p.record(Outcome::Success),
            Err(e) => panic!("keyed lookup refused: {e}"),
        }
    }
    t.elapsed().as_nanos() as f64 / order.len() as f64
}

fn keyed_std(
    map: &std::sync::RwLock<HashMap<String, CircuitBreaker>>,
    keys: &[String],
    order: &[u32],
) -> f64 {
    let t = CpuClock::now();
    for &i in order {
        let key = black_box(keys[i as usize].as_str());
        let guard = map.read().unwrap();
        match guard.get(key).expect("known key").try_acquire() {
            Ok(p) => p.record(Outcome::Success),
            Err(e) => panic!("refused: {e}"),
        }
    }
    t.elapsed().as_nanos() as f64 / order.len() as f64
}

// ---------------------------------------------------------------------------------------------

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

struct Stat {
    med: f64,
    min: f64,
    max: f64,
}

fn stat(mut v: Vec<f64>) -> Stat {
    let med = median(&mut v);
    Stat {
        med,
        min: v[0],
        max: v[v.len() - 1],
    }
}

fn main() -> Result<(), String> {
    let quick = std::env::args().any(|a| a == "--quick");
    let (rounds, single_ms, contended_ms, keyed_lookups) = if quick {
        (3, 15.0, 150.0, 300_000)
    } else {
        (7, 40.0, 500.0, 1_000_000)
    };
    let started = Instant::now();

    let st = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()
        .unwrap();

    // `--profile SUBJECT SCENARIO ITERS`: one timed loop only, for perf / callgrind.
    // SUBJECT: a substring of a subject's name; SCENARIO: ok | 1pct | open | contended.
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--profile") {
        let (who, what) = (&args[at + 1], args[at + 2].as_str());
        let n: u64 = args
            .get(at + 3)
            .and_then(|n| n.parse().ok())
            .unwrap_or(10_000_000);
        let s = subjects()
            .into_iter()
            .find(|s| s.name().contains(who.as_str()))
            .ok_or("no such subject")?;
        let sc = match what {
            "ok" => Single::ClosedOk,
            "1pct" => Single::Closed1Pct,
            "open" => Single::Open,
            "open-contended" => {
                let rate = s.contended_open(&mt, n / TASKS)?;
                println!(
                    "{}: {:.3e} rejections/s ({:.3e} per CPU-second per worker)",
                    s.name(),
                    rate.wall,
                    rate.cpu
                );
                return Ok(());
            }
            _ => {
                let rate = s.contended(&mt, n / TASKS)?;
                println!(
                    "{}: {:.3e} req/s ({:.3e} per CPU-second per worker)",
                    s.name(),
                    rate.wall,
                    rate.cpu
                );
                return Ok(());
            }
        };
        println!("{} {sc:?}: {:.2} ns/req", s.name(), s.single(&st, sc, n)?);
        return Ok(());
    }

    // `--keyed [ROUNDS]`: the goal's two rows only (hot-key lookup at 100k keys, one breaker),
    // side by side in one process, and the lookup's parts alone: for iterating on the keyed
    // lookup without the whole run.
    if let Some(at) = args.iter().position(|a| a == "--keyed") {
        let rounds: usize = args.get(at + 1).and_then(|n| n.parse().ok()).unwrap_or(rounds);
        let n = 100_000;
        let ks = keys(n);
        let reg = registry(n);
        let (_, bytes) = heap_bytes(|| {
            for k in &ks {
                reg.try_acquire(k.as_str())
                    .expect("admitted")
                    .record(Outcome::Success);
            }
        });
        let hot: Vec<u32> = (0..keyed_lookups)
            .map(|i| ((i % 16) * (n / 16).max(1) % n) as u32)
            .collect();
        let spread = order(n, keyed_lookups);
        let one = tb_consecutive();
        let (mut ours, mut unkeyed, mut uniform) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            ours.push(keyed_ours(&reg, &ks, &hot));
            uniform.push(keyed_ours(&reg, &ks, &spread));
            let t = CpuClock::now();
            for _ in 0..keyed_lookups {
                black_box(&one)
                    .try_acquire()
                    .expect("closed")
                    .record(Outcome::Success);
            }
            unkeyed.push(t.elapsed().as_nanos() as f64 / keyed_lookups as f64);
        }
        // Its parts alone, in the same loop shape: the key's hash, an uncontended shard lock
        // (std `RwLock` read + unlock: two locked read-modify-writes), the key comparison.
        let hasher = foldhash::fast::RandomState::default();
        let lock = std::sync::RwLock::new(0u64);
        let (mut hash, mut read, mut eq) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            let t = CpuClock::now();
            for &i in &hot {
                let key = black_box(ks[i as usize].as_str());
                black_box(std::hash::BuildHasher::hash_one(&hasher, key));
            }
            hash.push(t.elapsed().as_nanos() as f64 / hot.len() as f64);
            let t = CpuClock::now();
            for _ in 0..hot.len() {
                black_box(*black_box(&lock).read().expect("not poisoned"));
            }
            read.push(t.elapsed().as_nanos() as f64 / hot.len() as f64);
            let t = CpuClock::now();
            for &i in &hot {
                let (a, b) = (ks[i as usize].as_str(), ks[(i as usize + 1) % n].as_str());
                black_box(black_box(a) == black_box(b));
            }
            eq.push(t.elapsed().as_nanos() as f64 / hot.len() as f64);
        }
        let (hash, read, eq) = (stat(hash), stat(read), stat(eq));
        println!(
            "parts alone: foldhash of the key {:.1} ns, RwLock read + unlock {:.1} ns, key comparison {:.1} ns",
            hash.med, read.med, eq.med
        );
        let (ours, unkeyed) = (stat(ours), stat(unkeyed));
        println!(
            "keyed: hot-key lookup at 100k keys {:.1} ns ({:.1}..{:.1}) = {:.2}x one breaker's {:.1} ns ({:.1}..{:.1})",
            ours.med,
            ours.min,
            ours.max,
            ours.med / unkeyed.med,
            unkeyed.med,
            unkeyed.min,
            unkeyed.max
        );
        let uniform = stat(uniform);
        println!(
            "keyed: uniform random lookup at 100k keys {:.1} ns ({:.1}..{:.1}) (no goal: most miss the CPU caches)",
            uniform.med, uniform.min, uniform.max
        );
        println!(
            "bytes per key at 100k keys: {:.0} B heap (incl. the String key)",
            bytes as f64 / n as f64
        );
        return Ok(());
    }

    // `--primitives`: the primitive rows and the coarse clock's behaviour only.
    if args.iter().any(|a| a == "--primitives") {
        println!("machine: {}", cpu_model());
        println!("{}", coarse_clock_report());
        for (what, st) in primitives(keyed_lookups as u64, rounds) {
            println!("{what}: {:.2} ns ({:.2}..{:.2})", st.med, st.min, st.max);
        }
        return Ok(());
    }

    println!(
        "tower-breaker vs peers: {} rounds{}; load average at the start: {}",
        rounds,
        if quick { " (--quick)" } else { "" },
        loadavg()
    );
    println!("validating every subject before measuring:");
    let subjects = subjects();
    for s in &subjects {
        s.verify(&st).map_err(|e| format!("{}: {e}", s.name()))?;
    }

    // Calibrate iteration counts so each timed run lasts about the target time.
    let scenarios = [Single::ClosedOk, Single::Closed1Pct, Single::Open];
    let mut iters = vec![[0u64; 3]; subjects.len()];
    let mut per_task = vec![0u64; subjects.len()];
    for (i, s) in subjects.iter().enumerate() {
        for (j, &sc) in scenarios.iter().enumerate() {
            let probe = 20_000;
            let ns = s.single(&st, sc, probe)?;
            iters[i][j] = ((single_ms * 1e6 / ns) as u64).max(10_000);
        }
        let probe = 20_000;
        let rate = s.contended(&mt, probe)?;
        per_task[i] = ((rate.wall * contended_ms / 1e3 / TASKS as f64) as u64).max(10_000);
    }

    // Interleaved rounds.
    let mut single = vec![vec![Vec::new(); 3]; subjects.len()];
    let mut contended = vec![Vec::new(); subjects.len()];
    let mut unshared = vec![Vec::new(); subjects.len()];
    for _ in 0..rounds {
        for (j, &sc) in scenarios.iter().enumerate() {
            for (i, s) in subjects.iter().enumerate() {
                single[i][j].push(
                    s.single(&st, sc, iters[i][j])
                        .map_err(|e| format!("{}: {e}", s.name()))?,
                );
            }
        }
        for (i, s) in subjects.iter().enumerate() {
            contended[i].push(
                s.contended(&mt, per_task[i])
                    .map_err(|e| format!("{}: {e}", s.name()))?,
            );
            if s.kind() == Kind::Ours {
                unshared[i].push(s.contended_with(&mt, per_task[i], false)?);
            }
        }
    }
    let single: Vec<Vec<Stat>> = single
        .into_iter()
        .map(|v| v.into_iter().map(stat).collect())
        .collect();
    let contended_cpu: Vec<Stat> = contended
        .iter()
        .map(|v| stat(v.iter().map(|r: &Rate| r.cpu).collect()))
        .collect();
    let contended: Vec<Stat> = contended
        .into_iter()
        .map(|v| stat(v.into_iter().map(|r| r.wall).collect()))
        .collect();

    // Keyed.
    let mut keyed = Vec::new();
    for &n in &[10usize, 10_000, 100_000] {
        let ks = keys(n);
        let ord = order(n, keyed_lookups);
        let reg = registry(n);
        let (_, bytes) = heap_bytes(|| {
            for k in &ks {
                reg.try_acquire(k.as_str())
                    .expect("admitted")
                    .record(Outcome::Success);
            }
        });
        let map = std::sync::RwLock::new(
            ks.iter()
                .map(|k| (k.clone(), tb_consecutive()))
                .collect::<HashMap<_, _>>(),
        );
        // Hot keys: 16 keys spread over the key set, in turn (a skewed load, cache-warm).
        let hot: Vec<u32> = (0..keyed_lookups)
            .map(|i| ((i % 16) * (n / 16).max(1) % n) as u32)
            .collect();
        let mut ours = Vec::new();
        let mut std_map = Vec::new();
        let mut ours_hot = Vec::new();
        for _ in 0..rounds {
            ours.push(keyed_ours(&reg, &ks, &ord));
            std_map.push(keyed_std(&map, &ks, &ord));
            ours_hot.push(keyed_ours(&reg, &ks, &hot));
        }
        keyed.push((
            n,
            stat(ours),
            stat(std_map),
            bytes as f64 / n as f64,
            stat(ours_hot),
        ));
    }
    // The same try_acquire + record on one breaker, for the lookup's share of the keyed cost.
    let one = tb_consecutive();
    let mut unkeyed = Vec::new();
    for _ in 0..rounds {
        let t = CpuClock::now();
        for _ in 0..keyed_lookups {
            black_box(&one)
                .try_acquire()
                .expect("closed")
                .record(Outcome::Success);
        }
        unkeyed.push(t.elapsed().as_nanos() as f64 / keyed_lookups as f64);
    }
    let unkeyed = stat(unkeyed);

    // Where the time goes: the core API alone, and the primitives the paths are made of.
    let n = keyed_lookups as u64;
    let time = |f: &mut dyn FnMut()| time_ns(n, rounds, f);
    let mut parts: Vec<(String, Stat)> = Vec::new();
    for (name, b) in [
        ("consecutive(5)", tb_consecutive()),
        ("count_window(100)", tb_count()),
        ("time_window(60s)", tb_time()),
    ] {
        parts.push((
            format!("core {name}: try_acquire + record(Success)"),
            time(&mut || {
                for _ in 0..n {
                    black_box(&b)
                        .try_acquire()
                        .expect("closed")
                        .record(Outcome::Success);
                }
            }),
        ));
        b.trip(OPEN);
        parts.push((
            format!("core {name}: try_acquire refused (CircuitOpen dropped)"),
            time(&mut || {
                for _ in 0..n {
                    black_box(black_box(&b).try_acquire().is_err());
                }
            }),
        ));
        parts.push((
            format!("core {name}: refusal as BoxError (FailFast's poll_ready error)"),
            time(&mut || {
                for _ in 0..n {
                    let e: BoxError = black_box(&b).try_acquire().expect_err("open").into();
                    black_box(&e);
                }
            }),
        ));
    }
    // The floor for a boxed rejection: the same refusal, boxed as a zero-sized error (no
    // allocation), which could carry neither the name nor `retry_after`.
    let b = tb_consecutive();
    b.trip(OPEN);
    parts.push((
        "core consecutive(5): refusal boxed as a zero-sized error instead (the floor)".into(),
        time(&mut || {
            for _ in 0..n {
                let e: BoxError = match black_box(&b).try_acquire() {
                    Err(_) => Box::new(ZstErr),
                    Ok(_) => unreachable!("open"),
                };
                black_box(&e);
            }
        }),
    ));
    parts.extend(primitives(n, rounds));

    // ----- Report -----
    let bare = 0;
    let best_peer = |j: usize| {
        subjects
            .iter()
            .enumerate()
            .filter(|(_, s)| s.kind() == Kind::Peer)
            .map(|(i, _)| single[i][j].med)
            .fold(f64::INFINITY, f64::min)
    };
    println!();
    println!(
        "machine: {} cores, {}; rustc release profile (opt-level 3, no LTO); tokio without test-util",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model()
    );
    println!();
    println!("| scenario | subject | median | spread | over bare | x bare | best peer / this |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    let titles = ["closed, always ok", "closed, 1% failures", "open, rejection"];
    for (j, title) in titles.iter().enumerate() {
        let bp = best_peer(j);
        // For the rejection, "over bare" compares with a bare closed call.
        let b = single[bare][if j == 2 { 0 } else { j }].med;
        for (i, s) in subjects.iter().enumerate() {
            if j == 2 && s.kind() == Kind::Bare {
                continue;
            }
            let st = &single[i][j];
            println!(
                "| {title} | {} | {:.1} ns | {:.1}..{:.1} | {} | {:.1}x | {} |",
                s.name(),
                st.med,
                st.min,
                st.max,
                if s.kind() == Kind::Bare {
                    "-".into()
                } else {
                    format!("{:+.1} ns", st.med - b)
                },
                st.med / b,
                if s.kind() == Kind::Bare {
                    "-".into()
                } else {
                    format!("{:.1}x", bp / st.med)
                },
            );
        }
    }
    let bp_rate = subjects
        .iter()
        .enumerate()
        .filter(|(_, s)| s.kind() == Kind::Peer)
        .map(|(i, _)| contended[i].med)
        .fold(0.0, f64::max);
    for (i, s) in subjects.iter().enumerate() {
        let c = &contended[i];
        let own = 1e9 / single[i][0].med;
        println!(
            "| 64 tasks, 2 workers | {} | {:.3e} req/s | {:.2e}..{:.2e} | {:.1} ns/req wall | {:.4}x | {} (vs own 1-task rate: {:.2}x; per CPU-second per worker {:.3e}: {:.2}x) |",
            s.name(),
            c.med,
            c.min,
            c.max,
            1e9 / c.med,
            c.med / contended[bare].med,
            if s.kind() == Kind::Bare {
                "-".into()
            } else {
                format!("{:.1}x", c.med / bp_rate)
            },
            c.med / own,
            contended_cpu[i].med,
            contended_cpu[i].med / own,
        );
        if s.kind() == Kind::Ours {
            let u = stat(
                std::mem::take(&mut unshared[i])
                    .into_iter()
                    .map(|r: Rate| r.wall)
                    .collect(),
            );
            println!(
                "| 64 tasks, 2 workers, a breaker per task (reference: the ceiling for striping) | {} | {:.3e} req/s | {:.2e}..{:.2e} | {:.1} ns/req wall | {:.4}x | {:.1}x (vs own 1-task rate: {:.2}x) |",
                s.name(),
                u.med,
                u.min,
                u.max,
                1e9 / u.med,
                u.med / contended[bare].med,
                u.med / bp_rate,
                u.med / own,
            );
        }
    }
    println!(
        "| keyed lookup | tower-breaker 1 breaker, no key (reference) | {:.1} ns | {:.1}..{:.1} | - | - | - |",
        unkeyed.med, unkeyed.min, unkeyed.max
    );
    for (n, ours, std_map, _, hot) in &keyed {
        println!(
            "| keyed lookup, {n} keys, 16 hot keys | tower-breaker KeyedRegistry | {:.1} ns | {:.1}..{:.1} | {:+.1} ns over 1 breaker | - | - |",
            hot.med,
            hot.min,
            hot.max,
            hot.med - unkeyed.med
        );
        println!(
            "| keyed lookup, {n} keys, uniform random | tower-breaker KeyedRegistry | {:.1} ns | {:.1}..{:.1} | {:+.1} ns over 1 breaker | - | - |",
            ours.med,
            ours.min,
            ours.max,
            ours.med - unkeyed.med
        );
        println!(
            "| keyed lookup, {n} keys, uniform random | RwLock<HashMap<String, CircuitBreaker>> (reference) | {:.1} ns | {:.1}..{:.1} | {:+.1} ns over 1 breaker | - | - |",
            std_map.med,
            std_map.min,
            std_map.max,
            std_map.med - unkeyed.med
        );
    }
    for (what, st) in &parts {
        println!(
            "| cost breakdown | {what} | {:.1} ns | {:.1}..{:.1} | - | - | - |",
            st.med, st.min, st.max
        );
    }
    let byte_rows: Vec<_> = subjects.iter().map(|s| (s.name(), s.bytes())).collect();
    for (name, (heap, handle)) in &byte_rows {
        println!("| bytes per breaker | {name} | {heap:.0} B heap + {handle} B handle | - | - | - | - |");
    }
    for (n, _, _, bytes, _) in &keyed {
        println!(
            "| bytes per key, {n} keys | tower-breaker KeyedRegistry | {bytes:.0} B heap (incl. the String key) | - | - | - | - |"
        );
    }

    // ----- Goals -----
    // Ratios against the best peer in this run (a ratio above 1 means tower-breaker is ahead).
    println!();
    println!("goals (ratios to the best peer of this run; peer / ours for costs, ours / peer for rates):");
    let goal = |ok: bool, what: String| println!("  {} {what}", if ok { "MET " } else { "MISS" });
    let b0 = single[bare][0].med;
    let bp_over = best_peer(0) - b0;
    let bp_reject = best_peer(2);
    let ours: Vec<usize> = subjects
        .iter()
        .enumerate()
        .filter(|(_, s)| s.kind() == Kind::Ours)
        .map(|(i, _)| i)
        .collect();
    let over = |i: usize| single[i][0].med - b0;
    for (rule, &i) in ours.iter().enumerate() {
        let name = subjects[i].name();
        let r = bp_over / over(i);
        goal(
            r >= 1.0,
            format!(
                "{name}: closed overhead {:.1} ns, best peer {bp_over:.1} ns: {r:.2}x (goal >= 1x)",
                over(i)
            ),
        );
        let rej = single[i][2].med;
        let r = bp_reject / rej;
        goal(
            r >= 2.0,
            format!(
                "{name}: rejection through the layer {rej:.1} ns, best peer {bp_reject:.1} ns: {r:.2}x (goal >= 2x)"
            ),
        );
        // The core rows: closed, refused, refused as BoxError, per rule, in the subjects' order.
        let core = parts[3 * rule + 1].1.med;
        let r = bp_reject / core;
        goal(
            r >= 2.0,
            format!(
                "{name}: rejection in the core {core:.1} ns, best peer {bp_reject:.1} ns: {r:.2}x (goal >= 2x)"
            ),
        );
        let c = contended[i].med;
        goal(
            c >= bp_rate,
            format!(
                "{name}: 64 tasks {c:.3e} req/s, best peer {bp_rate:.3e}: {:.2}x (goal >= 1x)",
                c / bp_rate
            ),
        );
    }
    let rule = |what: &str| {
        ours.iter()
            .copied()
            .find(|&i| subjects[i].name().contains(what))
            .expect("a subject per rule")
    };
    let (consecutive, count, time) = (rule("consecutive"), rule("count_window"), rule("time_window"));
    let r = over(time) / over(consecutive);
    goal(
        r <= 1.5,
        format!(
            "time window: closed overhead {:.1} ns = {r:.2}x the consecutive rule's {:.1} ns (goal <= 1.5x)",
            over(time),
            over(consecutive)
        ),
    );
    for (what, i, peers) in [("time window", time, Some(3.0)), ("count window", count, None)] {
        let c = contended[i].med;
        let own = 1e9 / single[i][0].med;
        // Per CPU-second per worker: the wall-clock rate of 2 workers on a machine shared with
        // other work says more about the other work (both printed in the table).
        let cpu = contended_cpu[i].med;
        goal(
            cpu >= own,
            format!(
                "{what}: 64 tasks / own 1-task rate = {:.2}x per CPU-second per worker ({:.2}x by the wall clock) (goal >= 1x)",
                cpu / own,
                c / own
            ),
        );
        if let Some(k) = peers {
            goal(
                c >= k * bp_rate,
                format!(
                    "{what}: 64 tasks {c:.3e} req/s = {:.2}x the best peer (goal >= {k}x)",
                    c / bp_rate
                ),
            );
        }
    }
    let (_, _, _, _, hot100k) = &keyed[2];
    let r = hot100k.med / unkeyed.med;
    goal(
        r <= 2.0,
        format!(
            "keyed: hot-key lookup at 100k keys {:.1} ns = {r:.2}x one breaker's {:.1} ns (goal <= 2x)",
            hot100k.med, unkeyed.med
        ),
    );
    println!();
    println!(
        "total run time {:.0} s; load average at the end: {}",
        started.elapsed().as_secs_f64(),
        loadavg()
    );
    Ok(())
}

/// Times `f` (which runs `n` operations) `rounds` times on this thread's CPU clock: ns per op.
fn time_ns(n: u64, rounds: usize, f: &mut dyn FnMut()) -> Stat {
    stat(
        (0..rounds)
            .map(|_| {
                let t = CpuClock::now();
                f();
                t.elapsed().as_nanos() as f64 / n as f64
            })
            .collect(),
    )
}

/// A zero-sized error, as tower's `Overloaded` and `Elapsed` are.
#[derive(Debug)]
struct ZstErr;
impl fmt::Display for ZstErr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("zst")
    }
}
impl std::error::Error for ZstErr {}

/// A 16-byte error (a pointer and a deadline).
#[derive(Debug)]
struct SmallErr(#[allow(dead_code)] &'static str, #[allow(dead_code)] u64);
impl fmt::Display for SmallErr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("small")
    }
}
impl std::error::Error for SmallErr {}

/// The primitives the breaker's paths are made of, each timed alone.
fn primitives(n: u64, rounds: usize) -> Vec<(String, Stat)> {
    use rustix::time::{ClockId, clock_gettime};
    let time = |f: &mut dyn FnMut()| time_ns(n, rounds, f);
    let mut parts: Vec<(String, Stat)> = Vec::new();
    let arc = std::sync::Arc::new(0u64);
    parts.push((
        "primitive: Arc clone + drop".into(),
        time(&mut || {
            for _ in 0..n {
                drop(black_box(black_box(&arc).clone()));
            }
        }),
    ));
    parts.push((
        "primitive: std::time::Instant::now()".into(),
        time(&mut || {
            for _ in 0..n {
                black_box(Instant::now());
            }
        }),
    ));
    parts.push((
        "primitive: tokio::time::Instant::now() (no test-util)".into(),
        time(&mut || {
            for _ in 0..n {
                black_box(tokio::time::Instant::now());
            }
        }),
    ));
    parts.push((
        "primitive: CLOCK_MONOTONIC through rustix".into(),
        time(&mut || {
            for _ in 0..n {
                black_box(clock_gettime(black_box(ClockId::Monotonic)));
            }
        }),
    ));
    parts.push((
        "primitive: CLOCK_MONOTONIC_COARSE through rustix".into(),
        time(&mut || {
            for _ in 0..n {
                black_box(clock_gettime(black_box(ClockId::MonotonicCoarse)));
            }
        }),
    ));
    parts.push((
        "primitive: Box<ZST> as BoxError alloc + free".into(),
        time(&mut || {
            for _ in 0..n {
                let b: BoxError = Box::new(ZstErr);
                black_box(&b);
            }
        }),
    ));
    parts.push((
        "primitive: Box<16 bytes> as BoxError alloc + free".into(),
        time(&mut || {
            for _ in 0..n {
                let b: BoxError = Box::new(SmallErr(black_box("bench"), black_box(7)));
                black_box(&b);
            }
        }),
    ));
    parts.push((
        "primitive: Box<[u64; 4]> as Box<dyn Any> alloc + free".into(),
        time(&mut || {
            for _ in 0..n {
                let b: Box<dyn std::any::Any> = Box::new(black_box([1u64; 4]));
                black_box(&b);
            }
        }),
    ));
    parts
}

/// The coarse clock against the precise one: its stated resolution, the tick seen by
/// spinning, and how far it trails `CLOCK_MONOTONIC` (it must never lead it).
fn coarse_clock_report() -> String {
    use rustix::time::{ClockId, clock_getres, clock_gettime};
    let ns = |c| {
        let t = clock_gettime(c);
        t.tv_sec as i128 * 1_000_000_000 + t.tv_nsec as i128
    };
    let res = clock_getres(ClockId::MonotonicCoarse);
    let (mut ticks, mut max_lag, mut led) = (Vec::new(), 0i128, 0u64);
    let mut last = ns(ClockId::MonotonicCoarse);
    let until = Instant::now() + Duration::from_millis(300);
    while Instant::now() < until {
        // Precise reads on both sides of the coarse one; a pair more than 2 µs apart (the
        // thread was descheduled between them) says nothing about the lag.
        let p0 = ns(ClockId::Monotonic);
        let c = ns(ClockId::MonotonicCoarse);
        let p1 = ns(ClockId::Monotonic);
        if c > p1 {
            led += 1;
        }
        if p1 - p0 < 2_000 {
            max_lag = max_lag.max(p1 - c);
        }
        if c != last {
            ticks.push(c - last);
            last = c;
        }
    }
    ticks.sort();
    format!(
        "coarse clock: resolution {} ns (clock_getres), tick seen {} ns (median of {}), trails CLOCK_MONOTONIC by at most {} ns over 300 ms (reads not descheduled); led it {} times",
        res.tv_sec as i128 * 1_000_000_000 + res.tv_nsec as i128,
        ticks.get(ticks.len() / 2).copied().unwrap_or(0),
        ticks.len(),
        max_lag,
        led
    )
}

/// The machine is shared: the load average says how much the wall-clock rows (64 tasks) mean.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}
