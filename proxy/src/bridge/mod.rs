//! The tower bridge: serve a pingora request with any tower [`Service`], streaming both ways.
//!
//! pingora's own `ServeHttp` buffers the whole response, which rules out SSE. [`serve`]
//! instead:
//!
//! 1. builds an `http::Request<`[`RequestBody`]`>` from the session's header (extensions
//!    carry the client address as [`ClientAddr`], plus whatever the caller adds with
//!    [`serve_with_extensions`], like the gateway's [`TraceContext`](crate::TraceContext)),
//! 2. calls the service while pumping the request body into it chunk by chunk through a small
//!    bounded channel (a service that reads slowly slows the client down; nothing is buffered
//!    whole),
//! 3. writes the response head as soon as the service returns it, then every body frame as it
//!    arrives (pingora flushes each write, so SSE events leave one by one). A body without a
//!    known length goes out chunked on HTTP/1.1 so the connection stays reusable. Trailers are
//!    handed to pingora, which writes them on HTTP/2; its HTTP/1 writer drops them.
//! 4. keeps watching the client while the response streams: when the client goes away the
//!    response body is dropped at once, which cancels whatever produces it.
//! 5. on an HTTP/1.1 `Upgrade` request, hands the service a [`ClientUpgrade`] extension: if
//!    the service answers `101 Switching Protocols`, the client's bytes after the switch are
//!    fed to it (the response body carries the other direction) until the client closes.
//!
//! Errors from the service become a `500` JSON response; the service's own error responses
//! pass through untouched.

mod body;

pub use body::{BodyError, RequestBody};

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version, header};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use tokio::sync::mpsc;
use tower::{BoxError, Service, ServiceExt};

/// Request-body chunks buffered between the client and the service.
const BODY_CHANNEL_CHUNKS: usize = 4;

/// The client's address, in the request extensions of a bridged service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// In the request extensions of a bridged service when the client connected over TLS
/// (upstream requests then say `X-Forwarded-Proto: https`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientTls;

/// In the extensions of an HTTP/1.1 `Upgrade` request: the bytes the client sends after a
/// `101 Switching Protocols` answer, for a service that joins the two sides (the upstream
/// client). Taken once; a service that does not switch protocols can ignore it.
#[derive(Debug, Clone)]
pub struct ClientUpgrade(Arc<Mutex<Option<RequestBody>>>);

impl ClientUpgrade {
    /// The client's bytes after the switch (`None` once taken).
    pub fn take(&self) -> Option<RequestBody> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Serves the session's request with `service` and writes its response, streaming.
///
/// Returns an error only when the client connection failed (went away, sent a malformed
/// body), marked as the client's (`ErrorSource::Downstream`); pingora then closes the
/// connection.
pub async fn serve<S, B>(session: &mut ServerSession, service: S) -> pingora::Result<()>
where
    S: Service<Request<RequestBody>, Response = Response<B>>,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let mut answered = http::Extensions::new();
    serve_with_extensions(
        session,
        service,
        HeaderMap::new(),
        http::Extensions::new(),
        &mut answered,
    )
    .await
}

/// [`serve`], adding `extra` headers to the response head (the gateway's `x-request-id`)
/// and `extensions` to the request the service gets (the gateway's
/// [`TraceContext`](crate::TraceContext)); the response's extensions are moved to
/// `answered` when its head is written (the gateway logs the
/// [`UpstreamPeer`](crate::UpstreamPeer) found there).
///
/// A streaming response holds this future for as long as it streams, so it is kept small:
/// the request, the call and the response head live in futures of their own, done before
/// the body streams (an idle SSE viewer keeps only the body, the pump and one write).
pub async fn serve_with_extensions<S, B>(
    session: &mut ServerSession,
    service: S,
    extra: HeaderMap,
    extensions: http::Extensions,
    answered: &mut http::Extensions,
) -> pingora::Result<()>
where
    S: Service<Request<RequestBody>, Response = Response<B>>,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let head_only = session.req_header().method == Method::HEAD;
    // Boxed: the call's state (the request, the service's future, the head) is over once the
    // head is out, and would otherwise take room in this future for the stream's whole life.
    match Box::pin(respond(session, service, extra, extensions, answered)).await? {
        Some((header, body, pump)) => write_response(session, header, body, pump, head_only).await,
        None => Ok(()),
    }
}

