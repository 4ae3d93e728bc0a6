//! The showcase: an LLM client that fails over between three providers, with and without
//! circuit breakers, under a realistic outage.
//!
//! ```sh
//! cargo run --release --example llm_failover                 # both runs, side by side (~25 s)
//! cargo run --release --example llm_failover -- --no-breaker  # only the baseline
//! cargo run --release --example llm_failover -- --config providers.toml   # real providers
//! cargo run --release --example llm_failover -- --serve 127.0.0.1:8080    # a failover proxy
//! cargo run --release --example llm_failover --features serde,prometheus-client,dashboard -- --serve 127.0.0.1:8080
//! cargo run --release --example llm_failover -- --plot docs/llm_failover.svg   # both runs as one chart
//! ```
//!
//! # What it shows
//!
//! With no arguments it starts four simulated OpenAI-compatible providers on `127.0.0.1`
//! (real hyper servers answering `POST /v1/chat/completions` with realistic latency, and with
//! each provider's real error bodies and headers):
//!
//! - `azure` (Azure OpenAI, a gpt-4 deployment: 8k tokens of context and a content filter;
//!   ~70 ms) fails with 500s from second 2 to second 8, each after ~250 ms, then recovers;
//! - `openai` (gpt-3.5-turbo, 16k, the cheapest) runs out of quota at second 4: `429
//!   insufficient_quota`, which does not heal in seconds;
//! - `anthropic` (claude-3-5-haiku, 200k, ~105 ms) is overloaded from second 3 to second 6:
//!   `529 overloaded_error`;
//! - `backup` (gpt-4.1, 1M, ~275 ms) is always healthy, slower and dearer.
//!
//! Every 50th prompt is long (20k tokens): `azure` and `openai` answer 400
//! `context_length_exceeded`, and the request goes to the next provider with a larger context
//! window (`anthropic`, then `backup`). Every 50th another prompt trips `azure`'s content
//! filter (400 `content_filter`): the refusal goes back to the caller, never to another
//! provider, and no breaker counts it.
//!
//! The client is the stack a production service would run (see `scenario/`): one hyper-util
//! client; per provider a breaker classified by `LlmClassifier` (5xx, 529 and timeouts are
//! failures, a quota error opens it for `max_open_duration`, a 400 about the request is
//! ignored) over a timeout over `LlmErrorLayer` (which reads the kind from the error body); a
//! `Failover` azure → openai → anthropic → backup that skips an open breaker without calling
//! it and, after a call, routes by kind (`LlmRouting`). 10,000 requests go out at 800/s, at
//! most 256 in flight, each with a 2 s deadline (waiting for a slot included).
//!
//! It runs twice: with the breakers, then with the same stack and every breaker disabled
//! (the routing by kind stays). One line a second shows each breaker's state, the requests
//! each provider served, the calls breakers refused (fast-fails), failures and latency; the
//! summary compares the runs: calls wasted on a down provider, provider errors and the
//! requests they moved on by kind, refusals returned to the caller, failures the user saw,
//! the time from `azure`'s recovery to its breaker closing, and the cost.
//!
//! Without breakers every request first waits for `azure`'s 500 (and, from second 4, for
//! `openai`'s 429, and for `anthropic`'s 529) before it reaches a provider that answers: it
//! pays for the dead provider's calls, holds its slot longer, the in-flight limit fills up,
//! the queue grows and requests miss their deadline. With breakers a down provider is called
//! a handful of times per open period, the one out of quota once; the rest goes straight to a
//! provider that answers.
//!
//! The example needs the `llm` feature, on by default (`--no-default-features` skips it).
//!
//! # Real providers: `--config FILE`
//!
//! A TOML file lists OpenAI-compatible upstreams in failover order: base URL, the name of the
//! environment variable holding the key and the header it goes in (`Authorization: Bearer`, or
//! Azure's `api-key`), model, price per call, whether it takes long prompts (see `config.rs`,
//! which has entries for Azure OpenAI's and Anthropic's OpenAI-compatible endpoints):
//!
//! ```toml
//! [[provider]]
//! name = "openai"
//! base_url = "https://api.openai.com/v1"
//! api_key_env = "OPENAI_API_KEY"
//! model = "gpt-4o-mini"
//! price = 0.0004
//! ```
//!
//! `https://` goes through rustls (hyper-rustls, ring, Mozilla's roots from `webpki-roots`: no
//! system certificate store is read); `http://` is plain (a local model, a gateway). The key
//! is sent in its header and never printed or logged. Without `--serve`, it
//! sends `--requests N` (default 5) requests, one a second, and prints the summary.
//!
//! Each provider's breaker takes its settings from `[breaker]` and its own
//! `[provider.breaker]`: with `--features serde`, every setting of the crate's
//! `config::BreakerConfig` (trip rules, windows, backoff, half-open), durations as `"30s"`.
//!
//! # A proxy: `--serve ADDR`
//!
//! The same stack behind an OpenAI-compatible endpoint, with `/health/circuit-breakers` (the
//! crate's health report), `/metrics` (the crate's Prometheus integration; both routes in
//! full with `--features serde,prometheus-client`) and `/dashboard/` (the live status page,
//! with `--features dashboard`). Over the simulated providers unless `--config` is given.
//!
//! # A chart: `--plot FILE.svg`
//!
//! Runs the scenario with and without breakers (as with no option) and writes one SVG, one
//! panel per run over the same time axis: requests served per second by each provider,
//! user-visible failures per second, p99 latency, and each breaker's state as a band (see
//! `plot.rs`).

