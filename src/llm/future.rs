//! [`ResponseFuture`] of [`LlmErrorService`](super::LlmErrorService).

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::{Buf, BufMut, BytesMut};
use http::{Response, response::Parts};
use http_body::Body;
use pin_project_lite::pin_project;

use super::{LlmBody, ProviderError};

pin_project! {
    /// The response future of [`LlmErrorService`](super::LlmErrorService): passes a 2xx (or
    /// 1xx, 3xx) response on at once; reads a 4xx or 5xx response's body up to the limit,
    /// stores its [`ProviderError`] in the response's extensions, and rebuilds the response.
    pub struct ResponseFuture<F, B> {
        #[pin]
        state: State<F, B>,
        max_body: usize,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        Calling { #[pin] future: F },
        // The body is boxed to be moved on into the response: only error responses get here.
        Reading { parts: Option<Parts>, body: Option<Pin<Box<B>>>, buf: BytesMut },
    }
}

impl<F, B> ResponseFuture<F, B> {
    pub(crate) const fn new(future: F, max_body: usize) -> Self {
        Self {
            state: State::Calling { future },
            max_body,
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
{
    type Output = Result<Response<LlmBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { future } => {
                    let res = ready!(future.poll(cx))?;
                    let status = res.status();
                    let body = res.body();
                    let over = body.size_hint().lower() > *this.max_body as u64;
                    if !(status.is_client_error() || status.is_server_error()) || body.is_end_stream() || over
                    {
                        return Poll::Ready(Ok(res.map(LlmBody::inner)));
                    }
                    let (parts, body) = res.into_parts();
                    let capacity = body.size_hint().exact().map_or(1024, |n| n as usize);
                    this.state.set(State::Reading {
                        parts: Some(parts),
                        body: Some(Box::pin(body)),
                        buf: BytesMut::with_capacity(capacity.min(*this.max_body)),
                    });
                }
                StateProj::Reading { parts, body, buf } => {
                    let inner = body.as_mut().expect("ResponseFuture polled after completion");
                    let (trailers, error, crossing) = match ready!(inner.as_mut().poll_frame(cx)) {
                        Some(Ok(frame)) => match frame.into_data() {
                            Ok(mut data) => {
                                if buf.len() + data.remaining() <= *this.max_body {
                                    buf.put(&mut data);
                                    continue;
                                }
                                // Over the limit: replay what was read, then the rest,
                                // unclassified.
                                (None, None, Some(data.copy_to_bytes(data.remaining())))
                            }
                            Err(frame) => (frame.into_trailers().ok(), None, None),
                        },
                        Some(Err(e)) => (None, Some(e), None),
                        None => (None, None, None),
                    };
                    let parts = parts.take().expect("ResponseFuture polled after completion");
                    let body = body.take();
                    let buf = std::mem::take(buf).freeze();
                    let mut res = Response::from_parts(parts, ());
                    let res = if crossing.is_some() {
                        res.map(|()| LlmBody::replay(buf, crossing, None, None, body))
                    } else {
                        if error.is_none() {
                            if let Some(err) = ProviderError::parse(res.status(), &buf) {
                                res.extensions_mut().insert(err);
                            }
                        }
                        // Ended (trailers are the last frame, an error ends it too).
                        res.map(|()| LlmBody::replay(buf, None, trailers, error, None))
                    };
                    return Poll::Ready(Ok(res));
                }
            }
        }
    }
}

impl<F, B> fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Calling { .. } => "calling",
            State::Reading { .. } => "reading the error body",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("max_body", &self.max_body)
            .finish()
    }
}
