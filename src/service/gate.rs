//! The admission logic every breaker service shares: the three readiness modes, and the
//! decision kept from `poll_ready` until `call`.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::time::Sleep;

use super::Readiness;
use crate::breaker::{BoxError, CircuitBreaker, CircuitOpen, Permit, WaitKey};

/// What one service instance decided in `poll_ready`, kept until `call`.
#[derive(Debug)]
enum Admission {
    None,
    Admitted(Permit),
    Rejected(CircuitOpen),
}

/// A breaker plus one service instance's admission. Cloning shares the breaker and starts
/// with no admission.
#[derive(Debug)]
pub(crate) struct Gate {
    pub(crate) breaker: CircuitBreaker,
    pub(crate) readiness: Readiness,
    admission: Admission,
    sleep: Option<Pin<Box<Sleep>>>,
    /// Wait mode: this instance's waker slot in the breaker, held from its first `Pending`
    /// until it is admitted or dropped (so a caller that gives up leaves no waker behind).
    waiting: Option<WaitKey>,
}

impl Drop for Gate {
    #[inline]
    fn drop(&mut self) {
        if self.waiting.is_some() {
            self.stop_waiting(); // dropped while waiting: the caller gave up
        }
    }
}

impl Clone for Gate {
    fn clone(&self) -> Self {
        Self::new(self.breaker.clone(), self.readiness)
    }
}

impl Gate {
    pub(crate) const fn new(breaker: CircuitBreaker, readiness: Readiness) -> Self {
        Self {
            breaker,
            readiness,
            admission: Admission::None,
            sleep: None,
            waiting: None,
        }
    }

    /// Asks the breaker (once per `call`), then the inner service's readiness. An inner
    /// readiness error releases the permit, neutral, and propagates.
    #[inline]
    pub(crate) fn poll_ready<E: Into<BoxError>>(
        &mut self,
        cx: &mut Context<'_>,
        inner: impl FnOnce(&mut Context<'_>) -> Poll<Result<(), E>>,
    ) -> Poll<Result<(), BoxError>> {
        loop {
            match &self.admission {
                Admission::Admitted(_) => break,
                Admission::Rejected(_) => return Poll::Ready(Ok(())),
                Admission::None => {}
            }
            match self.breaker.try_acquire_boxed() {
                Ok(permit) => {
                    self.admission = Admission::Admitted(permit);
                    if self.waiting.is_some() {
                        self.stop_waiting(); // it waited: its slot goes (not on the closed path)
                    }
                }
                Err(refused) => match self.readiness {
                    Readiness::FailFast => {
                        // Boxed where it was built (see `try_acquire_boxed`).
                        let refused: BoxError = refused;
                        return Poll::Ready(Err(refused));
                    }
                    Readiness::RejectOnCall => {
                        self.admission = Admission::Rejected(*refused);
                        return Poll::Ready(Ok(()));
                    }
                    Readiness::Wait => {
                        if self.wait(&refused, cx).is_pending() {
                            return Poll::Pending;
                        }
                    }
                },
            }
        }
        match inner(cx) {
            Poll::Ready(Err(e)) => {
                self.admission = Admission::None;
                Poll::Ready(Err(e.into()))
            }
            other => other.map_err(Into::into),
        }
    }

    /// The decision `call` acts on: a permit to call with, or the refusal to return.
    ///
    /// # Panics
    ///
    /// When `poll_ready` did not return `Ready(Ok)` first (tower's contract).
    #[inline]
    pub(crate) fn take(&mut self) -> Result<Permit, CircuitOpen> {
        match std::mem::replace(&mut self.admission, Admission::None) {
            Admission::Admitted(permit) => Ok(permit),
            Admission::Rejected(refused) => Err(refused),
            Admission::None => panic!("a circuit breaker service was called without a successful poll_ready"),
        }
    }

    #[cold]
    fn stop_waiting(&mut self) {
        if let Some(key) = self.waiting.take() {
            self.breaker.stop_waiting(key);
        }
    }

    /// Wait mode: registers for a wake-up when the breaker may admit again. `Ready(())` when
    /// it may already (try again), `Pending` otherwise.
    fn wait(&mut self, refused: &CircuitOpen, cx: &mut Context<'_>) -> Poll<()> {
        if !self
            .breaker
            .wait_for_change(refused, &mut self.waiting, cx.waker())
        {
            return Poll::Ready(());
        }
        if let Some(deadline) = self.breaker.next_deadline() {
            let sleep = match &mut self.sleep {
                Some(sleep) => {
                    sleep.as_mut().reset(deadline);
                    sleep
                }
                slot => slot.insert(Box::pin(tokio::time::sleep_until(deadline))),
            };
            if sleep.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::{convert::Infallible, task::Waker};

    use super::*;

    fn poll(gate: &mut Gate, waker: &Waker) -> Poll<Result<(), BoxError>> {
        gate.poll_ready(&mut Context::from_waker(waker), |_| {
            Poll::Ready(Ok::<_, Infallible>(()))
        })
    }

    /// Issue 14 point 4: waiters that give up take their wakers with them; the table of slots
    /// does not grow with them, and those still waiting are woken.
    #[tokio::test(start_paused = true)]
    async fn abandoned_waiters_free_their_slots_and_the_rest_are_woken() {
        let b = CircuitBreaker::builder("w")
            .consecutive_failures(1)
            .build()
            .unwrap();
        b.force_open();
        let mut stays = Gate::new(b.clone(), Readiness::Wait);
        assert!(poll(&mut stays, Waker::noop()).is_pending());
        assert_eq!(b.waiting(), (1, 1));
        for _ in 0..10_000 {
            let mut gives_up = Gate::new(b.clone(), Readiness::Wait);
            assert!(poll(&mut gives_up, Waker::noop()).is_pending());
            assert_eq!(b.waiting(), (2, 2));
            drop(gives_up);
            assert_eq!(b.waiting(), (1, 2), "the slot and its waker are freed on drop");
        }
        // One instance polled again (from another task each time) keeps one slot, one waker.
        for _ in 0..1_000 {
            let task = std::sync::Arc::new(NoopWake);
            assert!(poll(&mut stays, &Waker::from(task)).is_pending());
        }
        assert_eq!(b.waiting(), (1, 2));
        b.reset(); // a manual change wakes the one still waiting
        assert_eq!(b.waiting().0, 0, "woken: its waker is spent");
        assert!(matches!(poll(&mut stays, Waker::noop()), Poll::Ready(Ok(()))));
        assert_eq!(b.waiting(), (0, 0), "admitted: its slot is freed");
    }

    struct NoopWake;

    impl std::task::Wake for NoopWake {
        fn wake(self: std::sync::Arc<Self>) {}
    }
}