mod config;
mod plot;
mod scenario;
mod serve;

#[cfg(all(feature = "serde", feature = "prometheus-client"))]
#[path = "../support/health_routes.rs"]
#[allow(dead_code)]
mod health_routes;

use std::{
    io::{IsTerminal, Write},
    net::SocketAddr,
    time::Duration,
};

use tower_breaker::{BoxError, State};

use scenario::{Load, PRICING, Progress, Provider, Scenario, Summary};

const USAGE: &str =
    "usage: llm_failover [--no-breaker] [--requests N] [--config FILE] [--serve ADDR] [--plot FILE.svg]

  (no option)    the simulated scenario, with breakers and without, side by side
  --no-breaker   only the run without breakers (with --serve: a proxy without breakers)
  --requests N   requests to send (scenario: 10000; with --config: 5, one a second)
  --config FILE  real OpenAI-compatible providers from a TOML file (see config.rs), e.g.
                   [[provider]]
                   name = \"openai\"
                   base_url = \"https://api.openai.com/v1\"   # https:// or http://
                   api_key_env = \"OPENAI_API_KEY\"           # the variable's name, not the key
                   model = \"gpt-4o-mini\"
                   price = 0.0004                           # dollars per call
                   auth = \"bearer\"                          # or \"api-key\" (Azure OpenAI)
                   long_context = false                     # true: takes prompts too long before
                   [provider.breaker]                       # optional, over [breaker]: every
                   failure_rate = 0.5                       # breaker setting (feature serde;
                   open_duration = \"1m\"                     # see config.rs)
  --serve ADDR   an OpenAI-compatible failover proxy on ADDR, with /health/circuit-breakers,
                 /metrics and /dashboard/
  --plot FILE    the simulated scenario, then one SVG of both runs: requests served per
                 second by each provider, failures, p99 latency, breaker states";

#[derive(Debug, Default)]
struct Args {
    no_breaker: bool,
    config: Option<String>,
    serve: Option<SocketAddr>,
    requests: Option<usize>,
    plot: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value\n{USAGE}"));
        match arg.as_str() {
            "--no-breaker" => args.no_breaker = true,
            "--config" => args.config = Some(value("--config")?),
            "--plot" => args.plot = Some(value("--plot")?),
            "--serve" => args.serve = Some(value("--serve")?.parse().map_err(|e| format!("--serve: {e}"))?),
            "--requests" => {
                args.requests = Some(
                    value("--requests")?
                        .parse()
                        .map_err(|e| format!("--requests: {e}"))?,
                )
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
            Some(config::Config::parse(&text)?)
        }
        None => None,
    };
    if let Some(addr) = args.serve {
        return serve_mode(addr, config.as_ref(), !args.no_breaker).await;
    }
    if let Some(config) = &config {
        return real_mode(config, args.requests.unwrap_or(5), !args.no_breaker).await;
    }