/// Calls `service` with the session's request, feeding it the request body, until the
/// response head comes: the head (with `extra` added) as pingora's, the body, and the pump
/// that keeps watching the client. `None` when the service failed (a `500` was written).
async fn respond<S, B>(
    session: &mut ServerSession,
    service: S,
    extra: HeaderMap,
    extensions: http::Extensions,
    answered: &mut http::Extensions,
) -> pingora::Result<Option<(Box<ResponseHeader>, B, BodyPump)>>
where
    S: Service<Request<RequestBody>, Response = Response<B>>,
    S::Error: Into<BoxError>,
{
    let (mut request, mut pump) = request_of(session);
    request.extensions_mut().extend(extensions);
    let call = service.oneshot(request);
    tokio::pin!(call);

    // Until the head arrives: drive the call and the request-body pump together.
    let response = loop {
        tokio::select! {
            biased;
            response = &mut call => break response,
            step = pump.step(session) => step?,
        }
    };
    match response {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            for (name, value) in &extra {
                parts.headers.insert(name, value.clone());
            }
            *answered = std::mem::take(&mut parts.extensions);
            Ok(Some((Box::new(ResponseHeader::from(parts)), body, pump)))
        }
        Err(e) => {
            let e: BoxError = e.into();
            tracing::error!(error = %e, "bridged service failed");
            write_error(
                session,
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error",
                None,
                None,
            )
            .await?;
            Ok(None)
        }
    }
}

/// Writes the head, then every body frame as it comes, while `pump` keeps feeding the
/// request body and watching the client.
async fn write_response<B>(
    session: &mut ServerSession,
    header: Box<ResponseHeader>,
    body: B,
    mut pump: BodyPump,
    head_only: bool,
) -> pingora::Result<()>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let mut body = std::pin::pin!(body);
    // Boxed for the same reason as the call: its state is over once the head is out.
    let Some(chunked) = Box::pin(write_head(
        session,
        header,
        body.as_mut(),
        &mut pump,
        head_only,
    ))
    .await?
    else {
        return Ok(());
    };
    loop {
        tokio::select! {
            biased;
            frame = body.frame() => match frame {
                None => {
                    session.write_response_body(Bytes::new(), true).await.map_err(from_client)?;
                    return Ok(());
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let (data, after) = ready_data(body.as_mut(), data);
                        if write_run(session, data, after, chunked).await? {
                            return Ok(());
                        }
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            session.write_response_trailers(trailers).await.map_err(from_client)?;
                        }
                    }
                },
                Some(Err(e)) => return body_failed(e.into(), chunked),
            },
            step = pump.step(session) => step?,
        }
    }
}

