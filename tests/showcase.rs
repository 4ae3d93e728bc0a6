//! The `llm_failover` example's scenario, shortened, run in-process over real sockets, and the
//! invariants of its summary. The example and this test share `scenario/` and `config.rs`.
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
//! - the kinds are counted from the providers' answers and the responses' provenance, whatever
//!   the timing: each content refusal comes from `azure` and goes back to the caller (none
//!   moves on), each context-window error moves its request on (none comes back), the
//!   provider out of quota opens once and stays open;
//! - azure's breaker closes within one open duration plus one probe after azure recovers. A
//!   probe is bounded by azure's timeout; 500 ms of slack covers a loaded scheduler, and the
//!   run goes on for 1.7 s after the recovery, more than that bound.
//!
//! The phases themselves are wall-clock (azure is down from 0.5 s to 1.5 s of the run),
//! which none of the assertions depends on beyond the margins above.

#[path = "../examples/llm_failover/config.rs"]
mod config;
#[path = "../examples/llm_failover/scenario/mod.rs"]
mod scenario;

use std::time::Duration;

use scenario::{Scenario, Summary};
use tower_breaker::llm::LlmErrorKind::{self, *};

fn check_bookkeeping(s: &Summary, scenario: &Scenario) {
    assert_eq!(s.requests, scenario.load.requests as u64);
    assert_eq!(s.served + s.failures + s.refusals(), s.requests);
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

    // Each kind, counted (both runs: the routing by kind does not depend on the breakers).
    let k = scenario::kind_index;
    let unsafe_prompts = (scenario.load.requests / 50) as u64;
    for run in [&on, &off] {
        let (azure, openai) = (&run.providers[0], &run.providers[1]);
        // Content refusals: azure's, every one back to the caller, none moved on.
        assert!(run.refused[k(ContentPolicy)] > 0, "{run:#?}");
        assert!(run.refused[k(ContentPolicy)] <= unsafe_prompts);
        assert_eq!(azure.kinds[k(ContentPolicy)], run.refused[k(ContentPolicy)]);
        assert_eq!(run.answers_of(ContentPolicy), azure.kinds[k(ContentPolicy)]);
        assert_eq!(run.moved[k(ContentPolicy)], 0);
        // Long prompts: every context-window error moved its request on to a larger model.
        assert!(run.answers_of(ContextWindowExceeded) > 0, "{run:#?}");
        assert_eq!(
            run.moved[k(ContextWindowExceeded)],
            run.answers_of(ContextWindowExceeded)
        );
        assert_eq!(run.refused[k(ContextWindowExceeded)], 0);
        assert_eq!(
            run.providers[3].kinds.iter().sum::<u64>(),
            0,
            "the backup reports no error"
        );
        // The quota, the 529s and the 500s: each moved its request on.
        for kind in [QuotaExhausted, Overloaded, LlmErrorKind::Server] {
            assert!(run.answers_of(kind) > 0, "{kind}: {run:#?}");
            assert_eq!(run.moved[k(kind)], run.answers_of(kind), "{kind}");
        }
        assert_eq!(openai.kinds[k(QuotaExhausted)], run.answers_of(QuotaExhausted));
        assert_eq!(run.refusals(), run.refused[k(ContentPolicy)]);
    }
    // Out of quota: opened for max_open_duration at the first answer, never probed again.
    assert_eq!(on.providers[1].open_periods, 1, "{:?}", on.providers[1]);
    assert!(on.answers_of(QuotaExhausted) <= 1 + in_flight_at_trip);
    assert!(on.answers_of(QuotaExhausted) < off.answers_of(QuotaExhausted));

    // Azure's breaker closes within one open duration plus one probe of its recovery.
    let lag = on
        .recovery_to_close
        .expect("azure's breaker closed after its recovery");
    let probe = scenario.sims[0].timeout;
    let slack = Duration::from_millis(500);
    assert!(
        lag <= b.open_duration + probe + slack,
        "closed {lag:?} after the recovery"
    );

    // The baseline calls azure for every request while it is down.
    assert!(
        off.providers
            .iter()
            .all(|p| p.fast_fails == 0 && p.open_periods == 0)
    );
    assert!(off.recovery_to_close.is_none());
    // Fewer wasted calls with breakers (not by a ratio: how many requests reach the dead provider
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
long_context = true

[breaker]
consecutive_failures = 3
open_duration = 10
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
    assert_eq!(
        (openai.auth, openai.long_context),
        (scenario::Auth::Bearer, false)
    );
    assert!(providers[1].api_key.is_none());
    assert!(providers[1].long_context);
    assert_eq!(providers[1].timeout, Duration::from_secs(60));
    // Each provider's breaker: [breaker] over the example's defaults.
    let expected = |name: &str, failures: u32, open: u64| {
        format!(
            "{:?}",
            tower_breaker::CircuitBreaker::builder(name)
                .consecutive_failures(failures)
                .open_duration(Duration::from_secs(open))
        )
    };
    assert_eq!(
        format!("{:?}", providers[0].breaker.as_ref().unwrap()),
        expected("openai", 3, 10)
    );
    assert_eq!(
        format!("{:?}", providers[1].breaker.as_ref().unwrap()),
        expected("local", 3, 10)
    );

    // Defaults for a missing [breaker].
    let minimal = "[[provider]]\nname = \"a\"\nbase_url = \"http://h/v1\"\nmodel = \"m\"\nprice = 1.0\n";
    let config = config::Config::parse(minimal).unwrap();
    let providers = config.providers(|_| None).unwrap();
    assert_eq!(
        format!("{:?}", providers[0].breaker.as_ref().unwrap()),
        expected("a", 5, 30)
    );
}

