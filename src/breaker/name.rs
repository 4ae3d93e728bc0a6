//! A breaker's name as a rejection carries it: inline when short (no reference count to
//! write, so a rejection writes nothing that other threads' rejections write), shared when
//! long.

use std::{fmt, sync::Arc};

/// The longest name kept inline: 31 bytes (the 32nd holds the length).
const INLINE: usize = 31;

/// The inline form: the bytes, then the length in the last byte, word-aligned, so that a copy
/// is two 16-byte moves (a form with a byte-sized length field first made the compiler copy it
/// in odd-sized pieces, and reading them back stalled store forwarding: a third of a
/// rejection's cost).
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub(crate) struct Inline([u8; 32]);

/// A breaker's name: a copy when it is at most 31 bytes, the breaker's `Arc<str>` otherwise.
#[derive(Clone)]
pub(crate) enum Name {
    Inline(Inline),
    Shared(Arc<str>),
}

impl Name {
    pub(crate) fn new(name: &Arc<str>) -> Self {
        let len = name.len();
        if len > INLINE {
            return Self::Shared(name.clone());
        }
        let mut bytes = [0u8; 32];
        bytes[..len].copy_from_slice(name.as_bytes());
        bytes[INLINE] = len as u8;
        Self::Inline(Inline(bytes))
    }

    pub(crate) fn as_str(&self) -> &str {
        match self {
            // Always whole characters: a copy of a whole `str`.
            Self::Inline(Inline(bytes)) => {
                std::str::from_utf8(&bytes[..usize::from(bytes[INLINE])]).unwrap_or_default()
            }
            Self::Shared(name) => name,
        }
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_copied_long_ones_shared() {
        let short: Arc<str> = "openai:gpt-4o-mini-2024-07-18".into();
        let name = Name::new(&short);
        assert!(matches!(name, Name::Inline(_)));
        assert_eq!(name.as_str(), &*short);
        assert_eq!(Arc::strong_count(&short), 1, "no reference taken");
        let long: Arc<str> = "api-123456.upstream.example.com:443/v1".into();
        let name = Name::new(&long);
        assert!(matches!(name, Name::Shared(_)));
        assert_eq!(name.as_str(), &*long);
        assert_eq!(size_of::<Name>(), 40);
        let multibyte: Arc<str> = "ünïcødé-brëåkër".into();
        assert_eq!(Name::new(&multibyte).as_str(), &*multibyte);
        assert_eq!(Name::new(&"".into()).as_str(), "");
        let exactly: Arc<str> = "x".repeat(31).into();
        assert!(matches!(Name::new(&exactly), Name::Inline(_)));
        assert_eq!(Name::new(&exactly).as_str(), &*exactly);
    }
}
