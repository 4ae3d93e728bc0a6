//! The dashboard in a real browser: Debian's `/usr/bin/chromium`, headless, driven over the
//! DevTools protocol (chromiumoxide; no browser is downloaded). The page is served by
//! `examples/support/outage.rs` (the code `examples/dashboard.rs` runs) on 127.0.0.1 while
//! the `openai` upstream is down.
//!
//! The test checks that the DOM shows each breaker's state as the server has it and the keyed
//! registry's keys, then trips a healthy breaker and checks that the page's own script shows
//! the trip without a reload (a marker set on `window` survives; the transition reaches the
//! live log, which only the event stream fills). Then it puts `embeddings` in shadow mode and
//! trips it: the page draws it with a "shadow" badge and its would-be rejections, and leaves
//! it out of the header's open count; an override from another replica, a local reset and a
//! reload reach the live log with their origin; a recovery probe in flight shows as "probing
//! upstream…". It prints the latency seen and saves a screenshot. Without `/usr/bin/chromium`
//! it fails: `scripts/test.sh` installs it.

#[path = "../examples/support/outage.rs"]
mod outage;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use chromiumoxide::{Browser, BrowserConfig, Page, page::ScreenshotParams};
use futures::StreamExt;
use outage::{Cycle, Outage};
use tower_breaker::{
    CircuitBreaker, Outcome,
    breaker::{Origin, Override},
};

const CHROMIUM: &str = "/usr/bin/chromium";
/// The most any check waits for the page.
const CAP: Duration = Duration::from_secs(30);

/// `{name: state}` of every breaker card and key row in the DOM, as a JSON object.
const DOM_STATES: &str = r#"JSON.stringify(Object.fromEntries(
    [...document.querySelectorAll('[data-breaker]')].map(e => [e.dataset.breaker, e.dataset.state])))"#;

async fn dom_states(page: &Page) -> serde_json::Map<String, serde_json::Value> {
    let json: String = page.evaluate(DOM_STATES).await.unwrap().into_value().unwrap();
    serde_json::from_str(&json).unwrap()
}

async fn eval_string(page: &Page, js: &str) -> String {
    page.evaluate(js).await.unwrap().into_value().unwrap()
}

