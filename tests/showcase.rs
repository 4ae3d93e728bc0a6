//! The `llm_failover` example's scenario, shortened, run in-process over real sockets, and the
//! invariants of its summary. The example and this test share `scenario.rs` and `config.rs`.
//!
//! # Timing
//!
//! The project's tests do not depend on the wall clock; this one cannot use
//! `tokio::time::pause` because the providers are real hyper servers on real sockets. So its
//! assertions are counts and bounds derived from the breaker and load configuration, not from
//! the machine's speed:
//!
//! - calls wasted on a down provider are bounded by the trip threshold, the calls that can be
//!   in flight when the breaker trips (the load's concurrency limit), and one probe per open
//!   period (the breaker's listener counts the open periods);
//! - with the backup always healthy, no request fails: the deadline (2 s) is ~30 times a
//!   request's normal latency, and the breakers keep requests off the down providers;
//! - the primary's breaker closes within one open duration plus one probe after the primary
//!   recovers. A probe is bounded by the primary's timeout; 500 ms of slack covers a loaded
//!   scheduler, and the run goes on for 1.7 s after the recovery, more than that bound.
//!
//! The phases themselves are wall-clock (the primary is down from 0.5 s to 1.5 s of the run),
//! which none of the assertions depends on beyond the margins above.

#[path = "../examples/llm_failover/config.rs"]
mod config;
#[path = "../examples/llm_failover/scenario.rs"]
mod scenario;

use std::time::Duration;

use scenario::{Scenario, Summary};

