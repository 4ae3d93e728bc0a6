//! The wakers of `Readiness::Wait` services waiting for the breaker to admit again.
//!
//! One slot per waiting service instance, not one entry per registration: a service that is
//! polled again replaces its slot's waker (no scan), and one that is dropped while waiting (its
//! caller gave up) frees its slot, waker and all. The table therefore holds at most one waker
//! per live waiting instance, and vacant slots are reused, so it does not grow with abandoned
//! waiters (issue 14 point 4). Lives under the breaker's lock; the closed path never touches it.

use std::task::Waker;

/// A waiting service's slot, held from its first `Pending` until it is admitted or dropped.
/// Only its holder frees it, so the index stays valid that long.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct WaitKey(usize);

#[derive(Debug)]
enum Slot {
    /// Held; the waker is taken when it is woken.
    Held(Option<Waker>),
    /// Free: the next free slot's index (`usize::MAX`: none).
    Vacant(usize),
}

#[derive(Debug)]
pub(super) struct Waiters {
    slots: Vec<Slot>,
    free: usize,
    /// How many slots are held.
    held: usize,
}

impl Default for Waiters {
    fn default() -> Self {
        Self {
            slots: Vec::new(),
            free: usize::MAX,
            held: 0,
        }
    }
}

impl Waiters {
    /// Registers `waker` in `key`'s slot, taking a slot first when `key` holds none.
    pub(super) fn register(&mut self, key: &mut Option<WaitKey>, waker: &Waker) {
        let i = match key {
            Some(WaitKey(i)) => *i,
            None => {
                let i = if self.free == usize::MAX {
                    self.slots.push(Slot::Held(None));
                    self.slots.len() - 1
                } else {
                    let i = self.free;
                    let Slot::Vacant(next) = self.slots[i] else {
                        unreachable!("the free list holds vacant slots")
                    };
                    self.free = next;
                    self.slots[i] = Slot::Held(None);
                    i
                };
                self.held += 1;
                *key = Some(WaitKey(i));
                i
            }
        };
        match &mut self.slots[i] {
            Slot::Held(Some(w)) if w.will_wake(waker) => {}
            Slot::Held(w) => *w = Some(waker.clone()),
            Slot::Vacant(_) => unreachable!("a key's slot is held until it is freed"),
        }
    }

    /// Frees `key`'s slot (and drops its waker).
    pub(super) fn remove(&mut self, key: WaitKey) {
        let i = key.0;
        debug_assert!(matches!(self.slots[i], Slot::Held(_)));
        self.slots[i] = Slot::Vacant(self.free);
        self.free = i;
        self.held -= 1;
        if self.held == 0 {
            // Every waiter left: start over (the capacity stays for the next outage).
            self.slots.clear();
            self.free = usize::MAX;
        }
    }

    /// Wakes every registered waker once; the slots stay with their holders, who register
    /// again if they still have to wait.
    pub(super) fn wake_all(&mut self) {
        for slot in &mut self.slots {
            if let Slot::Held(w) = slot {
                if let Some(w) = w.take() {
                    w.wake();
                }
            }
        }
    }

    /// How many wakers are registered.
    #[cfg(test)]
    pub(super) fn registered(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| matches!(s, Slot::Held(Some(_))))
            .count()
    }

    /// How many slots the table holds, free ones included.
    #[cfg(test)]
    pub(super) fn slots(&self) -> usize {
        self.slots.len()
    }
}
