//! The core's errors: [`ConfigError`] from the builder, [`CircuitOpen`] from a refused call.

use std::{error::Error, fmt, time::Duration};

use super::{Lane, State, sync::Arc};

/// A builder was given a value it cannot work with. Names the setting and says why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    setting: &'static str,
    problem: &'static str,
}

impl ConfigError {
    pub(crate) const fn new(setting: &'static str, problem: &'static str) -> Self {
        Self { setting, problem }
    }

    /// The setting at fault, e.g. `"failure_rate"`.
    pub const fn setting(&self) -> &'static str {
        self.setting
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid circuit breaker config: {} {}",
            self.setting, self.problem
        )
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
/// let breaker = CircuitBreaker::builder("openai").consecutive_failures(1).build().unwrap();
/// breaker.try_acquire().unwrap().record(Outcome::Failure);
/// let err = breaker.try_acquire().unwrap_err();
/// assert_eq!(err.name(), "openai");
/// assert_eq!(err.to_string(), r#"circuit "openai" is open; retry in 30s"#);
/// ```
#[derive(Clone)]
pub struct CircuitOpen {
    /// The refusing thread's lane of the breaker (not the handle every thread clones: a
    /// rejection then writes no cache line that other threads' rejections write).
    pub(crate) lane: Arc<Lane>,
    pub(crate) state: State,
    /// Nanoseconds since the breaker's epoch at which it lets a probe through, or
    /// `NO_DEADLINE`.
    pub(crate) until: u64,
    /// The generation that refused: a waiter re-checks as soon as it changes.
    pub(crate) generation: u64,
}

impl CircuitOpen {
    /// The name of the breaker that refused the call.
    pub fn name(&self) -> &str {
        &self.lane.shared.name
    }

    /// The state that refused it: `Open`, `ForcedOpen` or `HalfOpen` (probes all in flight).
    pub const fn state(&self) -> State {
        self.state
    }

    /// How long from now until the breaker lets a probe through, when it is known (`None`
    /// when forced open, or half-open with every probe in flight). Zero once that time came.
    pub fn retry_after(&self) -> Option<Duration> {
        self.lane.shared.remaining(self.until)
    }

    /// Finds a `CircuitOpen` in an error or anywhere in its `source()` chain.
    pub fn find<'a>(err: &'a (dyn Error + 'static)) -> Option<&'a CircuitOpen> {
        let mut cur = Some(err);
        while let Some(e) = cur {
            if let Some(open) = e.downcast_ref::<CircuitOpen>() {
                return Some(open);
            }
            cur = e.source();
        }
        None
    }
}

impl fmt::Display for CircuitOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "circuit {:?} is ", self.name())?;
        match self.state {
            State::ForcedOpen => f.write_str("forced open"),
            State::HalfOpen => f.write_str("half-open and its probes are all in flight"),
            _ => match self.retry_after() {
                Some(d) if d >= Duration::from_secs(1) => {
                    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
                    write!(f, "open; retry in {secs}s")
                }
                Some(d) => write!(f, "open; retry in {}ms", d.as_nanos().div_ceil(1_000_000).max(1)),
                None => f.write_str("open"),
            },
        }
    }
}

impl fmt::Debug for CircuitOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitOpen")
            .field("name", &self.name())
            .field("state", &self.state)
            .field("retry_after", &self.retry_after())
            .finish()
    }
}

impl PartialEq for CircuitOpen {
    /// Equal when from the same breaker, state and deadline.
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(&*self.lane.shared, &*other.lane.shared)
            && self.state == other.state
            && self.until == other.until
    }
}

impl Eq for CircuitOpen {}

impl Error for CircuitOpen {}

/// The boxed error type of this crate's services (tower's convention).
pub type BoxError = Box<dyn Error + Send + Sync>;

/// Whether `err`, or any error in its `source()` chain, is a [`CircuitOpen`] rejection
/// (including a fallback chain whose members were all unavailable).
///
/// Retry policies use it to stop retrying an open circuit.
pub fn is_circuit_open(err: &BoxError) -> bool {
    CircuitOpen::find(&**err).is_some()
}
