//! Hot reload: a new configuration applied to a live breaker, keeping its state, its open
//! deadline, its probes in flight and as much of its window as the new shape allows.
//!
//! The closed path reads the trip rules from atomics (`rules.rs`) and the window through
//! `Shared::window`: one more load (the shape index, next to the state word) than an
//! immutable field, no lock, no reference count. A reload that changes the window's shape
//! builds the new window under the breaker's lock, fills it from the old one, publishes it in
//! a set-once slot and then moves the shape index to it. The old window is kept until the
//! breaker is dropped, so that a call recording into it at that instant never reads freed
//! memory (its outcome is lost: at most one per thread racing the reload). Hence a bound:
//! a breaker has at most [`MAX_SHAPES`] windows in its life, the one it was built with and
//! one per reload that changed the shape (a reload that keeps the shape reuses the window).
//!
//! Why not `arc-swap` for the window: `ArcSwap::load()` (a guard written to a thread-local
//! debt slot, then released) measured 12.4 ns a load here, against 0.45 ns for the shape index
//! and 0.35 ns for the immutable field it replaces; the whole closed path in the core is about
//! 12 ns. `arc_swap::Cache` loads in 0.5 ns but needs `&mut` per handle, which the shared
//! `&CircuitBreaker` of the hot path does not have. A `RwLock` would write a shared line per
//! call.

use std::sync::OnceLock;

use super::{
    Builder, CircuitBreaker, Config, ConfigError, CountWindow, Event, Pending, Reason, Shared, State,
    TimeWindow, WindowStore, builder::Window, consecutive_word, saturating_nanos, sync::Ordering,
};

/// How many windows a breaker may have in its life: the first and one per reload that
/// changed the window's shape.
pub(crate) const MAX_SHAPES: usize = 16;

/// The windows of the reloads that changed the window's shape, set once each, in order.
pub(super) type Reshaped = [OnceLock<WindowStore>; MAX_SHAPES - 1];

impl Shared {
    /// The window the rate rules read now.
    #[inline(always)]
    pub(super) fn window(&self) -> &WindowStore {
        match self.hot.shape.load(Ordering::Acquire) {
            0 => &self.window,
            n => self.reshaped_window(n),
        }
    }

    #[cold]
    fn reshaped_window(&self, n: u32) -> &WindowStore {
        self.reshaped
            .get()
            .and_then(|all| all.get(n as usize - 1))
            .and_then(OnceLock::get)
            .unwrap_or(&self.window)
    }
}

impl CircuitBreaker {
    /// Applies every setting of `builder` to this live breaker: a hot reload, with no call
    /// refused, no state lost and no handle to replace. See [Hot reload](crate#hot-reload)
    /// for the rules; in short:
    ///
    /// - **Kept**: the state (closed, open, half-open, forced open, disabled), the generation
    ///   (calls in flight stay current, their outcomes count), the open deadline (an open
    ///   breaker stays open until the deadline it has), the backoff's attempt count, the
    ///   half-open probes in flight and their successes, the shadow flag unless `builder`
    ///   sets one ([`Builder::shadow`]), the would-be rejections, the name and the listeners.
    /// - **The window**: same shape (kind and size), kept as is; a count window shrunk keeps
    ///   the latest calls that fit, grown keeps them all; a time window lengthened or
    ///   shortened keeps the calls still inside the new window, to bucket resolution (a tenth
    ///   of the window); between count and time, or to or from no window, the window starts
    ///   empty. The consecutive run is kept whatever the window does (a consecutive rule
    ///   switched on, or off, starts the run at zero).
    /// - **When the new settings act**: the trip rules judge a closed breaker's statistics
    ///   at once, in the reload (a threshold lowered below the current failure rate, or a
    ///   consecutive threshold at or below the current run, opens it then, with that rule's
    ///   reason); `open_duration` / `open_backoff` from the next opening (the current open
    ///   period keeps its deadline), `max_open_duration` from the next server wait,
    ///   `half_open_permits` from the next admission (probes already in flight stay),
    ///   `half_open_successes` from the next probe success, `half_open_max_wait` at the next
    ///   check of the probes in flight (counted from the oldest one's admission), the
    ///   slow-call threshold from the next call recorded (calls in flight too: a permit
    ///   carries its start, not a threshold), a slow-call rule switched on from the calls
    ///   admitted after the reload.
    ///
    /// The builder's listeners and recovery probe are ignored (a breaker's listeners, as its
    /// name, are its identity: integrations registered them; a
    /// [recovery probe](crate#recovery-probes) is code, kept with its timeout, and runs at the
    /// deadline the breaker keeps). Its name must be this breaker's: another name
    /// is a [`ConfigError`] (setting `"name"`), as is any invalid setting; on error nothing
    /// changes. A breaker has at most 16 windows in its life
    /// (see [Hot reload](crate#hot-reload)): a reload that would need a 17th is a
    /// [`ConfigError`] (setting `"window"`).
    ///
    /// Listeners hear [`Event::Reconfigured`] (and a transition, if the reload opened the
    /// breaker); a tracing event at info level says the same. A shadow flag set by the builder
    /// is a setting, not an operator's action: it shows in `Event::Reconfigured`'s `shadow`,
    /// not as an [`Event::Override`], and a sync component does not
    /// share it (each replica reloads its own file).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_breaker::{CircuitBreaker, Outcome, State};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let breaker = CircuitBreaker::builder("openai").failure_rate(0.5).count_window(10).min_calls(4).build()?;
    /// for outcome in [Outcome::Success, Outcome::Success, Outcome::Failure, Outcome::Success] {
    ///     breaker.try_acquire()?.record(outcome);
    /// }
    /// // Stricter, with a longer open period: the window's four calls are kept and judged.
    /// breaker.reconfigure(
    ///     CircuitBreaker::builder("openai")
    ///         .failure_rate(0.25)
    ///         .count_window(20)
    ///         .min_calls(4)
    ///         .open_duration(Duration::from_secs(60)),
    /// )?;
    /// assert_eq!(breaker.state(), State::Open); // 1 failure in 4 calls: 25%
    /// assert_eq!(breaker.snapshot().retry_after, Some(Duration::from_secs(60)));
    /// # Ok(()) }
    /// ```
    pub fn reconfigure(&self, builder: Builder) -> Result<(), ConfigError> {
        let name = &self.shared().name;
        if builder.name_ref() != name {
            return Err(ConfigError::new(
                "name",
                "differs from the live breaker's: a reload keeps the breaker's name",
            )
            .in_breaker(name));
        }
        self.reconfigure_with(builder.validated()?, true)
    }

