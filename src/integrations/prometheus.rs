//! Prometheus metrics through [`prometheus_client`] (feature `prometheus-client`): the same
//! families as the [`metrics`] integration, registered into your
//! [`Registry`].
//!
//! ```
//! use prometheus_client::{encoding::text::encode, registry::Registry};
//! use tower_breaker::{CircuitBreaker, Outcome, integrations::prometheus::BreakerMetrics};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut registry = Registry::default();
//! let metrics = BreakerMetrics::register(&mut registry);
//! // Instrument (counters), build, and watch (gauges read from the breaker at each scrape):
//! let breaker = metrics.build(CircuitBreaker::builder("openai").consecutive_failures(1))?;
//! breaker.try_acquire()?.record(Outcome::Failure);
//!
//! let mut text = String::new();
//! encode(&mut text, &registry)?;
//! assert!(text.contains(r#"circuit_breaker_state{breaker="openai"} 1"#));
//! assert!(text.contains(r#"circuit_breaker_calls_total{breaker="openai",outcome="failure"} 1"#));
//! # Ok(()) }
//! ```
//!
//! # Families
//!
//! | name | type | labels | source |
//! |---|---|---|---|
//! | `circuit_breaker_state` | gauge | `breaker` (, `key`) | the breaker's state at scrape time; values as in [`state_value`] |
//! | `circuit_breaker_failure_rate` | gauge | `breaker` (, `key`) | the breaker's window at scrape time, `0` when empty |
//! | `circuit_breaker_slow_call_rate` | gauge | `breaker` (, `key`) | the breaker's window at scrape time, `0` when empty |
//! | `circuit_breaker_consecutive_failures` | gauge | `breaker` (, `key`) | the current run of failures, at scrape time |
//! | `circuit_breaker_keys` | gauge | `registry` | keys held by each watched keyed registry |
//! | `circuit_breaker_shadow` | gauge | `breaker` (, `key`) | `1` in [shadow mode](crate#shadow-mode), `0` enforcing, at scrape time |
//! | `circuit_breaker_calls_total` | counter | `breaker` (, `key`), `outcome` | `success`, `failure` (including [`Outcome::Trip`]), `ignored`, `rejected`, `cancelled`, `would_reject` (let through in shadow mode; its outcome is not recorded) |
//! | `circuit_breaker_slow_calls_total` | counter | `breaker` (, `key`) | calls slower than the slow-call threshold |
//! | `circuit_breaker_transitions_total` | counter | `breaker` (, `key`), `from`, `to`, `reason`, `shadow` | state changes; `shadow="true"` when notional (alert on `shadow="false"`) |
//! | `circuit_breaker_overrides_total` | counter | `breaker` (, `key`), `action`, `origin` | operators' actions ([`Override::as_str`](crate::Override::as_str)), `origin` `local` or `remote` (see [Manual overrides](crate#manual-overrides)) |
//!
//! The gauges are not copies: a collector reads each watched breaker's
//! [`Snapshot`] when the registry is encoded (watched single breakers are
//! held weakly; watched keyed registries list their current keys). The core keeps no
//! cumulative counts, so the counters come from an event listener ([`instrument`](BreakerMetrics::instrument)),
//! whose handles are fetched once, when the builder is instrumented: a call costs an atomic
//! increment and allocates nothing.
//!
//! # Series come and go with their breakers
//!
//! A scrape holds the series of live breakers only, so key churn (hosts, models, tenants
//! coming and going through a [`KeyedRegistry`]) cannot grow it without bound: at most
//! `max_keys` keys' worth, plus the overflow breaker.
//!
//! - The gauges list the keys a watched registry holds at scrape time: an evicted key's
//!   gauges are gone from the next scrape.
//! - The counters of a label set (`breaker`, `key`) are removed, transitions included, when
//!   the last listener with those labels is dropped: for a key, once its breaker is evicted
//!   and no call, streaming body or handle holds it any more. If the key comes back, its
//!   counters start again from zero, which Prometheus' `rate()` and `increase()` read as a
//!   counter reset.
//!
// The `metrics` integration is behind its own feature: link to its page on docs.rs without it.
#![cfg_attr(feature = "metrics", doc = "[`metrics`]: super::metrics")]
#![cfg_attr(
    not(feature = "metrics"),
    doc = concat!("[`metrics`]: https://docs.rs/tower-breaker/", env!("CARGO_PKG_VERSION"), "/tower_breaker/integrations/metrics/index.html")
)]

