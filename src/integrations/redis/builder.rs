//! [`RedisSyncBuilder`]: the settings of a [`RedisSync`] and the start of its task.

use std::{
    collections::HashMap,
    sync::{Arc, atomic::AtomicU64},
    time::Duration,
};

use ::redis::Script;
use tokio::sync::mpsc;

use super::{
    Client, RedisSync,
    shared::Shared,
    sync::Handle,
    wire::{STORE, STORE_OVERRIDE},
    worker::Worker,
};
use crate::breaker::ConfigError;

/// Builds a [`RedisSync`]; see [`RedisSync::builder`].
#[must_use]
#[derive(Debug, Clone)]
pub struct RedisSyncBuilder {
    pub(super) client: Client,
    pub(super) prefix: String,
    pub(super) origin: Option<String>,
    pub(super) timeout: Duration,
    pub(super) ping_interval: Duration,
    pub(super) reconnect_min: Duration,
    pub(super) reconnect_max: Duration,
    pub(super) queue_capacity: usize,
}

impl RedisSyncBuilder {
    /// The prefix of the channel and keys (default `tower-breaker`): replicas that share trips
    /// use the same prefix; separate fleets (or environments) sharing one Redis use different
    /// ones.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// This replica's identity in messages (default `"{HOSTNAME}-{pid}-{random}"`). It must be
    /// unique in the fleet: a replica ignores messages carrying its own origin.
    pub fn origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = Some(origin.into());
        self
    }

    /// How long connecting, and each command, may take before the connection is declared lost
    /// (default 2 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How often the connection is checked (a `PING` on the subscription, `TIME` on the
    /// command connection, which also refreshes the clock offset); default 5 s.
    pub fn ping_interval(mut self, interval: Duration) -> Self {
        self.ping_interval = interval;
        self
    }

    /// The delay before the first reconnection attempt after a failure, doubling at each
    /// failed attempt up to `max` (default 100 ms to 5 s).
    pub fn reconnect_delay(mut self, min: Duration, max: Duration) -> Self {
        self.reconnect_min = min;
        self.reconnect_max = max;
        self
    }

    /// How many local trips and overrides may wait for the background task (default 1,024);
    /// when full, one is dropped (counted in [`SyncStatus::dropped`](super::SyncStatus::dropped)) rather than making a call wait.
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity;
        self
    }

    /// Validates the settings and starts the background task, which connects to Redis (and
    /// keeps reconnecting) without blocking this call.
    ///
    /// Must be called from within a tokio runtime (a [`ConfigError`] otherwise): the task is
    /// spawned on it. The task stops when the last clone of the [`RedisSync`] is dropped.
    pub fn build(self) -> Result<RedisSync, ConfigError> {
        if self.prefix.is_empty() {
            return Err(ConfigError::new("prefix", "must not be empty"));
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::new("timeout", "must be greater than zero"));
        }
        if self.ping_interval.is_zero() {
            return Err(ConfigError::new("ping_interval", "must be greater than zero"));
        }
        if self.reconnect_min.is_zero() || self.reconnect_max < self.reconnect_min {
            return Err(ConfigError::new(
                "reconnect_delay",
                "must be greater than zero, with min <= max",
            ));
        }
        if self.queue_capacity == 0 {
            return Err(ConfigError::new("queue_capacity", "must be at least 1"));
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Err(ConfigError::new(
                "runtime",
                "is missing: build the sync within a tokio runtime",
            ));
        };
        let origin = self.origin.unwrap_or_else(default_origin);
        let (tx, rx) = mpsc::channel(self.queue_capacity);
        let dropped = Arc::new(AtomicU64::new(0));
        let shared = Arc::new(Shared::new(&self.prefix, origin));
        let worker = Worker {
            shared: shared.clone(),
            client: self.client,
            rx,
            local: HashMap::new(),
            local_overrides: HashMap::new(),
            store: Script::new(STORE),
            store_override: Script::new(STORE_OVERRIDE),
            timeout: self.timeout,
            ping_interval: self.ping_interval,
            reconnect_min: self.reconnect_min,
            reconnect_max: self.reconnect_max,
            delay: self.reconnect_min,
            in_outage: false,
        };
        let task = runtime.spawn(worker.run()).abort_handle();
        Ok(RedisSync {
            inner: Arc::new(Handle {
                shared,
                tx,
                dropped,
                task,
            }),
        })
    }
}

fn default_origin() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "replica".to_string());
    format!("{host}-{}-{:08x}", std::process::id(), fastrand::u32(..))
}
