//! The half-open probes in flight, by admission time: `half_open_max_wait` runs from the
//! admission of the oldest one (DESIGN, issue 14 point 3).
//!
//! Lives under the breaker's lock. A probe permit carries its admission stamp (nanoseconds
//! since the breaker's epoch), so that its release removes its own entry whatever the order
//! in which probes come back. Admissions arrive in time order but for threads that read the
//! clock before taking the lock, so an entry is inserted in place; the oldest is the front.

use std::collections::VecDeque;

use super::permit::STAMP_MASK;

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

    /// The probe admitted at the time whose low 48 bits are `stamp` (a permit's start stamp)
    /// came back (or was dropped). The probes in flight are a few (`half_open_permits`) and
    /// their admissions lie within 78 hours of each other in practice: a linear search for
    /// the stamp finds the oldest entry with it.
    pub(super) fn release(&mut self, stamp: u64) {
        let i = self.admitted.iter().position(|&a| a & STAMP_MASK == stamp);
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
    use super::Probes;

    #[test]
    fn the_oldest_is_the_earliest_admission_still_in_flight() {
        let mut p = Probes::default();
        assert_eq!(p.oldest(), None);
        p.admit(10);
        p.admit(30);
        p.admit(20); // read the clock before a later admission took the lock
        p.admit(30);
        assert_eq!((p.len(), p.oldest()), (4, Some(10)));
        p.release(30);
        assert_eq!((p.len(), p.oldest()), (3, Some(10)));
        p.release(10);
        assert_eq!(p.oldest(), Some(20));
        p.release(20);
        assert_eq!((p.len(), p.oldest()), (1, Some(30)));
        p.release(30);
        assert_eq!((p.len(), p.oldest()), (0, None));
    }
}
