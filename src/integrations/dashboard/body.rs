//! [`DashboardBody`]: the response body of every route, a whole buffer or the event stream.

use std::{
    convert::Infallible,
    fmt,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::sse::EventStream;

/// The body of a [`DashboardService`](super::DashboardService) response: the page or the
/// JSON in one piece, or the endless server-sent event stream. Implements [`http_body::Body`]
/// with `Bytes` frames and no error, so hyper and axum serve it as it is.
pub struct DashboardBody {
    kind: Kind,
}

enum Kind {
    Full(Option<Bytes>),
    Events(Box<EventStream>),
}

impl fmt::Debug for DashboardBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Full(b) => f
                .debug_tuple("DashboardBody::Full")
                .field(&b.as_ref().map_or(0, Bytes::len))
                .finish(),
            Kind::Events(_) => f.write_str("DashboardBody::Events"),
        }
    }
}

impl Default for DashboardBody {
    /// An empty body (for a redirect or an error of the application's own routes).
    fn default() -> Self {
        Self::full(Bytes::new())
    }
}

impl DashboardBody {
    pub(crate) fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        Self {
            kind: Kind::Full((!bytes.is_empty()).then_some(bytes)),
        }
    }

    pub(crate) fn events(stream: EventStream) -> Self {
        Self {
            kind: Kind::Events(Box::new(stream)),
        }
    }
}

impl Body for DashboardBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match &mut self.get_mut().kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Events(stream) => stream.poll_frame(cx).map(|b| Some(Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.kind, Kind::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Events(_) => SizeHint::default(),
        }
    }
}