/// Evaluates `js` (a string expression) until `done` accepts its value, for [`CAP`] at most.
async fn wait_for(page: &Page, what: &str, js: &str, done: impl Fn(&str) -> bool) -> String {
    let started = Instant::now();
    loop {
        let value = eval_string(page, js).await;
        if done(&value) {
            return value;
        }
        assert!(
            started.elapsed() < CAP,
            "after {CAP:?}, {what}: the page shows {value:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_each_state_and_a_trip_without_a_reload() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: install Debian's chromium (scripts/test.sh does: apt-get install chromium)"
    );
    // openai down from 1 s on, for the whole test.
    let cycle = Cycle {
        first_down: Duration::from_secs(1),
        down: Duration::from_secs(600),
        cycle: Duration::from_secs(1200),
    };
    let outage = Outage::start("127.0.0.1:0".parse().unwrap(), cycle)
        .await
        .unwrap();
    let url = outage.url();

    let profile =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("chromium-profile-{}", std::process::id()));
    let config = BrowserConfig::builder()
        .chrome_executable(CHROMIUM)
        .no_sandbox() // the tests run as root in CI
        .user_data_dir(&profile)
        .window_size(1280, 1100)
        .args([
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .build()
        .unwrap();
    let (mut browser, mut handler) = Browser::launch(config).await.expect("chromium starts");
    let events = tokio::spawn(async move { while handler.next().await.is_some() {} });
    let page = browser.new_page(url.as_str()).await.unwrap();

    // 1. Every breaker's state, as the server has it. openai flips between open and half-open
    //    as its probes fail, so poll until a DOM read and the server's agree.
    let started = Instant::now();
    let shown = loop {
        let dom = dom_states(&page).await;
        let server: Vec<(&str, &str)> = outage
            .breakers()
            .iter()
            .map(|(name, b)| (*name, b.state().as_str()))
            .collect();
        let agree = server
            .iter()
            .all(|(name, state)| dom.get(*name).and_then(|v| v.as_str()) == Some(*state));
        let keys = dom.contains_key("models:gpt-4o") && dom.contains_key("models:gpt-4o-mini");
        if agree && keys && server[0].1 != "closed" {
            break dom;
        }
        assert!(
            started.elapsed() < CAP,
            "after {CAP:?} the DOM shows {dom:?}, the server {server:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "DOM matched the server after {:.2} s: {shown:?}",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(shown["anthropic"], "closed");
    assert_eq!(shown["embeddings"], "closed");
    assert!(matches!(shown["openai"].as_str(), Some("open" | "half_open")));

    // 2. A trip appears without a reload.
    assert_eq!(
        eval_string(&page, "(window.__marker = 'same page', 'set')").await,
        "set"
    );
    assert_eq!(
        eval_string(&page, "document.getElementById('conn').textContent").await,
        "live"
    );
    let tripped = Instant::now();
    outage.anthropic.trip(Duration::from_secs(300)); // as a 429 with Retry-After: 300 would
    let latency = loop {
        let dom = dom_states(&page).await;
        if dom.get("anthropic").and_then(|v| v.as_str()) == Some("open") {
            break tripped.elapsed();
        }
        assert!(
            tripped.elapsed() < CAP,
            "after {CAP:?} the DOM still shows {dom:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    println!(
        "a trip of \"anthropic\" showed in the DOM {:.1} ms after the trip, without a reload",
        latency.as_secs_f64() * 1000.0
    );
    assert_eq!(eval_string(&page, "String(window.__marker)").await, "same page");
    let log = eval_string(&page, "document.getElementById('log').textContent").await;
    assert!(
        log.contains("anthropic") && log.contains("server wait"),
        "the live log (filled by transition events only) shows {log:?}"
    );
    let card = eval_string(
        &page,
        "document.querySelector('[data-breaker=\"anthropic\"] .state').textContent",
    )
    .await;
    assert_eq!(card, "open");

    // 3. Shadow mode: a notional trip is drawn as such, never as refusing.
    outage.embeddings.set_shadow(true);
    outage.embeddings.trip(Duration::from_secs(300));
    let shadow = wait_for(
        &page,
        "embeddings in shadow mode, notionally open, with would-be rejections",
        r#"(() => {
            const c = document.querySelector('[data-breaker="embeddings"]');
            return JSON.stringify({
                state: c.dataset.state,
                shadow: c.dataset.shadow,
                badge: (c.querySelector('.badge.shadow') || {}).textContent || null,
                notional: c.querySelector('.badge.state').classList.contains('notional'),
                would: (c.querySelector('.would') || {}).textContent || null,
            });
        })()"#,
        |v| {
            let v: serde_json::Value = serde_json::from_str(v).unwrap();
            v["state"] == "open"
                && v["would"]
                    .as_str()
                    .is_some_and(|w| !w.contains("refused 0 calls"))
        },
    )
    .await;
    let shadow: serde_json::Value = serde_json::from_str(&shadow).unwrap();
    assert_eq!(shadow["shadow"], "true", "{shadow}");
    assert_eq!(shadow["badge"], "shadow", "{shadow}");
    assert_eq!(shadow["notional"], true, "{shadow}");
    let would = shadow["would"].as_str().unwrap();
    assert!(
        would.starts_with("shadow mode: lets every call through; would have refused "),
        "{would}"
    );
    let would_reject = outage.embeddings.snapshot().would_reject;
    assert!(
        would_reject > 0,
        "embeddings' traffic passes, as would-be rejections"
    );
    // The header counts it apart, not as open: its "N open" is the enforcing breakers' only.
    let summary = eval_string(
        &page,
        r#"(() => {
            const open = document.querySelectorAll('[data-breaker][data-state="open"][data-shadow="false"]').length;
            return JSON.stringify([document.getElementById('summary').textContent, open]);
        })()"#,
    )
    .await;
    let (summary, open): (String, usize) = serde_json::from_str(&summary).unwrap();
    assert!(summary.contains("1 in shadow mode (1 would refuse)"), "{summary}");
    let shown_open = summary
        .split(" · ")
        .find_map(|part| part.strip_suffix(" open")?.parse::<usize>().ok())
        .unwrap_or(0);
    assert_eq!(shown_open, open, "{summary}: shadow breakers are not open");
    println!("shadow: {would:?}; header: {summary:?}");
    // No card shows a stray value ("null", "undefined", "NaN") where a line is left out.
    let cards = eval_string(
        &page,
        "[...document.querySelectorAll('.card')].map(c => c.textContent).join('\\n')",
    )
    .await;
    for stray in ["null", "undefined", "NaN"] {
        assert!(!cards.contains(stray), "{stray:?} on a card: {cards:?}");
    }

    // 4. Operators' actions reach the live log with their origin: another replica's
    //    force-open (as the Redis sync applies it), a local reset, a reload.
    outage
        .anthropic
        .apply_override(Override::ForceOpen, Origin::Remote("web-2-4242"));
    outage.anthropic.reset();
    outage
        .embeddings
        .reconfigure(
            CircuitBreaker::builder("embeddings")
                .failure_rate(0.5)
                .count_window(100)
                .min_calls(20),
        )
        .unwrap();
    let log = wait_for(
        &page,
        "the overrides and the reload in the live log",
        "document.getElementById('log').textContent",
        |log| log.contains("reload (local), shadow on"),
    )
    .await;
    for line in ["shadow_on (local)", "force_open by web-2-4242", "reset (local)"] {
        assert!(log.contains(line), "{line:?} not in the live log {log:?}");
    }
    let items = eval_string(
        &page,
        r#"JSON.stringify([...document.querySelectorAll('#log li[data-kind="action"]')].map(li => li.querySelector('.st').textContent + ': ' + li.querySelector('.act').textContent))"#,
    )
    .await;
    let items: Vec<String> = serde_json::from_str(&items).unwrap();
    assert!(
        items.contains(&"anthropic: force_open by web-2-4242".to_string()),
        "{items:?}"
    );
    // The card lists them with the transitions they caused, newest first.
    let card = eval_string(
        &page,
        r#"JSON.stringify([...document.querySelectorAll('[data-breaker="anthropic"] .transitions li')]
            .slice(0, 4).map(li => li.dataset.kind + ': ' + (li.querySelector('.act') || li.querySelector('.st')).textContent))"#,
    )
    .await;
    let card: Vec<String> = serde_json::from_str(&card).unwrap();
    assert_eq!(
        card,
        [
            "transition: closed",
            "action: reset (local)",
            "transition: forced open",
            "action: force_open by web-2-4242"
        ],
        "anthropic's card"
    );

    // 5. A recovery probe in flight (one that never answers).
    let probed = outage
        .dashboard
        .build(
            CircuitBreaker::builder("probed")
                .consecutive_failures(1)
                .open_duration(Duration::from_millis(200))
                .recovery_probe(
                    std::future::pending::<Result<(), std::io::Error>>,
                    Duration::from_secs(600),
                ),
        )
        .unwrap();
    probed.try_acquire().unwrap().record(Outcome::Failure);
    let until = wait_for(
        &page,
        "the recovery probe in flight",
        r#"(document.querySelector('[data-breaker="probed"] .until') || {}).textContent || ''"#,
        |u| u.starts_with("probing upstream…"),
    )
    .await;
    assert!(probed.snapshot().recovery_probe);
    println!("probed: {until:?}");

    // 6. A screenshot.
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-browser.png");
    page.save_screenshot(ScreenshotParams::builder().full_page(true).build(), &shot)
        .await
        .unwrap();
    let size = std::fs::metadata(&shot).unwrap().len();
    assert!(size > 10_000, "a {size}-byte screenshot");
    println!("screenshot: {}", shot.display());

    drop(probed);
    browser.close().await.unwrap();
    let _ = browser.wait().await;
    events.abort();
    let _ = std::fs::remove_dir_all(&profile);
}
