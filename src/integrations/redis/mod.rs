//! Replicas share trips and operators' overrides through Redis (feature `redis`): [`RedisSync`].
//!
//! ```no_run
//! use std::time::Duration;
//! use tower_breaker::{CircuitBreaker, keyed::KeyedRegistry};
//! use tower_breaker::integrations::redis::{Client, RedisSync};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // One per process, inside the tokio runtime; it connects (and reconnects) in the background.
//! let sync = RedisSync::builder(Client::open("redis://redis.internal:6379/")?)
//!     .prefix("myapp:breakers") // every replica of the fleet uses the same prefix
//!     .build()?;
//!
//! // A breaker whose trips are shared: built through the sync (it installs a listener and
//! // registers the breaker to receive the other replicas' trips).
//! let openai = sync.attach(
//!     CircuitBreaker::builder("openai")
//!         .consecutive_failures(5)
//!         .open_duration(Duration::from_secs(30)),
//! )?;
//!
//! // Keyed breakers share per key: a trip of "openai:gpt-4o" here opens "openai:gpt-4o"
//! // on every replica (creating that key's breaker where it does not exist yet).
//! let models = sync.attach_keyed(KeyedRegistry::<String>::builder(
//!     CircuitBreaker::builder("openai").consecutive_failures(5),
//! ))?;
//!
//! // Use `openai` and `models` as usual (CircuitBreakerLayer, KeyedCircuitBreakerLayer, ...).
//! // The sync's state, for a health endpoint:
//! let status = sync.status();
//! println!("redis connected: {}, outages: {}", status.connected, status.outages);
//! # let _ = (openai, models);
//! # Ok(()) }
//! ```
//!
//! # Deployment
//!
//! N replicas of an application run behind a load balancer; each has its own breakers for the
//! same upstreams (same names), and all of them reach one Redis (a single instance or a
//! primary with replicas; Redis Cluster is not supported: the store script touches two keys).
//! Each replica builds one [`RedisSync`] at start-up with the same [`prefix`](RedisSyncBuilder::prefix),
//! and attaches the breakers that should share trips and overrides.
//!
//! When the upstream goes down, the first replica whose breaker trips tells the others, and
//! every replica stops sending it traffic at once instead of each paying for its own
//! `consecutive_failures` (N replicas × 5 failed calls, each perhaps a 60 s timeout).
//!
//! # What is shared, what is not
//!
//! **Shared: trips.** When a local breaker opens (any trip rule, a failed probe, a server's
//! `Retry-After`, [`CircuitBreaker::trip`]), the sync publishes `{name, deadline, reason,
//! origin}` and every other replica opens its breaker of that name until that deadline, with
//! [`CircuitBreaker::trip_remote`] (so the transition's reason is [`Reason::Remote`] and is
//! not echoed back). The usual max-deadline rule applies: a trip never shortens an open
//! period in force, and is clamped to the receiving breaker's `max_open_duration`.
//!
//! **Local: counters and probing.** Each replica counts its own calls, and after the deadline
//! each replica probes the upstream on its own and closes by itself. Counters stay local
//! because sharing them would put Redis on the hot path (a round trip, or a lossy batch, per
//! call), would make every replica's availability depend on Redis's, and would mix the
//! windows of replicas that see different traffic (one replica's network trouble would trip
//! the fleet). A trip is rare and idempotent, so it travels cheaply and can be re-sent.
//! Probing stays local so that each replica checks its own path to the upstream; a replica
//! whose probe fails re-opens and shares that new trip.
//!
//! Not shared: a shadow breaker's trips (they are notional: see
//! [Shadow mode](crate#shadow-mode)), and the extension of an open period that is already in
//! force (a longer [`trip`](CircuitBreaker::trip) on an open breaker publishes no transition).
//!
//! **Shared: operators' overrides.** [`force_open`](CircuitBreaker::force_open),
//! [`disable`](CircuitBreaker::disable), [`reset`](CircuitBreaker::reset) and
//! [`set_shadow`](CircuitBreaker::set_shadow) on an attached breaker of one replica apply to
//! the breakers of that name on every replica: an operator acts once, on any replica (an admin
//! endpoint behind the load balancer reaches one of them), and the fleet follows. Each
//! replica's breaker announces the action as [`Event::Override`] with
//! [`Origin::Remote`]`("<origin of the replica that acted>")`, and traces it at INFO with that
//! origin; the acting replica's says [`Origin::Local`]. The transitions a remote override
//! causes have the reason [`Reason::Remote`], as remote trips do (so webhook alerts come from
//! the acting replica only, by default). A remote override is not shared again
//! (no echo). A shadow switch is shared even though a shadow breaker's trips are not:
//! switching the fleet to enforce (or back to observe) is an operator's decision.
//!
//! Overrides stand until replaced, as in one breaker: a force-open (or disable) holds on
//! every breaker of the name, on every replica, including breakers registered later and
//! replicas that start or reconnect later (a replica restarted under the same
//! [`origin`](RedisSyncBuilder::origin) included), until a reset on any replica ends it; a shadow switch holds until the next one (whatever the builders of
//! replicas started later say). Force-open, disable and reset replace one another; shadow
//! switches are apart from them. Where two replicas act on the same breaker, the later action
//! (by time of action, on Redis's clock) wins everywhere, including an action taken on a
//! replica that could not reach Redis at the time: it applies there at once, and is stored
//! and published when Redis is back, unless a later one was taken meanwhile.
//!
//! # In Redis
//!
//! With the default prefix `tower-breaker`:
//!
//! | key | what |
//! |---|---|
//! | `tower-breaker:trips` | the pub/sub channel; each message is one trip as JSON |
//! | `tower-breaker:trip:{name}` | the trip in force for breaker `name` (the same JSON), expiring at its deadline |
//! | `tower-breaker:index` | a sorted set of the names with a trip in force, scored by deadline, so a replica that starts (or reconnects) reads them without `SCAN` |
//! | `tower-breaker:overrides` | the pub/sub channel of overrides; each message is one override as JSON |
//! | `tower-breaker:override:manual` | a hash: breaker name → its latest force-open, disable or reset (the same JSON) |
//! | `tower-breaker:override:shadow` | a hash: breaker name → its latest shadow switch |
//!
//! An override: `{"v":1,"name":"openai","action":"force_open","at":1767225600000,
//! "origin":"web-1-4242-9f1c"}` (`action` as in [`Override::as_str`]; `registry` and `key` for
//! keyed breakers; `at` is when the operator acted, in UNIX milliseconds on the Redis
//! server's clock). Storing is one Lua script that keeps the later `at` and publishes only
//! what it stored. The hashes keep a name's latest override for good (a reset included, so
//! that a replica that was away learns that a force-open ended): delete a field (`HDEL`) to
//! forget a breaker, and the whole hash to forget every standing override. A replica that
//! starts applies the standing force-opens, disables and shadow switches, and skips resets
//! (a new breaker has nothing to undo); a keyed registry creates the breakers of the keys
//! concerned, except for resets, which apply only to keys it holds.
//!
//! A message: `{"v":1,"name":"openai:gpt-4o","registry":"openai","key":"gpt-4o",
//! "deadline":1767225600000,"reason":"consecutive_failures","origin":"web-1-4242-9f1c"}`
//! (`registry` and `key` only for keyed breakers; `deadline` in UNIX milliseconds on the Redis
//! server's clock, see below). Storing is one Lua script that keeps the later deadline: a
//! shorter trip never overwrites a longer one in force, and a trip is published only when it
//! was stored. A message that does not parse (or has an unknown `v`) is ignored, counted
//! ([`SyncStatus::malformed`]) and logged at WARN (the first ten, then one in a thousand).
//! Deadlines sent to Redis are clamped to 2^53 - 1 ms (the year 287,396: the largest integer
//! the script's Lua numbers hold exactly, which `PEXPIREAT` accepts), so a trip of
//! `u64::MAX` seconds under `max_open_duration(Duration::MAX)` is stored as "practically
//! forever" rather than refused.
//!
//! # Time and clock skew
//!
//! Deadlines travel as wall-clock time, UNIX milliseconds, on **the Redis server's clock**:
//! each replica measures the offset between its own clock and Redis's (`TIME`) when it
//! connects and at every [`ping_interval`](RedisSyncBuilder::ping_interval), and converts
//! deadlines both ways with it. Replicas whose clocks disagree (by seconds, or more) therefore
//! still agree on deadlines; the remaining error is the offset's estimate, at most half the
//! round trip to Redis plus the drift of the local clock over one ping interval, i.e.
//! milliseconds. On receipt:
//!
//! - a deadline already past (on the Redis clock) is ignored;
//! - a deadline further away than the receiving breaker's `max_open_duration` is clamped to it;
//! - otherwise the breaker opens for the time remaining, measured from receipt (so it is
//!   shortened by the delivery delay, typically under a millisecond).
//!
//! # When Redis is unreachable
//!
//! The hot path never waits on Redis: a breaker's listener only puts the trip on a bounded
//! queue ([`queue_capacity`](RedisSyncBuilder::queue_capacity); a full queue drops the trip
//! and counts it in [`SyncStatus::dropped`]), and a background task publishes it. While Redis
//! is unreachable, every replica keeps working on its local breakers; the sync logs one WARN
//! per outage (not per message), shows `connected: false` in [`RedisSync::status`] (and, with
//! the `metrics` feature, `circuit_breaker_redis_connected 0`), and reconnects by itself with
//! a backoff ([`reconnect_delay`](RedisSyncBuilder::reconnect_delay)). Once back, it
//! resubscribes, reads the trips in force from Redis and applies them, and re-publishes its
//! own trips still in force (those it could not publish during the outage, and those Redis
//! lost if it restarted without persistence). Overrides the same way: it reads the standing
//! overrides and applies those newer than what it knows (a reset that ended a force-open
//! while it was away included), and stores its own latest ones (those taken during the
//! outage, and those Redis lost), unless later ones are stored.
//!
//! A connection is declared lost when the pub/sub stream ends, a command fails on the
//! connection, or a command (including the periodic ping) does not answer within
//! [`timeout`](RedisSyncBuilder::timeout). A trip that Redis *refuses* (an error answer such
//! as `WRONGTYPE`, `OOM` or `NOPERM`: the connection is fine) does not end the session: that
//! trip is dropped (not re-sent at each reconnection), counted ([`SyncStatus::refused`]) and
//! logged at WARN (the first ten, then one in a thousand), and the sync carries on with the
//! others. A server that is loading, read-only or failing over ends the session as a lost
//! connection does, and its trips are re-sent once it is back.
//!
//! # Cost and trust
//!
//! A shared breaker has one more listener: each call's event costs an indirect call and a
//! `match`; only a transition to open does more (reads the wall clock, allocates the name,
//! `try_send`s on the queue). Everything else happens on the background task: one Redis
//! round trip per local trip, and one JSON parse per trip received.
//!
//! Whoever can publish on the trips channel can open any shared breaker of the fleet, for at
//! most its `max_open_duration`; whoever can write the overrides channel or hashes can force
//! open, disable or reset any of them, for good: give the application's Redis the same trust
//! as its configuration (ACLs, a private network). A breaker that a remote trip opened for
//! longer than its own `max_open_duration` allows is opened again (for at most that) each
//! time the sync reconnects and reads the trip from the store.
//!
//! # Metrics
//!
//! With the `metrics` feature, labelled `prefix="<prefix>"`:
//!
//! | name | type | meaning |
//! |---|---|---|
//! | `circuit_breaker_redis_connected` | gauge | `1` connected, `0` not |
//! | `circuit_breaker_redis_outages_total` | counter | connections lost or failed (once per outage) |
//! | `circuit_breaker_redis_published_total` | counter | local trips stored and published |
//! | `circuit_breaker_redis_received_total` | counter | trips of other replicas received (channel or store) |
//! | `circuit_breaker_redis_malformed_total` | counter | messages on the channel that did not parse |

mod builder;
mod shared;
mod sync;
mod wire;
mod worker;

use std::sync::{Mutex, MutexGuard};

#[cfg(doc)]
use crate::breaker::{CircuitBreaker, Event, Origin, Override, Reason};

pub use builder::RedisSyncBuilder;
pub use sync::{RedisSync, SyncStatus};

/// Re-exported from the `redis` crate, so that an application needs no direct dependency on
/// it (nor a matching version): `Client::open("redis://host:6379/")?`.
#[doc(no_inline)]
pub use ::redis::{Client, RedisError};

/// `circuit_breaker_redis_connected`
pub const CONNECTED: &str = "circuit_breaker_redis_connected";
/// `circuit_breaker_redis_outages_total`
pub const OUTAGES: &str = "circuit_breaker_redis_outages_total";
/// `circuit_breaker_redis_published_total`
pub const PUBLISHED: &str = "circuit_breaker_redis_published_total";
/// `circuit_breaker_redis_received_total`
pub const RECEIVED: &str = "circuit_breaker_redis_received_total";
/// `circuit_breaker_redis_malformed_total`
pub const MALFORMED: &str = "circuit_breaker_redis_malformed_total";

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "tower-breaker";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