    /// Applies a validated configuration (a keyed registry's reload: no name check, and the
    /// tracing event at debug level, `loud` false: the registry traces one at info). An error
    /// names this breaker.
    pub(crate) fn reconfigure_with(&self, config: Config, loud: bool) -> Result<(), ConfigError> {
        let shared = &**self.shared();
        let stripes = self.root.lanes.len().max(1);
        let mut pending: Pending = None;
        {
            let now = shared.clock.now();
            let mut l = shared.locked.lock();
            if config.window != l.config.window {
                let fresh = shared.reshape(config.window, l.generation, stripes, now);
                let n = shared.hot.shape.load(Ordering::Relaxed) as usize;
                let slots = shared
                    .reshaped
                    .get_or_init(|| Box::new(std::array::from_fn(|_| OnceLock::new())));
                let Some(slot) = slots.get(n) else {
                    return Err(ConfigError::new(
                        "window",
                        "changed shape 15 times since the breaker was built: build a new breaker",
                    )
                    .in_breaker(&shared.name));
                };
                // Only reloads set slots, one at a time under the lock: `n` is free.
                let _ = slot.set(fresh);
                shared.hot.shape.store(n as u32 + 1, Ordering::Release);
            }
            if config.consecutive.is_some() != l.config.consecutive.is_some() {
                // Switched on (or off): the run counts from zero.
                shared
                    .hot
                    .consecutive
                    .store(consecutive_word(l.generation, 0), Ordering::Release);
            }
            shared.rules.set(&config, now);
            if let Some(shadow) = config.shadow {
                shared.shadow.store(shadow, Ordering::Relaxed);
            }
            l.config = config;
            match shared.window() {
                // A new `min_calls` may not be reached any more: the next success decides.
                WindowStore::Time(w) => w.unsettle(),
                WindowStore::Count(_) | WindowStore::None => {}
            }
            if l.state == State::Closed {
                if let Some(reason) = shared.judge(&l, now) {
                    shared.transition(&mut l, State::Open, reason, now, &mut pending);
                }
            }
            // More half-open permits may admit a waiting service now.
            l.waiters.wake_all();
        }
        if loud {
            tracing::info!(breaker = %shared.name, "circuit breaker reconfigured");
        } else {
            tracing::debug!(breaker = %shared.name, "circuit breaker reconfigured");
        }
        if !shared.listeners.is_empty() {
            shared.emit(&Event::Reconfigured {
                name: &shared.name,
                shadow: shared.shadow.load(Ordering::Relaxed),
            });
        }
        shared.publish(pending);
        Ok(())
    }
}

impl Shared {
    /// A window of shape `to`, filled from the current one, for `generation`.
    fn reshape(&self, to: Window, generation: u64, stripes: usize, now: u64) -> WindowStore {
        match (to, self.window()) {
            (Window::None, _) => WindowStore::None,
            (Window::Count(n), WindowStore::Count(old)) => WindowStore::Count(Box::new(
                CountWindow::with_outcomes(n, generation, &old.outcomes()),
            )),
            (Window::Count(n), _) => WindowStore::Count(Box::new(CountWindow::new(n, generation))),
            (Window::Time(d), WindowStore::Time(old)) => WindowStore::Time(Box::new(TimeWindow::carried(
                old,
                saturating_nanos(d),
                generation,
                stripes,
                now,
            ))),
            (Window::Time(d), _) => WindowStore::Time(Box::new(TimeWindow::new(
                saturating_nanos(d),
                generation,
                stripes,
            ))),
        }
    }

    /// The trip rules against the statistics a closed breaker holds now: what a reload
    /// decides at once.
    fn judge(&self, l: &super::Locked, now: u64) -> Option<Reason> {
        let generation = l.generation & super::GEN_MASK;
        let run = self.hot.consecutive.load(Ordering::Acquire);
        if let Some(n) = self.rules.consecutive() {
            if run >> 32 == generation && run as u32 >= n {
                return Some(Reason::ConsecutiveFailures);
            }
        }
        self.window().counts(now).and_then(|c| self.rate_rule(&c))
    }
}