    let mut scenario = Scenario::standard();
    if let Some(n) = args.requests {
        scenario.load.requests = n;
    }
    describe(&scenario);
    let started = std::time::Instant::now();
    let mut runs = Vec::new();
    if !args.no_breaker {
        println!("\n== run 1: breakers on");
        runs.push(record(&scenario, true).await?);
        end_live();
    }
    println!(
        "\n== run {}: breakers off (the same stack, every breaker disabled)",
        runs.len() + 1
    );
    runs.push(record(&scenario, false).await?);
    end_live();
    println!();
    let summaries: Vec<Summary> = runs.iter().map(|r| r.summary.clone()).collect();
    print_summary(&summaries);
    println!(
        "\nwasted: calls that failed (500, 429, 529, timeout). refused by a breaker: calls an open breaker \
         skipped, sending the request on at once. failures: requests not answered within the deadline or \
         whose last provider failed; a refusal of the request (content filter, prompt too long) goes back \
         to the caller and is counted apart."
    );
    println!("{PRICING}");
    println!("(took {:.1} s)", started.elapsed().as_secs_f64());
    if let Some(path) = &args.plot {
        plot::write(std::path::Path::new(path), &scenario, &runs)?;
        println!("chart: {path}");
    }
    Ok(())
}

/// One run of the scenario, printed as it goes, with its samples kept for `--plot`.
async fn record(scenario: &Scenario, breakers_on: bool) -> Result<plot::Run, BoxError> {
    let mut print = printer(&scenario.load);
    let mut samples = Vec::new();
    let summary = scenario
        .run(breakers_on, |p: &Progress| {
            print(p);
            samples.push(p.clone());
        })
        .await?;
    Ok(plot::Run { summary, samples })
}

fn describe(s: &Scenario) {
    println!(
        "{} simulated OpenAI-compatible providers on 127.0.0.1, answering with each provider's real error bodies:",
        s.sims.len()
    );
    for sim in &s.sims {
        let faults: Vec<String> = sim
            .faults
            .iter()
            .map(|f| match f.until.as_secs() {
                3600.. => format!("{} from {}s on", f.kind, f.from.as_secs_f64()),
                _ => format!(
                    "{} from {}s to {}s",
                    f.kind,
                    f.from.as_secs_f64(),
                    f.until.as_secs_f64()
                ),
            })
            .collect();
        println!(
            "  {:<10} {:>4} ms, ${:.4} a call, {} ({} tokens){}: {}",
            sim.name,
            (sim.latency + sim.jitter / 2).as_millis(),
            sim.price,
            sim.model,
            sim.context_tokens,
            if sim.content_filter {
                ", content filter"
            } else {
                ""
            },
            if faults.is_empty() {
                "always healthy".into()
            } else {
                faults.join(", ")
            }
        );
    }
    println!(
        "Every 50th prompt is long ({} tokens: to the next long-context provider), every 50th another \
         is refused by the content filter (back to the caller).",
        scenario::LONG_PROMPT_TOKENS
    );
    let names: Vec<&str> = s.sims.iter().map(|sim| sim.name).collect();
    println!(
        "Each second: the breakers' states and requests served, in the order {}; calls refused by \
         open breakers (fast-fails); failed requests; latency from the scheduled start.",
        names.join("/")
    );
    let l = &s.load;
    println!(
        "{} requests at {}/s, at most {} in flight, {} s deadline each; breakers trip on {} consecutive \
         failures (a quota error at once, for 10 min) and stay open {} s",
        l.requests,
        l.rate,
        l.concurrency,
        l.deadline.as_secs_f64(),
        s.breaker.consecutive_failures,
        s.breaker.open_duration.as_secs_f64()
    );
}

fn state(s: State) -> &'static str {
    match s {
        State::Closed => "closed",
        State::Open => "OPEN",
        State::HalfOpen => "half-open",
        State::ForcedOpen => "forced-open",
        State::Disabled => "off",
    }
}

fn dollars(x: f64) -> String {
    if x != 0.0 && x.abs() < 1.0 {
        format!("${x:.4}")
    } else {
        format!("${x:.2}")
    }
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{}ms", d.as_millis()))
}

/// Clears the live line, if any.
fn end_live() {
    if std::io::stdout().is_terminal() {
        print!("\r\x1b[2K");
    }
}

/// Prints one line a second; on a terminal, also a live line in between.
fn printer(load: &Load) -> impl FnMut(&Progress) + use<> {
    let live = std::io::stdout().is_terminal();
    let mut last_second = 0;
    let mut last_fast_fails = 0;
    let total = load.requests;
    move |p: &Progress| {
        let states: Vec<String> = p.states.iter().map(|s| format!("{:<9}", state(*s))).collect();
        let served: Vec<String> = p.served.iter().map(u64::to_string).collect();
        let second = p.elapsed.as_secs();
        let whole = second > last_second;
        let fast_fails = p.fast_fails - last_fast_fails;
        let line = format!(
            "{:>3}s  breakers {}  served {:<13} fast-fails {:<5} failed {:<4} p50 {:>6} p99 {:>6}",
            if whole { second } else { second + 1 },
            states.join(" "),
            served.join("/"),
            fast_fails,
            p.failures,
            ms(p.p50),
            ms(p.p99),
        );
        let mut out = std::io::stdout().lock();
        if whole {
            last_second = second;
            last_fast_fails = p.fast_fails;
            if live {
                let _ = write!(out, "\r\x1b[2K");
            }
            let _ = writeln!(out, "{line}");
        } else if live {
            let _ = write!(out, "\r\x1b[2K{line} [{}/{}]", p.done, total);
            let _ = out.flush();
        }
    }
}

