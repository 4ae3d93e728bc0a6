//! Driving the load.

use std::{
    sync::{Arc, Mutex, atomic::Ordering},
    time::Duration,
};

use tokio::{sync::Semaphore, task::JoinSet, time::Instant};
use tower::{Service, ServiceExt};
use tower_breaker::{
    AllUnavailable, CircuitBreaker, State,
    fallback::Provenance,
    llm::{LlmErrorKind, ProviderError},
};

use super::{
    ChatRequest, KINDS, LONG_PROMPT_TOKENS, Load, Prompt, Stack, Summary, UNSAFE, kind_index, summarise,
};

/// Prints a user-visible error with its causes the first time that text is seen (so a real
/// provider's DNS, TLS or 401 trouble is visible, once). Errors carry no request data and no key.
fn report_first(error: &(dyn std::error::Error + 'static)) {
    static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    let mut seen = SEEN.lock().unwrap();
    if seen.len() < 16 && !seen.contains(&text) {
        eprintln!("request failed: {text}");
        seen.push(text);
    }
}

/// How one request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Served by the member at this index; `fell_back` when another member was skipped or
    /// failed first.
    Served { by: usize, fell_back: bool },
    /// The caller got the member's refusal of *this request*: a content filter's, a prompt too
    /// long for every model that could take it, an invalid request. Not a failure of the
    /// providers (no other provider is asked, and no breaker counts it).
    Refused { by: usize, kind: LlmErrorKind },
    /// Not answered within the deadline.
    Deadline,
    /// Every member's breaker was open.
    AllOpen,
    /// The last member tried failed (an error, or a failed answer that stood: a 5xx, a 429).
    Error,
}

