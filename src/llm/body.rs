//! [`LlmBody`]: the response body after [`LlmErrorLayer`](super::LlmErrorLayer).

use std::{
    fmt,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// The body of a response that went through [`LlmErrorLayer`](super::LlmErrorLayer): the
    /// inner body untouched (a 2xx, a streamed answer: never buffered), or the bytes the layer
    /// read from an error body, replayed, followed by what it did not read (a body over the
    /// limit). Either way the client sees the same bytes, trailers and error as without the
    /// layer; data frames come as [`Bytes`].
    pub struct LlmBody<B: Body> {
        #[pin]
        state: State<B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<B: Body> {
        Inner { #[pin] body: B },
        Replay {
            prefix: Option<Bytes>,
            crossing: Option<Bytes>,
            trailers: Option<HeaderMap>,
            error: Option<B::Error>,
            rest: Option<Pin<Box<B>>>,
        },
    }
}

impl<B: Body> LlmBody<B> {
    /// The inner body, untouched.
    pub(crate) const fn inner(body: B) -> Self {
        Self {
            state: State::Inner { body },
        }
    }

    /// `prefix` (what was read), then `crossing` (the frame that went over the limit), then
    /// the trailers, the error or the `rest`.
    pub(crate) fn replay(
        prefix: Bytes,
        crossing: Option<Bytes>,
        trailers: Option<HeaderMap>,
        error: Option<B::Error>,
        rest: Option<Pin<Box<B>>>,
    ) -> Self {
        Self {
            state: State::Replay {
                prefix: (!prefix.is_empty()).then_some(prefix),
                crossing: crossing.filter(|c| !c.is_empty()),
                trailers,
                error,
                rest,
            },
        }
    }

    /// Whether the layer read (part of) this body: an error response's.
    pub fn was_buffered(&self) -> bool {
        matches!(self.state, State::Replay { .. })
    }
}

fn to_bytes<D: Buf>(frame: Frame<D>) -> Frame<Bytes> {
    frame.map_data(|mut d| d.copy_to_bytes(d.remaining()))
}

impl<B: Body> Body for LlmBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().state.project() {
            StateProj::Inner { body } => body.poll_frame(cx).map_ok(to_bytes),
            StateProj::Replay {
                prefix,
                crossing,
                trailers,
                error,
                rest,
            } => {
                if let Some(data) = prefix.take().or_else(|| crossing.take()) {
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                if let Some(body) = rest {
                    let polled = body.as_mut().poll_frame(cx).map_ok(to_bytes);
                    if let Poll::Ready(None) = polled {
                        *rest = None;
                    }
                    return polled;
                }
                if let Some(trailers) = trailers.take() {
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
                Poll::Ready(error.take().map(Err))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.state {
            State::Inner { body } => body.is_end_stream(),
            State::Replay {
                prefix,
                crossing,
                trailers,
                error,
                rest,
            } => {
                prefix.is_none()
                    && crossing.is_none()
                    && trailers.is_none()
                    && error.is_none()
                    && rest.as_ref().is_none_or(|b| b.is_end_stream())
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            State::Inner { body } => body.size_hint(),
            State::Replay {
                prefix,
                crossing,
                rest,
                ..
            } => {
                let held = [prefix, crossing]
                    .into_iter()
                    .flatten()
                    .map(|b| b.len() as u64)
                    .sum::<u64>();
                let mut hint = rest
                    .as_ref()
                    .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint());
                // The upper bound first: `set_lower` panics above the upper bound.
                if let Some(upper) = hint.upper() {
                    hint.set_upper(upper.saturating_add(held));
                }
                hint.set_lower(hint.lower().saturating_add(held));
                hint
            }
        }
    }
}

impl<B: Body> fmt::Debug for LlmBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlmBody")
            .field("buffered", &self.was_buffered())
            .finish_non_exhaustive()
    }
}
