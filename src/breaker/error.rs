//! The core's errors: [`ConfigError`] from the builder, [`CircuitOpen`] from a refused call.

use std::{error::Error, fmt, time::Duration};

use tokio::time::Instant;

use super::{GEN_MASK, NO_DEADLINE, State, clock::nanos, ids, name::Name};

/// A breaker id's bits, as a refusal carries it (1.1 trillion breakers before they repeat).
pub(crate) const ID_MASK: u64 = (1 << 40) - 1;

/// A builder was given a value it cannot work with. Names the setting, the breaker when known,
/// and says why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    setting: &'static str,
    problem: &'static str,
    breaker: Option<std::sync::Arc<str>>,
}

impl ConfigError {
    pub(crate) const fn new(setting: &'static str, problem: &'static str) -> Self {
        Self {
            setting,
            problem,
            breaker: None,
        }
    }

    /// The setting at fault, e.g. `"failure_rate"` (for a configuration file, the field's
    /// path, e.g. `"open_backoff.factor"`).
    pub const fn setting(&self) -> &'static str {
        self.setting
    }

    /// The name of the breaker whose settings are at fault, when known: every error of
    /// [`Builder::build`](super::Builder::build) and of the `config` types (feature `serde`)
    /// names it (a keyed registry's override names the key's breaker, e.g. `"openai:gpt-4o"`).
    pub fn breaker(&self) -> Option<&str> {
        self.breaker.as_deref()
    }

    /// Names the breaker, unless a name is already set.
    pub(crate) fn in_breaker(mut self, name: &std::sync::Arc<str>) -> Self {
        self.breaker.get_or_insert_with(|| name.clone());
        self
    }

    /// The same problem, under another setting's name.
    #[cfg(feature = "serde")]
    pub(crate) const fn at(mut self, setting: &'static str) -> Self {
        self.setting = setting;
        self
    }
}

impl fmt::Display for ConfigError {
    /// `invalid circuit breaker config: failure_rate must lie in 0.0..=1.0`, followed by
    /// ` (breaker "openai")` when the breaker is known.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid circuit breaker config: {} {}",
            self.setting, self.problem
        )?;
        match &self.breaker {
            Some(name) => write!(f, " (breaker {name:?})"),
            None => Ok(()),
        }
    }
}

impl Error for ConfigError {}

/// A call was refused because the circuit is open (or half-open with every probe in flight).
///
/// The request was not sent. The error names the breaker and, where known, how long until it
/// lets a probe through; it never carries request data. It is transient: the same service (and
/// every clone) checks again on its next `poll_ready`.
///
/// ```
/// # use tower_breaker::{CircuitBreaker, Outcome};
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let breaker = CircuitBreaker::builder("openai").consecutive_failures(1).build().unwrap();
/// breaker.try_acquire().unwrap().record(Outcome::Failure);
/// let err = breaker.try_acquire().unwrap_err();
/// assert_eq!(err.name(), "openai");
/// assert_eq!(err.to_string(), r#"circuit "openai" is open; retry in 30s"#);
///
/// // Displayed once the open period is over (the next call may go through as a probe):
/// tokio::time::advance(std::time::Duration::from_secs(30)).await;
/// assert_eq!(err.to_string(), r#"circuit "openai" was open; its open period has ended"#);
/// # }
/// ```
#[derive(Clone)]
pub struct CircuitOpen {
    /// A copy of the breaker's name when it is short, so that a refusal takes no reference
    /// to the breaker: it writes nothing that another thread's refusal writes.
    pub(crate) name: Name,
    /// The breaker's epoch, on tokio's clock: `until` counts from it.
    pub(crate) epoch: Instant,
    /// Nanoseconds since the breaker's epoch at which it lets a probe through, or
    /// `NO_DEADLINE`.
    pub(crate) until: u64,
    /// `breaker id (40 bits) << 24 | state << 16 | generation (16 bits)`: which breaker refused
    /// (for `PartialEq`, and for a failover that ends its open period early: see `ids.rs`), in
    /// which state, and the generation that refused (its `GEN_MASK` bits: a waiter re-checks
    /// as soon as it changes). One word: a refusal is moved (into a `Box`, out of a `Result`)
    /// in as few pieces as it can be.
    pub(crate) meta: u64,
}

