//! The HTTP classifier (placeholder, being written).

/// Classifies HTTP responses and client errors (placeholder).
#[derive(Clone, Debug, Default)]
pub struct HttpClassifier {}
