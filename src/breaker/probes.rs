//! The half-open probes in flight, by admission time: `half_open_max_wait` runs from the
//! admission of the oldest one (DESIGN, issue 14 point 3).
//!
//! Lives under the breaker's lock. A probe permit carries its admission stamp (nanoseconds
//! since the breaker's epoch, modulo 2^47), so that its release removes its own entry whatever
//! the order in which probes come back. Admissions arrive in time order but for threads that
//! read the clock before taking the lock, so an entry is inserted in place; the oldest is the
//! front.

use std::collections::VecDeque;

use super::STAMP_MASK;

/// The admission stamps of the probes in flight, oldest first.
#[derive(Debug, Default)]
pub(super) struct Probes {
    admitted: VecDeque<u64>,
}

impl Probes {
    /// How many probes are in flight.
    pub(super) fn len(&self) -> u32 {
        // At most `half_open_permits`, a `u32`.
        self.admitted.len() as u32
    }

    /// A probe admitted at `at`.
    pub(super) fn admit(&mut self, at: u64) {
        match self.admitted.back() {
            Some(&last) if last > at => {
                let i = self.admitted.partition_point(|&a| a <= at);
                self.admitted.insert(i, at);
            }
            _ => self.admitted.push_back(at),
        }
    }

    /// The probe whose stamp is `stamp` (its admission modulo 2^47) came back, or was
    /// dropped, at `now`.
    pub(super) fn release(&mut self, stamp: u64, now: u64) {
        // The admission: the latest instant up to now with those low bits (a probe is not in
        // flight for 39 hours; if one was, the first entry with those bits goes).
        let at = now.wrapping_sub(now.wrapping_sub(stamp) & STAMP_MASK);
        let i = self.admitted.partition_point(|&a| a < at);
        let i = if self.admitted.get(i) == Some(&at) {
            Some(i)
        } else {
            self.admitted.iter().position(|&a| a & STAMP_MASK == stamp)
        };
        debug_assert!(i.is_some(), "a probe released twice");
        if let Some(i) = i {
            self.admitted.remove(i);
        }
    }

    /// The admission stamp of the oldest probe in flight.
    pub(super) fn oldest(&self) -> Option<u64> {
        self.admitted.front().copied()
    }

    pub(super) fn clear(&mut self) {
        self.admitted.clear();
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::{Probes, STAMP_MASK};

    #[test]
    fn the_oldest_is_the_earliest_admission_still_in_flight() {
        let mut p = Probes::default();
        assert_eq!(p.oldest(), None);
        p.admit(10);
        p.admit(30);
        p.admit(20); // read the clock before a later admission took the lock
        p.admit(30);
        assert_eq!((p.len(), p.oldest()), (4, Some(10)));
        p.release(30, 40);
        assert_eq!((p.len(), p.oldest()), (3, Some(10)));
        p.release(10, 40);
        assert_eq!(p.oldest(), Some(20));
        p.release(20, 40);
        assert_eq!((p.len(), p.oldest()), (1, Some(30)));
        p.release(30, 40);
        assert_eq!((p.len(), p.oldest()), (0, None));
    }

    #[test]
    fn stamps_past_2_pow_47_name_their_probe() {
        let base = 3 << 47; // a breaker 117 hours old
        let mut p = Probes::default();
        p.admit(base + 5);
        p.admit(base + 9);
        p.release((base + 9) & STAMP_MASK, base + 100);
        assert_eq!(p.oldest(), Some(base + 5));
        // Admitted just before a multiple of 2^47, released just after.
        p.admit((4 << 47) - 1);
        p.release(STAMP_MASK, (4 << 47) + 1);
        assert_eq!((p.len(), p.oldest()), (1, Some(base + 5)));
    }
}
