//! Soak: a million requests over loopback sockets through the full client stack, against
//! chaos upstreams, checking that nothing leaks and that every count adds up.
//!
//! Run (ignored by default; a few minutes in release on 2 cores):
//!
//! ```text
//! cargo test --release --all-features --test soak -- --ignored --nocapture
//! ```
//!
//! `SOAK_REQUESTS` (default 1 000 000), `SOAK_CONCURRENCY` (default 64) and `SOAK_SEED`
//! (default 8) change the run.
//!
//! # The stack
//!
//! Three real hyper servers on `127.0.0.1` play chaos upstreams (5xx, 429 with and without
//! `Retry-After`, 404s the classifier ignores, latency spikes, connection resets, hangs, and
//! periodic storms). Each sits behind its own member stack, `Meter → CircuitBreakerLayer
//! (HttpClassifier) → Timeout → body collection → hyper-util client`, and the members form a
//! `Failover` with `on_failure`, ending in a static fallback that always answers (after 1 ms,
//! like a nearby cache). `Meter` is a test-only wrapper that counts, from the outside, what
//! the breaker service admits, rejects, completes and drops.
//!
//! `SOAK_CONCURRENCY` tasks share the requests; about 5% of the requests are cancelled by the
//! caller (8% get a cancellation point; a call that finishes before it counts as answered).
//! The whole call, readiness included, is dropped at a random point: right after its first
//! `Pending`, at its k-th wake-up (k random in 1..4) without being polled again (an answer
//! may be waiting), or once a random budget of 0–1.5 ms has run out, whichever comes first:
//! before the member's request is written, while it is on the wire, while the next member is
//! being readied or called.
//!
//! # What it asserts
//!
//! - Half-open never outlives its wait: each half-open period (entry to exit, listener time)
//!   lasts at most `half_open_successes × half_open_max_wait` plus a slack (one second, for a
//!   loaded 2-core machine).
//! - No permit leaks: after the load (and with every service dropped), each breaker has no
//!   probe in flight, admits a probe once its open period is over, and admits exactly
//!   `half_open_permits` probes at once.
//! - Counts add up exactly, per breaker: `admitted = success + failure + ignore + trip +
//!   released` (listener events vs. the meter), `released = admitted-but-never-called +
//!   cancelled-in-flight`, each outcome count seen by the listener equals the one the meter
//!   classified, and `rejected` (listener) equals the rejections the meter saw; client side:
//!   `issued = answered + errors + cancelled`, with no errors (the static fallback always
//!   answers).
//! - `Retry-After` waits are clamped to `max_open_duration`.
//! - Memory stays flat: resident memory (`VmRSS`) at 10%, 50% and 100% of the requests; the
//!   growth after the 10% warm-up must stay under 20 MB.
//!
//! The seed fixes every random choice (which request is cancelled and its budget, each
//! upstream's answer to its n-th hit); the interleaving of a concurrent run over real sockets,
//! and so the exact counts, still vary from run to run.
#![cfg(feature = "hyper-util")]

mod support;