/// Without the crate's `serde` feature, a breaker setting beyond `consecutive_failures` and
/// `open_duration` is refused, naming the feature that takes it.
#[cfg(not(feature = "serde"))]
#[test]
fn without_serde_other_breaker_settings_name_the_feature() {
    let err = config::Config::parse(&format!("{CONFIG}failure_rate = 0.5\n")).unwrap_err();
    assert!(
        err.contains("failure_rate") && err.contains("--features serde"),
        "{err}"
    );
}

/// With the crate's `serde` feature, `[breaker]` and `[provider.breaker]` take every setting of
/// `tower_breaker::config::BreakerConfig`; a provider's inherits what it leaves unset.
#[cfg(feature = "serde")]
#[test]
fn config_takes_every_breaker_setting_per_provider() {
    let text = format!(
        "{CONFIG}\n[[provider]]\nname = \"backup\"\nbase_url = \"http://h/v1\"\nmodel = \"m\"\nprice = 0.0\n\
         [provider.breaker]\nfailure_rate = 0.5\ntime_window = \"1m\"\nmin_calls = 20\n\
         slow_calls = {{ threshold = \"10s\", rate = 0.8 }}\n\
         open_backoff = {{ kind = \"exponential\", base = \"10s\", factor = 2, max = \"5m\", jitter = 0.2 }}\n\
         max_open_duration = \"15m\"\nhalf_open_permits = 2\nhalf_open_successes = 3\nhalf_open_max_wait = \"90s\"\n"
    );
    let config = config::Config::parse(&text).unwrap();
    let providers = config.providers(|_| Some("k".into())).unwrap();
    let expected = tower_breaker::CircuitBreaker::builder("backup")
        .consecutive_failures(3) // from [breaker]
        .failure_rate(0.5)
        .time_window(Duration::from_secs(60))
        .min_calls(20)
        .slow_calls(Duration::from_secs(10), 0.8)
        .open_backoff(
            tower_breaker::Backoff::exponential(Duration::from_secs(10), 2.0, Duration::from_secs(300))
                .with_jitter(0.2),
        )
        .max_open_duration(Duration::from_secs(900))
        .half_open_permits(2)
        .half_open_successes(3)
        .half_open_max_wait(Duration::from_secs(90));
    assert_eq!(
        format!("{:?}", providers[2].breaker.as_ref().unwrap()),
        format!("{expected:?}")
    );
    // The stack builds with them.
    assert!(scenario::build_stack(&providers, &config.breaker(), true, &|b| b).is_ok());

    // A value out of range names the provider and the setting; a misspelt one is refused.
    let bad = format!(
        "{CONFIG}\n[[provider]]\nname = \"x\"\nbase_url = \"http://h/v1\"\nmodel = \"m\"\nprice = 0.0\n[provider.breaker]\nfailure_rate = 2.0\n"
    );
    let err = config::Config::parse(&bad).unwrap_err();
    assert!(
        err.contains("provider \"x\": breaker:") && err.contains("failure_rate"),
        "{err}"
    );
    let err = config::Config::parse(&format!("{CONFIG}open_duraton = 5\n")).unwrap_err();
    assert!(err.contains("open_duraton"), "{err}");
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
    let with_url =
        |url: &str| format!("[[provider]]\nname = \"a\"\nbase_url = \"{url}\"\nmodel = \"m\"\nprice = 1.0\n");
    refused(
        &with_url("ftp://h"),
        "must start with http:// or https://, not ftp://",
    );
    refused(
        &with_url("api.openai.com/v1"),
        "must start with http:// or https://",
    );
    refused(&with_url("https://"), "base_url");
    refused(&with_url("https://exa mple.com/v1"), "not a valid URL");
    refused(
        "[[provider]]\nname = \"a\"\nbase_url = \"http://h\"\nmodel = \"m\"\nprice = -1.0\n",
        "price",
    );
    refused(&provider("[breaker]\nopen_duration = 0\n"), "open_duration");
    refused(
        &provider("[breaker]\nconsecutive_failures = 0\n"),
        "consecutive_failures",
    );
    // The error for a key in the file does not echo the key.
    let err = config::Config::parse(&provider("api_key = \"sk-oops\"\n")).unwrap_err();
    assert!(!err.contains("sk-oops"), "{err}");
}

