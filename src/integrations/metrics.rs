//! Metrics through the [`metrics`] facade (feature `metrics`): an event listener installed by
//! [`instrument`], plus [`report`] for the gauges read from a snapshot.
//!
//! ```
//! use std::time::Duration;
//! use tower_breaker::{CircuitBreaker, Outcome, integrations::metrics};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Install the recorder (e.g. metrics-exporter-prometheus) first: handles are taken from the
//! // recorder in place when `instrument` runs.
//! let breaker = metrics::instrument(CircuitBreaker::builder("openai").consecutive_failures(3)).build()?;
//! breaker.try_acquire()?.record(Outcome::Success); // circuit_breaker_calls_total{outcome="success"} += 1
//!
//! // The rate gauges are read from the breaker: refresh them before a scrape or on a timer.
//! tokio::spawn(async move {
//!     let mut tick = tokio::time::interval(Duration::from_secs(10));
//!     loop {
//!         tick.tick().await;
//!         metrics::report(&breaker);
//!     }
//! });
//! # Ok(()) }
//! ```
//!
//! # Metrics
//!
//! Every metric carries the label `breaker` (the breaker's name); a keyed breaker
//! instrumented with [`instrument_keyed`] also carries `key`.
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `circuit_breaker_state` | gauge | | `0` closed, `1` open, `2` half-open, `3` forced open, `4` disabled ([`state_value`]) |
//! | `circuit_breaker_calls_total` | counter | `outcome` | calls by outcome: `success`, `failure` (including a server-imposed [`Outcome::Trip`]), `ignored`, `rejected` (refused by the breaker), `cancelled` (permit dropped without an outcome), `would_reject` (let through by a breaker in [shadow mode](crate#shadow-mode) that would have refused it; its outcome is not recorded) |
//! | `circuit_breaker_slow_calls_total` | counter | | recorded calls slower than the slow-call threshold |
//! | `circuit_breaker_transitions_total` | counter | `from`, `to`, `reason`, `shadow` | state changes; states as in [`State::as_str`], reasons as in [`Reason::as_str`]; `shadow="true"` when the breaker was in shadow mode (the change is notional: alert on `shadow="false"`) |
//! | `circuit_breaker_shadow` | gauge | | `1` in shadow mode, `0` enforcing |
//! | `circuit_breaker_overrides_total` | counter | `action`, `origin` | operators' actions ([`Override::as_str`]), `origin` `local` or `remote` (from another replica; see [Manual overrides](crate#manual-overrides)) |
//! | `circuit_breaker_failure_rate` | gauge | | failures / calls in the window, `0` when it is empty (set by [`report`]) |
//! | `circuit_breaker_slow_call_rate` | gauge | | slow calls / calls in the window, `0` when it is empty (set by [`report`]) |
//! | `circuit_breaker_keys` | gauge | `registry` | keys held by a keyed registry (set by [`report_keyed`]) |
//!
//! The state gauge and the counters are pushed by the listener as events happen. The rate
//! gauges come from [`Snapshot`](crate::Snapshot)s: the facade has no pull hook, so
//! [`report`] (or [`report_keyed`]) sets them (and the state gauge) when called: from a
//! scrape handler or an interval task.
//!
//! # Cost
//!
//! [`instrument`] registers every handle it needs up front (one per outcome, the state and
//! shadow gauges; transition and override counters on their first occurrence, both being
//! rare), so a call costs a
//! few atomic increments and allocates no label. A breaker without the listener pays nothing:
//! the core builds no event when it has no listener. With no recorder installed, the
//! handles are no-ops.
//!
//! The labels are fixed when the builder is instrumented: a builder used as a template for
//! several breakers (a keyed registry, [`CircuitBreakerLayer::per_service`](crate::CircuitBreakerLayer::per_service))
//! makes them share one set of series. For per-key series, instrument each key's builder
//! with [`KeyedRegistryBuilder::map_builder`](crate::keyed::KeyedRegistryBuilder::map_builder)`(`[`instrument_keyed`]`)`;
//! for one series per service, instrument each named builder with
//! [`CircuitBreakerLayer::map_builder`](crate::CircuitBreakerLayer::map_builder)`(|b, _| `[`instrument`]`(b))`.
//!
//! The facade has no way to remove a series: an evicted key's series stay in the recorder
//! until the exporter drops them. Under key churn, let it expire idle series (for example
//! `metrics-exporter-prometheus`' `PrometheusBuilder::idle_timeout`), or use the
//! [`prometheus`] integration, whose series go with their breakers.
//!
// The `prometheus` integration is behind its own feature: link to its page on docs.rs without it.
#![cfg_attr(feature = "prometheus-client", doc = "[`prometheus`]: super::prometheus")]
#![cfg_attr(
    not(feature = "prometheus-client"),
    doc = concat!("[`prometheus`]: https://docs.rs/tower-breaker/", env!("CARGO_PKG_VERSION"), "/tower_breaker/integrations/prometheus/index.html")
)]

