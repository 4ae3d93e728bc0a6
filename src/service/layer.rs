//! [`CircuitBreakerLayer`]: wraps services in a [`CircuitBreakerService`].

use std::{
    fmt,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use tower_layer::Layer;

use super::{CircuitBreakerService, Readiness};
use crate::{
    breaker::{Builder, CircuitBreaker, Config, ConfigError, Lanes},
    classify::ErrorIsFailure,
};

/// Applies a circuit breaker to services.
///
/// [`new`](Self::new) shares one breaker among every service the layer makes (one upstream
/// behind several clones or stacks); [`per_service`](Self::per_service) builds a fresh breaker
/// for each `layer()` call (one breaker per endpoint, e.g. under `tower::balance`).
///
/// ```
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
/// use tower_breaker::{CircuitBreaker, CircuitBreakerLayer, Readiness};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_breaker::BoxError> {
/// let breaker = CircuitBreaker::builder("upstream").consecutive_failures(5).build()?;
/// let svc = ServiceBuilder::new()
///     .layer(CircuitBreakerLayer::new(breaker.clone()).readiness(Readiness::FailFast))
///     .service(service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x + 1) }));
/// assert_eq!(svc.oneshot(1).await?, 2);
/// # Ok(()) }
/// ```
///
/// # Where a `Buffer` goes
///
/// tower's `Buffer` (`ServiceBuilder::buffer`, often added to get a `Clone` service) drives
/// its inner service from a worker task that stops **for good** at the first `poll_ready`
/// error, as tower's contract allows. In the default [`Readiness::FailFast`] mode an open
/// circuit *is* a `poll_ready` error, so a buffer above the breaker dies at the first open
/// circuit: every later call fails with `buffered service failed: circuit "..." ...`, even
/// once the upstream is back, and no probe ever reaches the breaker. Put the breaker above the
/// buffer; or, if the buffer must be on top, use [`Readiness::RejectOnCall`].
/// [`is_dead_buffer`](crate::is_dead_buffer) recognises the dead buffer's error (it is not an
/// open circuit for [`is_circuit_open`](crate::is_circuit_open)), and the crate logs one
/// ERROR naming the fix the first time it meets one.
///
/// ```
/// use std::time::Duration;
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
/// use tower_breaker::{BoxError, CircuitBreaker, CircuitBreakerLayer, Readiness, is_dead_buffer};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), BoxError> {
/// let breaker = CircuitBreaker::builder("upstream").consecutive_failures(5).build()?;
/// let client = service_fn(|_: ()| async { Ok::<_, BoxError>("ok") }); // any client
///
/// // Wrong: buffer(breaker(client)). The buffer's worker stops at the first refusal.
/// let wrong = ServiceBuilder::new()
///     .buffer(64)
///     .layer(CircuitBreakerLayer::new(breaker.clone()))
///     .service(client);
/// // Right: breaker(buffer(client)), the breaker above the buffer ...
/// let right = ServiceBuilder::new()
///     .layer(CircuitBreakerLayer::new(breaker.clone()))
///     .buffer(64)
///     .service(client);
/// // ... or, when the buffer must be on top, a breaker whose readiness never fails.
/// let also_right = ServiceBuilder::new()
///     .buffer(64)
///     .layer(CircuitBreakerLayer::new(breaker.clone()).readiness(Readiness::RejectOnCall))
///     .service(client);
///
/// breaker.force_open(); // an outage: every stack refuses
/// assert!(wrong.clone().oneshot(()).await.is_err());
/// assert!(right.clone().oneshot(()).await.is_err());
/// assert!(also_right.clone().oneshot(()).await.is_err());
///
/// breaker.reset(); // the upstream is back
/// assert_eq!(right.oneshot(()).await?, "ok");
/// assert_eq!(also_right.oneshot(()).await?, "ok");
/// let err = wrong.oneshot(()).await.unwrap_err(); // dead for good
/// assert!(is_dead_buffer(&err));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct CircuitBreakerLayer<C = ErrorIsFailure> {
    source: Source,
    classifier: C,
    readiness: Readiness,
}

/// Where a layer's services get their breaker: one shared, or one each from a validated
/// template. Shared by every breaker layer of the crate.
#[derive(Clone, Debug)]
pub(crate) enum Source {
    Shared(CircuitBreaker),
    PerService(Box<PerService>),
}

