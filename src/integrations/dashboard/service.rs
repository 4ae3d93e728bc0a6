//! [`DashboardService`]: the tower service that serves the page, the snapshot and the stream.

use std::{
    convert::Infallible,
    future::{Ready, ready},
    sync::Arc,
    task::{Context, Poll},
};

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use tower_service::Service;

use super::{body::DashboardBody, hub::Hub, sse::EventStream};

/// The page: one HTML file, its CSS and JS inline.
const PAGE: &str = include_str!("page.html");

/// What the page may do: run its own inline script and style, and read this origin; nothing
/// else (no other origin, no frame, no form, no plugin).
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                   connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

/// The dashboard as a tower [`Service`] over any `http::Request<B>` (the body is not read).
/// Cheap to clone; always ready; never fails (`Error = Infallible`).
///
/// It answers every path it is given, by the path's last segment, so that it works mounted
/// anywhere (hyper routing by prefix, axum's `nest_service`):
///
/// | last segment | answer |
/// |---|---|
/// | `snapshot.json` | the snapshot, `application/json` |
/// | `events` | the server-sent event stream, `text/event-stream` |
/// | anything else (`/dashboard`, `/dashboard/`) | the page, `text/html` |
///
/// Only `GET` and `HEAD` are allowed (`405` otherwise): the dashboard is read-only. Every
/// answer is `Cache-Control: no-store` and `X-Content-Type-Options: nosniff`; the page comes
/// with a `Content-Security-Policy` that allows its inline script and style and requests to
/// its own origin only.
#[derive(Clone, Debug)]
pub struct DashboardService {
    pub(crate) hub: Arc<Hub>,
}

impl<B> Service<Request<B>> for DashboardService {
    type Response = Response<DashboardBody>;
    type Error = Infallible;
    type Future = Ready<Result<Response<DashboardBody>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        self.hub.ensure_sampler();
        ready(Ok(self.respond(req.method(), req.uri().path())))
    }
}

impl DashboardService {
    fn respond(&self, method: &Method, path: &str) -> Response<DashboardBody> {
        if method != Method::GET && method != Method::HEAD {
            let mut res = answer(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain; charset=utf-8",
                DashboardBody::full("read-only: GET or HEAD\n"),
            );
            res.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return res;
        }
        match path.rsplit('/').next().unwrap_or("") {
            "snapshot.json" => answer(
                StatusCode::OK,
                "application/json",
                DashboardBody::full(self.hub.view_json()),
            ),
            "events" => {
                let mut res = answer(
                    StatusCode::OK,
                    "text/event-stream",
                    DashboardBody::events(EventStream::new(self.hub.clone())),
                );
                // Proxies such as nginx would otherwise hold the stream back.
                res.headers_mut()
                    .insert("x-accel-buffering", HeaderValue::from_static("no"));
                res
            }
            _ => {
                let mut res = answer(
                    StatusCode::OK,
                    "text/html; charset=utf-8",
                    DashboardBody::full(PAGE),
                );
                let h = res.headers_mut();
                h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
                h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
                h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
                res
            }
        }
    }
}

fn answer(status: StatusCode, content_type: &'static str, body: DashboardBody) -> Response<DashboardBody> {
    let mut res = Response::new(body);
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    res
}
