//! The server-sent event stream (`events`): a `snapshot` event at once and every
//! `sample_every` (the same JSON as `snapshot.json`), a `transition` event as each watched
//! breaker changes state (`shadow`: in shadow mode, where an `open` refuses nothing), and an
//! `action` event for each operator's override or reload (`origin`: `local` or the replica's).
//!
//! ```text
//! retry: 2000
//!
//! event: snapshot
//! data: {"title":"...","breakers":[...],"registries":[...]}
//!
//! event: transition
//! data: {"breaker":"openai","key":null,"seq":0,"at_unix_ms":1767225600000,"ago_secs":0.0,"from":"closed","to":"open","reason":"consecutive_failures","open_for_secs":30.0,"shadow":false}
//!
//! event: action
//! data: {"breaker":"openai","key":null,"seq":1,"at_unix_ms":1767225600000,"ago_secs":0.0,"action":"force_open","origin":"web-2-4242","local":false,"shadow":null}
//! ```
//!
//! Transitions reach the stream through a bounded broadcast channel; a stream that falls
//! behind skips what it missed (the next snapshot has it). The stream polls a channel
//! receiver and a timer: no task per client.

use std::{
    fmt,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use serde::Serialize;
use tokio::time::{Interval, MissedTickBehavior};
use tokio_stream::{Stream, wrappers::BroadcastStream};

use super::{
    hub::{Action, Hub, Transition},
    view::{ActionView, TransitionView},
};

/// How long a browser waits before reconnecting a dropped stream, in milliseconds.
const RETRY_MS: u32 = 2000;

/// The event stream of one client.
pub(crate) struct EventStream {
    hub: Arc<Hub>,
    events: BroadcastStream<Bytes>,
    tick: Interval,
    first: bool,
}

impl fmt::Debug for EventStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream").finish_non_exhaustive()
    }
}

impl EventStream {
    /// Subscribes to the transitions first, so that none between the first snapshot and the
    /// subscription is lost.
    pub(crate) fn new(hub: Arc<Hub>) -> Self {
        let events = BroadcastStream::new(hub.events.subscribe());
        let mut tick = tokio::time::interval(hub.settings.sample_every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        Self {
            hub,
            events,
            tick,
            first: true,
        }
    }

    /// The next frame: a pending transition, else a snapshot when the timer fires. Never ends.
    pub(crate) fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Bytes> {
        loop {
            match Pin::new(&mut self.events).poll_next(cx) {
                Poll::Ready(Some(Ok(frame))) => return Poll::Ready(frame),
                // Lagged: the transitions it missed are in the next snapshot.
                Poll::Ready(Some(Err(_))) => continue,
                Poll::Ready(None) | Poll::Pending => break,
            }
        }
        match self.tick.poll_tick(cx) {
            Poll::Ready(_) => {
                let json = self.hub.view_json();
                let mut frame = Vec::with_capacity(json.len() + 40);
                if std::mem::take(&mut self.first) {
                    frame.extend_from_slice(format!("retry: {RETRY_MS}\n\n").as_bytes());
                }
                frame.extend_from_slice(b"event: snapshot\ndata: ");
                frame.extend_from_slice(&json);
                frame.extend_from_slice(b"\n\n");
                Poll::Ready(Bytes::from(frame))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[derive(Serialize)]
struct TransitionEvent<'a> {
    breaker: &'a str,
    key: Option<&'a str>,
    #[serde(flatten)]
    transition: TransitionView,
}

/// A `transition` event, formatted once for every stream.
pub(crate) fn transition_frame(name: &str, key: Option<&str>, t: &Transition) -> Bytes {
    let event = TransitionEvent {
        breaker: name,
        key,
        transition: TransitionView::new(t, t.at),
    };
    let json = serde_json::to_string(&event).unwrap_or_else(|_| "{}".into());
    // JSON from serde_json has no raw newline, so one `data:` line carries it.
    Bytes::from(format!("event: transition\ndata: {json}\n\n"))
}

#[derive(Serialize)]
struct ActionEvent<'a> {
    breaker: &'a str,
    key: Option<&'a str>,
    #[serde(flatten)]
    action: ActionView,
}

/// An `action` event (an operator's override or a reload), formatted once for every stream.
pub(crate) fn action_frame(name: &str, key: Option<&str>, a: &Action) -> Bytes {
    let event = ActionEvent {
        breaker: name,
        key,
        action: ActionView::new(a, a.at),
    };
    let json = serde_json::to_string(&event).unwrap_or_else(|_| "{}".into());
    Bytes::from(format!("event: action\ndata: {json}\n\n"))
}
