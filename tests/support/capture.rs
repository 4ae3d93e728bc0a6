//! Captures the `tracing` events of the test's thread, for tests that assert on logs.
//!
//! One global subscriber routes every event to the capture its thread started: per-test
//! `set_default` subscribers race on the callsites' cached interest when tests run in
//! parallel (a callsite first reached on a thread with no subscriber is cached as
//! uninterested for the whole process, and the capturing test never sees its events).
//! Include it with `#[path = "support/capture.rs"] mod capture;`.
//!
//! ```ignore
//! let capture = capture::Capture::start();
//! tracing::warn!(breaker = "openai", "circuit breaker opened");
//! assert_eq!(capture.count(tracing::Level::WARN, "breaker=openai"), 1);
//! ```
#![allow(dead_code, unreachable_pub)]

use std::{
    cell::RefCell,
    sync::{Arc, Mutex, Once},
};

use tracing::{Level, Subscriber};
use tracing_subscriber::{
    layer::{Context, Layer},
    prelude::*,
};

/// The events captured on one thread: their level, and their fields as `name=value `.
#[derive(Clone, Default)]
pub struct Capture(pub Arc<Mutex<Vec<(Level, String)>>>);

thread_local! {
    static CURRENT: RefCell<Option<Capture>> = const { RefCell::new(None) };
}

struct Router;

impl<S: Subscriber> Layer<S> for Router {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        struct Fields(String);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                use std::fmt::Write;
                let _ = write!(self.0, "{}={:?} ", field.name(), value);
            }
        }
        CURRENT.with(|c| {
            if let Some(capture) = &*c.borrow() {
                let mut fields = Fields(String::new());
                event.record(&mut fields);
                capture
                    .0
                    .lock()
                    .unwrap()
                    .push((*event.metadata().level(), fields.0));
            }
        });
    }
}

impl Capture {
    /// Starts capturing this thread's events (a current-thread runtime runs the test's
    /// tasks there too), in place of any capture the thread started before.
    pub fn start() -> Self {
        static INIT: Once = Once::new();
        INIT.call_once(|| {
            tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Router))
                .expect("no other global subscriber in the test binary");
        });
        let capture = Capture::default();
        CURRENT.with(|c| *c.borrow_mut() = Some(capture.clone()));
        capture
    }

    /// Every event captured so far.
    pub fn events(&self) -> Vec<(Level, String)> {
        self.0.lock().unwrap().clone()
    }

    /// The fields of the events at `level`.
    pub fn at(&self, level: Level) -> Vec<String> {
        let events = self.0.lock().unwrap();
        events
            .iter()
            .filter(|(l, _)| *l == level)
            .map(|(_, m)| m.clone())
            .collect()
    }

    /// How many events at `level` contain `text`.
    pub fn count(&self, level: Level, text: &str) -> usize {
        let events = self.0.lock().unwrap();
        events
            .iter()
            .filter(|(l, m)| *l == level && m.contains(text))
            .count()
    }
}
