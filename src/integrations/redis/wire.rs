//! The formats of trips and overrides on the wire and in the store, and the scripts that
//! store them.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use crate::breaker::{Override, Reason};

/// Stores a trip unless a later deadline is in force, and publishes it when stored.
///
/// KEYS: trip key, index. ARGV: deadline (ms, Redis clock), payload, channel, name.
pub(super) const STORE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local deadline = tonumber(ARGV[1])
if deadline <= now then return 0 end
local cur = tonumber(redis.call('ZSCORE', KEYS[2], ARGV[4]) or '0')
if cur >= deadline and redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('PEXPIREAT', KEYS[1], deadline)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('ZADD', KEYS[2], deadline, ARGV[4])
local top = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[2], top[2])
redis.call('PUBLISH', ARGV[3], ARGV[2])
return 1
";

/// Stores an override as the standing one of its name unless a later one is stored, and
/// publishes it when stored. The same payload again (a re-publication) stores nothing.
///
/// KEYS: the hash of standing overrides. ARGV: name (the field), payload, at (ms, Redis
/// clock), channel.
pub(super) const STORE_OVERRIDE: &str = r"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  if cur == ARGV[2] then return 0 end
  local ok, old = pcall(cjson.decode, cur)
  if ok and type(old) == 'table' and tonumber(old.at) and tonumber(old.at) > tonumber(ARGV[3]) then
    return 0
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PUBLISH', ARGV[4], ARGV[2])
return 1
";

/// The latest deadline sent to Redis, in UNIX milliseconds: 2^53 - 1 (the year 287,396).
/// The script reads the deadline as a Lua number (a double): beyond 2^53 it is no longer an
/// exact integer, and from 10^17 Redis formats it with an exponent, which `PEXPIREAT` refuses
/// ("value is not an integer or out of range"). A `Trip` of `u64::MAX` seconds (a saturated
/// `Retry-After`) under `max_open_duration(Duration::MAX)` would otherwise send `u64::MAX`.
pub(super) const MAX_DEADLINE_MS: u64 = (1 << 53) - 1;

/// `deadline` (UNIX ms, local clock) on Redis's clock (`offset_ms` ahead of ours), clamped to
/// what Redis accepts: `0..=MAX_DEADLINE_MS`.
pub(super) fn redis_deadline(deadline: u64, offset_ms: i64) -> u64 {
    let on_redis = i64::try_from(deadline)
        .unwrap_or(i64::MAX)
        .saturating_add(offset_ms);
    u64::try_from(on_redis).unwrap_or(0).min(MAX_DEADLINE_MS)
}

/// The current version of the message format.
pub(super) const VERSION: u32 = 1;

/// A trip on the wire and in the store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct Wire {
    pub(super) v: u32,
    pub(super) name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) registry: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) key: Option<String>,
    /// UNIX milliseconds, Redis's clock.
    pub(super) deadline: u64,
    pub(super) reason: String,
    pub(super) origin: String,
}

/// An operator's override on the wire and in the store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct OverrideWire {
    pub(super) v: u32,
    pub(super) name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) registry: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) key: Option<String>,
    /// [`Override::as_str`].
    pub(super) action: String,
    /// When the operator acted: UNIX milliseconds, Redis's clock (as the replica estimated it).
    pub(super) at: u64,
    pub(super) origin: String,
}

impl OverrideWire {
    /// The action, if known.
    pub(super) fn action(&self) -> Option<Override> {
        Override::from_name(&self.action)
    }

    /// Whether this is a shadow switch (stored apart from force-open / disable / reset, which
    /// replace one another).
    pub(super) fn is_shadow(&self) -> bool {
        matches!(self.action(), Some(Override::Shadow(_)))
    }
}

/// What the background task takes from the breakers' listeners.
#[derive(Clone, Debug)]
pub(super) enum Local {
    Trip(LocalTrip),
    Override(LocalOverride),
}

/// A local override, from a listener to the background task.
#[derive(Clone, Debug)]
pub(super) struct LocalOverride {
    pub(super) name: String,
    /// `(registry, key)` for a keyed breaker.
    pub(super) keyed: Option<(Arc<str>, String)>,
    pub(super) action: Override,
    /// UNIX milliseconds, local clock.
    pub(super) at: u64,
}

/// A local trip, from a listener to the background task.
#[derive(Clone, Debug)]
pub(super) struct LocalTrip {
    pub(super) name: String,
    /// `(registry, key)` for a keyed breaker.
    pub(super) keyed: Option<(Arc<str>, String)>,
    /// UNIX milliseconds, local clock.
    pub(super) deadline: u64,
    pub(super) reason: Reason,
}

pub(super) fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_sent_to_redis_are_clamped_to_an_exact_lua_integer() {
        assert_eq!(redis_deadline(1_767_225_600_000, 0), 1_767_225_600_000);
        assert_eq!(redis_deadline(1_767_225_600_000, -600_000), 1_767_225_000_000);
        assert_eq!(redis_deadline(u64::MAX, 0), MAX_DEADLINE_MS);
        assert_eq!(redis_deadline(u64::MAX, i64::MIN), 0);
        assert_eq!(redis_deadline(MAX_DEADLINE_MS + 1, 5), MAX_DEADLINE_MS);
        assert_eq!(
            redis_deadline(10, -20),
            0,
            "before 1970: already past for the script"
        );
        // Exact in a double, and printed without an exponent (Lua's `%.17g`).
        assert_eq!(MAX_DEADLINE_MS as f64 as u64, MAX_DEADLINE_MS);
        const { assert!(MAX_DEADLINE_MS < 100_000_000_000_000_000) };
    }

    #[test]
    fn wire_round_trips_and_omits_absent_keys() {
        let w = Wire {
            v: 1,
            name: "openai".into(),
            registry: None,
            key: None,
            deadline: 1_767_225_600_000,
            reason: "consecutive_failures".into(),
            origin: "a".into(),
        };
        let json = serde_json::to_string(&w).unwrap();
        assert_eq!(
            json,
            r#"{"v":1,"name":"openai","deadline":1767225600000,"reason":"consecutive_failures","origin":"a"}"#
        );
        assert_eq!(serde_json::from_str::<Wire>(&json).unwrap(), w);
        // Unknown fields are tolerated (newer senders), missing ones are not.
        assert!(
            serde_json::from_str::<Wire>(
                r#"{"v":1,"name":"x","deadline":1,"reason":"r","origin":"o","new":true}"#
            )
            .is_ok()
        );
        assert!(serde_json::from_str::<Wire>(r#"{"v":1,"name":"x","reason":"r","origin":"o"}"#).is_err());
    }
}