use std::{fmt, sync::Mutex};

use metrics::{Counter, Gauge, Label};

use crate::{
    breaker::{Builder, CircuitBreaker, Event, Override, Reason, State},
    classify::Outcome,
    keyed::KeyedRegistry,
};

/// `circuit_breaker_state`
pub const STATE: &str = "circuit_breaker_state";
/// `circuit_breaker_calls_total`
pub const CALLS: &str = "circuit_breaker_calls_total";
/// `circuit_breaker_slow_calls_total`
pub const SLOW_CALLS: &str = "circuit_breaker_slow_calls_total";
/// `circuit_breaker_transitions_total`
pub const TRANSITIONS: &str = "circuit_breaker_transitions_total";
/// `circuit_breaker_failure_rate`
pub const FAILURE_RATE: &str = "circuit_breaker_failure_rate";
/// `circuit_breaker_slow_call_rate`
pub const SLOW_CALL_RATE: &str = "circuit_breaker_slow_call_rate";
/// `circuit_breaker_keys`
pub const KEYS: &str = "circuit_breaker_keys";
/// `circuit_breaker_shadow`
pub const SHADOW: &str = "circuit_breaker_shadow";
/// `circuit_breaker_overrides_total`
pub const OVERRIDES: &str = "circuit_breaker_overrides_total";

pub use super::state_value;

/// Describes the metrics (units and help text) to the installed recorder. Optional.
pub fn describe() {
    metrics::describe_gauge!(
        STATE,
        "Circuit breaker state: 0 closed, 1 open, 2 half-open, 3 forced open, 4 disabled"
    );
    metrics::describe_counter!(CALLS, "Calls through a circuit breaker, by outcome");
    metrics::describe_counter!(SLOW_CALLS, "Calls slower than the breaker's slow-call threshold");
    metrics::describe_counter!(
        TRANSITIONS,
        "Circuit breaker state changes, by from, to, reason and shadow"
    );
    metrics::describe_gauge!(
        SHADOW,
        "Whether the circuit breaker is in shadow mode (1) or enforcing (0)"
    );
    metrics::describe_counter!(
        OVERRIDES,
        "Operators' actions on a circuit breaker, by action and origin"
    );
    metrics::describe_gauge!(FAILURE_RATE, "Failure rate over the breaker's window");
    metrics::describe_gauge!(SLOW_CALL_RATE, "Slow-call rate over the breaker's window");
    metrics::describe_gauge!(KEYS, "Keys held by a keyed circuit breaker registry");
}

/// `from`, `to`, `reason`, `shadow`.
type TransitionLabels = (State, State, Reason, bool);

struct Handles {
    labels: Vec<Label>,
    state: Gauge,
    success: Counter,
    failure: Counter,
    ignored: Counter,
    rejected: Counter,
    cancelled: Counter,
    would_reject: Counter,
    slow: Counter,
    shadow: Gauge,
    transitions: Mutex<Vec<(TransitionLabels, Counter)>>,
    overrides: Mutex<Vec<(Override, bool, Counter)>>,
}