use std::{
    collections::BTreeMap,
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use support::{BoxError, Fault, FaultServer, client};
use tower::{Service, ServiceBuilder, ServiceExt, util::BoxCloneService};
use tower_breaker::{
    Backoff, CircuitBreaker, CircuitBreakerLayer, Classify, Event, Failover, HttpClassifier, Layer, Outcome,
    State,
    fallback::{CloneWith, Provenance},
    is_circuit_open,
};

type Req = Request<Full<Bytes>>;
type Res = Response<Bytes>;
type Member = BoxCloneService<Req, Res, BoxError>;
type Client =
    hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// The classifier every breaker and the fallback policy use: the DESIGN table, plus 404 as
/// `Ignore` (so that ignored outcomes occur).
fn classifier() -> HttpClassifier {
    HttpClassifier::new().ignore_statuses([404])
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Resident memory, in kB, from `/proc/self/status`.
fn rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

// ------------------------------------------------------------------ chaos upstreams

/// One upstream's answers, by bands per 10 000 requests.
#[derive(Clone, Copy)]
struct Chaos {
    /// 500 / 502.
    error: u32,
    /// 503 or 429 with `Retry-After: 1` or `2` (seconds: longer than `max_open_duration`).
    retry_after: u32,
    /// 429 without `Retry-After`.
    too_many: u32,
    /// 404 (ignored by the classifier).
    not_found: u32,
    /// A latency spike: 200 after 5–200 ms (the member's timeout is shorter than the tail).
    spike: u32,
    /// The connection dropped before any response byte.
    reset: u32,
    /// No answer at all (the member's `Timeout` ends the call).
    hang: u32,
    /// `(every, length)`: at the end of every period of `every`, a storm of `length`: mostly
    /// 500s and resets.
    storm: (Duration, Duration),
}

fn chaos_server(server: &FaultServer, chaos: Chaos, seed: u64, salt: u64, start: Instant) {
    server.set_picker(move |hit| {
        let mut rng =
            fastrand::Rng::with_seed(seed ^ salt ^ (hit as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let roll = rng.u32(0..10_000);
        let (every, len) = chaos.storm;
        if start.elapsed().as_nanos() % every.as_nanos() >= (every - len).as_nanos() {
            return match roll {
                0..7000 => Fault::Status(500),
                7000..8000 => Fault::Reset,
                _ => Fault::Status(200),
            };
        }
        let mut band = chaos.error;
        if roll < band {
            return Fault::Status(if rng.bool() { 500 } else { 502 });
        }
        band += chaos.retry_after;
        if roll < band {
            let status = if rng.bool() { 429 } else { 503 };
            return Fault::retry_after(status, if rng.bool() { "1" } else { "2" });
        }
        band += chaos.too_many;
        if roll < band {
            return Fault::Status(429);
        }
        band += chaos.not_found;
        if roll < band {
            return Fault::Status(404);
        }
        band += chaos.spike;
        if roll < band {
            return Fault::Slow(Duration::from_millis(rng.u64(5..200)), 200);
        }
        band += chaos.reset;
        if roll < band {
            return Fault::Reset;
        }
        band += chaos.hang;
        if roll < band {
            return Fault::Hang;
        }
        Fault::Status(200)
    });
}

// ------------------------------------------------------------------ the listener's tallies

#[derive(Default)]
struct Heard {
    success: AtomicU64,
    failure: AtomicU64,
    ignore: AtomicU64,
    trip: AtomicU64,
    released: AtomicU64,
    rejected: AtomicU64,
    half_open: Mutex<HalfOpen>,
}

#[derive(Default)]
struct HalfOpen {
    since: Option<Instant>,
    periods: u64,
    longest: Duration,
    too_long: Vec<Duration>,
    transitions: BTreeMap<(String, String, &'static str), u64>,
    server_waits_over_max: Vec<Duration>,
}

struct Spec {
    name: &'static str,
    timeout: Duration,
    max_wait: Duration,
    successes: u32,
    permits: u32,
    max_open: Duration,
}

const SLACK: Duration = Duration::from_secs(1);

fn listen(builder: tower_breaker::Builder, spec: &Spec, heard: Arc<Heard>) -> tower_breaker::Builder {
    let bound = spec.max_wait * spec.successes + SLACK;
    let max_open = spec.max_open;
    builder.on_event(move |e| match *e {
        Event::Recorded { outcome, .. } => {
            let n = match outcome {
                Outcome::Success => &heard.success,
                Outcome::Failure => &heard.failure,
                Outcome::Ignore => &heard.ignore,
                Outcome::Trip(_) => &heard.trip,
            };
            n.fetch_add(1, Relaxed);
        }
        Event::Released { .. } => {
            heard.released.fetch_add(1, Relaxed);
        }
        Event::Rejected { .. } => {
            heard.rejected.fetch_add(1, Relaxed);
        }
        Event::Transition {
            from,
            to,
            reason,
            open_for,
            ..
        } => {
            let now = Instant::now();
            let mut h = heard.half_open.lock().unwrap();
            *h.transitions
                .entry((from.to_string(), to.to_string(), reason.as_str()))
                .or_default() += 1;
            if reason == tower_breaker::Reason::ServerWait && open_for.is_some_and(|d| d > max_open) {
                h.server_waits_over_max.push(open_for.unwrap());
            }
            if from == State::HalfOpen {
                let dwell = now - h.since.take().expect("a half-open period has a start");
                h.periods += 1;
                h.longest = h.longest.max(dwell);
                if dwell > bound {
                    h.too_long.push(dwell);
                }
            }
            if to == State::HalfOpen {
                h.since = Some(now);
            }
        }
        _ => {}
    })
}

// ------------------------------------------------------------------ the meter

/// What a member's breaker service did, seen from outside it.
#[derive(Default)]
struct Metered {
    /// `poll_ready` returned `Ok` (a permit was taken), counted once per admission.
    admitted: AtomicU64,
    /// `poll_ready` returned a `CircuitOpen`.
    rejected: AtomicU64,
    called: AtomicU64,
    /// Readied (permit held), then dropped without a call.
    dropped_admissions: AtomicU64,
    /// Called, then its response future was dropped before it completed.
    cancelled_in_flight: AtomicU64,
    success: AtomicU64,
    failure: AtomicU64,
    ignore: AtomicU64,
    trip: AtomicU64,
}

struct Meter<S> {
    inner: S,
    armed: bool,
    tally: Arc<Metered>,
}

impl<S: Clone> Clone for Meter<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            armed: false, // like the breaker service: a clone makes its own admission
            tally: self.tally.clone(),
        }
    }
}

impl<S> Drop for Meter<S> {
    fn drop(&mut self) {
        if self.armed {
            self.tally.dropped_admissions.fetch_add(1, Relaxed);
        }
    }
}

struct InFlight {
    tally: Arc<Metered>,
    done: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.done {
            self.tally.cancelled_in_flight.fetch_add(1, Relaxed);
        }
    }
}

impl<S> Service<Req> for Meter<S>
where
    S: Service<Req, Response = Res, Error = BoxError>,
    S::Future: Send + 'static,
{
    type Response = Res;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Res, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        let ready = self.inner.poll_ready(cx);
        match &ready {
            Poll::Ready(Ok(())) if !self.armed => {
                self.armed = true;
                self.tally.admitted.fetch_add(1, Relaxed);
            }
            Poll::Ready(Err(e)) => {
                assert!(!self.armed, "no readiness error after an admission: {e}");
                if is_circuit_open(e) {
                    self.tally.rejected.fetch_add(1, Relaxed);
                }
            }
            _ => {}
        }
        ready
    }

    fn call(&mut self, req: Req) -> Self::Future {
        assert!(std::mem::take(&mut self.armed), "called without readiness");
        self.tally.called.fetch_add(1, Relaxed);
        let future = self.inner.call(req);
        let mut guard = InFlight {
            tally: self.tally.clone(),
            done: false,
        };
        Box::pin(async move {
            let result = future.await;
            guard.done = true;
            let n = match classifier().classify(result.as_ref()) {
                Outcome::Success => &guard.tally.success,
                Outcome::Failure => &guard.tally.failure,
                Outcome::Ignore => &guard.tally.ignore,
                Outcome::Trip(_) => &guard.tally.trip,
            };
            n.fetch_add(1, Relaxed);
            result
        })
    }
}