fn print_summary(runs: &[Summary]) {
    let heads: Vec<&str> = runs
        .iter()
        .map(|r| {
            if r.breakers_on {
                "breakers on"
            } else {
                "breakers off"
            }
        })
        .collect();
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut row = |label: String, f: &dyn Fn(&Summary) -> String| {
        rows.push((label, runs.iter().map(f).collect()));
    };
    let names: Vec<String> = runs[0].providers.iter().map(|p| p.name.clone()).collect();
    for (i, name) in names.iter().enumerate() {
        row(format!("requests sent to {name}"), &|r| {
            r.providers[i].calls.to_string()
        });
    }
    row("calls wasted on a down provider".into(), &|r| {
        r.wasted().to_string()
    });
    for (i, name) in names.iter().enumerate() {
        row(format!("  on {name}"), &|r| r.providers[i].wasted.to_string());
    }
    row(format!("times a breaker opened ({})", names.join("/")), &|r| {
        let opened: Vec<String> = r.providers.iter().map(|p| p.open_periods.to_string()).collect();
        opened.join("/")
    });
    row("calls refused by a breaker (free)".into(), &|r| {
        r.providers.iter().map(|p| p.fast_fails).sum::<u64>().to_string()
    });
    for (i, name) in names.iter().enumerate() {
        row(format!("requests served by {name}"), &|r| {
            r.providers[i].served.to_string()
        });
    }
    row("requests served by a fallback".into(), &|r| {
        r.served_by_fallback.to_string()
    });
    row("user-visible failures".into(), &|r| {
        if r.failures_deadline == r.failures {
            r.failures.to_string()
        } else {
            format!("{} ({} deadline)", r.failures, r.failures_deadline)
        }
    });
    kind_rows(runs, &mut row);
    row(format!("{} recovered -> breaker closed", names[0]), &|r| {
        r.recovery_to_close
            .map_or("-".into(), |d| format!("{:.2} s", d.as_secs_f64()))
    });
    row("latency p50 / p99".into(), &|r| {
        format!("{} / {} ms", r.p50.as_millis(), r.p99.as_millis())
    });
    for (i, name) in names.iter().enumerate() {
        row(format!("cost of {name}"), &|r| dollars(r.providers[i].cost()));
    }
    row("estimated cost".into(), &|r| dollars(r.cost()));
    row("  if only answers were billed".into(), &|r| {
        dollars(r.answers_cost())
    });
    row("cost per 1,000 requests served".into(), &|r| {
        dollars(r.cost() * 1000.0 / r.served.max(1) as f64)
    });
    let label_w = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    let col_w = rows
        .iter()
        .flat_map(|(_, v)| v.iter().map(String::len))
        .chain(heads.iter().map(|h| h.len()))
        .max()
        .unwrap_or(0)
        + 2;
    print!("{:label_w$}", "");
    for h in &heads {
        print!("{h:>col_w$}");
    }
    println!();
    println!("{}", "-".repeat(label_w + col_w * heads.len()));
    for (label, values) in &rows {
        print!("{label:label_w$}");
        for v in values {
            print!("{v:>col_w$}");
        }
        println!();
    }
}

/// A summary row: its label, and its value in a run.
type Row<'a> = &'a mut dyn FnMut(String, &dyn Fn(&Summary) -> String);
/// A count by kind in a run.
type ByKind<'a> = &'a dyn Fn(&Summary, tower_breaker::llm::LlmErrorKind) -> u64;