impl Handles {
    fn new(labels: Vec<Label>, shadow: bool) -> Self {
        let calls = |outcome: &'static str| {
            let mut l = labels.clone();
            l.push(Label::from_static_parts("outcome", outcome));
            metrics::counter!(CALLS, l)
        };
        let handles = Self {
            state: metrics::gauge!(STATE, labels.clone()),
            success: calls("success"),
            failure: calls("failure"),
            ignored: calls("ignored"),
            rejected: calls("rejected"),
            cancelled: calls("cancelled"),
            would_reject: calls("would_reject"),
            slow: metrics::counter!(SLOW_CALLS, labels.clone()),
            shadow: metrics::gauge!(SHADOW, labels.clone()),
            transitions: Mutex::new(Vec::new()),
            overrides: Mutex::new(Vec::new()),
            labels,
        };
        handles.state.set(state_value(State::Closed)); // a breaker starts closed
        handles.shadow.set(f64::from(u8::from(shadow)));
        handles
    }

    fn on_event(&self, event: &Event<'_>) {
        match *event {
            Event::Recorded { outcome, slow, .. } => {
                match outcome {
                    Outcome::Success => &self.success,
                    Outcome::Failure | Outcome::Trip(_) => &self.failure,
                    Outcome::Ignore => &self.ignored,
                }
                .increment(1);
                if slow {
                    self.slow.increment(1);
                }
            }
            Event::Rejected { .. } => self.rejected.increment(1),
            Event::Released { .. } => self.cancelled.increment(1),
            Event::WouldReject { .. } => self.would_reject.increment(1),
            // A reload may set the shadow flag (a file's `shadow = true`).
            Event::Reconfigured { shadow, .. } => self.shadow.set(f64::from(u8::from(shadow))),
            Event::Override { action, origin, .. } => {
                if let Override::Shadow(on) = action {
                    self.shadow.set(f64::from(u8::from(on)));
                }
                self.override_counter(action, origin.is_local()).increment(1);
            }
            Event::Transition {
                from,
                to,
                reason,
                shadow,
                ..
            } => {
                self.state.set(state_value(to));
                self.transition(from, to, reason, shadow).increment(1);
            }
        }
    }

    fn transition(&self, from: State, to: State, reason: Reason, shadow: bool) -> Counter {
        let mut seen = self
            .transitions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = (from, to, reason, shadow);
        if let Some((_, c)) = seen.iter().find(|(k, _)| *k == key) {
            return c.clone();
        }
        let mut labels = self.labels.clone();
        labels.push(Label::from_static_parts("from", from.as_str()));
        labels.push(Label::from_static_parts("to", to.as_str()));
        labels.push(Label::from_static_parts("reason", reason.as_str()));
        labels.push(Label::from_static_parts(
            "shadow",
            if shadow { "true" } else { "false" },
        ));
        let counter = metrics::counter!(TRANSITIONS, labels);
        seen.push((key, counter.clone()));
        counter
    }

    #[cold]
    fn override_counter(&self, action: Override, local: bool) -> Counter {
        let mut seen = self
            .overrides
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((.., c)) = seen.iter().find(|(a, l, _)| (*a, *l) == (action, local)) {
            return c.clone();
        }
        let mut labels = self.labels.clone();
        labels.push(Label::from_static_parts("action", action.as_str()));
        labels.push(Label::from_static_parts(
            "origin",
            if local { "local" } else { "remote" },
        ));
        let counter = metrics::counter!(OVERRIDES, labels);
        seen.push((action, local, counter.clone()));
        counter
    }
}

/// Installs the metrics listener on `builder`, labelled `breaker="<builder's name>"`.
/// Handles are registered now, with the recorder installed now. See [the module docs](self).
pub fn instrument(builder: Builder) -> Builder {
    let labels = vec![Label::new("breaker", builder.name_ref().to_string())];
    with_labels(builder, labels)
}

/// Like [`instrument`], with the label `key` too: for a keyed registry's
/// [`map_builder`](crate::keyed::KeyedRegistryBuilder::map_builder).
///
/// ```
/// use tower_breaker::{CircuitBreaker, integrations::metrics, keyed::KeyedRegistry};
/// let registry = KeyedRegistry::<String>::builder(CircuitBreaker::builder("openai").consecutive_failures(5))
///     .map_builder(metrics::instrument_keyed)
///     .build()?;
/// # Ok::<_, tower_breaker::ConfigError>(())
/// ```
pub fn instrument_keyed<K: fmt::Display + ?Sized>(builder: Builder, key: &K) -> Builder {
    let labels = vec![
        Label::new("breaker", builder.name_ref().to_string()),
        Label::new("key", key.to_string()),
    ];
    with_labels(builder, labels)
}

/// Installs the metrics listener with exactly these labels.
pub fn with_labels(builder: Builder, labels: Vec<Label>) -> Builder {
    let handles = Handles::new(labels, builder.starts_shadow());
    builder.on_event(move |event| handles.on_event(event))
}

/// Sets the gauges read from `breaker`'s snapshot: state, shadow mode, failure rate,
/// slow-call rate, labelled `breaker="<name>"`. Call it before a scrape or from an interval task.
pub fn report(breaker: &CircuitBreaker) {
    report_with(breaker, vec![Label::new("breaker", breaker.name().to_string())]);
}

fn report_with(breaker: &CircuitBreaker, labels: Vec<Label>) {
    let s = breaker.snapshot();
    metrics::gauge!(STATE, labels.clone()).set(state_value(s.state));
    metrics::gauge!(SHADOW, labels.clone()).set(f64::from(u8::from(s.shadow)));
    metrics::gauge!(FAILURE_RATE, labels.clone()).set(s.failure_rate.unwrap_or(0.0));
    metrics::gauge!(SLOW_CALL_RATE, labels).set(s.slow_call_rate.unwrap_or(0.0));
}

/// [`report`] for every key of `registry` (labels `breaker` and `key`), and the number of keys
/// (`circuit_breaker_keys{registry="<template name>"}`).
pub fn report_keyed<K: fmt::Display>(registry: &KeyedRegistry<K>) {
    let mut keys = 0usize;
    registry.for_each(|key, breaker| {
        keys += 1;
        report_with(
            breaker,
            vec![
                Label::new("breaker", breaker.name().to_string()),
                Label::new("key", key.to_string()),
            ],
        );
    });
    if let Some(overflow) = registry.overflow() {
        report(overflow);
    }
    metrics::gauge!(KEYS, "registry" => registry.name().to_string()).set(keys as f64);
}
