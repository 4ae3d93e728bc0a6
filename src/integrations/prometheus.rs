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
//! | `circuit_breaker_calls_total` | counter | `breaker` (, `key`), `outcome` | `success`, `failure` (including [`Outcome::Trip`]), `ignored`, `rejected`, `cancelled` |
//! | `circuit_breaker_slow_calls_total` | counter | `breaker` (, `key`) | calls slower than the slow-call threshold |
//! | `circuit_breaker_transitions_total` | counter | `breaker` (, `key`), `from`, `to`, `reason` | state changes |
//!
//! The gauges are not copies: a collector reads each watched breaker's
//! [`Snapshot`] when the registry is encoded (watched single breakers are
//! held weakly; watched keyed registries list their current keys). The core keeps no
//! cumulative counts, so the counters come from an event listener ([`instrument`](BreakerMetrics::instrument)),
//! whose handles are fetched once, when the builder is instrumented: a call costs an atomic
//! increment and allocates nothing.
//!
// The `metrics` integration is behind its own feature: link to its page on docs.rs without it.
#![cfg_attr(feature = "metrics", doc = "[`metrics`]: super::metrics")]
#![cfg_attr(
    not(feature = "metrics"),
    doc = concat!("[`metrics`]: https://docs.rs/tower-breaker/", env!("CARGO_PKG_VERSION"), "/tower_breaker/integrations/metrics/index.html")
)]

use std::{
    borrow::Cow,
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

/// The breaker metric families, registered into a [`Registry`]. A cheap `Clone` handle.
#[derive(Clone)]
pub struct BreakerMetrics {
    calls: Family<Labels, Counter>,
    slow: Family<Labels, Counter>,
    transitions: Family<Labels, Counter>,
    watched: Arc<Mutex<Watched>>,
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
            calls: Family::default(),
            slow: Family::default(),
            transitions: Family::default(),
            watched: Arc::default(),
        };
        registry.register(
            "circuit_breaker_calls",
            "Calls through a circuit breaker, by outcome",
            metrics.calls.clone(),
        );
        registry.register(
            "circuit_breaker_slow_calls",
            "Calls slower than the breaker's slow-call threshold",
            metrics.slow.clone(),
        );
        registry.register(
            "circuit_breaker_transitions",
            "Circuit breaker state changes, by from, to and reason",
            metrics.transitions.clone(),
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
    pub fn instrument_with(&self, builder: Builder, labels: Labels) -> Builder {
        let calls = |outcome: &'static str| {
            let mut l = labels.clone();
            l.push(("outcome", Cow::Borrowed(outcome)));
            self.calls.get_or_create_owned(&l)
        };
        let handles = Handles {
            success: calls("success"),
            failure: calls("failure"),
            ignored: calls("ignored"),
            rejected: calls("rejected"),
            cancelled: calls("cancelled"),
            slow: self.slow.get_or_create_owned(&labels),
            transitions: self.transitions.clone(),
            labels,
        };
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

struct Handles {
    labels: Labels,
    success: Counter,
    failure: Counter,
    ignored: Counter,
    rejected: Counter,
    cancelled: Counter,
    slow: Counter,
    transitions: Family<Labels, Counter>,
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
            Event::Transition { from, to, reason, .. } => {
                // Rare: a label set is built here, once per transition.
                self.transitions
                    .get_or_create(&transition_labels(&self.labels, from, to, reason))
                    .inc();
            }
        }
    }
}

fn transition_labels(base: &Labels, from: State, to: State, reason: Reason) -> Labels {
    let mut l = base.clone();
    l.push(("from", Cow::Borrowed(from.as_str())));
    l.push(("to", Cow::Borrowed(to.as_str())));
    l.push(("reason", Cow::Borrowed(reason.as_str())));
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
        let gauges: [(&str, &str, Read); 4] = [
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