/// An https provider: the parser accepts it, the stack builds over it, and the key goes into
/// `Authorization` without showing up anywhere else.
#[tokio::test]
async fn https_base_url_is_accepted_and_the_stack_builds() {
    let text = "[[provider]]\nname = \"openai\"\nbase_url = \"https://api.openai.com/v1\"\n\
                api_key_env = \"SHOWCASE_OPENAI_KEY\"\nmodel = \"gpt-4o-mini\"\nprice = 0.0004\n\n\
                [[provider]]\nname = \"gateway\"\nbase_url = \"HTTPS://gateway.internal:8443/v1/\"\n\
                model = \"m\"\nprice = 0.0\n";
    let config = config::Config::parse(text).unwrap();
    let providers = config.providers(|_| Some("sk-secret-123".to_string())).unwrap();
    assert_eq!(providers[0].base_url, "https://api.openai.com/v1");
    // Built, not called: no network.
    let stack = scenario::build_stack(&providers, &config.breaker(), true, &|b| b).unwrap();
    assert_eq!(stack.breakers.len(), 2);
    assert!(!format!("{:?}", stack.providers).contains("sk-secret-123"));
}

/// A closed local port, one port per scheme: https fails as a connection error (through
/// hyper-rustls' connector, no panic), classified as a failure, and the breaker counts it.
#[tokio::test]
async fn https_to_a_closed_port_is_a_counted_failure() {
    use std::sync::atomic::Ordering::Relaxed;
    use tower_breaker::{Classify, HttpClassifier, Outcome};

    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }; // closed again
    let text = format!(
        "[[provider]]\nname = \"down\"\nbase_url = \"https://127.0.0.1:{port}/v1\"\n\
         model = \"m\"\nprice = 1.0\ntimeout_secs = 10\n"
    );
    let (stack, result) = one_request(&text, None).await;
    let err = result.unwrap_err();
    let outcome = Classify::<http::Response<bytes::Bytes>, _>::classify(&HttpClassifier::new(), Err(&err));
    assert_eq!(outcome, Outcome::Failure, "{err:?}");
    assert!(
        find::<hyper_util::client::legacy::Error>(&*err).is_some_and(|e| e.is_connect()),
        "not a connect error: {err:?}"
    );
    assert_eq!(stack.counters[0].calls.load(Relaxed), 1);
    assert_eq!(stack.counters[0].wasted.load(Relaxed), 1);
    assert_eq!(stack.breakers[0].snapshot().consecutive_failures, 1);
}

