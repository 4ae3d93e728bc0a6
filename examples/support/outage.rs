//! A simulated outage for the dashboard: a few breakers over local services under steady
//! traffic, one upstream going down and recovering in a loop, and the dashboard served over
//! HTTP. Shared by `examples/dashboard.rs` and `tests/dashboard_browser.rs`.
//!
//! - `openai`: healthy, then down (every call fails after 40 ms) for `down` out of every
//!   `cycle`, in a loop; its breaker trips on 5 consecutive failures, stays open 3 s, probes,
//!   reopens while the upstream is down and closes once it is back.
//! - `anthropic`: healthy; a third of its calls are slower than its 150 ms slow-call threshold.
//! - `embeddings`: 6% of its calls fail, under its 50% failure-rate rule.
//! - `models` (keyed by model): `gpt-4o` is down with `openai`; `o3-mini` answers 429 with a
//!   `Retry-After` of 2 s every few seconds (a server-imposed trip); the others are healthy.
#![allow(dead_code)]

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, time::Instant};
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_breaker::{
    BoxError, CircuitBreaker, CircuitBreakerLayer, Outcome, integrations::dashboard::Dashboard,
    keyed::KeyedRegistry,
};

/// When the `openai` upstream is down: `down` out of every `cycle`, starting `first_down`
/// after the start.
#[derive(Clone, Copy, Debug)]
pub struct Cycle {
    pub first_down: Duration,
    pub down: Duration,
    pub cycle: Duration,
}

impl Cycle {
    /// Down 15 s out of every 40 s, the first time 5 s after the start.
    pub const STANDARD: Cycle = Cycle {
        first_down: Duration::from_secs(5),
        down: Duration::from_secs(15),
        cycle: Duration::from_secs(40),
    };

    /// Whether the upstream is down `at` this long after the start.
    pub fn is_down(&self, at: Duration) -> bool {
        at >= self.first_down
            && (at - self.first_down).as_nanos() % self.cycle.as_nanos() < self.down.as_nanos()
    }
}

/// The running simulation.
pub struct Outage {
    pub dashboard: Dashboard,
    pub openai: CircuitBreaker,
    pub anthropic: CircuitBreaker,
    pub embeddings: CircuitBreaker,
    pub models: KeyedRegistry<String>,
    /// The dashboard server.
    pub addr: SocketAddr,
    pub started: Instant,
}

impl Outage {
    /// The page's address.
    pub fn url(&self) -> String {
        format!("http://{}/dashboard/", self.addr)
    }

    /// Every watched single breaker, as `(name, breaker)`.
    pub fn breakers(&self) -> [(&'static str, &CircuitBreaker); 3] {
        [
            ("openai", &self.openai),
            ("anthropic", &self.anthropic),
            ("embeddings", &self.embeddings),
        ]
    }

    /// Builds the breakers, starts the traffic and serves the dashboard on `addr` (port 0
    /// for any free port). Everything stops with the runtime.
    pub async fn start(addr: SocketAddr, cycle: Cycle) -> Result<Outage, BoxError> {
        let dashboard = Dashboard::builder()
            .title("tower-breaker demo: an outage in a loop")
            .history(Duration::from_secs(120))
            .build()?;
        let ms = Duration::from_millis;
        let openai = dashboard.build(
            CircuitBreaker::builder("openai")
                .consecutive_failures(5)
                .failure_rate(0.5)
                .count_window(50)
                .open_duration(Duration::from_secs(3)),
        )?;
        let anthropic = dashboard.build(
            CircuitBreaker::builder("anthropic")
                .consecutive_failures(5)
                .slow_calls(ms(150), 0.8)
                .count_window(50),
        )?;
        let embeddings = dashboard.build(
            CircuitBreaker::builder("embeddings")
                .failure_rate(0.5)
                .count_window(100)
                .min_calls(20),
        )?;
        let d = dashboard.clone();
        let models = KeyedRegistry::<String>::builder(
            CircuitBreaker::builder("models")
                .consecutive_failures(3)
                .open_duration(Duration::from_secs(2)),
        )
        .map_builder(move |b, key| d.instrument_keyed(b, key))
        .build()?;
        dashboard.watch_keyed(&models);

        let started = Instant::now();
        let down = move || cycle.is_down(started.elapsed());

        // openai: down in the cycle's outage.
        traffic(openai.clone(), 40, move || {
            if down() {
                (ms(40), Outcome::Failure)
            } else {
                (ms(30 + fastrand::u64(0..40)), Outcome::Success)
            }
        });
        // anthropic: healthy, a third of its calls slow.
        traffic(anthropic.clone(), 25, move || {
            let slow = fastrand::u32(0..3) == 0;
            (
                ms(if slow { 170 } else { 60 + fastrand::u64(0..40) }),
                Outcome::Success,
            )
        });
        // embeddings: 6% failures.
        traffic(embeddings.clone(), 30, move || {
            let outcome = if fastrand::u32(0..100) < 6 {
                Outcome::Failure
            } else {
                Outcome::Success
            };
            (ms(10 + fastrand::u64(0..15)), outcome)
        });
        // models: one breaker per model.
        for (model, per_sec) in [
            ("gpt-4o", 20),
            ("gpt-4o-mini", 30),
            ("o3-mini", 15),
            ("claude-sonnet", 10),
            ("llama-3.1-405b", 5),
        ] {
            let breaker = models.get(model)?;
            traffic(breaker, per_sec, move || match model {
                "gpt-4o" if down() => (ms(40), Outcome::Failure),
                "o3-mini" if started.elapsed().as_secs() % 7 == 3 => {
                    (ms(5), Outcome::Trip(Duration::from_secs(2)))
                }
                _ => (ms(40 + fastrand::u64(0..40)), Outcome::Success),
            });
        }

        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let service = dashboard.service();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let service = service.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: http::Request<Incoming>| {
                        let service = service.clone();
                        async move {
                            if req.uri().path() == "/" {
                                let mut res = http::Response::new(
                                    tower_breaker::integrations::dashboard::DashboardBody::default(),
                                );
                                *res.status_mut() = http::StatusCode::FOUND;
                                res.headers_mut().insert(
                                    http::header::LOCATION,
                                    http::HeaderValue::from_static("/dashboard/"),
                                );
                                return Ok::<_, Infallible>(res);
                            }
                            service.oneshot(req).await
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(Outage {
            dashboard,
            openai,
            anthropic,
            embeddings,
            models,
            addr,
            started,
        })
    }
}

/// Calls through `breaker`'s tower layer `per_sec` times a second, each call taking the
/// latency and giving the outcome that `upstream` says (an in-process upstream).
fn traffic(
    breaker: CircuitBreaker,
    per_sec: u32,
    upstream: impl Fn() -> (Duration, Outcome) + Clone + Send + Sync + 'static,
) {
    let svc = ServiceBuilder::new()
        .layer(
            CircuitBreakerLayer::new(breaker).classify(|r: Result<&Outcome, &BoxError>| match r {
                Ok(outcome) => *outcome,
                Err(_) => Outcome::Failure,
            }),
        )
        .service(tower::service_fn(move |(): ()| {
            let (latency, outcome) = upstream();
            async move {
                tokio::time::sleep(latency).await;
                Ok::<_, BoxError>(outcome)
            }
        }));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1) / per_sec);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let mut svc = svc.clone();
            tokio::spawn(async move {
                // A refusal (CircuitOpen) is what the dashboard counts as a rejection.
                if let Ok(ready) = svc.ready().await {
                    let _ = ready.call(()).await;
                }
            });
        }
    });
}
