//! A small HTTP/1 client for the tests, on hyper-util's legacy client: JSON requests that
//! come back as [`Reply`], and [`SseStream`], which parses Server-Sent Events frame by frame
//! from the streaming response body.
//!
//! Every wait is bounded by [`WAIT`]: wrong behaviour (a lost frame, a stream that never
//! ends) fails the test with a message instead of hanging it.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use std::convert::Infallible;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body::Frame;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// Longest any single wait in a test may take before it counts as a hang.
pub const WAIT: Duration = Duration::from_secs(20);

/// Awaits `fut` for at most [`WAIT`]; panics naming `what` otherwise.
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(out) => out,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

/// A finished (non-streaming) response.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: StatusCode,
    /// The HTTP version it came over.
    pub version: http::Version,
    /// Response headers.
    pub headers: HeaderMap,
    /// The body parsed as JSON (`Null` when it is not JSON).
    pub json: Value,
    /// The body as text.
    pub text: String,
}

impl Reply {
    /// `error.code` of an error body.
    pub fn error_code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or("")
    }

    /// `error.message` of an error body.
    pub fn error_message(&self) -> &str {
        self.json["error"]["message"].as_str().unwrap_or("")
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The client of one gateway.
#[derive(Clone)]
pub struct Client {
    http: HyperClient<HttpConnector, BoxBody<Bytes, Infallible>>,
    addr: SocketAddr,
}

/// A request being built: method, path, headers, optional body.
pub struct Call {
    method: Method,
    target: String,
    headers: Vec<(String, String)>,
    body: Option<Bytes>,
    chunks: Option<Vec<Bytes>>,
}

impl Call {
    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// `Authorization: Bearer <token>`.
    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }

    /// A JSON body (with `Content-Type: application/json`).
    pub fn json(self, value: &Value) -> Self {
        self.raw_json(value.to_string())
    }

    /// Raw text sent as a JSON body (may be invalid JSON on purpose).
    pub fn raw_json(mut self, text: impl Into<String>) -> Self {
        self.body = Some(Bytes::from(text.into()));
        self.header("content-type", "application/json")
    }

    /// A body with no content type added.
    pub fn body(mut self, bytes: impl Into<Bytes>) -> Self {
        self.body = Some(bytes.into());
        self
    }

    /// A JSON body sent in `chunks` with `Transfer-Encoding: chunked` (no length declared).
    pub fn chunked_json(mut self, chunks: Vec<Bytes>) -> Self {
        self.chunks = Some(chunks);
        self.header("content-type", "application/json")
    }
}

impl Client {
    /// A client of the gateway listening on `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        let http = HyperClient::builder(TokioExecutor::new()).build_http();
        Self { http, addr }
    }

    /// A client speaking HTTP/2 with prior knowledge (h2c) to `addr`: every request and
    /// stream multiplexed over one connection.
    pub fn h2c(addr: SocketAddr) -> Self {
        let http = HyperClient::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http();
        Self { http, addr }
    }

    /// The address it talks to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts a request; `target` is a path (`/v2/..`) or an absolute URL.
    pub fn call(&self, method: Method, target: &str) -> Call {
        Call {
            method,
            target: target.to_owned(),
            headers: Vec::new(),
            body: None,
            chunks: None,
        }
    }

    /// `GET target`.
    pub fn get(&self, target: &str) -> Call {
        self.call(Method::GET, target)
    }

    /// `POST target`.
    pub fn post(&self, target: &str) -> Call {
        self.call(Method::POST, target)
    }

    async fn send(&self, call: Call) -> hyper::Response<Incoming> {
        let uri = if call.target.starts_with("http") {
            call.target.clone()
        } else {
            format!("http://{}{}", self.addr, call.target)
        };
        let mut request = Request::builder().method(call.method.clone()).uri(&uri);
        for (name, value) in &call.headers {
            request = request.header(name, value);
        }
        let body = match call.chunks.clone() {
            Some(chunks) => StreamBody::new(futures_util::stream::iter(
                chunks
                    .into_iter()
                    .map(|c| Ok::<_, Infallible>(Frame::data(c))),
            ))
            .boxed(),
            None => Full::new(call.body.clone().unwrap_or_default()).boxed(),
        };
        let request = request.body(body).expect("valid request");
        within(
            &format!("the response head of {} {uri}", call.method),
            async {
                self.http
                    .request(request)
                    .await
                    .unwrap_or_else(|e| panic!("{} {uri} failed: {e:?}", call.method))
            },
        )
        .await
    }

    /// Sends `call` and returns the response with its body unread.
    pub async fn unread(&self, call: Call) -> hyper::Response<Incoming> {
        self.send(call).await
    }

    /// Sends `call` and reads the whole response.
    pub async fn send_call(&self, call: Call) -> Reply {
        let what = format!("the response body of {} {}", call.method, call.target);
        let response = self.send(call).await;
        let (parts, body) = response.into_parts();
        let bytes = within(&what, body.collect())
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"))
            .to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        Reply {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            json: serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
        }
    }

    /// Opens an SSE stream; a non-200 answer comes back as `Err(reply)`.
    pub async fn stream(&self, call: Call) -> Result<SseStream, Reply> {
        let response = self.send(call).await;
        if response.status() != StatusCode::OK {
            let (parts, body) = response.into_parts();
            let bytes = within("an error body", body.collect())
                .await
                .expect("error body")
                .to_bytes();
            let text = String::from_utf8_lossy(&bytes).into_owned();
            return Err(Reply {
                status: parts.status,
                version: parts.version,
                headers: parts.headers,
                json: serde_json::from_str(&text).unwrap_or(Value::Null),
                text,
            });
        }
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert!(
            content_type.starts_with("text/event-stream"),
            "stream content-type is {content_type:?}"
        );
        Ok(SseStream {
            version: response.version(),
            headers: response.headers().clone(),
            body: response.into_body(),
            parser: SseParser::default(),
            ended: false,
        })
    }
}