type NameFn = Arc<dyn Fn(&str, usize) -> String + Send + Sync>;
type MapFn = Arc<dyn Fn(Builder, usize) -> Builder + Send + Sync>;

/// A per-service template: the builder, its validated rules, the naming and adjusting hooks,
/// and the breakers made so far (shared by the clones of the layer, so that indexes do not
/// repeat when a router clones the layer for each route).
#[derive(Clone)]
pub(crate) struct PerService {
    builder: Builder,
    config: Config,
    name_with: Option<NameFn>,
    map_builder: Option<MapFn>,
    made: Arc<Mutex<Made>>,
}

#[derive(Default)]
struct Made {
    next: usize,
    /// By index. A breaker that only this list holds is pruned: its service is gone.
    breakers: Vec<(usize, CircuitBreaker)>,
}

impl Made {
    fn prune(&mut self) {
        self.breakers
            .retain(|(_, b)| crate::breaker::sync::Arc::strong_count(&b.root) > 1);
    }
}

impl fmt::Debug for PerService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PerService")
            .field("builder", &self.builder)
            .field("name_with", &self.name_with.as_ref().map(|_| "Fn"))
            .field("map_builder", &self.map_builder.as_ref().map(|_| "Fn"))
            // `try_lock`: a hook that prints the layer must not deadlock.
            .field("made", &self.made.try_lock().map(|m| m.next).ok())
            .finish_non_exhaustive()
    }
}

fn lock(made: &Mutex<Made>) -> MutexGuard<'_, Made> {
    made.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Source {
    /// Validates `builder` once, so that [`breaker`](Self::breaker) never fails.
    pub(crate) fn per_service(builder: Builder) -> Result<Self, ConfigError> {
        let config = builder.validated()?;
        Ok(Source::PerService(Box::new(PerService {
            builder,
            config,
            name_with: None,
            map_builder: None,
            made: Arc::default(),
        })))
    }

    /// The breaker for the next service.
    pub(crate) fn breaker(&self) -> CircuitBreaker {
        let template = match self {
            Source::Shared(b) => return b.clone(),
            Source::PerService(template) => template,
        };
        let index = {
            let mut made = lock(&template.made);
            made.next += 1;
            made.next - 1
        };
        // The hooks run without the lock: they may call `breakers()`.
        let base = template.builder.name_ref();
        let name = match &template.name_with {
            Some(f) => f(base, index),
            None => format!("{base}-{index}"),
        };
        let mut builder = template.builder.clone().name(name);
        if let Some(f) = &template.map_builder {
            builder = f(builder, index);
        }
        let breaker = builder.build_with(template.config.clone(), Lanes::Auto);
        let mut made = lock(&template.made);
        made.prune();
        let at = made.breakers.partition_point(|(i, _)| *i < index);
        made.breakers.insert(at, (index, breaker.clone()));
        breaker
    }

    /// Sets the naming hook of a per-service source (a shared breaker keeps its name).
    pub(crate) fn name_with(&mut self, f: NameFn) {
        if let Source::PerService(template) = self {
            template.name_with = Some(f);
        }
    }

    /// Sets the builder hook of a per-service source.
    pub(crate) fn map_builder(&mut self, f: MapFn) {
        if let Source::PerService(template) = self {
            template.map_builder = Some(f);
        }
    }

    /// The shared breaker, or the per-service breakers still in use, by index.
    pub(crate) fn breakers(&self) -> Vec<CircuitBreaker> {
        match self {
            Source::Shared(b) => vec![b.clone()],
            Source::PerService(template) => {
                let mut made = lock(&template.made);
                made.prune();
                made.breakers.iter().map(|(_, b)| b.clone()).collect()
            }
        }
    }
}

impl CircuitBreakerLayer {
    /// Every service this layer makes shares `breaker`.
    pub const fn new(breaker: CircuitBreaker) -> Self {
        Self {
            source: Source::Shared(breaker),
            classifier: ErrorIsFailure::new(),
            readiness: Readiness::FailFast,
        }
    }

