//! A set of status codes, one bit each.

use std::fmt;

/// A set of status codes 100–599, one bit each: `Copy`, 64 bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct StatusSet([u64; 8]);

impl StatusSet {
    pub(super) const FIRST: u16 = 100;
    pub(super) const LAST: u16 = 599;
    pub(super) const EMPTY: Self = Self([0; 8]);

    pub(super) const fn index(code: u16) -> Option<(usize, u64)> {
        if code < Self::FIRST || code > Self::LAST {
            return None;
        }
        let i = (code - Self::FIRST) as usize;
        Some((i / 64, 1 << (i % 64)))
    }

    pub(super) const fn with(mut self, code: u16) -> Self {
        if let Some((w, bit)) = Self::index(code) {
            self.0[w] |= bit;
        }
        self
    }

    pub(super) const fn with_range(mut self, first: u16, last: u16) -> Self {
        let mut code = first;
        while code <= last {
            self = self.with(code);
            code += 1;
        }
        self
    }

    pub(super) fn insert(&mut self, code: u16) {
        *self = self.with(code);
    }

    pub(super) fn remove(&mut self, code: u16) {
        if let Some((w, bit)) = Self::index(code) {
            self.0[w] &= !bit;
        }
    }

    #[inline]
    pub(super) const fn contains(&self, code: u16) -> bool {
        match Self::index(code) {
            Some((w, bit)) => self.0[w] & bit != 0,
            None => false,
        }
    }
}

impl fmt::Debug for StatusSet {
    /// As runs: `{408, 429, 500-599}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        let mut first = true;
        let mut code = Self::FIRST;
        while code <= Self::LAST {
            if !self.contains(code) {
                code += 1;
                continue;
            }
            let start = code;
            while code < Self::LAST && self.contains(code + 1) {
                code += 1;
            }
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            if start == code {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{code}")?;
            }
            code += 1;
        }
        f.write_str("}")
    }
}
