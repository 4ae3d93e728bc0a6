//! What an alert says: [`AlertKind`], [`Alert`], and the two payload [`Format`]s.

use std::{fmt, time::Duration};

use serde::Serialize;
use tokio::time::Instant;

use crate::breaker::{Reason, Snapshot, State};

/// Which edge of an outage an alert reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AlertKind {
    /// A breaker that was serving (closed, or disabled) opened or was forced open: an outage
    /// begins.
    Opened,
    /// A half-open breaker opened again (a probe failed, was slow or timed out, or the server
    /// asked for a pause), or an open one's recovery probe failed or timed out (open → open,
    /// see [Recovery probes](crate#recovery-probes)): the outage goes on, for the next open
    /// period.
    Reopened,
    /// A breaker that was refusing calls (open, half-open or forced open) closed: enough
    /// probes succeeded, or an operator reset it.
    Recovered,
}

impl AlertKind {
    /// The alert a transition makes, if any. Open → half-open, an operator's force-open of an
    /// open breaker, and transitions to or from `Disabled` that do not open make none.
    pub const fn of(from: State, to: State) -> Option<AlertKind> {
        match (from, to) {
            (State::Closed | State::Disabled, State::Open | State::ForcedOpen) => Some(AlertKind::Opened),
            (State::HalfOpen | State::Open, State::Open) | (State::HalfOpen, State::ForcedOpen) => {
                Some(AlertKind::Reopened)
            }
            (State::Open | State::HalfOpen | State::ForcedOpen, State::Closed) => Some(AlertKind::Recovered),
            _ => None,
        }
    }

    /// `opened`, `reopened` or `recovered`.
    pub const fn as_str(self) -> &'static str {
        match self {
            AlertKind::Opened => "opened",
            AlertKind::Reopened => "reopened",
            AlertKind::Recovered => "recovered",
        }
    }
}

impl fmt::Display for AlertKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One alert, as the generic JSON webhook receives it ([`Format::Json`]):
///
/// ```json
/// {"breaker": "openai", "alert": "opened", "from": "closed", "to": "open",
///  "reason": "consecutive_failures", "shadow": false, "open_for_secs": 30.0, "outage_secs": null,
///  "consecutive_failures": 5, "calls": 40, "failures": 12, "slow_calls": 0,
///  "failure_rate": 0.3, "suppressed": 0, "at_unix_ms": 1767225600000, "source": "web-1"}
/// ```
///
/// The counts are the breaker's [`Snapshot`] read when it changed state (for an opening, the
/// window that tripped it; a recovery's are zero, the statistics having been cleared), and
/// `null` when the breaker is not known to the alerts (see
/// [`WebhookAlerts::instrument`](super::WebhookAlerts::instrument)).
///
/// `shadow: true` when the breaker is in [shadow mode](crate#shadow-mode): it refused (or
/// refuses) no call, the alert tells what it *would have* done.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Alert {
    /// The breaker's name.
    pub breaker: String,
    /// Which edge of the outage.
    #[serde(rename = "alert")]
    pub kind: AlertKind,
    /// The state before.
    pub from: State,
    /// The state after.
    pub to: State,
    /// Why it changed state.
    pub reason: Reason,
    /// Whether the breaker is in [shadow mode](crate#shadow-mode): the transition is notional,
    /// no call was refused (see [`WebhookBuilder::shadow_alerts`](super::WebhookBuilder::shadow_alerts)).
    pub shadow: bool,
    /// When it opened: how long it refuses calls before a probe. Serialised as
    /// `open_for_secs`.
    #[serde(rename = "open_for_secs", serialize_with = "secs")]
    pub open_for: Option<Duration>,
    /// When it recovered: how long since the outage began (the first opening these alerts
    /// saw), if they saw it. Serialised as `outage_secs`.
    #[serde(rename = "outage_secs", serialize_with = "secs")]
    pub outage: Option<Duration>,
    /// The run of consecutive failures (that opened it, for a consecutive-failures trip).
    pub consecutive_failures: Option<u32>,
    /// Outcomes in the breaker's window.
    pub calls: Option<u32>,
    /// Failures in the window.
    pub failures: Option<u32>,
    /// Slow calls in the window.
    pub slow_calls: Option<u32>,
    /// `failures / calls`, when the window holds any call.
    pub failure_rate: Option<f64>,
    /// Alerts of this breaker folded into this one by the rate limit (it reports the latest
    /// of them); 0 when none.
    pub suppressed: u32,
    /// When the breaker changed state, in UNIX milliseconds.
    pub at_unix_ms: u64,
    /// The application or replica that sent it ([`WebhookBuilder::source`](super::WebhookBuilder::source)).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// When it changed state, on tokio's clock (for the outage's length).
    #[serde(skip)]
    pub(crate) at: Instant,
}