// ------------------------------------------------------------------ the stack

struct Upstream {
    spec: Spec,
    server: FaultServer,
    breaker: CircuitBreaker,
    heard: Arc<Heard>,
    metered: Arc<Metered>,
}

fn member(up: &Upstream, http: &Client) -> Member {
    let uri: Uri = up.server.uri("/");
    let inner = ServiceBuilder::new()
        .timeout(up.spec.timeout)
        .map_request(move |mut req: Req| {
            *req.uri_mut() = uri.clone();
            req
        })
        .map_future(|f: hyper_util::client::legacy::ResponseFuture| async move {
            let res = f.await.map_err(BoxError::from)?;
            let (parts, body) = res.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, BoxError>(Response::from_parts(parts, body))
        })
        .service(http.clone());
    let guarded = CircuitBreakerLayer::new(up.breaker.clone())
        .classify(classifier())
        .layer(inner);
    BoxCloneService::new(Meter {
        inner: guarded,
        armed: false,
        tally: up.metered.clone(),
    })
}

fn copy(req: &Req) -> Option<Req> {
    let mut copy = Request::new(req.body().clone());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.headers_mut() = req.headers().clone();
    Some(copy)
}

pin_project_lite::pin_project! {
    /// The caller's cancellation: resolves to `None`, dropping the call, right after its first
    /// `Pending` (`wakeups` 0), or at its `wakeups`-th wake-up without polling it again (an
    /// answer may be waiting), or when `budget` runs out, whichever comes first; to
    /// `Some(output)` if the call finishes before.
    struct CancelAt<F> {
        #[pin]
        call: F,
        #[pin]
        budget: tokio::time::Sleep,
        wakeups: u32,
        polled: bool,
    }
}