/// One SSE block (the lines up to a blank line): an event, a `retry:` frame or comments.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SseFrame {
    /// `id:` field.
    pub id: Option<String>,
    /// `event:` field.
    pub event: Option<String>,
    /// `data:` lines joined with `\n`.
    pub data: Option<String>,
    /// `retry:` field.
    pub retry: Option<u64>,
    /// Comment lines (`: text`), without the colon and one leading space.
    pub comments: Vec<String>,
}

impl SseFrame {
    /// True for a block of comments only (a heartbeat).
    pub fn is_comment(&self) -> bool {
        self.id.is_none() && self.event.is_none() && self.data.is_none() && self.retry.is_none()
    }

    /// The `data` parsed as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(self.data.as_deref().unwrap_or("null"))
            .unwrap_or_else(|e| panic!("frame data is not JSON ({e}): {self:?}"))
    }

    fn is_empty(&self) -> bool {
        self.is_comment() && self.comments.is_empty()
    }
}

/// An open SSE response, read frame by frame. Dropping it drops the connection.
pub struct SseStream {
    /// The HTTP version it came over.
    pub version: http::Version,
    /// Response headers.
    pub headers: HeaderMap,
    body: Incoming,
    parser: SseParser,
    ended: bool,
}

impl SseStream {
    /// The next block, `Ok(None)` at a clean end of the body, `Err` if the body failed.
    /// Not bounded in time: see [`Self::next_frame`].
    pub async fn try_next(&mut self) -> Result<Option<SseFrame>, hyper::Error> {
        loop {
            if let Some(frame) = self.parser.frame(self.ended) {
                return Ok(Some(frame));
            }
            if self.ended {
                return Ok(None);
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.parser.feed(&data);
                    }
                }
                Some(Err(e)) => return Err(e),
                None => self.ended = true,
            }
        }
    }

    /// The next block (heartbeats included), `None` at a clean end of the body; panics on a
    /// body error or after [`WAIT`].
    pub async fn next_frame(&mut self) -> Option<SseFrame> {
        within("the next SSE frame", self.try_next())
            .await
            .unwrap_or_else(|e| panic!("SSE body failed: {e:?}"))
    }

    /// The next event frame (one with an `event:` field), skipping heartbeats and `retry:`
    /// frames; `None` at the end of the stream.
    pub async fn next_event(&mut self) -> Option<SseFrame> {
        loop {
            let frame = self.next_frame().await?;
            if frame.event.is_some() || frame.data.is_some() {
                return Some(frame);
            }
        }
    }

    /// The first frame must be `retry: <ms>`; returns the value.
    pub async fn expect_retry(&mut self) -> u64 {
        let frame = self.next_frame().await.expect("a retry frame, got the end");
        frame
            .retry
            .unwrap_or_else(|| panic!("first frame should be retry:, got {frame:?}"))
    }

    /// Exactly `n` events; panics if the stream ends first.
    pub async fn events(&mut self, n: usize) -> Vec<SseFrame> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            match self.next_event().await {
                Some(frame) => out.push(frame),
                None => panic!("stream ended after {} of {n} events", out.len()),
            }
        }
        out
    }

    /// Every event until the clean end of the stream.
    pub async fn events_to_end(&mut self) -> Vec<SseFrame> {
        let mut out = Vec::new();
        while let Some(frame) = self.next_event().await {
            out.push(frame);
        }
        out
    }

    /// Asserts the stream ends cleanly with no further event.
    pub async fn expect_end(&mut self) {
        if let Some(frame) = self.next_event().await {
            panic!("expected the end of the stream, got {frame:?}");
        }
    }
}

