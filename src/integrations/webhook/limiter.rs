//! The rate limit of repeated alerts, per breaker, and the outage each alert belongs to.
//!
//! The first alert of a breaker goes at once; alerts that come within `interval` of the last
//! one sent are held, the latest replacing the one held before (folded), and the one held is
//! sent when the interval ends, saying how many it folded. So a flapping breaker sends at
//! most one alert per interval, and the last one sent always describes its latest state.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    time::Duration,
};

use tokio::time::Instant;

use super::alert::{Alert, AlertKind};
use crate::breaker::Reason;

/// What these alerts know of one breaker.
#[derive(Debug, Default)]
struct Track {
    /// The outage in progress as these alerts saw it begin: when, and whether it is alerted
    /// (not an opening learned from another replica, unless those are alerted too).
    outage: Option<(Instant, bool)>,
    /// No alert of this breaker is sent before this instant.
    quiet_until: Option<Instant>,
    /// The latest alert held by the rate limit, and how many it replaced.
    held: Option<Alert>,
    folded: u32,
}

/// What became of an offered alert.
#[derive(Debug, PartialEq)]
pub(super) enum Offer {
    /// To be sent now.
    Send(Alert),
    /// Held by the rate limit; `true` when it replaced (folded) an alert held before.
    Held(bool),
    /// Not alerted: a kind left out, or the edge of an outage another replica began.
    Skipped,
}

#[derive(Debug)]
pub(super) struct Limiter {
    interval: Duration,
    kinds: HashSet<AlertKind>,
    remote: bool,
    shadow: bool,
    tracks: HashMap<String, Track>,
    /// When each held alert is due, by breaker.
    due: BTreeSet<(Instant, String)>,
    prune_at: usize,
}

impl Limiter {
    pub(super) fn new(interval: Duration, kinds: HashSet<AlertKind>, remote: bool, shadow: bool) -> Self {
        Self {
            interval,
            kinds,
            remote,
            shadow,
            tracks: HashMap::new(),
            due: BTreeSet::new(),
            prune_at: 256,
        }
    }

    pub(super) fn offer(&mut self, mut alert: Alert, now: Instant) -> Offer {
        if self.tracks.len() >= self.prune_at {
            self.tracks.retain(|_, t| {
                t.outage.is_some() || t.held.is_some() || t.quiet_until.is_some_and(|q| q > now)
            });
            self.prune_at = (self.tracks.len() * 2).max(256);
        }
        let track = self.tracks.entry(alert.breaker.clone()).or_default();
        let alerted = match alert.kind {
            AlertKind::Opened => {
                let alerted =
                    (self.remote || alert.reason != Reason::Remote) && (self.shadow || !alert.shadow);
                track.outage = Some((alert.at, alerted));
                alerted
            }
            AlertKind::Reopened => track.outage.get_or_insert((alert.at, true)).1,
            AlertKind::Recovered => match track.outage.take() {
                Some((began, alerted)) => {
                    alert.outage = Some(alert.at.saturating_duration_since(began));
                    alerted
                }
                None => true,
            },
        };
        if !alerted || !self.kinds.contains(&alert.kind) {
            return Offer::Skipped;
        }
        match track.quiet_until {
            Some(quiet) if now < quiet => {
                if track.held.is_none() {
                    self.due.insert((quiet, alert.breaker.clone()));
                }
                let folded = track.held.replace(alert).is_some();
                track.folded += u32::from(folded);
                Offer::Held(folded)
            }
            _ => {
                if !self.interval.is_zero() {
                    track.quiet_until = now.checked_add(self.interval);
                }
                Offer::Send(alert)
            }
        }
    }

