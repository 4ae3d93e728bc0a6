//! Which member served a response, and why the others did not: [`Provenance`], recorded into
//! responses through [`RecordProvenance`] and reported to `on_fallback` callbacks.

use std::{borrow::Cow, fmt, sync::Arc};

use super::error::Skipped;

/// Which member of a fallback chain served a response, and every member skipped before (or,
/// when the last resort's answer was a failure, after) it.
///
/// For `http::Response<B>` it is in the response's extensions:
/// `response.extensions().get::<Provenance>()`. Nested fallbacks merge theirs: the outer one
/// prepends its skipped members to the inner one's record.
#[derive(Clone, Debug)]
pub struct Provenance {
    served_by: Arc<str>,
    skipped: Vec<Skipped>,
    probed_early: bool,
}

impl Provenance {
    /// The name of the member that served the response.
    pub fn served_by(&self) -> &str {
        &self.served_by
    }

    /// The members that did not serve it, in chain order, with their reasons.
    pub fn skipped(&self) -> &[Skipped] {
        &self.skipped
    }

    /// Whether any member was skipped (the response came from a fallback).
    pub fn fell_back(&self) -> bool {
        !self.skipped.is_empty()
    }

    /// Whether every member was open and the one that served was let through early, as its
    /// breaker's half-open probe ([`AllOpen::ProbeSoonest`](super::AllOpen::ProbeSoonest)).
    pub const fn probed_early(&self) -> bool {
        self.probed_early
    }
}

impl fmt::Display for Provenance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "served by {:?}", &*self.served_by)?;
        if self.probed_early {
            f.write_str(", an early probe, every member being open")?;
        }
        for (i, s) in self.skipped.iter().enumerate() {
            f.write_str(if i == 0 { " (" } else { "; " })?;
            write!(f, "{s}")?;
        }
        if !self.skipped.is_empty() {
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// A response type that can carry its [`Provenance`].
///
/// `http::Response<B>` stores it in its extensions. The common plain types (`()`, numbers,
/// `String`, `&'static str`, `Vec<T>`, `Box<T>`, `Option<T>`) implement it as a no-op; for a
/// response type of your own, write `impl RecordProvenance for MyResponse {}` (a no-op: use
/// the `on_fallback` callback instead), or override [`record_provenance`] to keep it (and
/// [`take_provenance`] so that an outer fallback can merge an inner one's record).
///
/// [`record_provenance`]: Self::record_provenance
/// [`take_provenance`]: Self::take_provenance
///
/// ```
/// use tower_breaker::fallback::{Provenance, RecordProvenance};
///
/// struct Completion { text: String, provider: Option<String> }
///
/// impl RecordProvenance for Completion {
///     fn record_provenance(&mut self, provenance: Provenance) {
///         self.provider = Some(provenance.served_by().to_owned());
///     }
/// }
/// ```
pub trait RecordProvenance {
    /// Stores `provenance` in the response. The default drops it.
    #[inline]
    fn record_provenance(&mut self, provenance: Provenance) {
        let _ = provenance;
    }

    /// Removes a provenance recorded by an inner fallback, to merge it. The default has none.
    #[inline]
    fn take_provenance(&mut self) -> Option<Provenance> {
        None
    }
}

impl<B> RecordProvenance for http::Response<B> {
    #[inline]
    fn record_provenance(&mut self, provenance: Provenance) {
        self.extensions_mut().insert(provenance);
    }

    #[inline]
    fn take_provenance(&mut self) -> Option<Provenance> {
        self.extensions_mut().remove::<Provenance>()
    }
}

macro_rules! no_op {
    ($($t:ty),* $(,)?) => { $(impl RecordProvenance for $t {})* };
}
no_op!(
    (),
    bool,
    char,
    u8,
    u16,
    u32,
    u64,
    u128,
    usize,
    i8,
    i16,
    i32,
    i64,
    i128,
    isize,
    f32,
    f64,
    String,
    &'static str,
    Arc<str>,
    Cow<'static, str>,
);
impl<T> RecordProvenance for Vec<T> {}
impl<T> RecordProvenance for Option<T> {}
impl<T: ?Sized> RecordProvenance for Box<T> {}

/// A callback told about every response that a fallback served after skipping a member.
pub(crate) type OnFallback = Arc<dyn Fn(&Provenance) + Send + Sync>;

/// Names and the callback: what every response future of one fallback shares.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) names: Box<[Arc<str>]>,
    pub(crate) on_fallback: Option<OnFallback>,
}

impl Shared {
    pub(crate) fn new(names: Box<[Arc<str>]>) -> Self {
        Self {
            names,
            on_fallback: None,
        }
    }

    /// Records who served `res` (merging an inner fallback's record) and tells the callback
    /// if any member was skipped. `probed_early`: the member was let through as an early probe.
    #[inline]
    pub(crate) fn served<Res: RecordProvenance>(
        &self,
        res: &mut Res,
        member: usize,
        skipped: Vec<Skipped>,
        probed_early: bool,
    ) {
        let provenance = match res.take_provenance() {
            Some(mut inner) => {
                if !skipped.is_empty() {
                    let mut all = skipped;
                    all.append(&mut inner.skipped);
                    inner.skipped = all;
                }
                inner.probed_early |= probed_early;
                inner
            }
            None => Provenance {
                served_by: self.names[member].clone(),
                skipped,
                probed_early,
            },
        };
        if provenance.fell_back() {
            tracing::debug!(%provenance, "fallback served a request");
            if let Some(callback) = &self.on_fallback {
                callback(&provenance);
            }
        }
        res.record_provenance(provenance);
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("names", &self.names)
            .field("on_fallback", &self.on_fallback.is_some())
            .finish()
    }
}
