//! Breakers by id, for the rare refusal that must reach its breaker: a failover whose every
//! member is open ends the soonest one's open period early (`CircuitOpen::end_open_period`).
//!
//! A refusal holds no reference to its breaker (refusing a call then writes no reference count
//! that other threads' refusals write; see `error.rs`), only its id. Each breaker's shared
//! state registers a weak reference here when it is built and removes it when it is dropped:
//! one entry per live breaker, in one of 16 shards, each behind a `std` mutex taken only at a
//! breaker's creation and drop and by such a failover. Not under loom (an early end there is
//! tested through `try_probe_early`).

#[cfg(not(loom))]
mod imp {
    use std::{
        collections::HashMap,
        sync::{Arc, Mutex, PoisonError, Weak},
    };

    use crate::breaker::Shared;

    const SHARDS: usize = 16;

    type Table = Mutex<Option<HashMap<u64, Weak<Shared>>>>;

    static TABLES: [Table; SHARDS] = [const { Mutex::new(None) }; SHARDS];

    fn table(id: u64) -> std::sync::MutexGuard<'static, Option<HashMap<u64, Weak<Shared>>>> {
        TABLES[(id as usize) % SHARDS]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(in crate::breaker) fn register(id: u64, shared: &Arc<Shared>) {
        table(id)
            .get_or_insert_with(HashMap::new)
            .insert(id, Arc::downgrade(shared));
    }

    pub(in crate::breaker) fn unregister(id: u64) {
        if let Some(map) = table(id).as_mut() {
            map.remove(&id);
        }
    }

    /// The live breaker with this id (an id's low 40 bits, as a refusal carries it).
    pub(in crate::breaker) fn find(id: u64) -> Option<Arc<Shared>> {
        table(id).as_ref()?.get(&id)?.upgrade()
    }
}

#[cfg(loom)]
mod imp {
    use crate::breaker::{Shared, sync::Arc};

    pub(in crate::breaker) fn register(_id: u64, _shared: &Arc<Shared>) {}

    pub(in crate::breaker) fn unregister(_id: u64) {}

    pub(in crate::breaker) fn find(_id: u64) -> Option<Arc<Shared>> {
        None
    }
}

pub(super) use imp::{find, register, unregister};

#[cfg(all(test, not(loom)))]
mod tests {
    use super::imp::*;
    use crate::{CircuitBreaker, Outcome, State};

    #[test]
    fn a_refusal_reaches_its_live_breaker_and_the_entry_goes_with_it() {
        let b = CircuitBreaker::builder("ids")
            .consecutive_failures(1)
            .build()
            .unwrap();
        b.try_acquire().unwrap().record(Outcome::Failure);
        let refused = b.try_acquire().unwrap_err();
        let id = b.shared().id;
        assert!(find(id).is_some());
        assert!(refused.end_open_period(), "its own open period: ended");
        assert_eq!(b.state(), State::HalfOpen);
        drop(b);
        assert!(find(id).is_none(), "the entry went with the breaker");
        assert!(!refused.end_open_period());
    }
}