use std::{
    borrow::Cow,
    collections::{HashMap, HashSet},
    fmt,
    sync::{Arc, Mutex, Weak},
};

use prometheus_client::{
    collector::Collector,
    encoding::DescriptorEncoder,
    metrics::{MetricType, counter::Counter, family::Family},
    registry::Registry,
};

use crate::{
    breaker::{Builder, CircuitBreaker, ConfigError, Event, Lane, Reason, Snapshot, State},
    classify::Outcome,
    keyed::KeyedRegistry,
};

pub use super::state_value;

/// Label pairs, as `prometheus_client` encodes them.
pub type Labels = Vec<(&'static str, Cow<'static, str>)>;

type KeyedSource = Box<dyn Fn(&mut Vec<(Labels, Snapshot)>) -> (String, usize) + Send + Sync>;

#[derive(Default)]
struct Watched {
    breakers: Vec<Weak<Lane>>,
    keyed: Vec<KeyedSource>,
}

/// The counter series of the live listeners, by their base labels (`breaker`, `key`).
type Live = HashMap<Labels, LiveSeries>;

#[derive(Default)]
struct LiveSeries {
    /// Listeners (instrumented builders and the breakers built from them) with these labels.
    users: usize,
    /// The transition series created under these labels.
    transitions: HashSet<Labels>,
    /// The override series created under these labels.
    overrides: HashSet<Labels>,
}

/// The outcome label values of `circuit_breaker_calls_total`.
const OUTCOMES: [&str; 6] = [
    "success",
    "failure",
    "ignored",
    "rejected",
    "cancelled",
    "would_reject",
];

/// The breaker metric families, registered into a [`Registry`]. A cheap `Clone` handle.
#[derive(Clone)]
pub struct BreakerMetrics {
    families: Families,
    watched: Arc<Mutex<Watched>>,
}

/// The counter families, and which of their series are in use.
#[derive(Clone)]
struct Families {
    calls: Family<Labels, Counter>,
    slow: Family<Labels, Counter>,
    transitions: Family<Labels, Counter>,
    overrides: Family<Labels, Counter>,
    live: Arc<Mutex<Live>>,
}

impl Families {
    fn live(&self) -> std::sync::MutexGuard<'_, Live> {
        self.live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl fmt::Debug for BreakerMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = self.lock();
        f.debug_struct("BreakerMetrics")
            .field("breakers", &w.breakers.len())
            .field("keyed", &w.keyed.len())
            .finish_non_exhaustive()
    }
}

