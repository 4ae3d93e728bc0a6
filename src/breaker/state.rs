//! The breaker's states and the packed word that mirrors them for the lock-free paths.

use std::fmt;

/// The state of a circuit breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum State {
    /// Calls flow; outcomes are counted against the trip rules.
    Closed,
    /// Calls fail fast until the open period ends.
    Open,
    /// A limited number of probe calls test whether the upstream recovered.
    HalfOpen,
    /// Opened by hand ([`CircuitBreaker::force_open`](super::CircuitBreaker::force_open));
    /// stays open until [`reset`](super::CircuitBreaker::reset).
    ForcedOpen,
    /// Switched off by hand ([`disable`](super::CircuitBreaker::disable)): admits everything,
    /// records nothing, until [`reset`](super::CircuitBreaker::reset).
    Disabled,
}

impl State {
    /// A lowercase, stable name: `closed`, `open`, `half_open`, `forced_open`, `disabled`.
    pub const fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
            State::ForcedOpen => "forced_open",
            State::Disabled => "disabled",
        }
    }

    /// Whether calls are refused in this state (`Open`, `ForcedOpen`; `HalfOpen` refuses only
    /// once its probes are all in flight).
    pub const fn is_open(self) -> bool {
        matches!(self, State::Open | State::ForcedOpen)
    }

    pub(crate) const fn tag(self) -> u64 {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
            State::ForcedOpen => 3,
            State::Disabled => 4,
        }
    }

    pub(crate) const fn from_tag(tag: u64) -> State {
        match tag {
            0 => State::Closed,
            1 => State::Open,
            2 => State::HalfOpen,
            3 => State::ForcedOpen,
            _ => State::Disabled,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `generation << 3 | state tag`: the one word every call reads.
pub(crate) const TAG_BITS: u32 = 3;
pub(crate) const TAG_MASK: u64 = (1 << TAG_BITS) - 1;

pub(crate) const fn pack(generation: u64, state: State) -> u64 {
    (generation << TAG_BITS) | state.tag()
}

pub(crate) const fn unpack(word: u64) -> (u64, State) {
    (word >> TAG_BITS, State::from_tag(word & TAG_MASK))
}
