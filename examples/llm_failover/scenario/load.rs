//! The scenario and its load.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use tokio::time::Instant;
use tower_breaker::BoxError;

use super::{
    Auth, BreakerConfig, Fault, FaultKind, Flavor, Progress, Provider, Sim, SimCounters, Summary,
    build_stack, run,
};

/// The traffic.
#[derive(Clone, Debug)]
pub struct Load {
    pub requests: usize,
    /// Requests per second, started on a fixed schedule.
    pub rate: f64,
    /// At most this many requests in flight; the others wait for a slot.
    pub concurrency: usize,
    /// A request not answered this long after its scheduled start (waiting for a slot
    /// included) fails: the user gave up.
    pub deadline: Duration,
    /// Every this many requests, one is a long prompt ([`LONG_PROMPT_TOKENS`] tokens).
    pub long_every: Option<usize>,
    /// Every this many requests, one is a prompt the content filters refuse ([`UNSAFE`]).
    pub unsafe_every: Option<usize>,
}

/// The estimated tokens of a long prompt: more than the first two providers' context windows
/// (8k and 16k), less than the others' (200k, 1M).
pub const LONG_PROMPT_TOKENS: usize = 20_000;

impl Load {
    /// The prompt of request `i`.
    pub(crate) fn prompt(&self, i: usize) -> Prompt {
        let every = |n: Option<usize>, at: usize| n.is_some_and(|n| n > 0 && i % n == at % n);
        if every(self.long_every, 25) {
            Prompt::Long
        } else if every(self.unsafe_every, 10) {
            Prompt::Unsafe
        } else {
            Prompt::Short
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Prompt {
    Short,
    Long,
    Unsafe,
}

/// Providers, breakers and load.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub sims: Vec<Sim>,
    pub breaker: BreakerConfig,
    pub load: Load,
}

impl Scenario {
    /// The example's scenario: 10,000 requests at 800/s (12.5 s); every 50th prompt is long
    /// (20k tokens), every 50th another is one the content filters refuse.
    ///
    /// - `azure` (Azure OpenAI, a gpt-4 deployment with an 8k context window and Azure's
    ///   content filter; 60-80 ms, $0.0060 a call) answers 500s after ~250 ms from 2 s to 8 s.
    /// - `openai` (gpt-3.5-turbo, 16k; 70-90 ms, $0.0010: the cheap one) has spent its quota
    ///   from 4 s on: `429 insufficient_quota`.
    /// - `anthropic` (claude-3-5-haiku, 200k; 90-120 ms, $0.0040) is overloaded from 3 s to
    ///   6 s: `529 overloaded_error`.
    /// - `backup` (gpt-4.1, 1M; 250-300 ms, $0.0120: a dedicated deployment) is always
    ///   healthy, slower and dearer.
    ///
    /// Long prompts go from `azure` to the next member with a larger context window
    /// (`anthropic`, then `backup`), past `openai`; refused prompts go back to the caller.
    pub fn standard() -> Self {
        let ms = Duration::from_millis;
        let s = Duration::from_secs;
        let sim = |name, model, flavor, price, latency, jitter, context_tokens| Sim {
            name,
            model,
            flavor,
            price,
            latency: ms(latency),
            jitter: ms(jitter),
            timeout: s(2),
            context_tokens,
            content_filter: false,
            long_context: false,
            faults: vec![],
        };
        let fault = |from, until, kind| Fault { from, until, kind };
        Self {
            sims: vec![
                Sim {
                    content_filter: true,
                    faults: vec![fault(s(2), s(8), FaultKind::ServerError { latency: ms(250) })],
                    ..sim("azure", "gpt-4", Flavor::Azure, 0.0060, 60, 20, 8_192)
                },
                Sim {
                    faults: vec![fault(
                        s(4),
                        s(3600),
                        FaultKind::QuotaExhausted { latency: ms(20) },
                    )],
                    ..sim("openai", "gpt-3.5-turbo", Flavor::OpenAi, 0.0010, 70, 20, 16_385)
                },
                Sim {
                    long_context: true,
                    faults: vec![fault(s(3), s(6), FaultKind::Overloaded { latency: ms(15) })],
                    ..sim(
                        "anthropic",
                        "claude-3-5-haiku",
                        Flavor::Anthropic,
                        0.0040,
                        90,
                        30,
                        200_000,
                    )
                },
                Sim {
                    long_context: true,
                    timeout: s(3),
                    ..sim("backup", "gpt-4.1", Flavor::OpenAi, 0.0120, 250, 50, 1_047_576)
                },
            ],
            breaker: BreakerConfig {
                consecutive_failures: 5,
                open_duration: ms(1500),
                half_open_permits: 1,
            },
            load: Load {
                requests: 10_000,
                rate: 800.0,
                concurrency: 256,
                deadline: s(2),
                long_every: Some(50),
                unsafe_every: Some(50),
            },
        }
    }

    /// The same story, shortened for `tests/showcase.rs`: 800 requests at 250/s (3.2 s),
    /// `azure` down from 0.5 s to 1.5 s, `openai` out of quota from 0.9 s, `anthropic`
    /// overloaded from 0.7 s to 1.2 s.
    pub fn short() -> Self {
        let ms = Duration::from_millis;
        let mut s = Self::standard();
        let [azure, openai, anthropic, backup] = &mut s.sims[..] else {
            unreachable!()
        };
        azure.latency = ms(20);
        azure.jitter = ms(10);
        azure.timeout = ms(500);
        azure.faults[0] = Fault {
            from: ms(500),
            until: ms(1500),
            kind: FaultKind::ServerError { latency: ms(30) },
        };
        openai.latency = ms(20);
        openai.jitter = ms(10);
        openai.timeout = ms(500);
        openai.faults[0].from = ms(900);
        anthropic.latency = ms(30);
        anthropic.jitter = ms(10);
        anthropic.timeout = ms(500);
        anthropic.faults[0] = Fault {
            from: ms(700),
            until: ms(1200),
            kind: FaultKind::Overloaded { latency: ms(5) },
        };
        backup.latency = ms(60);
        backup.jitter = ms(20);
        backup.timeout = ms(1000);
        s.breaker = BreakerConfig {
            consecutive_failures: 3,
            open_duration: ms(400),
            half_open_permits: 1,
        };
        s.load = Load {
            requests: 800,
            rate: 250.0,
            concurrency: 32,
            deadline: Duration::from_secs(2),
            long_every: Some(50),
            unsafe_every: Some(50),
        };
        s
    }

    /// Starts the simulated providers; their phases count from `epoch`.
    pub async fn start(&self, epoch: Instant) -> Result<(Vec<Provider>, Vec<Arc<SimCounters>>), BoxError> {
        let mut providers = Vec::new();
        let mut counters = Vec::new();
        for sim in &self.sims {
            let (addr, c) = sim.start(epoch).await?;
            providers.push(Provider {
                name: sim.name.into(),
                base_url: format!("http://{addr}/v1"),
                api_key: None,
                auth: Auth::default(),
                long_context: sim.long_context,
                model: sim.model.into(),
                price: sim.price,
                timeout: sim.timeout,
                breaker: None,
            });
            counters.push(c);
        }
        Ok((providers, counters))
    }

    /// Runs the scenario once: fresh servers, a fresh stack, the whole load.
    pub async fn run(&self, breakers_on: bool, progress: impl FnMut(&Progress)) -> Result<Summary, BoxError> {
        let epoch = Instant::now() + Duration::from_millis(50);
        let (providers, sims) = self.start(epoch).await?;
        let stack = build_stack(&providers, &self.breaker, breakers_on, &|b| b)?;
        let recovers = self.sims.first().and_then(Sim::recovers_at);
        let mut summary = run(&stack, &self.load, epoch, recovers, progress).await;
        for (p, s) in summary.providers.iter_mut().zip(&sims) {
            p.server_requests = Some(s.requests.load(Ordering::Relaxed));
        }
        summary.breakers_on = breakers_on;
        Ok(summary)
    }
}