impl BreakerMetrics {
    /// Registers the families into `registry` (see [the module docs](self)).
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            families: Families {
                calls: Family::default(),
                slow: Family::default(),
                transitions: Family::default(),
                overrides: Family::default(),
                live: Arc::default(),
            },
            watched: Arc::default(),
        };
        registry.register(
            "circuit_breaker_calls",
            "Calls through a circuit breaker, by outcome",
            metrics.families.calls.clone(),
        );
        registry.register(
            "circuit_breaker_slow_calls",
            "Calls slower than the breaker's slow-call threshold",
            metrics.families.slow.clone(),
        );
        registry.register(
            "circuit_breaker_transitions",
            "Circuit breaker state changes, by from, to, reason and shadow",
            metrics.families.transitions.clone(),
        );
        registry.register(
            "circuit_breaker_overrides",
            "Operators' actions on a circuit breaker, by action and origin",
            metrics.families.overrides.clone(),
        );
        registry.register_collector(Box::new(GaugeCollector {
            watched: metrics.watched.clone(),
        }));
        metrics
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Watched> {
        self.watched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Installs the counting listener on `builder`, labelled `breaker="<builder's name>"`.
    /// The gauges need the built breaker: [`watch`](Self::watch) it, or use
    /// [`build`](Self::build).
    pub fn instrument(&self, builder: Builder) -> Builder {
        let labels = vec![("breaker", Cow::Owned(builder.name_ref().to_string()))];
        self.instrument_with(builder, labels)
    }

    /// Like [`instrument`](Self::instrument), with the label `key` too: for a keyed
    /// registry's [`map_builder`](crate::keyed::KeyedRegistryBuilder::map_builder).
    pub fn instrument_keyed<K: fmt::Display + ?Sized>(&self, builder: Builder, key: &K) -> Builder {
        let labels = vec![
            ("breaker", Cow::Owned(builder.name_ref().to_string())),
            ("key", Cow::Owned(key.to_string())),
        ];
        self.instrument_with(builder, labels)
    }

    /// Installs the counting listener with exactly these labels.
    ///
    /// The counter series live as long as the listener: once the builder and every breaker
    /// built from it with these labels are dropped (an evicted key's breaker, once no call
    /// holds it), their series are removed from the families.
    pub fn instrument_with(&self, builder: Builder, labels: Labels) -> Builder {
        let f = &self.families;
        // Under the lock that the last user's removal takes: a series is never removed
        // between its creation here and its first use.
        let mut live = f.live();
        live.entry(labels.clone()).or_default().users += 1;
        let calls = |outcome: &'static str| f.calls.get_or_create_owned(&with(&labels, "outcome", outcome));
        let handles = Handles {
            success: calls(OUTCOMES[0]),
            failure: calls(OUTCOMES[1]),
            ignored: calls(OUTCOMES[2]),
            rejected: calls(OUTCOMES[3]),
            cancelled: calls(OUTCOMES[4]),
            would_reject: calls(OUTCOMES[5]),
            slow: f.slow.get_or_create_owned(&labels),
            families: f.clone(),
            labels,
        };
        drop(live);
        builder.on_event(move |event| handles.on_event(event))
    }

    /// Reads `breaker`'s state and rates at each scrape. The breaker is held weakly: once
    /// every handle to it is dropped, its series disappear.
    pub fn watch(&self, breaker: &CircuitBreaker) {
        self.lock().breakers.push(Arc::downgrade(&breaker.root));
    }

    /// Instruments `builder`, builds the breaker and watches it.
    pub fn build(&self, builder: Builder) -> Result<CircuitBreaker, ConfigError> {
        let breaker = self.instrument(builder).build()?;
        self.watch(&breaker);
        Ok(breaker)
    }

    /// Reads every key of `registry` at each scrape (labels `breaker` and `key`), and the
    /// number of keys. The registry handle is kept.
    pub fn watch_keyed<K>(&self, registry: &KeyedRegistry<K>)
    where
        K: fmt::Display + Send + Sync + 'static,
    {
        let registry = registry.clone();
        self.lock().keyed.push(Box::new(move |out| {
            let mut keys = 0;
            registry.for_each(|key, breaker| {
                keys += 1;
                out.push((
                    vec![
                        ("breaker", Cow::Owned(breaker.name().to_string())),
                        ("key", Cow::Owned(key.to_string())),
                    ],
                    breaker.snapshot(),
                ));
            });
            if let Some(overflow) = registry.overflow() {
                out.push((
                    vec![("breaker", Cow::Owned(overflow.name().to_string()))],
                    overflow.snapshot(),
                ));
            }
            (registry.name().to_string(), keys)
        }));
    }
}

fn with(labels: &Labels, name: &'static str, value: &'static str) -> Labels {
    let mut l = labels.clone();
    l.push((name, Cow::Borrowed(value)));
    l
}

struct Handles {
    labels: Labels,
    success: Counter,
    failure: Counter,
    ignored: Counter,
    rejected: Counter,
    cancelled: Counter,
    would_reject: Counter,
    slow: Counter,
    families: Families,
}

impl Drop for Handles {
    /// The last listener with these labels takes their series out of the families.
    fn drop(&mut self) {
        let f = &self.families;
        let mut live = f.live();
        let Some(series) = live.get_mut(&self.labels) else {
            return;
        };
        series.users -= 1;
        if series.users > 0 {
            return;
        }
        let series = live.remove(&self.labels).unwrap_or_default();
        for outcome in OUTCOMES {
            f.calls.remove(&with(&self.labels, "outcome", outcome));
        }
        f.slow.remove(&self.labels);
        for labels in &series.transitions {
            f.transitions.remove(labels);
        }
        for labels in &series.overrides {
            f.overrides.remove(labels);
        }
    }
}