impl CircuitOpen {
    /// The name of the breaker that refused the call.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// The state that refused it: `Open`, `ForcedOpen` or `HalfOpen` (probes all in flight).
    pub const fn state(&self) -> State {
        State::from_tag((self.meta >> 16) & 0xff)
    }

    pub(crate) const fn new(
        name: Name,
        epoch: Instant,
        until: u64,
        breaker: u64,
        state: State,
        generation: u64,
    ) -> Self {
        Self {
            name,
            epoch,
            until,
            meta: (breaker & ID_MASK) << 24 | state.tag() << 16 | (generation & GEN_MASK),
        }
    }

    /// The generation that refused (its `GEN_MASK` bits).
    pub(crate) const fn generation(&self) -> u64 {
        self.meta & 0xffff
    }

    /// The id of the breaker that refused.
    const fn breaker(&self) -> u64 {
        self.meta >> 24
    }

    /// Ends the open period that refused this call, if the breaker is still in it and chose it
    /// itself (see [`CircuitBreaker::try_probe_early`](super::CircuitBreaker::try_probe_early)):
    /// the breaker's next admission is a half-open probe. Whether it did.
    pub(crate) fn end_open_period(&self) -> bool {
        self.state() == State::Open
            && ids::find(self.breaker()).is_some_and(|shared| shared.open_early(self.generation()))
    }

    /// How long from now until the breaker lets a probe through, when it is known (`None`
    /// when forced open, or half-open with every probe in flight). Zero once that time came.
    pub fn retry_after(&self) -> Option<Duration> {
        (self.until != NO_DEADLINE).then(|| {
            let now = nanos(Instant::now().saturating_duration_since(self.epoch));
            Duration::from_nanos(self.until.saturating_sub(now))
        })
    }
}

impl fmt::Display for CircuitOpen {
    /// `circuit "openai" is open; retry in 12s` (whole seconds, rounded up; milliseconds
    /// below a second), `... is forced open`, `... is half-open and its probes are all in
    /// flight`; and for a refusal displayed after its open period ended,
    /// `circuit "openai" was open; its open period has ended`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.name();
        match self.state() {
            State::ForcedOpen => write!(f, "circuit {name:?} is forced open"),
            State::HalfOpen => write!(
                f,
                "circuit {name:?} is half-open and its probes are all in flight"
            ),
            _ => match self.retry_after() {
                Some(d) if d.is_zero() => write!(f, "circuit {name:?} was open; its open period has ended"),
                Some(d) if d >= Duration::from_secs(1) => {
                    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
                    write!(f, "circuit {name:?} is open; retry in {secs}s")
                }
                Some(d) => write!(
                    f,
                    "circuit {name:?} is open; retry in {}ms",
                    d.as_nanos().div_ceil(1_000_000)
                ),
                None => write!(f, "circuit {name:?} is open"),
            },
        }
    }
}

impl fmt::Debug for CircuitOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitOpen")
            .field("name", &self.name())
            .field("state", &self.state())
            .field("retry_after", &self.retry_after())
            .finish()
    }
}

impl PartialEq for CircuitOpen {
    /// Equal when from the same breaker, state and deadline.
    fn eq(&self, other: &Self) -> bool {
        self.meta >> 16 == other.meta >> 16
            && self.until == other.until
            && self.epoch == other.epoch
            && self.name.as_str() == other.name.as_str()
    }
}

impl Eq for CircuitOpen {}

impl Error for CircuitOpen {}

/// The boxed error type of this crate's services (tower's convention).
pub type BoxError = Box<dyn Error + Send + Sync>;