/// Writes the head, and the data the body already has ready with it. `Some(chunked)` when
/// the body goes on streaming (whether it goes out chunked), `None` when the response is
/// over.
async fn write_head<B>(
    session: &mut ServerSession,
    mut header: Box<ResponseHeader>,
    mut body: Pin<&mut B>,
    pump: &mut BodyPump,
    head_only: bool,
) -> pingora::Result<Option<bool>>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    // A body that is already complete (most JSON answers) goes out with its length, in the
    // same write as the head: chunked framing would flush the head on its own first.
    let mut ready = None;
    let mut complete = false;
    if !head_only && needs_chunking(&header, session.req_header().version) {
        match already_ready(body.as_mut()) {
            Early::Pending => {}
            Early::Complete => complete = true,
            Early::Data(data, after) => {
                if matches!(after, Some(After::End)) {
                    let _ = header.insert_header(header::CONTENT_LENGTH, data.len());
                }
                ready = Some((data, after));
            }
            Early::Failed(e) => {
                tracing::error!(error = %e, "response body failed before its head");
                write_error(
                    session,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error",
                    None,
                    None,
                )
                .await?;
                return Ok(None);
            }
        }
        if complete {
            let _ = header.insert_header(header::CONTENT_LENGTH, 0);
        }
    }
    // What is left of the body after the ready data taken above (its size hint shrank by it).
    let taken = ready.as_ref().map_or(0, |(data, _)| data.len() as u64);
    let chunked = frame_length(
        &mut header,
        &*body,
        taken,
        session.req_header().version,
        head_only,
    );
    let end = head_only || complete || body.is_end_stream() && ready.is_none();
    if !end && !header.headers.contains_key(header::CONTENT_LENGTH) {
        // A stream (SSE, a proxied body of unknown length) has no write deadline: a reader
        // that stops reading it is the stream layers' business (the fan-out detaches it).
        session.set_write_timeout(None);
    }
    session
        .write_response_header(header)
        .await
        .map_err(from_client)?;
    pump.head_written(session);
    if end {
        return Ok(None);
    }
    if let Some((data, after)) = ready
        && write_run(session, data, after, chunked).await?
    {
        return Ok(None);
    }
    Ok(Some(chunked))
}

/// Writes a run of ready data and what ended it; true when the response is over.
async fn write_run(
    session: &mut ServerSession,
    data: Bytes,
    after: Option<After>,
    chunked: bool,
) -> pingora::Result<bool> {
    let end = matches!(after, Some(After::End));
    session
        .write_response_body(data, end)
        .await
        .map_err(from_client)?;
    match after {
        None => Ok(false),
        Some(After::End) => Ok(true),
        Some(After::Trailers(trailers)) => {
            session
                .write_response_trailers(trailers)
                .await
                .map_err(from_client)?;
            Ok(false)
        }
        Some(After::Failed(e)) => body_failed(e, chunked).map(|()| true),
    }
}

/// Most bytes of ready frames joined into one write.
const COALESCE_MAX: usize = 64 * 1024;

/// What ended a run of ready data frames, other than "nothing more is ready".
enum After {
    /// The body ended.
    End,
    /// Trailers came.
    Trailers(HeaderMap),
    /// The body failed.
    Failed(BoxError),
}

/// `first` joined with the data frames `body` has ready right now (up to [`COALESCE_MAX`]
/// bytes), and what stopped the run. A stream that keeps up has every frame written as it
/// comes; one that fell behind (a slow client, a burst) writes what queued up as one chunk —
/// one syscall instead of one per frame — and so catches up. Never waits for a frame.
fn ready_data<B>(mut body: Pin<&mut B>, first: Bytes) -> (Bytes, Option<After>)
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let mut cx = Context::from_waker(Waker::noop());
    let mut joined: Option<BytesMut> = None;
    let mut after = None;
    while joined.as_ref().map_or(first.len(), BytesMut::len) < COALESCE_MAX {
        // A pending poll leaves the no-op waker behind; the caller's next poll replaces it.
        let Poll::Ready(frame) = body.as_mut().poll_frame(&mut cx) else {
            break;
        };
        match frame.map(|f| f.map(Frame::into_data)) {
            None => after = Some(After::End),
            Some(Ok(Ok(data))) => {
                let joined = joined.get_or_insert_with(|| BytesMut::from(&first[..]));
                joined.extend_from_slice(&data);
                continue;
            }
            Some(Ok(Err(frame))) => {
                after = frame.into_trailers().ok().map(After::Trailers);
            }
            Some(Err(e)) => after = Some(After::Failed(e.into())),
        }
        break;
    }
    (joined.map_or(first, BytesMut::freeze), after)
}