impl<F: Future> CancelAt<F> {
    fn new(call: F, wakeups: u32, budget: Duration) -> Self {
        Self {
            call,
            budget: tokio::time::sleep(budget),
            wakeups,
            polled: false,
        }
    }
}

impl<F: Future> Future for CancelAt<F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if *this.polled {
            // A wake-up: the caller may give up before looking at the call again.
            if *this.wakeups <= 1 || this.budget.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            *this.wakeups -= 1;
        }
        *this.polled = true;
        if let Poll::Ready(out) = this.call.poll(cx) {
            return Poll::Ready(Some(out));
        }
        if *this.wakeups == 0 || this.budget.poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    }
}

/// What the callers saw.
#[derive(Default)]
struct Callers {
    issued: AtomicU64,
    cancel_planned: AtomicU64,
    cancelled: AtomicU64,
    errors: AtomicU64,
    answered: AtomicU64,
    fell_back: AtomicU64,
    by_member: Mutex<BTreeMap<String, u64>>,
    by_status: Mutex<BTreeMap<u16, u64>>,
    done: AtomicU64,
    rss: Mutex<Vec<(u64, u64)>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a soak of about a minute: run it in release with --ignored (see the file docs)"]
async fn soak_a_million_requests_through_the_full_stack() {
    let total = env("SOAK_REQUESTS", 1_000_000);
    let concurrency = env("SOAK_CONCURRENCY", 64);
    let seed = env("SOAK_SEED", 8);
    let start = Instant::now();
    println!("soak: {total} requests, {concurrency} callers, seed {seed}");

    let specs = [
        // Flaky, with storms: trips on runs and on the rate; exponential backoff.
        Spec {
            name: "alpha",
            timeout: Duration::from_millis(100),
            max_wait: Duration::from_millis(300),
            successes: 1,
            permits: 1,
            max_open: Duration::from_millis(400),
        },
        // Slow-ish: the time window with the slow-call rule; two probes, two successes.
        Spec {
            name: "beta",
            timeout: Duration::from_millis(120),
            max_wait: Duration::from_millis(300),
            successes: 2,
            permits: 2,
            max_open: Duration::from_millis(400),
        },
        // Mostly healthy; a max wait shorter than its timeout, so a hung probe can time out in
        // the breaker first (`ProbeTimedOut`); fixed open period with jitter.
        Spec {
            name: "gamma",
            timeout: Duration::from_millis(150),
            max_wait: Duration::from_millis(60),
            successes: 1,
            permits: 3,
            max_open: Duration::from_millis(400),
        },
    ];
    let chaos = [
        Chaos {
            error: 600,
            retry_after: 1,
            too_many: 100,
            not_found: 100,
            spike: 200,
            reset: 20,
            hang: 10,
            storm: (Duration::from_secs(3), Duration::from_millis(500)),
        },
        Chaos {
            error: 500,
            retry_after: 2,
            too_many: 50,
            not_found: 50,
            spike: 1500,
            reset: 20,
            hang: 10,
            storm: (Duration::from_secs(5), Duration::from_millis(700)),
        },
        Chaos {
            error: 300,
            retry_after: 2,
            too_many: 50,
            not_found: 50,
            spike: 200,
            reset: 20,
            hang: 10,
            storm: (Duration::from_secs(7), Duration::from_millis(1000)),
        },
    ];

    let mut upstreams = Vec::new();
    for (i, (spec, chaos)) in specs.into_iter().zip(chaos).enumerate() {
        let server = FaultServer::start(Fault::Status(200)).await;
        chaos_server(&server, chaos, seed, i as u64 * 0x1000_0001, start);
        let heard = Arc::new(Heard::default());
        let builder = CircuitBreaker::builder(spec.name)
            .max_open_duration(spec.max_open)
            .half_open_permits(spec.permits)
            .half_open_successes(spec.successes)
            .half_open_max_wait(spec.max_wait);
        let builder = match i {
            0 => builder
                .consecutive_failures(5)
                .failure_rate(0.5)
                .count_window(50)
                .min_calls(20)
                .open_backoff(Backoff::exponential(
                    Duration::from_millis(50),
                    2.0,
                    Duration::from_millis(400),
                )),
            1 => builder
                .failure_rate(0.3)
                .time_window(Duration::from_secs(1))
                .min_calls(20)
                .slow_calls(Duration::from_millis(80), 0.5)
                .open_duration(Duration::from_millis(150)),
            _ => builder
                .consecutive_failures(3)
                .open_backoff(Backoff::fixed(Duration::from_millis(100)).with_jitter(0.5)),
        };
        let breaker = listen(builder, &spec, heard.clone()).build().unwrap();
        upstreams.push(Upstream {
            spec,
            server,
            breaker,
            heard,
            metered: Arc::new(Metered::default()),
        });
    }

    let http = client();
    let mut members: Vec<(&'static str, Member)> = upstreams
        .iter()
        .map(|u| (u.spec.name, member(u, &http)))
        .collect();
    members.push((
        "static",
        // A cache a millisecond away: when every upstream is open, the callers are not let
        // loose on a free answer (that would drain the run in the fallback).
        BoxCloneService::new(tower::service_fn(|_: Req| async {
            tokio::time::sleep(Duration::from_millis(1)).await;
            Ok::<_, BoxError>(Response::new(Bytes::from_static(b"static")))
        })),
    ));
    let stack = Failover::new(members)
        .on_failure(CloneWith::new(copy as fn(&Req) -> Option<Req>).classify(classifier()));

    let callers = Arc::new(Callers::default());
    let next = Arc::new(AtomicU64::new(0));
    let target: Uri = "http://upstream.invalid/v1/chat".parse().unwrap();
    let load_start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let mut svc = stack.clone();
        let (callers, next, target) = (callers.clone(), next.clone(), target.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Relaxed);
                if i >= total {
                    break;
                }
                let mut rng = fastrand::Rng::with_seed(seed.wrapping_mul(0x5851_F42D_4C95_7F2D) ^ i);
                let cancel = rng.u32(0..100) < 8;
                let req = Request::get(target.clone())
                    .body(Full::new(Bytes::from_static(b"{}")))
                    .unwrap();
                callers.issued.fetch_add(1, Relaxed);
                let call = async { svc.ready().await?.call(req).await };
                let result = if cancel {
                    callers.cancel_planned.fetch_add(1, Relaxed);
                    let budget = Duration::from_micros(rng.u64(0..1500));
                    CancelAt::new(call, rng.u32(0..4), budget).await
                } else {
                    Some(call.await)
                };
                match result {
                    None => {
                        callers.cancelled.fetch_add(1, Relaxed);
                    }
                    Some(Err(e)) => {
                        if callers.errors.fetch_add(1, Relaxed) < 5 {
                            eprintln!("soak: caller error: {e}");
                        }
                    }
                    Some(Ok(res)) => {
                        callers.answered.fetch_add(1, Relaxed);
                        let provenance = res.extensions().get::<Provenance>().expect("provenance");
                        if provenance.fell_back() {
                            callers.fell_back.fetch_add(1, Relaxed);
                        }
                        *callers
                            .by_member
                            .lock()
                            .unwrap()
                            .entry(provenance.served_by().to_owned())
                            .or_default() += 1;
                        *callers
                            .by_status
                            .lock()
                            .unwrap()
                            .entry(res.status().as_u16())
                            .or_default() += 1;
                    }
                }
                let done = callers.done.fetch_add(1, Relaxed) + 1;
                if done == total / 10 || done == total / 2 {
                    let rss = rss_kb();
                    println!(
                        "soak: {:>3}% done after {:>6.1} s, VmRSS {} kB",
                        done * 100 / total,
                        load_start.elapsed().as_secs_f64(),
                        rss
                    );
                    callers.rss.lock().unwrap().push((done, rss));
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = load_start.elapsed();
    let rss_end = rss_kb();
    callers.rss.lock().unwrap().push((total, rss_end));
    drop(stack); // with the callers' clones gone, every held admission is released
    println!(
        "soak: 100% done after {:>6.1} s, VmRSS {} kB; {:.0} req/s",
        elapsed.as_secs_f64(),
        rss_end,
        total as f64 / elapsed.as_secs_f64()
    );

    // ---------------------------------------------------------------- callers' counts
    let c = &*callers;
    let (issued, cancelled, errors, answered) = (
        c.issued.load(Relaxed),
        c.cancelled.load(Relaxed),
        c.errors.load(Relaxed),
        c.answered.load(Relaxed),
    );
    println!(
        "soak: callers: issued {issued} = answered {answered} + errors {errors} + cancelled {cancelled} \
         (planned {}); fell back {}; served by {:?}; statuses {:?}",
        c.cancel_planned.load(Relaxed),
        c.fell_back.load(Relaxed),
        c.by_member.lock().unwrap(),
        c.by_status.lock().unwrap()
    );
    assert_eq!(issued, total);
    assert_eq!(issued, answered + errors + cancelled);
    assert_eq!(errors, 0, "the static fallback answers whatever happens upstream");
    assert!(cancelled <= c.cancel_planned.load(Relaxed));
    assert!(
        cancelled * 50 >= total,
        "at least 2% of the calls were cancelled: {cancelled}"
    );

    // ---------------------------------------------------------------- per breaker
    let mut failures = Vec::new();
    for up in &upstreams {
        let (h, m) = (&*up.heard, &*up.metered);
        let l = |n: &AtomicU64| n.load(Relaxed);
        let recorded = l(&h.success) + l(&h.failure) + l(&h.ignore) + l(&h.trip);
        println!(
            "soak: {}: server hits {}, handlers still running {}; admitted {} = success {} + failure {} \
             + ignore {} + trip {} + released {} (never called {} + cancelled in flight {}); called {}; \
             rejected {}",
            up.spec.name,
            up.server.hits(),
            up.server.active(),
            l(&m.admitted),
            l(&h.success),
            l(&h.failure),
            l(&h.ignore),
            l(&h.trip),
            l(&h.released),
            l(&m.dropped_admissions),
            l(&m.cancelled_in_flight),
            l(&m.called),
            l(&h.rejected),
        );
        let mut check = |ok: bool, what: String| {
            if !ok {
                failures.push(format!("{}: {what}", up.spec.name));
            }
        };
        check(
            l(&m.admitted) == recorded + l(&h.released),
            format!(
                "admitted {} != recorded {recorded} + released {}",
                l(&m.admitted),
                l(&h.released)
            ),
        );
        check(
            l(&h.released) == l(&m.dropped_admissions) + l(&m.cancelled_in_flight),
            "released != never called + cancelled in flight".into(),
        );
        check(
            l(&m.admitted) == l(&m.called) + l(&m.dropped_admissions),
            "admitted != called + never called".into(),
        );
        check(
            (l(&h.success), l(&h.failure), l(&h.ignore), l(&h.trip))
                == (l(&m.success), l(&m.failure), l(&m.ignore), l(&m.trip)),
            format!(
                "listener outcomes {:?} != metered {:?}",
                (l(&h.success), l(&h.failure), l(&h.ignore), l(&h.trip)),
                (l(&m.success), l(&m.failure), l(&m.ignore), l(&m.trip))
            ),
        );
        check(l(&h.rejected) == l(&m.rejected), "rejections differ".into());

        let ho = h.half_open.lock().unwrap();
        println!(
            "soak: {}: {} half-open periods, longest {:?} (bound {:?}); transitions {:?}",
            up.spec.name,
            ho.periods,
            ho.longest,
            up.spec.max_wait * up.spec.successes + SLACK,
            ho.transitions
        );
        check(
            ho.too_long.is_empty(),
            format!("half-open periods too long: {:?}", ho.too_long),
        );
        check(
            ho.server_waits_over_max.is_empty(),
            format!(
                "server waits over max_open_duration: {:?}",
                ho.server_waits_over_max
            ),
        );
        if total >= 1_000_000 {
            check(
                ho.periods > 0,
                "the breaker never went half-open: tune the chaos".into(),
            );
        }
    }

    // ---------------------------------------------------------------- no permit leaked
    for up in &upstreams {
        let b = &up.breaker;
        let snap = b.snapshot();
        assert_eq!(snap.probes_in_flight, 0, "{}: {snap:?}", up.spec.name);
        if let Some(wait) = snap.retry_after {
            tokio::time::sleep(wait + Duration::from_millis(5)).await;
        }
        let first = b
            .try_acquire()
            .unwrap_or_else(|e| panic!("{}: due, yet {e}", up.spec.name));
        let mut held = vec![first];
        if b.state() == State::HalfOpen {
            for _ in 1..up.spec.permits {
                held.push(
                    b.try_acquire()
                        .unwrap_or_else(|e| panic!("{}: {e}", up.spec.name)),
                );
            }
            assert!(held.iter().all(|p| p.is_probe()));
            assert!(
                b.try_acquire().is_err(),
                "{}: more probes than permits",
                up.spec.name
            );
            assert_eq!(b.snapshot().probes_in_flight, up.spec.permits);
        }
        drop(held);
        assert_eq!(b.snapshot().probes_in_flight, 0, "{}", up.spec.name);
        println!("soak: {}: no permit leaked (ends {:?})", up.spec.name, b.state());
    }

    for up in &upstreams {
        println!(
            "soak: {}: server handlers still running after the checks: {}",
            up.spec.name,
            up.server.active()
        );
    }

    // ---------------------------------------------------------------- memory
    let rss = callers.rss.lock().unwrap().clone();
    println!("soak: VmRSS samples (requests done, kB): {rss:?}");
    let warm = rss.first().map_or(0, |s| s.1);
    let peak_after = rss.iter().map(|s| s.1).max().unwrap_or(0);
    let growth_kb = peak_after.saturating_sub(warm);
    println!(
        "soak: growth after warm-up {growth_kb} kB; total {:.1} s",
        start.elapsed().as_secs_f64()
    );
    assert!(
        growth_kb < 20 * 1024,
        "resident memory grew by {growth_kb} kB after warm-up"
    );
    assert!(failures.is_empty(), "{failures:#?}");
}
