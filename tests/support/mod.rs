//! A scripted-fault HTTP server for the integration tests: a real hyper server on
//! `127.0.0.1:0` that answers each request with the next scripted [`Fault`] (or a default).
//!
//! ```ignore
//! mod support;
//! use support::{Fault, FaultServer};
//! let server = FaultServer::start(Fault::Status(200)).await;
//! server.script([Fault::Status(500), Fault::retry_after(429, "5")]);
//! // ... point a client at server.uri("/") ...
//! assert_eq!(server.hits(), 2);
//! ```
#![allow(dead_code, unreachable_pub)]

use std::{
    collections::VecDeque,
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the server does with one request.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answers with this status and an empty body.
    Status(u16),
    /// Answers with this status and a `Retry-After` header with this exact value.
    RetryAfter(u16, String),
    /// Answers with this status after this long (tokio time: paused tests control it).
    Slow(Duration, u16),
    /// Reads the request and never answers (the connection stays open).
    Hang,
    /// Drops the connection before any response byte.
    Reset,
    /// 200 with a chunked body: these chunks, `gap` apart (tokio time), then the end.
    Stream {
        chunks: Vec<&'static str>,
        gap: Duration,
    },
    /// 200 with a chunked body: these chunks, then the connection dies mid-body.
    ResetMidBody { chunks: Vec<&'static str> },
    /// This status with this body, sized (`content-length`): the client's body reports its
    /// end (`is_end_stream()`) with its last data frame.
    Body(u16, &'static str),
}

impl Fault {
    /// `status` with `Retry-After: value`.
    pub fn retry_after(status: u16, value: impl Into<String>) -> Self {
        Self::RetryAfter(status, value.into())
    }
}

/// Chooses the answer to one request from its hit number (0 for the first request the server
/// sees): a chaos upstream. See [`FaultServer::set_picker`].
pub type Picker = Arc<dyn Fn(usize) -> Fault + Send + Sync>;

struct Script {
    queue: VecDeque<Fault>,
    default: Fault,
    picker: Option<Picker>,
}

/// The server; it stops when the test's runtime does.
#[derive(Clone)]
pub struct FaultServer {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    /// Handlers running now (a handler hanging on a closed connection shows here).
    active: Arc<AtomicUsize>,
    script: Arc<Mutex<Script>>,
}

/// Counts a running handler until it is dropped (answered, or abandoned by hyper).
struct Active(Arc<AtomicUsize>);

impl Active {
    fn new(n: &Arc<AtomicUsize>) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        Self(n.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl FaultServer {
    /// Starts a server on `127.0.0.1:0` that answers `default` when nothing is scripted.
    pub async fn start(default: Fault) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = Self {
            addr: listener.local_addr().unwrap(),
            hits: Arc::new(AtomicUsize::new(0)),
            active: Arc::new(AtomicUsize::new(0)),
            script: Arc::new(Mutex::new(Script {
                queue: VecDeque::new(),
                default,
                picker: None,
            })),
        };
        let s = server.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let s = s.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| s.clone().handle(req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        server
    }

    /// Queues faults for the next requests, in order.
    pub fn script(&self, faults: impl IntoIterator<Item = Fault>) {
        self.script.lock().unwrap().queue.extend(faults);
    }

    /// Replaces the answer used when nothing is scripted.
    pub fn set_default(&self, fault: Fault) {
        self.script.lock().unwrap().default = fault;
    }

    /// Answers every request that nothing is scripted for with `pick(hit number)`, in place of
    /// the default.
    pub fn set_picker(&self, pick: impl Fn(usize) -> Fault + Send + Sync + 'static) {
        self.script.lock().unwrap().picker = Some(Arc::new(pick));
    }

    /// How many handlers are running now: requests being answered, or hanging.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// How many requests reached the server.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:port{path}`.
    pub fn uri(&self, path: &str) -> Uri {
        format!("http://{}{}", self.addr, path).parse().unwrap()
    }

    async fn handle(self, _req: Request<Incoming>) -> Result<Response<BoxBody<Bytes, BoxError>>, BoxError> {
        let hit = self.hits.fetch_add(1, Ordering::SeqCst);
        let _active = Active::new(&self.active);
        let (fault, picker) = {
            let mut script = self.script.lock().unwrap();
            match script.queue.pop_front() {
                Some(fault) => (Some(fault), None),
                None if script.picker.is_some() => (None, script.picker.clone()),
                None => (Some(script.default.clone()), None),
            }
        };
        let fault = fault.unwrap_or_else(|| picker.expect("a picker")(hit));
        let empty = || {
            Full::new(Bytes::new())
                .map_err(|e: Infallible| match e {})
                .boxed()
        };
        let status = |code: u16| StatusCode::from_u16(code).unwrap();
        match fault {
            Fault::Status(code) => Ok(Response::builder().status(status(code)).body(empty())?),
            Fault::RetryAfter(code, value) => Ok(Response::builder()
                .status(status(code))
                .header(http::header::RETRY_AFTER, value)
                .body(empty())?),
            Fault::Slow(delay, code) => {
                tokio::time::sleep(delay).await;
                Ok(Response::builder().status(status(code)).body(empty())?)
            }
            Fault::Body(code, body) => Ok(Response::builder().status(status(code)).body(
                Full::new(Bytes::from_static(body.as_bytes()))
                    .map_err(|e| match e {})
                    .boxed(),
            )?),
            Fault::Hang => std::future::pending().await,
            Fault::Reset => Err("scripted reset".into()),
            Fault::Stream { chunks, gap } => {
                let stream = futures::stream::unfold(chunks.into_iter(), move |mut it| async move {
                    let chunk = it.next()?;
                    tokio::time::sleep(gap).await;
                    Some((
                        Ok::<_, BoxError>(Frame::data(Bytes::from_static(chunk.as_bytes()))),
                        it,
                    ))
                });
                Ok(Response::new(BodyExt::boxed(StreamBody::new(stream))))
            }
            Fault::ResetMidBody { chunks } => {
                // The chunks, then one `Pending` (hyper flushes the headers and chunks to the
                // socket), then an error: hyper aborts the connection mid-body.
                let stream =
                    futures::stream::unfold((chunks.into_iter(), false), |(mut it, done)| async move {
                        if done {
                            return None;
                        }
                        match it.next() {
                            Some(chunk) => {
                                Some((Ok(Frame::data(Bytes::from_static(chunk.as_bytes()))), (it, false)))
                            }
                            None => {
                                tokio::task::yield_now().await;
                                Some((
                                    Err::<Frame<Bytes>, BoxError>("scripted reset mid-body".into()),
                                    (it, true),
                                ))
                            }
                        }
                    });
                Ok(Response::new(BodyExt::boxed(StreamBody::new(stream))))
            }
        }
    }
}

/// A plain hyper-util legacy client (HTTP/1, no pool timer).
pub fn client()
-> hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// A GET request with an empty, cloneable body.
pub fn get(uri: Uri) -> Request<Full<Bytes>> {
    Request::get(uri).body(Full::new(Bytes::new())).unwrap()
}

/// A fresh address where nothing listens (connections are refused).
pub async fn closed_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

/// A listener that accepts connections and never reads or answers.
pub async fn black_hole() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    addr
}

/// Adds a listener to `builder` that keeps every recorded outcome, in order.
pub fn record_outcomes(
    builder: tower_breaker::Builder,
) -> (tower_breaker::Builder, Arc<Mutex<Vec<tower_breaker::Outcome>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let builder = builder.on_event(move |e| {
        if let tower_breaker::Event::Recorded { outcome, .. } = e {
            sink.lock().unwrap().push(*outcome);
        }
    });
    (builder, seen)
}
pub mod capture;