    /// Every service this layer makes gets a breaker of its own, built from `builder`. The
    /// builder is validated here, so `layer()` never fails.
    ///
    /// Each breaker is named `"{base}-{index}"`, `base` being the builder's name and `index`
    /// counting the services this layer and its clones made, from 0 (a router that clones
    /// the layer for each route still gives each route its own index); name them yourself
    /// with [`name_with`](Self::name_with). Distinct names keep their metrics, health entries
    /// and Redis trips apart. [`breakers`](Self::breakers) lists the breakers in use, for a
    /// health report or metrics.
    ///
    /// It suits stacks where each `layer()` call wraps one upstream: the endpoints of
    /// `tower::balance`, one client per host. A router may call `layer` more than once for a
    /// route (axum: once per method endpoint, and once per connection before the router has
    /// its state); for a breaker per route, see [server side](crate#server-side).
    ///
    /// ```
    /// use tower::{ServiceExt, service_fn};
    /// use tower_breaker::{CircuitBreaker, CircuitBreakerLayer, Layer, integrations::health::HealthReport};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower_breaker::BoxError> {
    /// let endpoints = ["10.0.0.1", "10.0.0.2"];
    /// let layer = CircuitBreakerLayer::per_service(CircuitBreaker::builder("backend").consecutive_failures(5))?
    ///     .name_with(move |base, i| format!("{base}@{}", endpoints[i]));
    /// let services: Vec<_> = endpoints
    ///     .iter()
    ///     .map(|_| layer.layer(service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x) })))
    ///     .collect();
    ///
    /// let names: Vec<_> = layer.breakers().iter().map(|b| b.name().to_owned()).collect();
    /// assert_eq!(names, ["backend@10.0.0.1", "backend@10.0.0.2"]);
    /// let health = layer.breakers().iter().fold(HealthReport::new(), |report, b| report.breaker(b));
    /// assert_eq!(health.breakers.len(), 2);
    /// # drop(services);
    /// # Ok(()) }
    /// ```
    pub fn per_service(builder: Builder) -> Result<Self, ConfigError> {
        Ok(Self {
            source: Source::per_service(builder)?,
            classifier: ErrorIsFailure::new(),
            readiness: Readiness::FailFast,
        })
    }
}

impl<C> CircuitBreakerLayer<C> {
    /// Classifies results with `classifier` (default: `Err` is a failure).
    pub fn classify<C2>(self, classifier: C2) -> CircuitBreakerLayer<C2> {
        CircuitBreakerLayer {
            source: self.source,
            classifier,
            readiness: self.readiness,
        }
    }

    /// How the service behaves while the circuit is open (default [`Readiness::FailFast`]).
    pub fn readiness(mut self, readiness: Readiness) -> Self {
        self.readiness = readiness;
        self
    }

    /// With [`per_service`](Self::per_service): names the breaker of the `index`-th service
    /// `f(base, index)`, `base` being the builder's name (default `"{base}-{index}"`). A layer
    /// made with [`new`](Self::new) shares one breaker, whose name stays.
    pub fn name_with(mut self, f: impl Fn(&str, usize) -> String + Send + Sync + 'static) -> Self {
        self.source.name_with(Arc::new(f));
        self
    }

    /// With [`per_service`](Self::per_service): adjusts the builder of the `index`-th
    /// service's breaker after it is named, before it is built: e.g. installs a listener that
    /// labels its metrics with its own name (`integrations::prometheus::BreakerMetrics::instrument`,
    /// feature `prometheus-client`, or `integrations::metrics::instrument`, feature
    /// `metrics`). `f` may rename the builder and add listeners; the trip rules stay the
    /// template's, validated once by `per_service` (rules set in `f` are not applied).
    pub fn map_builder(mut self, f: impl Fn(Builder, usize) -> Builder + Send + Sync + 'static) -> Self {
        self.source.map_builder(Arc::new(f));
        self
    }

    /// The breakers of the services this layer made: with [`new`](Self::new), the shared
    /// one; with [`per_service`](Self::per_service), every breaker still in use (held by a
    /// service or any other handle), by index. Clones of the layer share the list.
    pub fn breakers(&self) -> Vec<CircuitBreaker> {
        self.source.breakers()
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreakerService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        let breaker = self.source.breaker();
        CircuitBreakerService::new(inner, breaker)
            .classify(self.classifier.clone())
            .readiness(self.readiness)
    }
}