/// Incremental SSE parser: bytes in (split anywhere), whole blocks out.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: BytesMut,
    pending: SseFrame,
}

impl SseParser {
    /// Adds bytes as they arrived.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Parses one complete block from the buffer, if there is one; `ended` says no more
    /// bytes will come (a trailing `\r` is then a whole line ending).
    pub fn frame(&mut self, ended: bool) -> Option<SseFrame> {
        while let Some((line_len, eol_len)) = self.next_line(ended) {
            let line = self.buf.split_to(line_len);
            self.buf.advance(eol_len);
            let line = String::from_utf8_lossy(&line).into_owned();
            if line.is_empty() {
                let frame = std::mem::take(&mut self.pending);
                if !frame.is_empty() {
                    return Some(frame);
                }
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
                None => (line.as_str(), ""),
            };
            let frame = &mut self.pending;
            match field {
                "" => frame.comments.push(value.to_owned()),
                "id" => frame.id = Some(value.to_owned()),
                "event" => frame.event = Some(value.to_owned()),
                "data" => {
                    frame.data = Some(match frame.data.take() {
                        Some(previous) => format!("{previous}\n{value}"),
                        None => value.to_owned(),
                    });
                }
                "retry" => frame.retry = value.parse().ok(),
                _ => {} // unknown fields are ignored, as browsers do
            }
        }
        None
    }

    /// Length of the first complete line and of its terminator (`\n`, `\r\n` or `\r`).
    fn next_line(&self, ended: bool) -> Option<(usize, usize)> {
        let i = self.buf.iter().position(|b| *b == b'\n' || *b == b'\r')?;
        if self.buf[i] == b'\n' {
            return Some((i, 1));
        }
        match self.buf.get(i + 1) {
            Some(b'\n') => Some((i, 2)),
            Some(_) => Some((i, 1)),
            // A `\r` at the end of what arrived may be half of `\r\n`: wait for more.
            None if ended => Some((i, 1)),
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` one byte at a time (every split point), then collects the blocks.
    fn parse(input: &str) -> Vec<SseFrame> {
        let mut parser = SseParser::default();
        let mut out = Vec::new();
        for b in input.as_bytes() {
            parser.feed(std::slice::from_ref(b));
            out.extend(std::iter::from_fn(|| parser.frame(false)));
        }
        out.extend(std::iter::from_fn(|| parser.frame(true)));
        out
    }

    #[test]
    fn parses_fields_comments_and_multi_line_data() {
        let frames = parse(
            "retry: 2000\n\n: heartbeat\n\nid: 1-0\nevent: delta\ndata: a\ndata:b\r\ndata\r\n\r\n\
             :x\rdata: {\"k\": 1}\r\r",
        );
        assert_eq!(
            frames,
            vec![
                SseFrame {
                    retry: Some(2000),
                    ..SseFrame::default()
                },
                SseFrame {
                    comments: vec!["heartbeat".into()],
                    ..SseFrame::default()
                },
                SseFrame {
                    id: Some("1-0".into()),
                    event: Some("delta".into()),
                    data: Some("a\nb\n".into()),
                    ..SseFrame::default()
                },
                SseFrame {
                    data: Some("{\"k\": 1}".into()),
                    comments: vec!["x".into()],
                    ..SseFrame::default()
                },
            ]
        );
        assert!(frames[1].is_comment());
        assert_eq!(frames[3].json(), serde_json::json!({"k": 1}));
    }

    #[test]
    fn an_unfinished_block_is_not_a_frame() {
        let mut parser = SseParser::default();
        parser.feed(b"id: 1-0\ndata: x\n");
        assert_eq!(parser.frame(false), None);
        parser.feed(b"\r");
        assert_eq!(
            parser.frame(false),
            None,
            "a lone \\r may be half of \\r\\n"
        );
        assert_eq!(parser.frame(true).and_then(|f| f.data), Some("x".into()));
    }
}
