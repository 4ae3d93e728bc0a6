//! A breaker's name as a rejection carries it: inline when short (no reference count to
//! write, so a rejection writes nothing that other threads' rejections write), shared when
//! long.

use std::{fmt, sync::Arc};

/// The longest name kept inline: 30 bytes, so that a `Name` is 32 bytes.
const INLINE: usize = 30;

/// A breaker's name: a copy when it is at most 30 bytes, the breaker's `Arc<str>` otherwise.
#[derive(Clone)]
pub(crate) enum Name {
    Inline { len: u8, bytes: [u8; INLINE] },
    Shared(Arc<str>),
}

impl Name {
    pub(crate) fn new(name: &Arc<str>) -> Self {
        let len = name.len();
        if len <= INLINE {
            let mut bytes = [0; INLINE];
            bytes[..len].copy_from_slice(name.as_bytes());
            Self::Inline {
                len: len as u8,
                bytes,
            }
        } else {
            Self::Shared(name.clone())
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        match self {
            // Always whole characters: a copy of a whole `str`.
            Self::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default()
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
        assert!(matches!(name, Name::Inline { .. }));
        assert_eq!(name.as_str(), &*short);
        assert_eq!(Arc::strong_count(&short), 1, "no reference taken");
        let long: Arc<str> = "api-123456.upstream.example.com:443/v1".into();
        let name = Name::new(&long);
        assert!(matches!(name, Name::Shared(_)));
        assert_eq!(name.as_str(), &*long);
        assert_eq!(size_of::<Name>(), 32);
        let multibyte: Arc<str> = "ünïcødé-brëåkër".into();
        assert_eq!(Name::new(&multibyte).as_str(), &*multibyte);
        assert_eq!(Name::new(&"".into()).as_str(), "");
    }
}