impl Ending {
    /// Whether the user saw a failure (not a refusal of the request).
    pub const fn is_failure(&self) -> bool {
        matches!(self, Ending::Deadline | Ending::AllOpen | Ending::Error)
    }
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Record {
    /// When it ended, from the start.
    pub(crate) done: Duration,
    /// From its scheduled start to its end.
    pub(crate) latency: Duration,
    pub(crate) ending: Ending,
    /// How many times the request moved on from a member, by the kind that moved it.
    pub(crate) moved: [u8; KINDS],
}

/// The state of a run, about every 200 ms.
#[derive(Clone, Debug)]
pub struct Progress {
    pub elapsed: Duration,
    pub states: Vec<State>,
    /// Requests served by each member, over the last second.
    pub served: Vec<u64>,
    /// Requests that failed, over the last second.
    pub failures: u64,
    /// Calls refused by breakers since the start (a refused call costs nothing and goes on).
    pub fast_fails: u64,
    /// Latency percentiles (scheduled start to end) of the requests that ended over the last
    /// second.
    pub p50: Option<Duration>,
    pub p99: Option<Duration>,
    pub done: usize,
    pub total: usize,
}

/// The `q` quantile of sorted durations.
pub fn quantile(sorted: &[Duration], q: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    Some(sorted[i])
}

/// Sends `load.requests` requests through `stack`, the i-th at `epoch + i / rate`, each with a
/// deadline, at most `load.concurrency` at once; calls `progress` about every 200 ms.
/// `recovers`: when the first provider recovered (to time its breaker's closing).
pub async fn run(
    stack: &Stack,
    load: &Load,
    epoch: Instant,
    recovers: Option<Duration>,
    mut progress: impl FnMut(&Progress),
) -> Summary {
    let records: Arc<Mutex<Vec<Record>>> = Arc::new(Mutex::new(Vec::with_capacity(load.requests)));
    let slots = Arc::new(Semaphore::new(load.concurrency));
    let names: Arc<[String]> = stack.providers.iter().map(|p| p.name.clone()).collect();
    let short = ChatRequest::user("Summarise the plot of Hamlet in one sentence.", 64);
    let document = "The parties agree as follows. ".repeat(LONG_PROMPT_TOKENS * 4 / 30 + 1);
    let long = ChatRequest::user(&format!("Summarise this contract: {document}"), 256);
    let unsafe_ = ChatRequest::user(&format!("{UNSAFE} Describe something the filter refuses."), 64);

    let driver = {
        let (records, chain, load, names) =
            (records.clone(), stack.chain.clone(), load.clone(), names.clone());
        let (short, long, unsafe_) = (short.clone(), long.clone(), unsafe_.clone());
        tokio::spawn(async move {
            let mut tasks = JoinSet::new();
            for i in 0..load.requests {
                let at = epoch + Duration::from_secs_f64(i as f64 / load.rate);
                tokio::time::sleep_until(at).await;
                let deadline = at + load.deadline;
                let request = match load.prompt(i) {
                    Prompt::Short => short.clone(),
                    Prompt::Long => long.clone(),
                    Prompt::Unsafe => unsafe_.clone(),
                };
                let (slots, mut chain, records, names) =
                    (slots.clone(), chain.clone(), records.clone(), names.clone());
                tasks.spawn(async move {
                    let ending = tokio::time::timeout_at(deadline, async {
                        let _slot = slots.acquire_owned().await.expect("never closed");
                        chain.ready().await?.call(request).await
                    })
                    .await;
                    let mut moved = [0u8; KINDS];
                    let ending = match ending {
                        Err(_) => Ending::Deadline,
                        Ok(Ok(res)) => {
                            let provenance = res.extensions().get::<Provenance>();
                            let by = provenance
                                .and_then(|p| names.iter().position(|n| n == p.served_by()))
                                .unwrap_or(0);
                            for s in provenance.map_or(&[][..], |p| p.skipped()) {
                                let kind = LlmErrorKind::ALL.iter().find(|k| Some(k.as_str()) == s.because());
                                if let Some(kind) = kind {
                                    moved[kind_index(*kind)] += 1;
                                }
                            }
                            let kind = res.extensions().get::<ProviderError>().map(ProviderError::kind);
                            match kind {
                                _ if res.status().is_success() => Ending::Served {
                                    by,
                                    fell_back: provenance.is_some_and(Provenance::fell_back),
                                },
                                Some(
                                    kind @ (LlmErrorKind::ContentPolicy
                                    | LlmErrorKind::ContextWindowExceeded
                                    | LlmErrorKind::InvalidRequest),
                                ) => Ending::Refused { by, kind },
                                _ => Ending::Error,
                            }
                        }
                        Ok(Err(e)) => {
                            report_first(&*e);
                            if e.is::<AllUnavailable>() {
                                Ending::AllOpen
                            } else {
                                Ending::Error
                            }
                        }
                    };
                    let now = Instant::now();
                    records.lock().unwrap().push(Record {
                        done: now.saturating_duration_since(epoch),
                        latency: now.saturating_duration_since(at),
                        ending,
                        moved,
                    });
                });
                // Reap finished tasks as we go.
                while tasks.try_join_next().is_some() {}
            }
            while tasks.join_next().await.is_some() {}
        })
    };
    tokio::pin!(driver);
    let mut ticks = tokio::time::interval_at(epoch + Duration::from_millis(200), Duration::from_millis(200));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut driver => break,
            _ = ticks.tick() => {
                let p = snapshot(stack, &records.lock().unwrap(), epoch, load.requests);
                progress(&p);
            }
        }
    }
    let wall = Instant::now().saturating_duration_since(epoch);
    let records = Arc::try_unwrap(records)
        .map(|m| m.into_inner().unwrap())
        .unwrap_or_else(|a| a.lock().unwrap().clone());
    summarise(stack, load, &records, epoch, recovers, wall)
}

fn snapshot(stack: &Stack, records: &[Record], epoch: Instant, total: usize) -> Progress {
    let elapsed = Instant::now().saturating_duration_since(epoch);
    let since = elapsed.saturating_sub(Duration::from_secs(1));
    let mut served = vec![0; stack.providers.len()];
    let (mut failures, mut latencies) = (0, Vec::new());
    for r in records.iter().filter(|r| r.done >= since) {
        match r.ending {
            Ending::Served { by, .. } => served[by] += 1,
            Ending::Refused { .. } => {}
            _ => failures += 1,
        }
        latencies.push(r.latency);
    }
    latencies.sort_unstable();
    Progress {
        elapsed,
        states: stack.breakers.iter().map(CircuitBreaker::state).collect(),
        served,
        failures,
        fast_fails: stack
            .counters
            .iter()
            .map(|c| c.fast_fails.load(Ordering::Relaxed))
            .sum(),
        p50: quantile(&latencies, 0.5),
        p99: quantile(&latencies, 0.99),
        done: records.len(),
        total,
    }
}
