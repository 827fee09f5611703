//! [`Origin`]: a small, controllable hyper 1 server on `127.0.0.1:0` that upstream routes
//! proxy to.
//!
//! - Every request except `GET /healthz` is counted and recorded ([`Origin::requests`],
//!   [`Origin::seen`]) and answered by the origin's handler; the default handler answers
//!   `200` with the origin's name as the body, so a test can tell who served it.
//! - `/healthz` answers `200` or `500` as [`Origin::set_healthy`] says.
//! - [`Origin::serve_tls`] serves the same over TLS (`tests/edge/upstream_tls.rs`).
//! - [`channel_body`] gives handlers a response body fed chunk by chunk from a channel,
//!   with a [`Dropped`] signal that fires when the server drops the body (the gateway
//!   closed the connection, or the response was cancelled).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::TlsAcceptor;

/// Response body of an origin.
pub type OriginBody = BoxBody<Bytes, Infallible>;

/// What a handler returns.
pub type Reply = Pin<Box<dyn Future<Output = Response<OriginBody>> + Send>>;

type Handler = Box<dyn Fn(Request<Incoming>) -> Reply + Send + Sync>;

/// A request as the origin received it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Method.
    pub method: Method,
    /// Path and query.
    pub target: String,
    /// Headers.
    pub headers: HeaderMap,
}

impl Seen {
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

struct State {
    healthy: AtomicBool,
    requests: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
    handler: Handler,
}

/// A running origin; stops accepting when dropped.
pub struct Origin {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<State>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Origin {
    /// An origin whose every answer is `200` with `name` as the body.
    pub async fn start(name: &str) -> Self {
        let body = Bytes::from(name.to_owned());
        Self::with_handler(move |_req| {
            let body = body.clone();
            Box::pin(async move { text(StatusCode::OK, body) })
        })
        .await
    }

    /// An origin answering with `handler`.
    pub async fn with_handler(
        handler: impl Fn(Request<Incoming>) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("origin binds");
        Self::serve(listener, handler)
    }

    /// An origin answering with `handler` on `listener` (a listener with socket options
    /// of the test's choosing).
    pub fn serve(
        listener: TcpListener,
        handler: impl Fn(Request<Incoming>) -> Reply + Send + Sync + 'static,
    ) -> Self {
        Self::serve_with(listener, None, handler)
    }

    /// An origin answering with `handler` over TLS on `listener`, each connection's
    /// handshake done by `tls`.
    pub fn serve_tls(
        listener: TcpListener,
        tls: TlsAcceptor,
        handler: impl Fn(Request<Incoming>) -> Reply + Send + Sync + 'static,
    ) -> Self {
        Self::serve_with(listener, Some(tls), handler)
    }

    fn serve_with(
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
        handler: impl Fn(Request<Incoming>) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let addr = listener.local_addr().expect("origin address");
        let state = Arc::new(State {
            healthy: AtomicBool::new(true),
            requests: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
            handler: Box::new(handler),
        });
        let accept = tokio::spawn(accept_loop(listener, tls, Arc::clone(&state)));
        Self {
            addr,
            state,
            accept,
        }
    }

    /// `/healthz` answers `200` when `healthy`, else `500`.
    pub fn set_healthy(&self, healthy: bool) {
        self.state.healthy.store(healthy, Ordering::SeqCst);
    }

    /// Requests received so far (health checks not counted).
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Every request received so far (health checks not included).
    pub fn seen(&self) -> Vec<Seen> {
        self.state
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

async fn accept_loop(listener: TcpListener, tls: Option<TlsAcceptor>, state: Arc<State>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = Arc::clone(&state);
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_connection(stream, state).await,
                // A failed handshake is a gateway refusing the certificate: some tests want it.
                Some(tls) => {
                    if let Ok(stream) = tls.accept(stream).await {
                        serve_connection(stream, state).await;
                    }
                }
            }
        });
    }
}

async fn serve_connection<S>(stream: S, state: Arc<State>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let state = Arc::clone(&state);
        async move { Ok::<_, Infallible>(answer(&state, req).await) }
    });
    // Errors here are connections the gateway dropped: some tests do that on purpose.
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

async fn answer(state: &State, req: Request<Incoming>) -> Response<OriginBody> {
    if req.uri().path() == "/healthz" {
        let status = if state.healthy.load(Ordering::SeqCst) {
            StatusCode::OK
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        return text(status, Bytes::from_static(b"health"));
    }
    state
        .seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Seen {
            method: req.method().clone(),
            target: req
                .uri()
                .path_and_query()
                .map_or_else(String::new, ToString::to_string),
            headers: req.headers().clone(),
        });
    state.requests.fetch_add(1, Ordering::SeqCst);
    (state.handler)(req).await
}

/// A plain-text response.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<OriginBody> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(Full::new(body.into()).boxed())
        .expect("valid response")
}

/// A `text/event-stream` response with `body`.
pub fn event_stream(body: OriginBody) -> Response<OriginBody> {
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(body)
        .expect("valid response")
}

/// One SSE event frame `event: <event>\ndata: <data>\n\n`.
pub fn sse_event(event: &str, data: &str) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

/// A handler answering every request with an SSE stream of `event` `1`, then `event` `2`
/// only once `gate` is notified: a proxy that buffers never delivers `1` by itself, so a
/// test waiting for it before notifying deadlocks into its timeout.
pub fn two_part_stream(
    event: &'static str,
    gate: Arc<tokio::sync::Notify>,
) -> impl Fn(Request<Incoming>) -> Reply + Send + Sync + 'static {
    move |_req| {
        let gate = Arc::clone(&gate);
        Box::pin(async move {
            let (tx, body, _dropped) = channel_body();
            tokio::spawn(async move {
                let _ = tx.send(sse_event(event, "1")).await;
                gate.notified().await;
                let _ = tx.send(sse_event(event, "2")).await;
            });
            event_stream(body)
        })
    }
}

/// Fires when the body it belongs to is dropped.
pub struct Dropped(oneshot::Receiver<()>);

impl Dropped {
    /// Waits until the body has been dropped.
    pub async fn wait(self) {
        // A closed channel also means the guard is gone.
        let _ = self.0.await;
    }
}

/// A response body fed through a channel: the body ends when every sender is gone.
pub struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
    _dropped: oneshot::Sender<()>,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}

/// A channel-fed body, its sender, and the signal that fires when the body is dropped.
pub fn channel_body() -> (mpsc::Sender<Bytes>, OriginBody, Dropped) {
    let (tx, rx) = mpsc::channel(4);
    let (dropped_tx, dropped_rx) = oneshot::channel();
    let body = ChannelBody {
        rx,
        _dropped: dropped_tx,
    };
    (tx, body.boxed(), Dropped(dropped_rx))
}