fn check_bookkeeping(s: &Summary, scenario: &Scenario) {
    assert_eq!(s.requests, scenario.load.requests as u64);
    assert_eq!(s.served + s.failures, s.requests);
    assert_eq!(s.providers.iter().map(|p| p.served).sum::<u64>(), s.served);
    for p in &s.providers {
        assert!(p.wasted + p.served <= p.calls, "{p:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breakers_bound_waste_and_keep_every_request_served() {
    let scenario = Scenario::short();
    // Both runs at once, each with its own servers and stack.
    let (on, off) = tokio::join!(scenario.run(true, |_| ()), scenario.run(false, |_| ()));
    let (on, off) = (on.unwrap(), off.unwrap());
    check_bookkeeping(&on, &scenario);
    check_bookkeeping(&off, &scenario);
    let b = &scenario.breaker;
    let in_flight_at_trip = scenario.load.concurrency as u64 - 1;

    // No user-visible failure while a fallback is healthy (the backup always is).
    assert_eq!(on.failures, 0, "{on:#?}");
    assert!(on.served_by_fallback > 0);

    for (p, sim) in on.providers.iter().zip(&scenario.sims) {
        // Every call the client made reached the provider (nothing was cancelled).
        assert_eq!(p.server_requests, Some(p.calls), "{p:?}");
        if sim.faults.is_empty() {
            assert_eq!(p.wasted, 0, "{p:?}");
            continue;
        }
        // Down: the calls that tripped it, those in flight then, one probe per open period.
        assert!(p.open_periods >= 1, "{p:?}");
        let bound = u64::from(b.consecutive_failures)
            + in_flight_at_trip
            + u64::from(b.half_open_permits) * p.open_periods;
        assert!(
            p.wasted <= bound,
            "{} wasted {} calls, bound {bound}: {p:?}",
            p.name,
            p.wasted
        );
        assert!(p.fast_fails > 0, "{p:?}");
    }

    // The primary's breaker closes within one open duration plus one probe of its recovery.
    let lag = on
        .recovery_to_close
        .expect("the primary's breaker closed after its recovery");
    let probe = scenario.sims[0].timeout;
    let slack = Duration::from_millis(500);
    assert!(
        lag <= b.open_duration + probe + slack,
        "closed {lag:?} after the recovery"
    );

    // The baseline calls the primary for every request while it is down.
    assert!(
        off.providers
            .iter()
            .all(|p| p.fast_fails == 0 && p.open_periods == 0)
    );
    assert!(off.recovery_to_close.is_none());
    // Fewer wasted calls with breakers (not by a ratio: how many requests reach the dead primary
    // without breakers depends on how fast this machine drains the queue).
    assert!(
        on.wasted() < off.wasted(),
        "on {} vs off {}",
        on.wasted(),
        off.wasted()
    );
    assert!(on.providers[0].wasted < off.providers[0].wasted);
}

const CONFIG: &str = r#"
[[provider]]
name = "openai"
base_url = "http://127.0.0.1:4000/v1"
api_key_env = "SHOWCASE_OPENAI_KEY"
model = "gpt-4o-mini"
price = 0.0004
timeout_secs = 20

[[provider]]
name = "local"
base_url = "http://127.0.0.1:11434/v1"
model = "llama3.1"
price = 0.0

[breaker]
consecutive_failures = 3
open_secs = 10
"#;

#[test]
fn config_parses() {
    let config = config::Config::parse(CONFIG).unwrap();
    let providers = config
        .providers(|var| (var == "SHOWCASE_OPENAI_KEY").then(|| "sk-secret-123".to_string()))
        .unwrap();
    assert_eq!(providers.len(), 2);
    let openai = &providers[0];
    assert_eq!(openai.name, "openai");
    assert_eq!(openai.base_url, "http://127.0.0.1:4000/v1");
    assert_eq!(openai.model, "gpt-4o-mini");
    assert_eq!(openai.price, 0.0004);
    assert_eq!(openai.timeout, Duration::from_secs(20));
    assert_eq!(openai.api_key.as_ref().unwrap().expose(), "sk-secret-123");
    assert!(providers[1].api_key.is_none());
    assert_eq!(providers[1].timeout, Duration::from_secs(60));
    let breaker = config.breaker();
    assert_eq!(breaker.consecutive_failures, 3);
    assert_eq!(breaker.open_duration, Duration::from_secs(10));

    // Defaults for a missing [breaker].
    let minimal = "[[provider]]\nname = \"a\"\nbase_url = \"http://h/v1\"\nmodel = \"m\"\nprice = 1.0\n";
    let config = config::Config::parse(minimal).unwrap();
    assert_eq!(config.breaker().open_duration, Duration::from_secs(30));
}

#[test]
fn keys_are_redacted() {
    let config = config::Config::parse(CONFIG).unwrap();
    let providers = config.providers(|_| Some("sk-secret-123".to_string())).unwrap();
    for text in [
        format!("{providers:?}"),
        format!("{providers:#?}"),
        format!("{:?}", providers[0].api_key),
        format!("{config:?}"),
    ] {
        assert!(!text.contains("sk-secret-123"), "{text}");
    }
    assert!(format!("{:?}", providers[0]).contains("<redacted>"));

    // A missing variable is named, not guessed at.
    let err = config.providers(|_| None).unwrap_err();
    assert!(err.contains("SHOWCASE_OPENAI_KEY"), "{err}");
}

#[test]
fn bad_configs_are_refused() {
    let refused = |text: &str, needle: &str| {
        let err = config::Config::parse(text).unwrap_err();
        assert!(err.contains(needle), "{err}");
    };
    let provider = |extra: &str| {
        format!("[[provider]]\nname = \"a\"\nbase_url = \"http://h/v1\"\nmodel = \"m\"\nprice = 1.0\n{extra}")
    };
    // A key written into the file itself: refused, the file holds only a variable's name.
    refused(&provider("api_key = \"sk-oops\"\n"), "api_key");
    refused(&provider("price_per_call = 1.0\n"), "price_per_call");
    refused("", "provider");
    refused(
        "[[provider]]\nname = \"a\"\nbase_url = \"https://api.openai.com/v1\"\nmodel = \"m\"\nprice = 1.0\n",
        "https",
    );
    refused(
        "[[provider]]\nname = \"a\"\nbase_url = \"ftp://h\"\nmodel = \"m\"\nprice = 1.0\n",
        "http://",
    );
    refused(
        "[[provider]]\nname = \"a\"\nbase_url = \"http://h\"\nmodel = \"m\"\nprice = -1.0\n",
        "price",
    );
    refused(&provider("[breaker]\nopen_secs = 0\n"), "open_secs");
    // The error for a key in the file does not echo the key.
    let err = config::Config::parse(&provider("api_key = \"sk-oops\"\n")).unwrap_err();
    assert!(!err.contains("sk-oops"), "{err}");
}
