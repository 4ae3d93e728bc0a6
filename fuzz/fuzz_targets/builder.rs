//! `CircuitBreaker::builder` on arbitrary values (rates incl. NaN/inf/negative, durations
//! incl. zero and `Duration::MAX`, backoff extremes), then, when `build()` accepts them, a
//! short run of acquire/record/drop/trip/force/disable/reset, clock advances under paused
//! tokio time, and readiness polls of a `Wait`-mode and a `FailFast` service on the breaker
//! (`Wait` sleeps until the breaker's next deadline). Checks that nothing panics (debug assertions are on: overflow panics) and that
//! what the breaker says stays coherent.
#![no_main]

use std::{
    convert::Infallible,
    future::Future,
    pin::pin,
    task::{Context, Poll, Waker},
    time::Duration,
};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tower_breaker::{
    Backoff, CircuitBreaker, CircuitBreakerLayer, Layer, Outcome, Permit, Readiness, State, is_circuit_open,
};
use tower_service::Service;

/// The upstream: answers at once, `Ok` (a success for the layer's default classifier).
#[derive(Clone)]
struct Upstream;

impl Service<()> for Upstream {
    type Response = ();
    type Error = Infallible;
    type Future = std::future::Ready<Result<(), Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, (): ()) -> Self::Future {
        std::future::ready(Ok(()))
    }
}

/// One `poll_ready` (and, when ready, one call run to completion) on a breaker service.
fn poll_service<S>(svc: &mut S, call: bool)
where
    S: Service<(), Response = (), Error = tower_breaker::BoxError>,
{
    let mut cx = Context::from_waker(Waker::noop());
    match svc.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) if call => {
            let mut fut = pin!(svc.call(()));
            match fut.as_mut().poll(&mut cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => assert!(is_circuit_open(&e), "{e}"),
                Poll::Pending => panic!("the upstream answers at once"),
            }
        }
        Poll::Ready(Ok(())) => {} // admitted: the admission is held until the next poll or drop
        Poll::Ready(Err(e)) => assert!(is_circuit_open(&e), "{e}"),
        Poll::Pending => {} // Wait mode: a sleep until the next deadline is armed
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Dur {
    Zero,
    Max,
    Nanos(u64),
    Millis(u32),
    Secs(u64),
    Parts(u64, u32),
    /// `Duration::MAX` minus a little.
    NearMax(u32),
}

