//! The background task: takes alerts off the queue, rate-limits them, and posts them one at a
//! time, in order.

use std::{collections::VecDeque, pin::Pin, sync::Arc};

use tokio::{sync::mpsc, time::Instant};

use super::{
    alert::Alert,
    limiter::{Limiter, Offer},
    post::Poster,
    shared::Shared,
};

type Delivery = Pin<Box<dyn Future<Output = ()> + Send>>;

pub(super) struct Worker {
    pub(super) rx: mpsc::Receiver<Alert>,
    pub(super) limiter: Limiter,
    /// Alerts waiting for the delivery in progress, at most `capacity`.
    pub(super) outbox: VecDeque<Alert>,
    pub(super) capacity: usize,
    pub(super) poster: Arc<Poster>,
    pub(super) shared: Arc<Shared>,
    pub(super) source: Option<String>,
}

impl Worker {
    /// Runs until every handle and every listener is gone, then posts what is left (alerts
    /// held by the rate limit included) and ends.
    pub(super) async fn run(mut self) {
        let mut delivery: Option<Delivery> = None;
        let mut open = true;
        loop {
            if delivery.is_none() {
                if let Some(alert) = self.outbox.pop_front() {
                    delivery = Some(Box::pin(self.poster.clone().deliver(alert, self.shared.clone())));
                } else if !open {
                    return;
                }
            }
            let due = self.limiter.next_due();
            tokio::select! {
                received = self.rx.recv(), if open => match received {
                    Some(alert) => self.offer(alert),
                    None => {
                        open = false;
                        self.take_due(true);
                    }
                },
                () = sleep_until(due), if due.is_some() => self.take_due(false),
                () = poll(&mut delivery), if delivery.is_some() => delivery = None,
            }
        }
    }

    fn offer(&mut self, mut alert: Alert) {
        alert.source.clone_from(&self.source);
        match self.limiter.offer(alert, Instant::now()) {
            Offer::Send(alert) => self.enqueue(alert),
            Offer::Held(true) => self.shared.count_suppressed(),
            Offer::Held(false) | Offer::Skipped => {}
        }
    }

    fn take_due(&mut self, all: bool) {
        let mut due = Vec::new();
        self.limiter.take_due(Instant::now(), all, |a| due.push(a));
        for alert in due {
            self.enqueue(alert);
        }
    }

    fn enqueue(&mut self, alert: Alert) {
        if self.outbox.len() >= self.capacity {
            self.shared.count_dropped();
            tracing::debug!(breaker = %alert.breaker, "webhook: queue full; alert dropped");
        } else {
            self.outbox.push_back(alert);
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

async fn poll(delivery: &mut Option<Delivery>) {
    if let Some(d) = delivery {
        d.await;
    }
}
