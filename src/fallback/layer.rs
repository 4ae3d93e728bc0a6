//! [`FallbackLayer`]: wraps services (the primaries) in a [`Fallback`] to one secondary.

use std::{fmt, sync::Arc};

use tower_layer::Layer;

use super::{
    AllOpen, Fallback,
    policy::{CloneRequest, OnFailure, OnOpen},
    provenance::{Provenance, Shared},
    service::Route,
};
use crate::classify::HttpClassifier;

/// Makes each wrapped service the primary of a [`Fallback`] whose secondary is a clone of
/// `secondary`. Configured like [`Fallback`].
///
/// ```
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
/// use tower_breaker::{BoxError, CircuitBreaker, CircuitBreakerLayer, FallbackLayer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), BoxError> {
/// let breaker = CircuitBreaker::builder("search").consecutive_failures(3).build()?;
/// breaker.force_open();
/// let cache = service_fn(|q: String| async move { Ok::<_, BoxError>(format!("cached {q}")) });
/// let svc = ServiceBuilder::new()
///     .layer(FallbackLayer::new(cache).names("search", "cache"))
///     .layer(CircuitBreakerLayer::new(breaker))
///     .service(service_fn(|q: String| async move { Ok::<_, BoxError>(format!("live {q}")) }));
/// assert_eq!(svc.oneshot("rust".to_owned()).await?, "cached rust");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct FallbackLayer<S, F = OnOpen> {
    secondary: S,
    policy: F,
    spill_over: bool,
    all_open: AllOpen,
    shared: Arc<Shared>,
}

impl<S> FallbackLayer<S> {
    /// Falls back to (a clone of) `secondary`.
    pub fn new(secondary: S) -> Self {
        Self {
            secondary,
            policy: OnOpen,
            spill_over: false,
            all_open: AllOpen::Refuse,
            shared: Arc::new(Shared::new(Box::new(["primary".into(), "secondary".into()]))),
        }
    }
}

impl<S, F> FallbackLayer<S, F> {
    /// See [`Fallback::names`].
    pub fn names(mut self, primary: impl Into<Arc<str>>, secondary: impl Into<Arc<str>>) -> Self {
        Arc::make_mut(&mut self.shared).names = Box::new([primary.into(), secondary.into()]);
        self
    }

    /// See [`Fallback::spill_over`].
    pub fn spill_over(mut self, spill_over: bool) -> Self {
        self.spill_over = spill_over;
        self
    }

    /// See [`Fallback::when_all_open`].
    pub fn when_all_open(mut self, all_open: AllOpen) -> Self {
        self.all_open = all_open;
        self
    }

    /// See [`Fallback::on_fallback`].
    pub fn on_fallback(mut self, callback: impl Fn(&Provenance) + Send + Sync + 'static) -> Self {
        Arc::make_mut(&mut self.shared).on_fallback = Some(Arc::new(callback));
        self
    }

    /// See [`Fallback::on_failure`].
    pub fn on_failure<Pol>(self, policy: Pol) -> FallbackLayer<S, OnFailure<Pol>> {
        FallbackLayer {
            secondary: self.secondary,
            policy: OnFailure(policy),
            spill_over: self.spill_over,
            all_open: self.all_open,
            shared: self.shared,
        }
    }

    /// See [`Fallback::on_http_failure`].
    pub fn on_http_failure(self) -> FallbackLayer<S, OnFailure<CloneRequest<HttpClassifier>>> {
        self.on_failure(CloneRequest::http())
    }
}

impl<P, S: Clone, F: Clone> Layer<P> for FallbackLayer<S, F> {
    type Service = Fallback<P, S, F>;

    fn layer(&self, primary: P) -> Self::Service {
        Fallback {
            primary,
            secondary: self.secondary.clone(),
            policy: self.policy.clone(),
            spill_over: self.spill_over,
            all_open: self.all_open,
            shared: self.shared.clone(),
            route: Route::None,
            spare: None,
        }
    }
}

impl<S: fmt::Debug, F: fmt::Debug> fmt::Debug for FallbackLayer<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FallbackLayer")
            .field("secondary", &self.secondary)
            .field("policy", &self.policy)
            .field("spill_over", &self.spill_over)
            .field("all_open", &self.all_open)
            .field("names", &self.shared.names)
            .finish()
    }
}
