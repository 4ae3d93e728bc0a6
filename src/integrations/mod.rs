//! Integrations with other crates and with operations tooling, each behind a feature:
//! `metrics` (the [`metrics`](https://docs.rs/metrics) facade), `prometheus-client`, and a
//! health report (serialisable with `serde`).

pub mod health;
#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(feature = "prometheus-client")]
pub mod prometheus;
