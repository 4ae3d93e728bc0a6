//! Errors of the keyed breakers: [`CircuitOpen`] (a key's breaker refused the call) and
//! [`RegistryFull`] (no room for a new key under [`WhenFull::Reject`](super::WhenFull::Reject)).

use std::{error::Error, fmt, sync::Arc};

pub use crate::breaker::{BoxError, CircuitOpen};

/// A new key found the registry full of breakers that may not be evicted, and the registry's
/// policy is [`WhenFull::Reject`](super::WhenFull::Reject). The call was not made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryFull {
    pub(crate) registry: Arc<str>,
}

impl RegistryFull {
    /// The name of the registry's template.
    pub fn registry(&self) -> &str {
        &self.registry
    }
}

impl fmt::Display for RegistryFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "circuit breaker registry {:?} is full of breakers that cannot be evicted",
            &*self.registry
        )
    }
}

impl Error for RegistryFull {}

/// Why [`KeyedRegistry::try_acquire`](super::KeyedRegistry::try_acquire) refused a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyedError {
    /// The key's breaker is open; its name contains the key.
    Open(CircuitOpen),
    /// The key is new and the registry has no room for it.
    Full(RegistryFull),
}

impl KeyedError {
    /// The refusal as the boxed error services return: a `CircuitOpen` or a `RegistryFull`,
    /// unwrapped, so `err.is::<CircuitOpen>()` works.
    pub fn into_box(self) -> BoxError {
        match self {
            KeyedError::Open(e) => Box::new(e),
            KeyedError::Full(e) => Box::new(e),
        }
    }
}

impl fmt::Display for KeyedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyedError::Open(e) => e.fmt(f),
            KeyedError::Full(e) => e.fmt(f),
        }
    }
}

impl Error for KeyedError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            KeyedError::Open(e) => Some(e),
            KeyedError::Full(e) => Some(e),
        }
    }
}

impl From<CircuitOpen> for KeyedError {
    fn from(e: CircuitOpen) -> Self {
        KeyedError::Open(e)
    }
}

impl From<RegistryFull> for KeyedError {
    fn from(e: RegistryFull) -> Self {
        KeyedError::Full(e)
    }
}
