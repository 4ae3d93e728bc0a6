//! A failover chain over three LLM providers and a cache of earlier good answers.
//!
//! `openai` is down (connection errors), `anthropic` is rate-limited (429 with a wait, which
//! trips its breaker for that long), `mistral` is healthy until it goes down halfway through;
//! the last resort answers from the answers the providers gave before. Every provider has its
//! own breaker; open ones are skipped without being called.
//!
//! Run with `cargo run --example failover` (about 3 seconds).

use std::{
    collections::HashMap,
    fmt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU8, Ordering},
    },
    time::Duration,
};

use tower::{Service, ServiceExt, service_fn, util::BoxCloneService};
use tower_breaker::{
    BoxError, CircuitBreaker, CircuitBreakerLayer, Failover, Layer, Outcome,
    fallback::{CloneRequest, FallbackError, Provenance, RecordProvenance},
};

#[derive(Clone, Debug)]
struct Prompt(String);

#[derive(Debug)]
struct Completion {
    text: String,
    route: String,
}

impl RecordProvenance for Completion {
    fn record_provenance(&mut self, provenance: Provenance) {
        self.route = provenance.to_string();
    }
}

/// What a provider's client would return.
#[derive(Debug)]
enum ProviderError {
    Down,
    RateLimited(Duration),
    NotCached,
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Down => f.write_str("connection refused"),
            Self::RateLimited(d) => write!(f, "429 too many requests (retry after {}ms)", d.as_millis()),
            Self::NotCached => f.write_str("no earlier answer for this prompt"),
        }
    }
}

impl std::error::Error for ProviderError {}

/// One classifier for the breakers and the failover: a 429's wait trips the breaker for that
/// long; any other error is a failure.
fn classify(result: Result<&Completion, &BoxError>) -> Outcome {
    match result {
        Ok(_) => Outcome::Success,
        Err(e) => match e.downcast_ref::<ProviderError>() {
            Some(ProviderError::RateLimited(wait)) => Outcome::Trip(*wait),
            _ => Outcome::Failure,
        },
    }
}

const HEALTHY: u8 = 0;
const DOWN: u8 = 1;
const RATE_LIMITED: u8 = 2;

type Cache = Arc<Mutex<HashMap<String, String>>>;
type Member = BoxCloneService<Prompt, Completion, BoxError>;

/// A simulated provider (30 ms per call) that remembers its good answers in `cache`, behind
/// its own breaker.
fn provider(name: &'static str, mode: Arc<AtomicU8>, cache: Cache) -> (CircuitBreaker, Member) {
    let breaker = CircuitBreaker::builder(name)
        .consecutive_failures(2)
        .open_duration(Duration::from_secs(2))
        .build()
        .expect("valid breaker");
    let client = service_fn(move |prompt: Prompt| {
        let (mode, cache) = (mode.load(Ordering::SeqCst), cache.clone());
        async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            match mode {
                DOWN => Err::<_, BoxError>(ProviderError::Down.into()),
                RATE_LIMITED => Err(ProviderError::RateLimited(Duration::from_millis(1500)).into()),
                _ => {
                    let text = format!("{name} says: {} is a fine question", prompt.0);
                    cache.lock().unwrap().insert(prompt.0, text.clone());
                    Ok(Completion {
                        text,
                        route: String::new(),
                    })
                }
            }
        }
    });
    let guarded = CircuitBreakerLayer::new(breaker.clone())
        .classify(classify)
        .layer(client);
    (breaker, BoxCloneService::new(guarded))
}

/// The last resort: earlier good answers, no network.
fn cached(cache: Cache) -> Member {
    BoxCloneService::new(service_fn(move |prompt: Prompt| {
        let hit = cache.lock().unwrap().get(&prompt.0).cloned();
        async move {
            match hit {
                Some(text) => Ok(Completion {
                    text: format!("{text} (cached)"),
                    route: String::new(),
                }),
                None => Err::<_, BoxError>(ProviderError::NotCached.into()),
            }
        }
    }))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let cache = Cache::default();
    let openai_mode = Arc::new(AtomicU8::new(DOWN));
    let anthropic_mode = Arc::new(AtomicU8::new(RATE_LIMITED));
    let mistral_mode = Arc::new(AtomicU8::new(HEALTHY));
    let (openai, a) = provider("openai", openai_mode.clone(), cache.clone());
    let (anthropic, b) = provider("anthropic", anthropic_mode.clone(), cache.clone());
    let (mistral, c) = provider("mistral", mistral_mode.clone(), cache.clone());

    let fallbacks = Arc::new(Mutex::new(0u32));
    let counter = fallbacks.clone();
    let mut chain = Failover::new([
        ("openai", a.clone()),
        ("anthropic", b.clone()),
        ("mistral", c.clone()),
        ("cache", cached(cache.clone())),
    ])
    .on_fallback(move |_| *counter.lock().unwrap() += 1)
    .on_failure(CloneRequest::new().classify(classify));

    let ask = async |chain: &mut Failover<Member, _>, prompt: &str| {
        let started = tokio::time::Instant::now();
        let result: Result<Completion, BoxError> = chain.ready().await?.call(Prompt(prompt.to_owned())).await;
        let ms = started.elapsed().as_millis();
        match result {
            Ok(c) => println!("{prompt:>12} -> {} [{ms} ms]\n{:>16}{}", c.text, "", c.route),
            Err(e) => {
                println!("{prompt:>12} -> error: {e} [{ms} ms]");
                if let Some(f) = e.downcast_ref::<FallbackError>() {
                    for s in f.skipped() {
                        println!("{:>16}{s}", "");
                    }
                }
            }
        }
        Ok::<_, BoxError>(())
    };
    let states = || {
        format!(
            "breakers: openai {}, anthropic {}, mistral {}",
            openai.state(),
            anthropic.state(),
            mistral.state()
        )
    };

    println!("== openai down, anthropic rate-limited, mistral healthy");
    ask(&mut chain, "rust").await?;
    ask(&mut chain, "tower").await?;
    ask(&mut chain, "tokio").await?;
    println!("{}\n", states());

    println!("== mistral goes down too: the cache answers what it has seen");
    mistral_mode.store(DOWN, Ordering::SeqCst);
    ask(&mut chain, "rust").await?;
    ask(&mut chain, "hyper").await?;
    ask(&mut chain, "tower").await?;
    println!("{}\n", states());

    println!("== without the cache, every provider is open: fail fast, nothing is called");
    let mut providers = Failover::new([("openai", a), ("anthropic", b), ("mistral", c)]);
    let started = tokio::time::Instant::now();
    let err = providers.ready().await.map(|_| ()).unwrap_err();
    println!("error after {} ms: {err}", started.elapsed().as_millis());
    println!("is_circuit_open: {}\n", tower_breaker::is_circuit_open(&err));

    println!("== 2 s later openai is back: its breaker lets a probe through");
    openai_mode.store(HEALTHY, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    ask(&mut chain, "hyper").await?;
    println!("{}", states());
    println!(
        "\n{} of 7 requests were served by a fallback",
        fallbacks.lock().unwrap()
    );
    Ok(())
}
