//! The background task: connects (and reconnects), subscribes, stores and publishes local
//! trips and overrides, applies the others'.

use std::{
    collections::HashMap,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use ::redis::{AsyncConnectionConfig, ErrorKind, RedisResult, Script, aio::MultiplexedConnection};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::{
    Client, RedisError, lock,
    shared::{Shared, Slot},
    wire::{Local, LocalOverride, LocalTrip, OverrideWire, VERSION, Wire, redis_deadline, unix_ms_now},
};

/// The background task: owns the connections and the local trips in force.
pub(super) struct Worker {
    pub(super) shared: Arc<Shared>,
    pub(super) client: Client,
    pub(super) rx: mpsc::Receiver<Local>,
    /// Local trips in force, by breaker name: re-published on every (re)connection.
    pub(super) local: HashMap<String, LocalTrip>,
    /// This replica's latest override per slot: stored on every (re)connection, unless a
    /// later one (or the same) is stored.
    pub(super) local_overrides: HashMap<Slot, OverrideWire>,
    pub(super) store: Script,
    pub(super) store_override: Script,
    pub(super) timeout: Duration,
    pub(super) ping_interval: Duration,
    pub(super) reconnect_min: Duration,
    pub(super) reconnect_max: Duration,
    pub(super) delay: Duration,
    pub(super) in_outage: bool,
}

/// How a session ended: the queue closed, or the connection failed.
pub(super) enum End {
    Closed,
    Failed(RedisError),
}

impl From<RedisError> for End {
    fn from(e: RedisError) -> Self {
        End::Failed(e)
    }
}

pub(super) async fn within<T>(d: Duration, f: impl Future<Output = RedisResult<T>>) -> RedisResult<T> {
    tokio::time::timeout(d, f).await.unwrap_or_else(|_| {
        Err(RedisError::from((
            ErrorKind::IoError,
            "redis did not answer in time",
        )))
    })
}

impl Worker {
    pub(super) async fn run(mut self) {
        loop {
            let e = match self.session().await {
                End::Closed => return,
                End::Failed(e) => e,
            };
            self.shared.set_connected(false);
            *lock(&self.shared.last_error) = Some(e.to_string());
            if !self.in_outage {
                self.in_outage = true;
                self.shared.count_outage();
                tracing::warn!(
                    prefix = %self.shared.prefix, error = %e,
                    "redis sync: redis is unreachable; breakers work locally until it is back"
                );
            } else {
                tracing::debug!(prefix = %self.shared.prefix, error = %e, "redis sync: reconnection failed");
            }
            // Wait before the next attempt, still taking local trips off the queue.
            let mut sleep = std::pin::pin!(tokio::time::sleep(self.delay));
            loop {
                tokio::select! {
                    () = &mut sleep => break,
                    local = self.rx.recv() => match local {
                        Some(Local::Trip(trip)) => self.remember(trip),
                        Some(Local::Override(o)) => {
                            self.remember_override(o);
                        }
                        None => return,
                    },
                }
            }
            self.delay = (self.delay * 2).min(self.reconnect_max);
        }
    }

    async fn session(&mut self) -> End {
        match self.session_inner().await {
            Ok(never) => match never {},
            Err(end) => end,
        }
    }

    async fn session_inner(&mut self) -> Result<std::convert::Infallible, End> {
        let t = self.timeout;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(t)
            .set_response_timeout(t);
        let mut conn = within(
            t,
            self.client.get_multiplexed_async_connection_with_config(&config),
        )
        .await?;
        let mut pubsub = within(t, self.client.get_async_pubsub()).await?;
        within(
            t,
            pubsub.subscribe(&[&self.shared.channel, &self.shared.override_channel]),
        )
        .await?;
        let (mut sink, mut stream) = pubsub.split();
        self.measure_offset(&mut conn).await?;
        // Subscribed first, then read the store: no trip falls between the two.
        self.resync(&mut conn).await?;
        self.resync_overrides(&mut conn).await?;
        self.republish(&mut conn).await?;
        self.republish_overrides(&mut conn).await?;
        self.shared.set_connected(true);
        self.delay = self.reconnect_min;
        if std::mem::take(&mut self.in_outage) {
            tracing::info!(prefix = %self.shared.prefix, "redis sync: reconnected; trips in force resynchronised");
        } else {
            tracing::debug!(prefix = %self.shared.prefix, origin = %self.shared.origin, "redis sync: connected");
        }
        let mut ping = tokio::time::interval(self.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        loop {
            tokio::select! {
                msg = stream.next() => match msg {
                    Some(msg) => {
                        let payload = msg.get_payload::<String>();
                        let payload = payload.as_deref().unwrap_or("<not a string>");
                        if msg.get_channel_name() == self.shared.override_channel {
                            self.shared.on_override(payload, "channel");
                        } else {
                            self.shared.on_payload(payload, "channel");
                        }
                    }
                    None => {
                        return Err(End::Failed(RedisError::from((ErrorKind::IoError, "the subscription was closed"))));
                    }
                },
                local = self.rx.recv() => match local {
                    Some(Local::Trip(trip)) => {
                        let name = trip.name.clone();
                        self.remember(trip);
                        if let Some(trip) = self.local.get(&name).cloned() {
                            self.publish(&mut conn, &trip).await?;
                        }
                    }
                    Some(Local::Override(o)) => {
                        let wire = self.remember_override(o);
                        self.publish_override(&mut conn, &wire).await?;
                    }
                    None => return Err(End::Closed),
                },
                _ = ping.tick() => {
                    within(t, sink.ping::<::redis::Value>()).await?; // `pong` in subscribed mode
                    self.measure_offset(&mut conn).await?;
                }
            }
        }
    }

    /// Estimates the offset of Redis's clock (`TIME`) from the local one.
    async fn measure_offset(&self, conn: &mut MultiplexedConnection) -> RedisResult<()> {
        let before = unix_ms_now();
        let (secs, micros): (u64, u64) = within(self.timeout, ::redis::cmd("TIME").query_async(conn)).await?;
        let after = unix_ms_now();
        let redis_ms = secs.saturating_mul(1000).saturating_add(micros / 1000);
        let local_ms = before / 2 + after / 2 + (before % 2 + after % 2) / 2;
        let offset =
            i64::try_from(redis_ms).unwrap_or(i64::MAX) - i64::try_from(local_ms).unwrap_or(i64::MAX);
        self.shared.offset_ms.store(offset, Ordering::Relaxed);
        Ok(())
    }

    /// Reads the trips in force from the store and applies them.
    async fn resync(&self, conn: &mut MultiplexedConnection) -> RedisResult<()> {
        let names: Vec<String> = within(
            self.timeout,
            ::redis::cmd("ZRANGE")
                .arg(&self.shared.index)
                .arg(0)
                .arg(-1)
                .query_async(conn),
        )
        .await?;
        if names.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = names.iter().map(|n| self.shared.trip_key(n)).collect();
        let payloads: Vec<Option<String>> =
            within(self.timeout, ::redis::cmd("MGET").arg(&keys).query_async(conn)).await?;
        for payload in payloads.into_iter().flatten() {
            self.shared.on_payload(&payload, "store");
        }
        Ok(())
    }

    /// Reads the standing overrides from the store and applies those newer than what this
    /// replica knows: a replica that starts, or that missed overrides while disconnected,
    /// learns them (a reset included: it ends a force-open learned before).
    async fn resync_overrides(&self, conn: &mut MultiplexedConnection) -> RedisResult<()> {
        for hash in [&self.shared.manual_hash, &self.shared.shadow_hash] {
            let entries: Vec<(String, String)> =
                within(self.timeout, ::redis::cmd("HGETALL").arg(hash).query_async(conn)).await?;
            for (_, payload) in entries {
                self.shared.on_override(&payload, "store");
            }
        }
        Ok(())
    }

    /// Stores this replica's latest overrides again: those taken while Redis was unreachable,
    /// and those Redis lost (unless a later one is stored).
    async fn republish_overrides(&mut self, conn: &mut MultiplexedConnection) -> RedisResult<()> {
        let wires: Vec<OverrideWire> = self.local_overrides.values().cloned().collect();
        for wire in &wires {
            self.publish_override(conn, wire).await?;
        }
        Ok(())
    }

    /// Keeps `o` as this replica's latest override of its slot, and as the one the others'
    /// must be newer than to apply here. Its time is taken on Redis's clock, as estimated now.
    fn remember_override(&mut self, o: LocalOverride) -> OverrideWire {
        let wire = OverrideWire {
            v: VERSION,
            name: o.name,
            registry: o.keyed.as_ref().map(|(r, _)| r.to_string()),
            key: o.keyed.map(|(_, k)| k),
            action: o.action.as_str().to_string(),
            at: redis_deadline(o.at, self.shared.offset_ms.load(Ordering::Relaxed)),
            origin: self.shared.origin.clone(),
        };
        let slot = (wire.is_shadow(), wire.name.clone());
        lock(&self.shared.overrides).insert(slot.clone(), wire.clone());
        self.local_overrides.insert(slot, wire.clone());
        wire
    }

    /// Stores `wire` as the standing override of its slot and publishes it, unless a later
    /// one (or the same) is stored. Refusals are handled as for trips.
    async fn publish_override(
        &mut self,
        conn: &mut MultiplexedConnection,
        wire: &OverrideWire,
    ) -> RedisResult<()> {
        let Ok(payload) = serde_json::to_string(wire) else {
            return Ok(());
        };
        let stored: RedisResult<i64> = within(
            self.timeout,
            self.store_override
                .key(self.shared.override_hash(wire.is_shadow()))
                .arg(&wire.name)
                .arg(&payload)
                .arg(wire.at)
                .arg(&self.shared.override_channel)
                .invoke_async(conn),
        )
        .await;
        match stored {
            Ok(1) => {
                self.shared.overrides_published.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(breaker = %wire.name, action = %wire.action, "redis sync published an override");
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(e) if refused(&e) => {
                let slot = (wire.is_shadow(), wire.name.clone());
                if self.local_overrides.get(&slot) == Some(wire) {
                    self.local_overrides.remove(&slot);
                }
                if self.shared.count_refused() {
                    tracing::warn!(
                        prefix = %self.shared.prefix, breaker = %wire.name, error = %e,
                        "redis sync: redis refused to store an override; the other replicas do not learn it"
                    );
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Re-publishes the local trips still in force.
    async fn republish(&mut self, conn: &mut MultiplexedConnection) -> RedisResult<()> {
        let now = unix_ms_now();
        self.local.retain(|_, t| t.deadline > now);
        let trips: Vec<LocalTrip> = self.local.values().cloned().collect();
        for trip in &trips {
            self.publish(conn, trip).await?;
        }
        Ok(())
    }

    /// Keeps `trip` as the name's local trip in force if its deadline is the later one.
    fn remember(&mut self, trip: LocalTrip) {
        let now = unix_ms_now();
        self.local.retain(|_, t| t.deadline > now);
        if trip.deadline <= now {
            return;
        }
        match self.local.get(&trip.name) {
            Some(t) if t.deadline >= trip.deadline => {}
            _ => {
                self.local.insert(trip.name.clone(), trip);
            }
        }
    }

    /// Stores and publishes `trip` (the script keeps the later deadline). A trip that Redis
    /// refuses (an error answer: the connection is fine) is dropped, counted and logged, so
    /// that it is not re-sent at every reconnection: one bad trip never stops the sync. Only
    /// a lost connection is an error.
    async fn publish(&mut self, conn: &mut MultiplexedConnection, trip: &LocalTrip) -> RedisResult<()> {
        match self.store(conn, trip).await {
            Err(e) if refused(&e) => {
                if self
                    .local
                    .get(&trip.name)
                    .is_some_and(|t| t.deadline == trip.deadline)
                {
                    self.local.remove(&trip.name);
                }
                if self.shared.count_refused() {
                    tracing::warn!(
                        prefix = %self.shared.prefix, breaker = %trip.name, error = %e,
                        "redis sync: redis refused to store a trip; the other replicas do not learn it"
                    );
                }
                Ok(())
            }
            result => result,
        }
    }

    async fn store(&self, conn: &mut MultiplexedConnection, trip: &LocalTrip) -> RedisResult<()> {
        let deadline = redis_deadline(trip.deadline, self.shared.offset_ms.load(Ordering::Relaxed));
        let wire = Wire {
            v: VERSION,
            name: trip.name.clone(),
            registry: trip.keyed.as_ref().map(|(r, _)| r.to_string()),
            key: trip.keyed.as_ref().map(|(_, k)| k.clone()),
            deadline,
            reason: trip.reason.as_str().to_string(),
            origin: self.shared.origin.clone(),
        };
        let Ok(payload) = serde_json::to_string(&wire) else {
            return Ok(());
        };
        let stored: i64 = within(
            self.timeout,
            self.store
                .key(self.shared.trip_key(&trip.name))
                .key(&self.shared.index)
                .arg(deadline)
                .arg(&payload)
                .arg(&self.shared.channel)
                .arg(&trip.name)
                .invoke_async(conn),
        )
        .await?;
        if stored == 1 {
            self.shared.count_published();
            tracing::debug!(breaker = %trip.name, reason = %trip.reason, "redis sync published a trip");
        } else {
            self.shared.superseded.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Whether `e` is Redis refusing one command (an error answer, such as `ERR`, `WRONGTYPE`,
/// `OOM`, `NOPERM`, or an answer of the wrong type), the connection being fine. A lost
/// connection, a timeout, and the transient states of a server that is loading, read-only or
/// failing over end the session instead (it reconnects, and re-sends its trips).
fn refused(e: &RedisError) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ResponseError | ErrorKind::ExtensionError | ErrorKind::TypeError
    )
}
