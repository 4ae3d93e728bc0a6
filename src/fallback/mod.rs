//! Fallback: send a request to another service when the first one is unavailable.
//!
//! (docs being written)

mod error;
mod failover;
mod future;
mod layer;
mod policy;
mod provenance;
mod service;

pub use error::{AllUnavailable, FallbackError, SkipReason, Skipped};
pub use failover::Failover;
pub use future::{FailoverFuture, ResponseFuture};
pub use layer::FallbackLayer;
pub use policy::{CloneRequest, CloneWith, OnFailure, OnOpen, Policy};
pub use provenance::{Provenance, RecordProvenance};
pub use service::Fallback;
