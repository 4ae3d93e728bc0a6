//! `dashboards/grafana.json` queries only what the crate exports.
//!
//! Every PromQL expression of the dashboard (panel targets and template variables) is parsed
//! with a real PromQL parser; every metric name it selects, every label it matches on, groups
//! by or shows in a legend must be exported by the crate, as rendered here from live breakers:
//! the breaker families by both `integrations::prometheus` (a `prometheus_client` registry,
//! encoded as Prometheus text) and `integrations::metrics` (the `metrics` facade, through a
//! debugging recorder), so the dashboard works with either; the Redis sync families by the
//! `metrics` facade, which is where the sync reports them.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use metrics_util::debugging::DebuggingRecorder;
use prometheus_client::{encoding::text::encode, registry::Registry};
use promql_parser::parser::{Expr, VectorSelector, parse};
use tower_breaker::{
    CircuitBreaker, Outcome,
    integrations::{metrics as m, prometheus::BreakerMetrics, redis::RedisSync},
    keyed::KeyedRegistry,
};

const DASHBOARD: &str = include_str!("../dashboards/grafana.json");

/// Exported metric names with the label names each carries.
type Exported = BTreeMap<String, BTreeSet<String>>;

/// What one expression uses.
#[derive(Debug, Default)]
struct Uses {
    /// Each selector's metric and the labels it matches on.
    selectors: Vec<(String, BTreeSet<String>)>,
    /// Labels in `by`/`without`/`on`/`ignoring`, with the metrics below them.
    groupings: Vec<(BTreeSet<String>, Vec<String>)>,
}

fn selector(v: &VectorSelector, uses: &mut Uses) -> Vec<String> {
    let mut name = v.name.clone();
    let mut labels = BTreeSet::new();
    for matcher in &v.matchers.matchers {
        if matcher.name == "__name__" {
            name = Some(matcher.value.clone());
        } else {
            labels.insert(matcher.name.clone());
        }
    }
    let name = name.expect("every selector names its metric");
    uses.selectors.push((name.clone(), labels));
    vec![name]
}

/// Walks `e`, returning the metrics it selects.
fn walk(e: &Expr, uses: &mut Uses) -> Vec<String> {
    match e {
        Expr::Aggregate(a) => {
            let metrics = walk(&a.expr, uses);
            if let Some(param) = &a.param {
                walk(param, uses);
            }
            if let Some(modifier) = &a.modifier {
                let labels = modifier.labels().labels.iter().cloned().collect();
                uses.groupings.push((labels, metrics.clone()));
            }
            metrics
        }
        Expr::Binary(b) => {
            let mut metrics = walk(&b.lhs, uses);
            metrics.extend(walk(&b.rhs, uses));
            if let Some(matching) = b.modifier.as_ref().and_then(|m| m.matching.as_ref()) {
                let labels = matching.labels().labels.iter().cloned().collect();
                uses.groupings.push((labels, metrics.clone()));
            }
            metrics
        }
        Expr::Unary(u) => walk(&u.expr, uses),
        Expr::Paren(p) => walk(&p.expr, uses),
        Expr::Subquery(s) => walk(&s.expr, uses),
        Expr::VectorSelector(v) => selector(v, uses),
        Expr::MatrixSelector(ms) => selector(&ms.vs, uses),
        Expr::Call(c) => c.args.args.iter().flat_map(|a| walk(a, uses)).collect(),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => Vec::new(),
    }
}

/// Grafana's variables, replaced by values PromQL accepts.
fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m")
        .replace("$__range", "1h")
        .replace("$__interval", "1m")
        .replace("$breaker", ".*")
}

/// Every `(expr, legendFormat)` of the dashboard's panels (rows' panels included).
fn targets(panels: &[serde_json::Value], out: &mut Vec<(String, Option<String>)>) {
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("every target has an expr");
            out.push((
                expr.to_string(),
                target["legendFormat"].as_str().map(String::from),
            ));
        }
        targets(panel["panels"].as_array().map_or(&[], Vec::as_slice), out);
    }
}