/// Cuts a response whose body failed after its head went out: the only honest signal left.
fn body_failed(e: BoxError, chunked: bool) -> pingora::Result<()> {
    tracing::warn!(error = %e, chunked, "response body failed mid-stream");
    pingora::Error::e_explain(
        pingora::ErrorType::InternalError,
        "response body failed mid-stream",
    )
}

/// The `http::Request` for the session, and the pump that will feed its body.
fn request_of(session: &mut ServerSession) -> (Request<RequestBody>, BodyPump) {
    let parts = session.req_header().as_owned_parts();
    let no_body = session.is_body_empty();
    let length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let (tx, body) = if no_body {
        (None, RequestBody::empty())
    } else {
        let (tx, body) = RequestBody::channel(BODY_CHANNEL_CHUNKS, length);
        (Some(tx), body)
    };
    let mut request = Request::from_parts(parts, body);
    if let Some(addr) = session.client_addr().and_then(|a| a.as_inet()) {
        request.extensions_mut().insert(ClientAddr(*addr));
    }
    if session
        .digest()
        .is_some_and(|digest| digest.ssl_digest.is_some())
    {
        request.extensions_mut().insert(ClientTls);
    }
    let upgrade = if session.is_upgrade_req() {
        let (tx, body) = RequestBody::channel(BODY_CHANNEL_CHUNKS, None);
        let handle = ClientUpgrade(Arc::new(Mutex::new(Some(body))));
        request.extensions_mut().insert(handle);
        Some(tx)
    } else {
        None
    };
    let pump = BodyPump {
        done: tx.is_none(),
        tx,
        pending: None,
        upgrade,
    };
    (request, pump)
}

/// What a response body had ready before its head was written.
enum Early {
    /// Nothing yet.
    Pending,
    /// The body is over (empty, or only trailers, which HTTP/1.1 drops).
    Complete,
    /// Data, and what stopped the run of ready frames.
    Data(Bytes, Option<After>),
    /// The body failed.
    Failed(BoxError),
}

/// Polls `body` once without waiting (see [`Early`]).
fn already_ready<B>(mut body: Pin<&mut B>) -> Early
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let mut cx = Context::from_waker(Waker::noop());
    match body.as_mut().poll_frame(&mut cx) {
        Poll::Pending => Early::Pending,
        Poll::Ready(None) => Early::Complete,
        Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
            Ok(data) => {
                let (data, after) = ready_data(body, data);
                Early::Data(data, after)
            }
            Err(_) => Early::Complete,
        },
        Poll::Ready(Some(Err(e))) => Early::Failed(e.into()),
    }
}

/// Whether a response with `header` would go out chunked (HTTP/1.1, no length, a body).
fn needs_chunking(header: &ResponseHeader, version: Version) -> bool {
    let status = header.status;
    version == Version::HTTP_11
        && !header.headers.contains_key(header::CONTENT_LENGTH)
        && !header.headers.contains_key(header::TRANSFER_ENCODING)
        && !status.is_informational()
        && status != StatusCode::NO_CONTENT
        && status != StatusCode::NOT_MODIFIED
}

