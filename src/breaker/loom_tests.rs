//! loom models of the core's concurrency: probe admission, transitions racing past a trip or an
//! open deadline, permit release, stale permits, the lock-free count window.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test --release --lib --no-default-features --target-dir target/loom loom`

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use loom::thread;

use super::Outcome;
use super::{CircuitBreaker, Event, State, sync::Arc};

fn opened_then_due(permits: u32) -> CircuitBreaker {
    let b = CircuitBreaker::builder("loom")
        .consecutive_failures(1)
        .open_duration(Duration::from_nanos(1))
        .half_open_permits(permits)
        .build()
        .unwrap();
    b.try_acquire().unwrap().record(Outcome::Failure);
    std::thread::sleep(Duration::from_nanos(10)); // the 1 ns open period is over (wall clock: loom has no time)
    b
}

#[test]
fn loom_half_open_never_admits_more_probes_than_permitted() {
    loom::model(|| {
        let b = opened_then_due(1);
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let b = b.clone();
                thread::spawn(move || b.try_acquire().ok())
            })
            .collect();
        let permits: Vec<_> = handles.into_iter().filter_map(|h| h.join().unwrap()).collect();
        assert_eq!(permits.len(), 1, "one probe slot, one probe");
        assert!(permits[0].is_probe());
        assert_eq!(b.state(), State::HalfOpen);
    });
}

#[test]
fn loom_exactly_one_transition_when_threads_race_past_a_trip() {
    loom::model(|| {
        let transitions = std::sync::Arc::new(AtomicUsize::new(0));
        let t = transitions.clone();
        let b = CircuitBreaker::builder("loom")
            .consecutive_failures(1)
            .on_event(move |e| {
                if matches!(e, Event::Transition { .. }) {
                    t.fetch_add(1, SeqCst);
                }
            })
            .build()
            .unwrap();
        let permits: Vec<_> = (0..2).map(|_| b.try_acquire().unwrap()).collect();
        let handles: Vec<_> = permits
            .into_iter()
            .map(|p| thread::spawn(move || p.record(Outcome::Failure)))
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(b.state(), State::Open);
        assert_eq!(transitions.load(SeqCst), 1);
    });
}

#[test]
fn loom_exactly_one_transition_when_threads_race_past_the_open_deadline() {
    loom::model(|| {
        let transitions = std::sync::Arc::new(AtomicUsize::new(0));
        let t = transitions.clone();
        let b = CircuitBreaker::builder("loom")
            .consecutive_failures(1)
            .open_duration(Duration::from_nanos(1))
            .half_open_permits(2)
            .on_event(move |e| {
                if let Event::Transition {
                    to: State::HalfOpen, ..
                } = e
                {
                    t.fetch_add(1, SeqCst);
                }
            })
            .build()
            .unwrap();
        b.try_acquire().unwrap().record(Outcome::Failure);
        std::thread::sleep(Duration::from_nanos(10));
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let b = b.clone();
                thread::spawn(move || b.try_acquire().map(|p| p.is_probe()))
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), Ok(true), "both probes admitted");
        }
        assert_eq!(transitions.load(SeqCst), 1);
    });
}

#[test]
fn loom_permits_dropped_on_any_path_are_released_once() {
    loom::model(|| {
        let b = opened_then_due(2);
        let p1 = b.try_acquire().unwrap();
        let p2 = b.try_acquire().unwrap();
        let h1 = thread::spawn(move || drop(p1));
        let h2 = thread::spawn(move || p2.record(Outcome::Ignore));
        h1.join().unwrap();
        h2.join().unwrap();
        assert_eq!(b.snapshot().probes_in_flight, 0);
        let again: Vec<_> = (0..3).filter_map(|_| b.try_acquire().ok()).collect();
        assert_eq!(again.len(), 2, "exactly the two slots came back");
    });
}

#[test]
fn loom_a_probe_dropped_across_a_reopen_frees_no_slot_of_the_next_half_open() {
    loom::model(|| {
        let b = opened_then_due(2);
        let (p1, p2) = (b.try_acquire().unwrap(), b.try_acquire().unwrap());
        let h = thread::spawn(move || p1.record(Outcome::Failure)); // reopens ...
        drop(p2); // ... before or after this release: either way, one release, in its own period
        h.join().unwrap();
        assert_eq!(b.state(), State::Open);
        assert_eq!(b.snapshot().probes_in_flight, 0);
        std::thread::sleep(Duration::from_nanos(10));
        let again: Vec<_> = (0..3).filter_map(|_| b.try_acquire().ok()).collect();
        assert_eq!(again.len(), 2, "the next half-open has exactly its own two slots");
        assert_eq!(b.snapshot().probes_in_flight, 2);
    });
}

#[test]
fn loom_a_stale_permit_never_changes_the_current_state() {
    loom::model(|| {
        let from_half_open = std::sync::Arc::new(AtomicUsize::new(0));
        let t = from_half_open.clone();
        let b = CircuitBreaker::builder("loom")
            .consecutive_failures(1)
            .open_duration(Duration::from_nanos(1))
            .half_open_permits(2)
            .on_event(move |e| {
                if let Event::Transition {
                    from: State::HalfOpen,
                    ..
                } = e
                {
                    t.fetch_add(1, SeqCst);
                }
            })
            .build()
            .unwrap();
        b.try_acquire().unwrap().record(Outcome::Failure);
        std::thread::sleep(Duration::from_nanos(10));
        let (p1, p2) = (b.try_acquire().unwrap(), b.try_acquire().unwrap());
        let h = thread::spawn(move || p1.record(Outcome::Success)); // closes ...
        p2.record(Outcome::Failure); // ... or reopens: whichever comes second is stale
        h.join().unwrap();
        assert_eq!(
            from_half_open.load(SeqCst),
            1,
            "the loser's outcome caused no transition"
        );
        assert!(matches!(b.state(), State::Closed | State::Open));
    });
}