/// `{{label}}` references of a legend.
fn legend_labels(legend: &str) -> Vec<String> {
    legend
        .split("{{")
        .skip(1)
        .filter_map(|s| s.split_once("}}").map(|(l, _)| l.trim().to_string()))
        .collect()
}

/// Label names of a Prometheus text sample's `{...}`.
fn label_names(labels: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let (mut rest, mut in_value, mut escaped) = (String::new(), false, false);
    for c in labels.chars() {
        if in_value {
            match (escaped, c) {
                (false, '\\') => escaped = true,
                (false, '"') => in_value = false,
                _ => escaped = false,
            }
        } else if c == '"' {
            in_value = true;
        } else if c == '=' {
            names.insert(
                std::mem::take(&mut rest)
                    .trim_start_matches(',')
                    .trim()
                    .to_string(),
            );
        } else {
            rest.push(c);
        }
    }
    names
}

/// The breaker families as `integrations::prometheus` exports them.
fn prometheus_client_export() -> Exported {
    let mut registry = Registry::default();
    let metrics = BreakerMetrics::register(&mut registry);
    let breaker = metrics
        .build(
            CircuitBreaker::builder("openai")
                .consecutive_failures(2)
                .slow_calls(Duration::from_secs(1), 1.0),
        )
        .unwrap();
    breaker.try_acquire().unwrap().record(Outcome::Success);
    breaker.try_acquire().unwrap().record(Outcome::Ignore);
    drop(breaker.try_acquire().unwrap());
    breaker.try_acquire().unwrap().record(Outcome::Failure);
    breaker.try_acquire().unwrap().record(Outcome::Failure);
    assert!(breaker.try_acquire().is_err());
    let mm = metrics.clone();
    let models = KeyedRegistry::<String>::builder(CircuitBreaker::builder("models").consecutive_failures(1))
        .map_builder(move |b, key| mm.instrument_keyed(b, key))
        .build()
        .unwrap();
    metrics.watch_keyed(&models);
    models.try_acquire("gpt-4o").unwrap().record(Outcome::Failure);
    // An operator's action (the overrides family), on a breaker of its own, alive at the
    // scrape (series go with their breakers).
    let payments = metrics
        .build(CircuitBreaker::builder("payments").consecutive_failures(1))
        .unwrap();
    payments.set_shadow(true);

    let mut text = String::new();
    encode(&mut text, &registry).unwrap();
    let mut exported = Exported::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let sample = line.rsplit_once(' ').unwrap().0;
        let (name, labels) = match sample.split_once('{') {
            Some((name, labels)) => (name, label_names(labels.trim_end_matches('}'))),
            None => (sample, BTreeSet::new()),
        };
        exported.entry(name.to_string()).or_default().extend(labels);
    }
    exported
}

/// The breaker and Redis sync families as the `metrics` facade gets them.
async fn metrics_facade_export() -> Exported {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let breaker = m::instrument(
        CircuitBreaker::builder("openai")
            .consecutive_failures(1)
            .slow_calls(Duration::from_secs(1), 1.0),
    )
    .build()
    .unwrap();
    breaker.try_acquire().unwrap().record(Outcome::Success);
    breaker.try_acquire().unwrap().record(Outcome::Failure);
    assert!(breaker.try_acquire().is_err());
    m::report(&breaker);
    let models = KeyedRegistry::<String>::builder(CircuitBreaker::builder("models").consecutive_failures(1))
        .map_builder(m::instrument_keyed)
        .build()
        .unwrap();
    models.try_acquire("gpt-4o").unwrap().record(Outcome::Failure);
    m::report_keyed(&models);
    // An operator's action (the overrides family), on a breaker of its own.
    m::instrument(CircuitBreaker::builder("payments").consecutive_failures(1))
        .build()
        .unwrap()
        .set_shadow(true);
    // The sync registers its families when built; nothing listens on port 1 (loopback), so it
    // stays disconnected, which is what its gauge then says.
    let client = tower_breaker::integrations::redis::Client::open("redis://127.0.0.1:1/").unwrap();
    let sync = RedisSync::builder(client).prefix("fleet").build().unwrap();

    let mut exported = Exported::new();
    for (key, _, _, _) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        exported
            .entry(key.name().to_string())
            .or_default()
            .extend(key.labels().map(|l| l.key().to_string()));
    }
    drop(sync);
    exported
}