impl Handles {
    fn on_event(&self, event: &Event<'_>) {
        match *event {
            Event::Recorded { outcome, slow, .. } => {
                match outcome {
                    Outcome::Success => &self.success,
                    Outcome::Failure | Outcome::Trip(_) => &self.failure,
                    Outcome::Ignore => &self.ignored,
                }
                .inc();
                if slow {
                    self.slow.inc();
                }
            }
            Event::Rejected { .. } => {
                self.rejected.inc();
            }
            Event::Released { .. } => {
                self.cancelled.inc();
            }
            Event::WouldReject { .. } => {
                self.would_reject.inc();
            }
            // The shadow gauge reads the snapshot at scrape time.
            Event::Reconfigured { .. } => {}
            Event::Override { action, origin, .. } => {
                // Rare, as transitions are.
                let mut labels = with(&self.labels, "action", action.as_str());
                labels.push((
                    "origin",
                    Cow::Borrowed(if origin.is_local() { "local" } else { "remote" }),
                ));
                let f = &self.families;
                let mut live = f.live();
                f.overrides.get_or_create(&labels).inc();
                if let Some(series) = live.get_mut(&self.labels) {
                    series.overrides.insert(labels);
                }
            }
            Event::Transition {
                from,
                to,
                reason,
                shadow,
                ..
            } => {
                // Rare: a label set is built here, once per transition, and noted so that the
                // series goes with the others.
                let labels = transition_labels(&self.labels, from, to, reason, shadow);
                let f = &self.families;
                let mut live = f.live();
                f.transitions.get_or_create(&labels).inc();
                if let Some(series) = live.get_mut(&self.labels) {
                    series.transitions.insert(labels);
                }
            }
        }
    }
}

fn transition_labels(base: &Labels, from: State, to: State, reason: Reason, shadow: bool) -> Labels {
    let mut l = base.clone();
    l.push(("from", Cow::Borrowed(from.as_str())));
    l.push(("to", Cow::Borrowed(to.as_str())));
    l.push(("reason", Cow::Borrowed(reason.as_str())));
    l.push(("shadow", Cow::Borrowed(if shadow { "true" } else { "false" })));
    l
}

/// Encodes the gauges from snapshots taken at scrape time.
struct GaugeCollector {
    watched: Arc<Mutex<Watched>>,
}

impl fmt::Debug for GaugeCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GaugeCollector").finish_non_exhaustive()
    }
}

impl Collector for GaugeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let mut rows: Vec<(Labels, Snapshot)> = Vec::new();
        let mut registries = Vec::new();
        {
            let mut w = self
                .watched
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            w.breakers.retain(|weak| {
                let Some(root) = weak.upgrade() else {
                    return false;
                };
                let breaker = CircuitBreaker { root };
                rows.push((
                    vec![("breaker", Cow::Owned(breaker.name().to_string()))],
                    breaker.snapshot(),
                ));
                true
            });
            for source in &w.keyed {
                registries.push(source(&mut rows));
            }
        }
        type Read = fn(&Snapshot) -> f64;
        let gauges: [(&str, &str, Read); 5] = [
            (
                "circuit_breaker_state",
                "Circuit breaker state: 0 closed, 1 open, 2 half-open, 3 forced open, 4 disabled",
                |s| state_value(s.state),
            ),
            (
                "circuit_breaker_failure_rate",
                "Failure rate over the breaker's window (0 when empty)",
                |s| s.failure_rate.unwrap_or(0.0),
            ),
            (
                "circuit_breaker_slow_call_rate",
                "Slow-call rate over the breaker's window (0 when empty)",
                |s| s.slow_call_rate.unwrap_or(0.0),
            ),
            (
                "circuit_breaker_shadow",
                "Whether the circuit breaker is in shadow mode (1) or enforcing (0)",
                |s| f64::from(u8::from(s.shadow)),
            ),
            (
                "circuit_breaker_consecutive_failures",
                "The breaker's current run of consecutive failures",
                |s| f64::from(s.consecutive_failures),
            ),
        ];
        for (name, help, read) in gauges {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (labels, snapshot) in &rows {
                family.encode_family(labels)?.encode_gauge(&read(snapshot))?;
            }
        }
        if !registries.is_empty() {
            let mut family = encoder.encode_descriptor(
                "circuit_breaker_keys",
                "Keys held by a keyed circuit breaker registry",
                None,
                MetricType::Gauge,
            )?;
            for (name, keys) in &registries {
                family
                    .encode_family(&[("registry", name.as_str())])?
                    .encode_gauge(&(*keys as u64))?;
            }
        }
        Ok(())
    }
}