impl Alert {
    pub(crate) fn new(
        name: &str,
        kind: AlertKind,
        (from, to, reason, open_for): (State, State, Reason, Option<Duration>),
        shadow: bool,
        snapshot: Option<&Snapshot>,
    ) -> Self {
        Alert {
            breaker: name.to_string(),
            kind,
            from,
            to,
            reason,
            shadow,
            open_for,
            outage: None,
            consecutive_failures: snapshot.map(|s| s.consecutive_failures),
            calls: snapshot.map(|s| s.calls),
            failures: snapshot.map(|s| s.failures),
            slow_calls: snapshot.map(|s| s.slow_calls),
            failure_rate: snapshot.and_then(|s| s.failure_rate),
            suppressed: 0,
            at_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            source: None,
            at: Instant::now(),
        }
    }

    /// The one-line text of the Slack payload, e.g. `:red_circle: Circuit breaker *openai*
    /// opened (consecutive_failures): 5 consecutive failures; 12 of 40 calls failed (30%).
    /// Calls are refused for 30s.`
    ///
    /// A shadow breaker's says what it would have done, with a blue icon, e.g.
    /// `:large_blue_circle: Circuit breaker *openai* (shadow: would have opened)
    /// (consecutive_failures): 5 consecutive failures. Calls still pass (shadow mode); it
    /// would refuse them for 30s.`
    pub fn text(&self) -> String {
        use fmt::Write;
        let mut t = String::new();
        if let Some(source) = &self.source {
            let _ = write!(t, "[{source}] ");
        }
        let icon = match self.kind {
            _ if self.shadow => ":large_blue_circle:",
            AlertKind::Opened => ":red_circle:",
            AlertKind::Reopened => ":large_orange_circle:",
            AlertKind::Recovered => ":large_green_circle:",
        };
        if self.shadow {
            let _ = write!(
                t,
                "{icon} Circuit breaker *{}* (shadow: would have {}) ({})",
                self.breaker, self.kind, self.reason
            );
        } else {
            let _ = write!(
                t,
                "{icon} Circuit breaker *{}* {} ({})",
                self.breaker, self.kind, self.reason
            );
        }
        let mut counts = Vec::new();
        if self.kind != AlertKind::Recovered {
            if let Some(n) = self.consecutive_failures.filter(|n| *n > 0) {
                counts.push(format!("{n} consecutive failures"));
            }
            if let (Some(failures), Some(calls)) = (self.failures, self.calls.filter(|c| *c > 0)) {
                let pct = (f64::from(failures) / f64::from(calls) * 100.0).round();
                counts.push(format!("{failures} of {calls} calls failed ({pct}%)"));
            }
            if let (Some(slow), Some(calls)) = (self.slow_calls.filter(|s| *s > 0), self.calls) {
                counts.push(format!("{slow} of {calls} calls slow"));
            }
        }
        if !counts.is_empty() {
            let _ = write!(t, ": {}", counts.join("; "));
        }
        t.push('.');
        match (self.kind, self.open_for, self.outage) {
            (AlertKind::Recovered, ..) if self.shadow => {
                t.push_str(" Calls passed throughout (shadow mode).")
            }
            (_, Some(d), _) if self.shadow => {
                let _ = write!(
                    t,
                    " Calls still pass (shadow mode); it would refuse them for {}.",
                    human(d)
                );
            }
            (_, None, _) if self.shadow => {
                t.push_str(
                    " Calls still pass (shadow mode); it would refuse them until an operator resets it.",
                );
            }
            (AlertKind::Recovered, _, Some(outage)) => {
                let _ = write!(t, " Calls flow again after {}.", human(outage));
            }
            (AlertKind::Recovered, _, None) => t.push_str(" Calls flow again."),
            (_, Some(d), _) => {
                let _ = write!(t, " Calls are refused for {}.", human(d));
            }
            (_, None, _) => t.push_str(" Calls are refused until an operator resets it."),
        }
        if self.suppressed > 0 {
            let _ = write!(
                t,
                " ({} earlier alert{} of this breaker folded into this one by the rate limit.)",
                self.suppressed,
                if self.suppressed == 1 { "" } else { "s" }
            );
        }
        t
    }

    /// The request body in `format`.
    pub(crate) fn body(&self, format: Format) -> Vec<u8> {
        let value = match format {
            Format::Json => serde_json::to_value(self),
            Format::Slack => Ok(serde_json::json!({ "text": self.text() })),
        };
        value.map_or_else(|_| b"{}".to_vec(), |v| v.to_string().into_bytes())
    }
}

/// A duration for people: whole seconds, or milliseconds below a second (`1m 30s`, `250ms`).
fn human(d: Duration) -> String {
    let d = if d >= Duration::from_secs(1) {
        Duration::from_secs(d.as_secs() + u64::from(d.subsec_nanos() > 0))
    } else {
        Duration::from_millis(u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX))
    };
    humantime::format_duration(d).to_string()
}

fn secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

/// The body a webhook receives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Format {
    /// The [`Alert`] as a JSON object (the default): for a generic receiver (an alert
    /// manager, an incident tool's webhook, your own endpoint).
    #[default]
    Json,
    /// `{"text": "..."}` with [`Alert::text`]: a Slack incoming webhook (and the receivers
    /// that take Slack's format: Mattermost, Rocket.Chat, Discord's `/slack` endpoint).
    Slack,
}