/// Sets how the response body is delimited: its exact length when known, otherwise chunked
/// on HTTP/1.1 (without it pingora would close the connection to end the body). Returns
/// whether the body goes out chunked. `taken`: bytes already polled out of `body` that go
/// out before the rest.
fn frame_length<B: Body>(
    header: &mut ResponseHeader,
    body: &B,
    taken: u64,
    version: Version,
    head: bool,
) -> bool {
    let has_length = header.headers.contains_key(header::CONTENT_LENGTH)
        || header.headers.contains_key(header::TRANSFER_ENCODING);
    let status = header.status;
    let bodiless = head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    if has_length || bodiless {
        return false;
    }
    if let Some(n) = body.size_hint().exact() {
        let n = n + taken;
        // Cannot fail: a number is a valid header value.
        let _ = header.insert_header(header::CONTENT_LENGTH, n);
        return false;
    }
    if version == Version::HTTP_11 {
        let _ = header.insert_header(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        return true;
    }
    false
}

/// Writes a small JSON error response.
pub(crate) async fn write_error(
    session: &mut ServerSession,
    status: StatusCode,
    message: &str,
    request_id: Option<&HeaderValue>,
    retry_after_secs: Option<u32>,
) -> pingora::Result<()> {
    let body = crate::error_body(status, message);
    let mut header = ResponseHeader::build(status, Some(3))?;
    header.insert_header(header::CONTENT_TYPE, "application/json")?;
    header.insert_header(header::CONTENT_LENGTH, body.len())?;
    if let Some(id) = request_id {
        header.insert_header("x-request-id", id.clone())?;
    }
    if let Some(secs) = retry_after_secs {
        header.insert_header(header::RETRY_AFTER, secs)?;
    }
    session
        .write_response_header(Box::new(header))
        .await
        .map_err(from_client)?;
    session
        .write_response_body(body, true)
        .await
        .map_err(from_client)
}

/// An error of the client connection (it went away, sent a broken body) marked as the
/// client's: pingora answers such errors with no 500 and the gateway logs them at DEBUG
/// (a viewer closing its stream is routine, not a server error).
fn from_client(e: Box<pingora::Error>) -> Box<pingora::Error> {
    match e.esource() {
        pingora::ErrorSource::Unset => e.into_down(),
        _ => e,
    }
}

/// Moves the request body from the client into the service's [`RequestBody`], one chunk
/// at a time, and once the body is done keeps watching the connection so a client that goes
/// away is noticed while the response is still streaming.
struct BodyPump {
    tx: Option<mpsc::Sender<Result<Bytes, BodyError>>>,
    /// A chunk read from the client, waiting for room in the channel.
    pending: Option<Bytes>,
    /// The client has sent its whole body.
    done: bool,
    /// On an `Upgrade` request, where the client's bytes go if the answer switches protocols.
    upgrade: Option<mpsc::Sender<Result<Bytes, BodyError>>>,
}

impl BodyPump {
    /// The response head went out: after a `101`, the client's bytes (read until it closes)
    /// go to the [`ClientUpgrade`] body; otherwise that body just ends.
    fn head_written(&mut self, session: &mut ServerSession) {
        if let Some(tx) = self.upgrade.take()
            && session.was_upgraded()
        {
            self.tx = Some(tx);
            self.pending = None;
            self.done = false;
        }
    }

    /// One step. Cancel-safe: a chunk is only taken out of `pending` once it can be sent.
    /// Errors mean the client connection failed.
    async fn step(&mut self, session: &mut ServerSession) -> pingora::Result<()> {
        if self.pending.is_some() {
            let Some(tx) = &self.tx else {
                self.pending = None;
                return Ok(());
            };
            let sent = match (tx.reserve().await, self.pending.take()) {
                (Ok(permit), Some(chunk)) => {
                    permit.send(Ok(chunk));
                    true
                }
                _ => false,
            };
            if !sent {
                // The service dropped its body: it wants no more; discard the rest.
                self.tx = None;
            }
            return Ok(());
        }
        if !self.done && session.is_body_done() {
            // Checked first: once the body is done, reading waits for the client to close.
            self.done = true;
            self.tx = None; // end of body for the service
            return Ok(());
        }
        match session.read_body_or_idle(self.done).await {
            Ok(Some(chunk)) => {
                if self.tx.is_some() {
                    self.pending = Some(chunk);
                }
                Ok(())
            }
            Ok(None) => {
                self.done = true;
                self.tx = None; // end of body for the service
                Ok(())
            }
            Err(e) => {
                if let Some(tx) = self.tx.take() {
                    let _ = tx.try_send(Err(BodyError(e.to_string())));
                }
                Err(from_client(e))
            }
        }
    }
}
