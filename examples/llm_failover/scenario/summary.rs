//! The summary.

use std::{sync::atomic::Ordering, time::Duration};

use tokio::time::Instant;
use tower_breaker::{State, llm::LlmErrorKind};

use super::{Ending, KINDS, Load, Record, Stack, kind_index, quantile};

/// One provider's line of the summary.
#[derive(Clone, Debug)]
pub struct ProviderSummary {
    pub name: String,
    pub price: f64,
    /// Calls sent to it.
    pub calls: u64,
    /// Calls that failed (5xx, 429, timeout): wasted on it while it was down.
    pub wasted: u64,
    /// Calls billed (see [`PRICING`]).
    pub billed: u64,
    /// Requests it served.
    pub served: u64,
    /// Calls its breaker refused.
    pub fast_fails: u64,
    /// Times its breaker opened.
    pub open_periods: u64,
    /// Requests the simulated server received (`None` for a real provider).
    pub server_requests: Option<u64>,
    /// Its answers by the kind of error it reported (`LlmErrorKind::ALL`'s order).
    pub kinds: [u64; KINDS],
}

impl ProviderSummary {
    pub fn cost(&self) -> f64 {
        self.billed as f64 * self.price
    }
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct Summary {
    pub breakers_on: bool,
    pub providers: Vec<ProviderSummary>,
    pub requests: u64,
    pub served: u64,
    /// Served by a member other than the first, or after the first was skipped or failed.
    pub served_by_fallback: u64,
    /// Requests the user saw fail: deadline, all open, or an error from the last member.
    pub failures: u64,
    pub failures_deadline: u64,
    /// Requests whose refusal went back to the caller, by kind (content filter, too long for
    /// every model reachable, invalid): answers about the request, not failures of a provider.
    pub refused: [u64; KINDS],
    /// Times a request moved on from a member, by the kind of failure that moved it.
    pub moved: [u64; KINDS],
    /// From the first provider's recovery to its breaker's closing (`None` when it did not
    /// close after the recovery, or breakers are off).
    pub recovery_to_close: Option<Duration>,
    /// Latency percentiles over every request (scheduled start to end).
    pub p50: Duration,
    pub p99: Duration,
    pub wall: Duration,
    pub concurrency: usize,
}

impl Summary {
    pub fn cost(&self) -> f64 {
        self.providers.iter().map(ProviderSummary::cost).sum()
    }

    /// The cost had providers billed only the answers they served (no 500, no timeout): the
    /// lower bound, where a breaker saves no money on the down provider and its recovery lag
    /// keeps traffic on a dearer fallback a little longer.
    pub fn answers_cost(&self) -> f64 {
        self.providers.iter().map(|p| p.served as f64 * p.price).sum()
    }

    pub fn wasted(&self) -> u64 {
        self.providers.iter().map(|p| p.wasted).sum()
    }

    /// Requests refused to the caller, every kind.
    pub fn refusals(&self) -> u64 {
        self.refused.iter().sum()
    }

    /// Provider answers of `kind`, every provider.
    pub fn answers_of(&self, kind: LlmErrorKind) -> u64 {
        self.providers.iter().map(|p| p.kinds[kind_index(kind)]).sum()
    }
}

pub(crate) fn summarise(
    stack: &Stack,
    load: &Load,
    records: &[Record],
    epoch: Instant,
    recovers: Option<Duration>,
    wall: Duration,
) -> Summary {
    let n = stack.providers.len();
    let mut served = vec![0u64; n];
    let (mut fallback, mut failures, mut deadline) = (0, 0, 0);
    let (mut refused, mut moved) = ([0; KINDS], [0; KINDS]);
    let mut latencies: Vec<Duration> = records.iter().map(|r| r.latency).collect();
    latencies.sort_unstable();
    for r in records {
        for (total, n) in moved.iter_mut().zip(r.moved) {
            *total += u64::from(n);
        }
        match r.ending {
            Ending::Served { by, fell_back } => {
                served[by] += 1;
                if by > 0 || fell_back {
                    fallback += 1;
                }
            }
            Ending::Refused { kind, .. } => refused[kind_index(kind)] += 1,
            Ending::Deadline => {
                failures += 1;
                deadline += 1;
            }
            Ending::AllOpen | Ending::Error => failures += 1,
        }
    }
    let breakers_on = stack.breakers.iter().all(|b| b.state() != State::Disabled);
    let recovery_to_close = match (recovers, stack.counters.first()) {
        (Some(at), Some(c)) if breakers_on => {
            let recovered = epoch + at;
            c.transitions
                .lock()
                .unwrap()
                .iter()
                .find(|(t, s)| *t >= recovered && *s == State::Closed)
                .map(|(t, _)| t.saturating_duration_since(recovered))
        }
        _ => None,
    };
    Summary {
        breakers_on,
        providers: stack
            .providers
            .iter()
            .zip(&stack.counters)
            .zip(served)
            .map(|((p, c), served)| {
                let calls = c.calls.load(Ordering::Relaxed);
                ProviderSummary {
                    name: p.name.clone(),
                    price: p.price,
                    calls,
                    wasted: c.wasted.load(Ordering::Relaxed),
                    billed: calls - c.free.load(Ordering::Relaxed).min(calls),
                    served,
                    fast_fails: c.fast_fails.load(Ordering::Relaxed),
                    open_periods: c.open_periods.load(Ordering::Relaxed),
                    server_requests: None,
                    kinds: std::array::from_fn(|i| c.kinds[i].load(Ordering::Relaxed)),
                }
            })
            .collect(),
        requests: records.len() as u64,
        served: records.len() as u64 - failures - refused.iter().sum::<u64>(),
        served_by_fallback: fallback,
        failures,
        failures_deadline: deadline,
        refused,
        moved,
        recovery_to_close,
        p50: quantile(&latencies, 0.5).unwrap_or_default(),
        p99: quantile(&latencies, 0.99).unwrap_or_default(),
        wall,
        concurrency: load.concurrency,
    }
}
