//! The admission logic every breaker service shares: the three readiness modes, and the
//! decision kept from `poll_ready` until `call`.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::time::Sleep;

use super::Readiness;
use crate::breaker::{BoxError, CircuitBreaker, CircuitOpen, Permit};

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
            match self.breaker.try_acquire() {
                Ok(permit) => self.admission = Admission::Admitted(permit),
                Err(refused) => match self.readiness {
                    Readiness::FailFast => return Poll::Ready(Err(refused.into())),
                    Readiness::RejectOnCall => {
                        self.admission = Admission::Rejected(refused);
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

    /// Wait mode: registers for a wake-up when the breaker may admit again. `Ready(())` when
    /// it may already (try again), `Pending` otherwise.
    fn wait(&mut self, refused: &CircuitOpen, cx: &mut Context<'_>) -> Poll<()> {
        if !self.breaker.wait_for_change(refused, cx.waker()) {
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