    /// When the next held alert is due.
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.due.first().map(|(at, _)| *at)
    }

    /// The held alerts due at `now` (all of them when `all`), oldest deadline first.
    pub(super) fn take_due(&mut self, now: Instant, all: bool, mut out: impl FnMut(Alert)) {
        while let Some((at, _)) = self.due.first() {
            if !all && *at > now {
                break;
            }
            let Some((_, name)) = self.due.pop_first() else {
                break;
            };
            let Some(track) = self.tracks.get_mut(&name) else {
                continue;
            };
            if let Some(mut alert) = track.held.take() {
                alert.suppressed = std::mem::take(&mut track.folded);
                track.quiet_until = now.checked_add(self.interval);
                out(alert);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::State;

    fn alert(name: &str, kind: AlertKind, reason: Reason, at: Instant) -> Alert {
        let (from, to) = match kind {
            AlertKind::Opened => (State::Closed, State::Open),
            AlertKind::Reopened => (State::HalfOpen, State::Open),
            AlertKind::Recovered => (State::HalfOpen, State::Closed),
        };
        let mut a = Alert::new(name, kind, (from, to, reason, None), false, None);
        a.at = at;
        a
    }

    fn all() -> HashSet<AlertKind> {
        [AlertKind::Opened, AlertKind::Reopened, AlertKind::Recovered].into()
    }

    #[test]
    fn a_flapping_breaker_sends_one_alert_per_interval_and_the_latest_last() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut l = Limiter::new(60 * s, all(), false, true);
        let sent = |o: Offer| matches!(o, Offer::Send(_));
        assert!(sent(
            l.offer(alert("a", AlertKind::Opened, Reason::FailureRate, t0), t0)
        ));
        assert_eq!(
            l.offer(
                alert("a", AlertKind::Recovered, Reason::ProbesSucceeded, t0 + s),
                t0 + s
            ),
            Offer::Held(false)
        );
        assert_eq!(
            l.offer(
                alert("a", AlertKind::Opened, Reason::FailureRate, t0 + 2 * s),
                t0 + 2 * s
            ),
            Offer::Held(true)
        );
        assert_eq!(
            l.offer(
                alert("a", AlertKind::Recovered, Reason::ProbesSucceeded, t0 + 3 * s),
                t0 + 3 * s
            ),
            Offer::Held(true)
        );
        // Another breaker is limited on its own.
        assert!(sent(l.offer(
            alert("b", AlertKind::Opened, Reason::FailureRate, t0 + 3 * s),
            t0 + 3 * s
        )));
        assert_eq!(l.next_due(), Some(t0 + 60 * s));
        let mut out = Vec::new();
        l.take_due(t0 + 59 * s, false, |a| out.push(a));
        assert!(out.is_empty());
        l.take_due(t0 + 60 * s, false, |a| out.push(a));
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].kind, out[0].suppressed), (AlertKind::Recovered, 2));
        assert_eq!(out[0].outage, Some(s), "the outage began with the second opening");
        assert_eq!(l.next_due(), None);
        // The next alert waits for the interval that the flushed one started.
        assert_eq!(
            l.offer(
                alert("a", AlertKind::Opened, Reason::FailureRate, t0 + 61 * s),
                t0 + 61 * s
            ),
            Offer::Held(false)
        );
        assert_eq!(l.next_due(), Some(t0 + 120 * s));
    }

    #[test]
    fn an_outage_another_replica_began_is_not_alerted_at_either_edge() {
        let t0 = Instant::now();
        let mut l = Limiter::new(Duration::ZERO, all(), false, true);
        assert_eq!(
            l.offer(alert("a", AlertKind::Opened, Reason::Remote, t0), t0),
            Offer::Skipped
        );
        assert_eq!(
            l.offer(alert("a", AlertKind::Reopened, Reason::ProbeFailed, t0), t0),
            Offer::Skipped
        );
        assert_eq!(
            l.offer(alert("a", AlertKind::Recovered, Reason::ProbesSucceeded, t0), t0),
            Offer::Skipped
        );
        // With remote openings alerted, and no rate limit.
        let mut l = Limiter::new(Duration::ZERO, all(), true, true);
        assert!(matches!(
            l.offer(alert("a", AlertKind::Opened, Reason::Remote, t0), t0),
            Offer::Send(_)
        ));
        assert!(matches!(
            l.offer(alert("a", AlertKind::Recovered, Reason::ProbesSucceeded, t0), t0),
            Offer::Send(_)
        ));
    }

    #[test]
    fn left_out_kinds_are_skipped_but_the_outage_is_measured() {
        let t0 = Instant::now();
        let mut l = Limiter::new(Duration::ZERO, [AlertKind::Recovered].into(), false, true);
        assert_eq!(
            l.offer(alert("a", AlertKind::Opened, Reason::FailureRate, t0), t0),
            Offer::Skipped
        );
        let later = t0 + Duration::from_secs(90);
        let Offer::Send(a) = l.offer(
            alert("a", AlertKind::Recovered, Reason::ProbesSucceeded, later),
            later,
        ) else {
            panic!("recoveries are alerted")
        };
        assert_eq!(a.outage, Some(Duration::from_secs(90)));
    }

    #[test]
    fn idle_breakers_are_forgotten() {
        let t0 = Instant::now();
        let mut l = Limiter::new(Duration::from_secs(1), all(), false, true);
        for i in 0..300 {
            let name = format!("k{i}");
            l.offer(alert(&name, AlertKind::Opened, Reason::FailureRate, t0), t0);
            l.offer(
                alert(&name, AlertKind::Recovered, Reason::ProbesSucceeded, t0),
                t0,
            );
        }
        l.take_due(t0 + Duration::from_secs(2), false, drop);
        // Past their quiet period, with no outage: forgotten at the next pruning (when the
        // map has doubled since the last one).
        let later = t0 + Duration::from_secs(5);
        for i in 0..250 {
            l.offer(
                alert(&format!("n{i}"), AlertKind::Recovered, Reason::Reset, later),
                later,
            );
        }
        assert!(l.tracks.len() < 300, "{}", l.tracks.len());
        assert!(l.tracks.keys().all(|k| k.starts_with('n')));
    }
}