/// The rows by kind of provider error: answers of each kind, requests moved on by each, and
/// refusals returned to the caller (kinds no run saw are left out).
fn kind_rows(runs: &[Summary], row: Row<'_>) {
    use tower_breaker::llm::LlmErrorKind;
    let seen = |f: ByKind<'_>, kind| runs.iter().any(|r| f(r, kind) > 0);
    let answers = |r: &Summary, kind| r.answers_of(kind);
    let moved = |r: &Summary, kind| r.moved[scenario::kind_index(kind)];
    let refused = |r: &Summary, kind| r.refused[scenario::kind_index(kind)];
    let tables: [(&str, ByKind<'_>); 3] = [
        ("provider errors, by kind", &answers),
        ("requests moved on, by kind", &moved),
        ("refusals returned to the caller", &refused),
    ];
    for (title, f) in tables {
        row(title.into(), &|r| {
            LlmErrorKind::ALL
                .iter()
                .map(|k| f(r, *k))
                .sum::<u64>()
                .to_string()
        });
        for kind in LlmErrorKind::ALL.into_iter().filter(|k| seen(f, *k)) {
            row(format!("  {kind}"), &|r| f(r, kind).to_string());
        }
    }
}

/// `--config` without `--serve`: a few requests to real providers.
async fn real_mode(config: &config::Config, requests: usize, breakers_on: bool) -> Result<(), BoxError> {
    let providers = config.providers(|var| std::env::var(var).ok())?;
    print_providers(&providers);
    let stack = scenario::build_stack(&providers, &config.breaker(), breakers_on, &|b| b)?;
    let load = Load {
        requests,
        rate: 1.0,
        concurrency: 4,
        deadline: Duration::from_secs(120),
        long_every: None,
        unsafe_every: None,
    };
    let epoch = tokio::time::Instant::now();
    let mut summary = scenario::run(&stack, &load, epoch, None, printer(&load)).await;
    end_live();
    summary.breakers_on = breakers_on;
    println!();
    print_summary(&[summary]);
    println!("\nprices are the config's, per call; 429s and connection errors are not counted");
    Ok(())
}

fn print_providers(providers: &[Provider]) {
    println!("providers, in failover order:");
    let w = providers.iter().map(|p| p.name.len()).max().unwrap_or(0);
    for p in providers {
        // The key is never printed: only whether there is one.
        println!(
            "  {:<w$}  {} model {} ${} a call{}",
            p.name,
            p.base_url,
            p.model,
            p.price,
            if p.api_key.is_some() { ", with a key" } else { "" }
        );
    }
}

async fn serve_mode(
    addr: SocketAddr,
    config: Option<&config::Config>,
    breakers_on: bool,
) -> Result<(), BoxError> {
    let (providers, breaker) = match config {
        Some(c) => (c.providers(|var| std::env::var(var).ok())?, c.breaker()),
        None => {
            let s = Scenario::standard();
            let (providers, _) = s.start(tokio::time::Instant::now()).await?;
            println!("over the simulated providers (their faults play out in the first 8 s)");
            (providers, s.breaker)
        }
    };
    print_providers(&providers);

    // Operations: Prometheus metrics (feature `prometheus-client`) and the live dashboard
    // (feature `dashboard`) instrument each breaker's builder and watch the built breaker.
    #[cfg(feature = "prometheus-client")]
    let mut registry = prometheus_client::registry::Registry::default();
    #[cfg(feature = "prometheus-client")]
    let metrics = tower_breaker::integrations::prometheus::BreakerMetrics::register(&mut registry);
    #[cfg(feature = "dashboard")]
    let dashboard = tower_breaker::integrations::dashboard::Dashboard::builder()
        .title("llm_failover: OpenAI-compatible failover proxy")
        .build()?;
    let instrument = {
        #[cfg(feature = "prometheus-client")]
        let metrics = metrics.clone();
        #[cfg(feature = "dashboard")]
        let dashboard = dashboard.clone();
        move |builder: tower_breaker::Builder| {
            #[cfg(feature = "prometheus-client")]
            let builder = metrics.instrument(builder);
            #[cfg(feature = "dashboard")]
            let builder = dashboard.instrument(builder);
            builder
        }
    };
    let stack = scenario::build_stack(&providers, &breaker, breakers_on, &instrument)?;
    for b in &stack.breakers {
        #[cfg(feature = "prometheus-client")]
        metrics.watch(b);
        #[cfg(feature = "dashboard")]
        dashboard.watch(b);
        let _ = b;
    }
    let proxy = serve::Proxy {
        chain: stack.chain,
        breakers: stack.breakers,
        #[cfg(feature = "prometheus-client")]
        registry: std::sync::Arc::new(registry),
        #[cfg(feature = "dashboard")]
        dashboard,
    };
    serve::serve(addr, proxy).await
}
