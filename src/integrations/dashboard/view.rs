//! The JSON the page reads (`snapshot.json`, and each `snapshot` event of the stream): every
//! watched breaker's [`Snapshot`] read now (with `shadow`, `would_reject` and
//! `recovery_probe`), its rates and history from the sampler, its last transitions and its
//! operators' last actions; for every keyed registry, its top keys by rejections.
//!
//! It holds breaker names, keys, states, counts, rates and reasons: no request data, no
//! header, no credential (the breaker core never sees any).

use std::{collections::VecDeque, sync::Arc, time::Duration};

use serde::Serialize;
use tokio::time::Instant;

use super::hub::{Act, Action, Hub, Sample, Stats, Track, Transition, lock, unix_ms};
use crate::breaker::{CircuitBreaker, Snapshot};

/// Serialises an optional duration as fractional seconds.
fn secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

/// Serialises a shared string (serde's `rc` feature is not on).
fn string<S: serde::Serializer>(x: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(x)
}

#[derive(Serialize)]
pub(crate) struct View<'a> {
    title: &'a str,
    now_unix_ms: u64,
    sample_every_secs: f64,
    history_len: usize,
    breakers: Vec<BreakerView>,
    registries: Vec<RegistryView>,
}

#[derive(Serialize)]
struct RegistryView {
    name: String,
    keys: usize,
    max_keys: usize,
    top: Vec<BreakerView>,
}

#[derive(Serialize)]
struct BreakerView {
    #[serde(flatten)]
    snapshot: Snapshot,
    key: Option<String>,
    /// Whether the dashboard's listener is installed (calls, rejections and transitions are
    /// known only then).
    instrumented: bool,
    calls_per_sec: Option<f64>,
    rejections_per_sec: Option<f64>,
    history: History,
    transitions: Vec<TransitionView>,
    actions: Vec<ActionView>,
}

/// The samples as columns, oldest first.
#[derive(Serialize, Default)]
struct History {
    state: Vec<&'static str>,
    failure_rate: Vec<Option<f32>>,
    slow_call_rate: Vec<Option<f32>>,
    calls_per_sec: Vec<Option<f32>>,
    rejections_per_sec: Vec<Option<f32>>,
}

impl History {
    fn from(samples: Option<&VecDeque<Sample>>) -> Self {
        let mut h = Self::default();
        for s in samples.into_iter().flatten() {
            h.state.push(s.state.as_str());
            h.failure_rate.push(s.failure_rate);
            h.slow_call_rate.push(s.slow_call_rate);
            h.calls_per_sec.push(s.calls_per_sec);
            h.rejections_per_sec.push(s.rejections_per_sec);
        }
        h
    }
}

#[derive(Serialize)]
pub(crate) struct TransitionView {
    pub(crate) seq: u64,
    pub(crate) at_unix_ms: u64,
    pub(crate) ago_secs: f64,
    pub(crate) from: &'static str,
    pub(crate) to: &'static str,
    pub(crate) reason: &'static str,
    #[serde(serialize_with = "secs")]
    pub(crate) open_for_secs: Option<Duration>,
    /// In shadow mode: the transition refused nothing (an `open` is notional).
    pub(crate) shadow: bool,
}

/// An operator's action: `{"action": "force_open", "origin": "web-2-4242", "local": false,
/// "shadow": null, ...}`; for a reload, `"action": "reload"` and `shadow` the mode after it.
#[derive(Serialize)]
pub(crate) struct ActionView {
    pub(crate) seq: u64,
    pub(crate) at_unix_ms: u64,
    pub(crate) ago_secs: f64,
    pub(crate) action: &'static str,
    /// `local`, or the replica's origin string.
    #[serde(serialize_with = "string")]
    pub(crate) origin: Arc<str>,
    pub(crate) local: bool,
    pub(crate) shadow: Option<bool>,
}

impl ActionView {
    pub(crate) fn new(a: &Action, now: Instant) -> Self {
        Self {
            seq: a.seq,
            at_unix_ms: a.unix_ms,
            ago_secs: now.saturating_duration_since(a.at).as_secs_f64(),
            action: a.act.as_str(),
            origin: a.remote.clone().unwrap_or_else(|| "local".into()),
            local: a.remote.is_none(),
            shadow: match a.act {
                Act::Reload { shadow } => Some(shadow),
                Act::Override(_) => None,
            },
        }
    }
}

impl TransitionView {
    pub(crate) fn new(t: &Transition, now: Instant) -> Self {
        Self {
            seq: t.seq,
            at_unix_ms: t.unix_ms,
            ago_secs: now.saturating_duration_since(t.at).as_secs_f64(),
            from: t.from.as_str(),
            to: t.to.as_str(),
            reason: t.reason.as_str(),
            open_for_secs: t.open_for,
            shadow: t.shadow,
        }
    }
}

impl BreakerView {
    fn new(
        breaker: &CircuitBreaker,
        key: Option<String>,
        stats: Option<&Arc<Stats>>,
        track: &Track,
        now: Instant,
    ) -> Self {
        Self {
            snapshot: breaker.snapshot(),
            key,
            instrumented: stats.is_some(),
            calls_per_sec: track.calls_per_sec,
            rejections_per_sec: track.rejections_per_sec,
            history: History::from(track.history.as_ref()),
            transitions: stats.map_or_else(Vec::new, |s| {
                s.transitions()
                    .iter()
                    .map(|t| TransitionView::new(t, now))
                    .collect()
            }),
            actions: stats.map_or_else(Vec::new, |s| {
                s.actions().iter().map(|a| ActionView::new(a, now)).collect()
            }),
        }
    }
}

impl<'a> View<'a> {
    pub(crate) fn read(hub: &'a Hub) -> Self {
        let now = Instant::now();
        let r = lock(&hub.registered);
        let breakers = r
            .breakers
            .iter()
            .filter_map(|w| {
                let root = w.breaker.upgrade()?;
                let breaker = CircuitBreaker { root };
                Some(BreakerView::new(&breaker, None, w.stats.as_ref(), &w.track, now))
            })
            .collect();
        let registries = r
            .registries
            .iter()
            .map(|reg| RegistryView {
                name: reg.name.clone(),
                keys: reg.keys,
                max_keys: reg.max_keys,
                top: reg
                    .top
                    .iter()
                    .filter_map(|k| {
                        let root = k.breaker.upgrade()?;
                        let breaker = CircuitBreaker { root };
                        let view = match &k.stats {
                            Some(s) => {
                                let track = lock(&s.track);
                                BreakerView::new(&breaker, Some(k.key.clone()), Some(s), &track, now)
                            }
                            None => {
                                BreakerView::new(&breaker, Some(k.key.clone()), None, &Track::default(), now)
                            }
                        };
                        Some(view)
                    })
                    .collect(),
            })
            .collect();
        Self {
            title: &hub.settings.title,
            now_unix_ms: unix_ms(),
            sample_every_secs: hub.settings.sample_every.as_secs_f64(),
            history_len: hub.settings.history,
            breakers,
            registries,
        }
    }
}