#[test]
fn loom_stale_closed_outcome_racing_a_close_does_not_trip() {
    loom::model(|| {
        let b = CircuitBreaker::builder("loom")
            .consecutive_failures(1)
            .open_duration(Duration::from_nanos(1))
            .build()
            .unwrap();
        let stale = b.try_acquire().unwrap(); // generation of the first closed period
        b.trip(Duration::from_nanos(1));
        std::thread::sleep(Duration::from_nanos(10));
        let probe = b.try_acquire().unwrap();
        let h = thread::spawn(move || probe.record(Outcome::Success));
        stale.record(Outcome::Failure);
        h.join().unwrap();
        assert_eq!(b.state(), State::Closed);
        assert_eq!(b.snapshot().consecutive_failures, 0);
    });
}

#[test]
fn loom_count_window_counts_stay_exact() {
    loom::model(|| {
        let b = CircuitBreaker::builder("loom")
            .failure_rate(1.0)
            .count_window(2)
            .min_calls(2)
            .build()
            .unwrap();
        let b = Arc::new(b);
        b.try_acquire().unwrap().record(Outcome::Success);
        let handles: Vec<_> = [Outcome::Failure, Outcome::Success]
            .into_iter()
            .map(|o| {
                let b = b.clone();
                thread::spawn(move || b.try_acquire().unwrap().record(o))
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let s = b.snapshot();
        assert_eq!(
            (s.calls, s.failures),
            (2, 1),
            "the window holds exactly the last two outcomes"
        );
        assert_eq!(b.state(), State::Closed, "a rate of 0.5 does not reach 1.0");
    });
}

/// A `Wait`-mode waiter registering while a probe is released: either it sees the free slot
/// (and registers nothing), or its waker is woken; never asleep with a slot free. Its slot is
/// then freed, waker and all.
#[test]
fn loom_a_waiter_is_never_left_asleep_by_a_racing_release() {
    use std::sync::atomic::AtomicBool;
    use std::task::{Wake, Waker};

    struct Flag(AtomicBool);
    impl Wake for Flag {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.store(true, SeqCst);
        }
    }

    loom::model(|| {
        let b = opened_then_due(1);
        let probe = b.try_acquire().unwrap();
        let refused = b.try_acquire().unwrap_err(); // half-open is full
        let flag = std::sync::Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        let h = thread::spawn(move || drop(probe));
        let mut key = None;
        let waiting = b.wait_for_change(&refused, &mut key, &waker);
        h.join().unwrap();
        if waiting {
            assert!(flag.0.load(SeqCst), "registered before the release: woken by it");
        } else {
            assert!(key.is_none(), "no slot kept when the breaker may admit");
        }
        if let Some(key) = key {
            b.stop_waiting(key);
        }
        assert_eq!(b.waiting(), (0, 0));
        drop(waker);
        assert_eq!(std::sync::Arc::strong_count(&flag), 1, "no waker kept");
    });
}

#[test]
fn loom_an_early_probe_racing_a_caller_admits_one_probe_and_one_transition() {
    loom::model(|| {
        let transitions = std::sync::Arc::new(AtomicUsize::new(0));
        let t = transitions.clone();
        let b = CircuitBreaker::builder("loom")
            .consecutive_failures(1)
            .open_duration(Duration::from_secs(3600)) // not due: only the early probe ends it
            .on_event(move |e| {
                if let Event::Transition {
                    to: State::HalfOpen, ..
                } = e
                {
                    t.fetch_add(1, SeqCst);
                }
            })
            .build()
            .unwrap();
        b.try_acquire().unwrap().record(Outcome::Failure);
        let early = {
            let b = b.clone();
            thread::spawn(move || b.try_probe_early().ok())
        };
        let other = {
            let b = b.clone();
            thread::spawn(move || b.try_probe_early().ok())
        };
        let plain = b.try_acquire().ok();
        let permits: Vec<_> = [early.join().unwrap(), other.join().unwrap(), plain]
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(permits.len(), 1, "one probe slot, one probe");
        assert!(permits[0].is_probe());
        assert_eq!(transitions.load(SeqCst), 1, "the open period ended once");
        assert_eq!(b.state(), State::HalfOpen);
    });
}

/// A closed call recorded while a reload reshapes the count window (2 → 3): its outcome is
/// counted in the new window, or lost to the old one (at most that one, as the reload's docs
/// say), never counted twice; the calls before the reload are carried; a probe-free closed
/// breaker stays closed.
#[test]
fn loom_a_record_racing_a_reshaping_reload_counts_once_or_is_lost() {
    let builder = |n| {
        CircuitBreaker::builder("loom")
            .failure_rate(1.0)
            .count_window(n)
            .min_calls(3)
    };
    loom::model(move || {
        let b = builder(2).build().unwrap();
        b.try_acquire().unwrap().record(Outcome::Success);
        let permit = b.try_acquire().unwrap();
        let h = thread::spawn(move || permit.record(Outcome::Failure));
        b.reconfigure(builder(3)).unwrap();
        h.join().unwrap();
        let s = b.snapshot();
        assert!(
            (s.calls, s.failures) == (2, 1) || (s.calls, s.failures) == (1, 0),
            "{s:?}"
        );
        assert_eq!(b.state(), State::Closed);
        b.try_acquire().unwrap().record(Outcome::Success);
        assert_eq!(
            b.snapshot().calls,
            s.calls + 1,
            "later calls count in the new window"
        );
    });
}