#[tokio::test]
async fn every_metric_and_label_the_dashboard_queries_is_exported() {
    let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).expect("valid JSON");
    let mut all = Vec::new();
    targets(dashboard["panels"].as_array().unwrap(), &mut all);
    // Template variables: label_values(metric, label).
    for var in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(q) = var["query"]["query"].as_str() {
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|s| s.strip_suffix(')'))
                .expect("label_values(metric, label)");
            let (metric, label) = inner.split_once(',').unwrap();
            all.push((format!("{}{{{}=~\".+\"}}", metric.trim(), label.trim()), None));
        }
    }
    assert!(all.len() >= 15, "{} expressions", all.len());

    let client = prometheus_client_export();
    let facade = metrics_facade_export().await;
    let mut used_metrics = BTreeSet::new();
    for (expr, legend) in &all {
        let parsed = parse(&substitute(expr)).unwrap_or_else(|e| panic!("{expr}: {e}"));
        let mut uses = Uses::default();
        let metrics = walk(&parsed, &mut uses);
        assert!(!metrics.is_empty(), "{expr} selects no metric");
        // Where each metric must be exported: Redis families by the facade (the sync reports
        // there only), breaker families by both integrations.
        let sources = |metric: &str| -> Vec<(&str, &Exported)> {
            if metric.starts_with("circuit_breaker_redis_") {
                vec![("metrics", &facade)]
            } else {
                vec![("prometheus-client", &client), ("metrics", &facade)]
            }
        };
        let labels_of = |metric: &str, source: &Exported| -> BTreeSet<String> {
            source.get(metric).cloned().unwrap_or_default()
        };
        for (metric, labels) in &uses.selectors {
            used_metrics.insert(metric.clone());
            for (what, source) in sources(metric) {
                let exported = source
                    .get(metric)
                    .unwrap_or_else(|| panic!("{expr}: {metric} is not exported through {what}: {source:?}"));
                for label in labels {
                    assert!(
                        exported.contains(label),
                        "{expr}: {metric} has no label {label:?} ({what})"
                    );
                }
            }
        }
        for (labels, below) in &uses.groupings {
            for label in labels {
                for metric in below {
                    for (what, source) in sources(metric) {
                        assert!(
                            labels_of(metric, source).contains(label),
                            "{expr}: groups by {label:?}, which {metric} lacks ({what})"
                        );
                    }
                }
            }
        }
        for label in legend.iter().flat_map(|l| legend_labels(l)) {
            for metric in &metrics {
                for (what, source) in sources(metric) {
                    assert!(
                        labels_of(metric, source).contains(&label),
                        "{expr}: the legend shows {{{{{label}}}}}, which {metric} lacks ({what})"
                    );
                }
            }
        }
    }

    // And the dashboard shows every family but one.
    let exported: BTreeSet<&String> = client.keys().chain(facade.keys()).collect();
    let not_shown: Vec<&&String> = exported
        .iter()
        .filter(|name| !used_metrics.contains(name.as_str()))
        .collect();
    // The run of consecutive failures is exported by the prometheus-client integration only,
    // and its effect (the trip) is on the state timeline.
    assert_eq!(
        not_shown,
        [&&"circuit_breaker_consecutive_failures".to_string()],
        "families the dashboard does not show"
    );
    println!(
        "{} expressions, {} metrics checked: {used_metrics:?}",
        all.len(),
        used_metrics.len()
    );
}
