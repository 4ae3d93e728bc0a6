//! The live status page under a simulated outage.
//!
//! ```sh
//! cargo run --example dashboard --features dashboard              # on 127.0.0.1:8090
//! cargo run --example dashboard --features dashboard -- 127.0.0.1:0
//! ```
//!
//! Open the printed URL: three breakers over local services and a keyed registry of five
//! models under steady traffic. The `openai` upstream (and the `gpt-4o` model) goes down for
//! 15 s out of every 40 s, the first time 5 s after the start: its breaker trips, rejects,
//! probes every 3 s, reopens, and closes once the upstream is back; `o3-mini` is rate-limited
//! (a `Retry-After` trip) every 7 s. The page follows without a reload: states, rates,
//! sparklines, countdowns to half-open and transitions with their reasons.
//!
//! The screenshot in the README was taken about 52 s after the start (the second outage):
//! `chromium --headless --no-sandbox --hide-scrollbars --window-size=1280,1000 --timeout=3000
//! --screenshot=docs/dashboard.png http://127.0.0.1:8090/dashboard/` (`--timeout`, not
//! `--virtual-time-budget`: the page's event stream never finishes loading).

#[path = "support/outage.rs"]
mod outage;

use std::net::SocketAddr;

use outage::{Cycle, Outage};

#[tokio::main]
async fn main() -> Result<(), tower_breaker::BoxError> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8090".into())
        .parse()?;
    let cycle = Cycle::STANDARD;
    let outage = Outage::start(addr, cycle).await?;
    println!("dashboard: {}", outage.url());
    println!(
        "openai (and model gpt-4o) down for {} s of every {} s, first at {} s; Ctrl-C to stop",
        cycle.down.as_secs(),
        cycle.cycle.as_secs(),
        cycle.first_down.as_secs()
    );
    let mut was_down = false;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
    loop {
        tick.tick().await;
        let at = outage.started.elapsed();
        let down = cycle.is_down(at);
        if down != was_down {
            was_down = down;
            println!(
                "{:>6.1} s  openai upstream {}",
                at.as_secs_f64(),
                if down { "DOWN" } else { "back up" }
            );
        }
    }
}