impl Dur {
    fn get(self) -> Duration {
        match self {
            Dur::Zero => Duration::ZERO,
            Dur::Max => Duration::MAX,
            Dur::Nanos(n) => Duration::from_nanos(n),
            Dur::Millis(n) => Duration::from_millis(u64::from(n)),
            Dur::Secs(n) => Duration::from_secs(n),
            Dur::Parts(s, n) => Duration::new(s, n % 1_000_000_000),
            Dur::NearMax(n) => Duration::MAX - Duration::from_nanos(u64::from(n)),
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Float {
    Nan,
    Inf,
    NegInf,
    Zero,
    NegZero,
    One,
    Half,
    Tiny,
    Max,
    Raw(f64),
}

impl Float {
    fn get(self) -> f64 {
        match self {
            Float::Nan => f64::NAN,
            Float::Inf => f64::INFINITY,
            Float::NegInf => f64::NEG_INFINITY,
            Float::Zero => 0.0,
            Float::NegZero => -0.0,
            Float::One => 1.0,
            Float::Half => 0.5,
            Float::Tiny => f64::MIN_POSITIVE,
            Float::Max => f64::MAX,
            Float::Raw(f) => f,
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum BackoffIn {
    Fixed(Dur),
    Exponential { base: Dur, factor: Float, max: Dur },
}

#[derive(Arbitrary, Debug)]
struct Config {
    consecutive: Option<u32>,
    failure_rate: Option<Float>,
    slow: Option<(Dur, Float)>,
    count_window: Option<u16>,
    time_window: Option<Dur>,
    min_calls: Option<u32>,
    backoff: Option<BackoffIn>,
    jitter: Option<Float>,
    max_open: Option<Dur>,
    half_open_permits: Option<u32>,
    half_open_successes: Option<u32>,
    half_open_max_wait: Option<Dur>,
    listener: bool,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum OutcomeIn {
    Success,
    Failure,
    Ignore,
    Trip(Dur),
}

impl OutcomeIn {
    fn get(self) -> Outcome {
        match self {
            OutcomeIn::Success => Outcome::Success,
            OutcomeIn::Failure => Outcome::Failure,
            OutcomeIn::Ignore => Outcome::Ignore,
            OutcomeIn::Trip(d) => Outcome::Trip(d.get()),
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Op {
    Acquire,
    Record(u8, OutcomeIn),
    Drop(u8),
    Trip(Dur),
    TripRemote(Dur),
    ForceOpen,
    Disable,
    Reset,
    /// Nanoseconds, up to four years a step: 64 steps stay well inside the core's ~584-year
    /// clock horizon (nanoseconds in a `u64` from the breaker's creation).
    Advance(u64),
    AdvanceMillis(u16),
    Snapshot,
    /// `poll_ready` on a `Wait`-mode service (and the call when `true` and ready).
    PollWait(bool),
    /// `poll_ready` on a `FailFast` service (and the call when `true` and ready).
    PollFailFast(bool),
}

#[derive(Arbitrary, Debug)]
struct Input {
    config: Config,
    ops: Vec<Op>,
}

fn builder(c: &Config) -> tower_breaker::Builder {
    let mut b = CircuitBreaker::builder("fuzz");
    if let Some(n) = c.consecutive {
        b = b.consecutive_failures(n);
    }
    if let Some(r) = c.failure_rate {
        b = b.failure_rate(r.get());
    }
    if let Some((d, r)) = c.slow {
        b = b.slow_calls(d.get(), r.get());
    }
    if let Some(n) = c.count_window {
        b = b.count_window(u32::from(n));
    }
    if let Some(d) = c.time_window {
        b = b.time_window(d.get());
    }
    if let Some(n) = c.min_calls {
        b = b.min_calls(n);
    }
    let backoff = match c.backoff {
        Some(BackoffIn::Fixed(d)) => Some(Backoff::fixed(d.get())),
        Some(BackoffIn::Exponential { base, factor, max }) => {
            Some(Backoff::exponential(base.get(), factor.get(), max.get()))
        }
        None => None,
    };
    match (backoff, c.jitter) {
        (Some(bo), Some(j)) => b = b.open_backoff(bo.with_jitter(j.get())),
        (Some(bo), None) => b = b.open_backoff(bo),
        (None, Some(j)) => b = b.open_backoff(Backoff::default().with_jitter(j.get())),
        (None, None) => {}
    }
    if let Some(d) = c.max_open {
        b = b.max_open_duration(d.get());
    }
    if let Some(n) = c.half_open_permits {
        b = b.half_open_permits(n);
    }
    if let Some(n) = c.half_open_successes {
        b = b.half_open_successes(n);
    }
    if let Some(d) = c.half_open_max_wait {
        b = b.half_open_max_wait(d.get());
    }
    if c.listener {
        b = b.on_event(|e| {
            let _ = format!("{e:?}");
        });
    }
    b
}

/// Settings that must be refused, whatever else is set.
fn must_refuse(c: &Config) -> bool {
    // A trip rate lies in (0, 1]: a zero rate would trip on successes alone. A jitter
    // fraction lies in [0, 1].
    let bad_rate = |r: f64| !(r > 0.0 && r <= 1.0);
    let bad_fraction = |r: f64| !(0.0..=1.0).contains(&r);
    c.consecutive == Some(0)
        || c.failure_rate.is_some_and(|r| bad_rate(r.get()))
        || c.slow.is_some_and(|(_, r)| bad_rate(r.get()))
        || (c.consecutive.is_none() && c.failure_rate.is_none() && c.slow.is_none())
        || (c.count_window.is_some() && c.time_window.is_some())
        || c.count_window.is_some_and(|n| n == 0 || n > 32_767)
        || c.time_window.is_some_and(|d| d.get() < Duration::from_micros(10))
        || c.min_calls == Some(0)
        || c.jitter.is_some_and(|j| bad_fraction(j.get()))
        || c.max_open.is_some_and(|d| d.get().is_zero())
        || c.half_open_permits == Some(0)
        || c.half_open_successes == Some(0)
        || c.half_open_max_wait.is_some_and(|d| d.get().is_zero())
        || match c.backoff {
            Some(BackoffIn::Fixed(d)) => d.get().is_zero(),
            Some(BackoffIn::Exponential { base, factor, max }) => {
                let f = factor.get();
                base.get().is_zero() || !f.is_finite() || f < 1.0 || max.get() < base.get()
            }
            None => false,
        }
}

/// The longest the breaker may stay open by itself: the backoff's maximum or, for a server's
/// wait, `max_open_duration`.
fn longest_open(c: &Config) -> Duration {
    let backoff_max = match c.backoff {
        Some(BackoffIn::Fixed(d)) => d.get(),
        Some(BackoffIn::Exponential { max, .. }) => max.get(),
        None => Duration::from_secs(30),
    };
    let max_open = c.max_open.map_or(Duration::from_secs(600), Dur::get);
    backoff_max.max(max_open)
}

const MAX_STEP_NANOS: u64 = 4 * 366 * 24 * 3600 * 1_000_000_000;

fuzz_target!(|input: Input| {
    let built = builder(&input.config).build();
    if must_refuse(&input.config) {
        let err = built.expect_err("an invalid setting must be a ConfigError");
        assert!(err.to_string().starts_with("invalid circuit breaker config: "));
        return;
    }
    let Ok(breaker) = built else {
        // Nothing else makes a config invalid.
        panic!("a valid config was refused: {:?}", built.err());
    };
    let longest = longest_open(&input.config);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut permits: Vec<Permit> = Vec::new();
        let mut waiting = CircuitBreakerLayer::new(breaker.clone())
            .readiness(Readiness::Wait)
            .layer(Upstream);
        let mut fail_fast = CircuitBreakerLayer::new(breaker.clone()).layer(Upstream);
        for op in input.ops.iter().take(64) {
            match *op {
                Op::Acquire => match breaker.try_acquire() {
                    Ok(p) => {
                        if permits.len() < 16 {
                            permits.push(p);
                        } else {
                            p.record(Outcome::Success);
                        }
                    }
                    Err(refused) => {
                        let state = refused.state();
                        assert!(state.is_open() || state == State::HalfOpen, "{state:?}");
                        match state {
                            State::Open => {
                                let left = refused.retry_after().expect("an open breaker has a deadline");
                                assert!(left <= longest, "{left:?} > {longest:?}");
                            }
                            _ => assert_eq!(refused.retry_after(), None),
                        }
                        let _ = refused.to_string();
                        let _ = format!("{refused:?}");
                    }
                },
                Op::Record(i, outcome) => {
                    if !permits.is_empty() {
                        let p = permits.swap_remove(usize::from(i) % permits.len());
                        p.record(outcome.get());
                    }
                }
                Op::Drop(i) => {
                    if !permits.is_empty() {
                        drop(permits.swap_remove(usize::from(i) % permits.len()));
                    }
                }
                Op::Trip(d) | Op::TripRemote(d) => {
                    let before = breaker.state();
                    let wait = d.get();
                    if matches!(op, Op::Trip(_)) {
                        breaker.trip(wait);
                    } else {
                        breaker.trip_remote(wait);
                    }
                    match before {
                        State::ForcedOpen | State::Disabled => assert_eq!(breaker.state(), before),
                        _ => {
                            assert_eq!(breaker.state(), State::Open);
                            let left = breaker.snapshot().retry_after.expect("open");
                            let max_open = input.config.max_open.map_or(Duration::from_secs(600), Dur::get);
                            // At least the clamped wait (up to the ~584-year horizon).
                            let horizon = Duration::from_nanos(u64::MAX / 2);
                            assert!(left >= wait.min(max_open).min(horizon), "{left:?} < {wait:?}");
                            if !wait.is_zero() {
                                let refused = breaker.try_acquire().expect_err("tripped: refused");
                                assert_eq!(refused.state(), State::Open);
                                assert!(refused.retry_after().is_some_and(|d| !d.is_zero()));
                            }
                        }
                    }
                }
                Op::ForceOpen => {
                    breaker.force_open();
                    assert_eq!(breaker.state(), State::ForcedOpen);
                    let refused = breaker.try_acquire().expect_err("forced open");
                    assert_eq!(refused.retry_after(), None);
                }
                Op::Disable => {
                    breaker.disable();
                    assert_eq!(breaker.state(), State::Disabled);
                }
                Op::Reset => {
                    breaker.reset();
                    assert_eq!(breaker.state(), State::Closed);
                    assert_eq!(breaker.snapshot().calls, 0);
                }
                Op::Advance(n) => tokio::time::advance(Duration::from_nanos(n % MAX_STEP_NANOS)).await,
                Op::AdvanceMillis(n) => tokio::time::advance(Duration::from_millis(u64::from(n))).await,
                Op::PollWait(call) => poll_service(&mut waiting, call),
                Op::PollFailFast(call) => poll_service(&mut fail_fast, call),
                Op::Snapshot => {
                    let s = breaker.snapshot();
                    assert!(s.failures <= s.calls && s.slow_calls <= s.calls, "{s:?}");
                    assert_eq!(s.state == State::Open, s.retry_after.is_some());
                    if let Some(left) = s.retry_after {
                        assert!(left <= longest, "{left:?} > {longest:?}");
                    }
                    if let Some(r) = s.failure_rate {
                        assert!((0.0..=1.0).contains(&r));
                    }
                }
            }
        }
        for (i, p) in permits.into_iter().enumerate() {
            if i % 2 == 0 {
                p.record(Outcome::Failure);
            } else {
                drop(p);
            }
        }
        let _ = breaker.snapshot();
    });
});