/// An https URL is spoken to in TLS: a local TCP listener sees a TLS handshake record, not an
/// HTTP request line (it then hangs up, and the call fails as a connection error).
#[tokio::test]
async fn https_base_url_speaks_tls() {
    use tokio::io::AsyncReadExt;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let first_bytes = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 3];
        stream.read_exact(&mut buf).await.unwrap();
        buf // dropped: the handshake fails
    });
    let text = format!(
        "[[provider]]\nname = \"tls\"\nbase_url = \"https://{addr}/v1\"\nmodel = \"m\"\nprice = 1.0\n"
    );
    let err = one_request(&text, None).await.1.unwrap_err();
    // A TLS record: handshake (22), protocol version 3.x.
    let head = first_bytes.await.unwrap();
    assert_eq!(&head[..2], &[0x16, 0x03], "not a TLS handshake: {head:?}");
    assert!(
        find::<hyper_util::client::legacy::Error>(&*err).is_some_and(|e| e.is_connect()),
        "{err:?}"
    );
}

/// The key is sent as `Authorization: Bearer <key>` (over plain http here: the header does
/// not depend on the scheme, and a TLS server needs a certificate the roots trust).
#[tokio::test]
async fn the_key_is_sent_as_a_bearer_token() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let head = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before the end of the head");
            head.extend_from_slice(&buf[..n]);
        }
        let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
        stream.write_all(answer.as_bytes()).await.unwrap();
        String::from_utf8(head).unwrap()
    });
    let text = format!(
        "[[provider]]\nname = \"p\"\nbase_url = \"http://{addr}/v1\"\napi_key_env = \"KEY\"\n\
         model = \"m\"\nprice = 1.0\n"
    );
    let res = one_request(&text, Some("sk-secret-123")).await.1.unwrap();
    assert_eq!(res.status(), 200);
    let head = head.await.unwrap().to_ascii_lowercase();
    assert!(
        head.starts_with("post /v1/chat/completions http/1.1\r\n"),
        "{head}"
    );
    assert!(
        head.contains("\r\nauthorization: bearer sk-secret-123\r\n"),
        "{head}"
    );
}

/// Azure OpenAI's `auth = "api-key"`: the key in the `api-key` header, no `Authorization`.
/// Refused: an unknown `auth`.
#[tokio::test]
async fn the_key_is_sent_in_azures_api_key_header() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let head = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before the end of the head");
            head.extend_from_slice(&buf[..n]);
        }
        let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
        stream.write_all(answer.as_bytes()).await.unwrap();
        String::from_utf8(head).unwrap()
    });
    let text = format!(
        "[[provider]]\nname = \"azure\"\nbase_url = \"http://{addr}/openai/v1\"\nauth = \"api-key\"\n\
         api_key_env = \"KEY\"\nmodel = \"my-deployment\"\nprice = 1.0\n"
    );
    let res = one_request(&text, Some("azure-secret-123")).await.1.unwrap();
    assert_eq!(res.status(), 200);
    let head = head.await.unwrap().to_ascii_lowercase();
    assert!(
        head.starts_with("post /openai/v1/chat/completions http/1.1\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\napi-key: azure-secret-123\r\n"), "{head}");
    assert!(!head.contains("authorization"), "{head}");

    let bad = "[[provider]]\nname = \"a\"\nbase_url = \"http://h/v1\"\nauth = \"basic\"\nmodel = \"m\"\nprice = 1.0\n";
    let err = config::Config::parse(bad).unwrap_err();
    assert!(err.contains("basic") || err.contains("variant"), "{err}");
}

fn find<'a, E: std::error::Error + 'static>(mut e: &'a (dyn std::error::Error + 'static)) -> Option<&'a E> {
    loop {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        e = e.source()?;
    }
}

/// Builds the `--config` stack for the TOML `text` (every key variable reads `key`) and sends
/// it one chat request.
async fn one_request(
    text: &str,
    key: Option<&str>,
) -> (
    scenario::Stack,
    Result<http::Response<bytes::Bytes>, tower_breaker::BoxError>,
) {
    use tower::{Service, ServiceExt};
    let config = config::Config::parse(text).unwrap();
    let providers = config.providers(|_| key.map(str::to_owned)).unwrap();
    let mut stack = scenario::build_stack(&providers, &config.breaker(), true, &|b| b).unwrap();
    let result = match stack.chain.ready().await {
        Ok(chain) => chain.call(scenario::ChatRequest::user("hi", 1)).await,
        Err(e) => Err(e),
    };
    (stack, result)
}
