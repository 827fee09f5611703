//! The load generator's HTTP side: a pooled hyper-util client for the JSON calls and an SSE
//! reader for the streams.
//!
//! Nothing here panics on what the network does: every failure is a [`CallError`] whose
//! [`kind`](CallError::kind) becomes an error count in the report.

use std::time::Duration;

use agentgate_middleware::sse::{Item, Parser};
use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::time::Instant;

/// Largest JSON answer read (a tool batch answer with many calls is the biggest).
const MAX_ANSWER_BYTES: usize = 16 << 20;

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// No answer (or no whole body) within the request timeout.
    Timeout,
    /// Connecting, sending or reading failed.
    Transport(String),
    /// A status other than the expected one.
    Status(StatusCode),
    /// An answer that is not what the API documents.
    BadResponse(String),
}

impl CallError {
    /// The error kind as counted in the report: `timeout`, `transport`, `status_404`,
    /// `bad_response`.
    pub fn kind(&self) -> String {
        match self {
            Self::Timeout => "timeout".to_owned(),
            Self::Transport(_) => "transport".to_owned(),
            Self::Status(status) => format!("status_{}", status.as_u16()),
            Self::BadResponse(_) => "bad_response".to_owned(),
        }
    }
}

/// A successful JSON call.
#[derive(Debug)]
pub struct Reply {
    /// Time from sending the request to receiving the response head.
    pub first_byte: Duration,
    /// The body as JSON.
    pub json: Value,
}

/// A client of one gateway, shared by every session of a run (connections are pooled).
#[derive(Debug, Clone)]
pub struct Client {
    http: HyperClient<HttpConnector, Full<Bytes>>,
    /// `http://host:port`, without a trailing slash.
    base: String,
    authorization: HeaderValue,
    timeout: Duration,
}

impl Client {
    /// A client of `target` (`http://host:port`), authenticating with `api_key`, each call
    /// bounded by `timeout`.
    ///
    /// # Errors
    ///
    /// A message when `target` is not an `http://` URL with a host, or the key is not a
    /// valid header value.
    pub fn new(target: &Uri, api_key: &str, timeout: Duration) -> Result<Self, String> {
        if target.scheme_str() != Some("http") {
            return Err("--target: must be an http:// URL (TLS is not supported)".to_owned());
        }
        let authority = target
            .authority()
            .ok_or("--target: must name a host, e.g. http://127.0.0.1:8080")?;
        let authorization = HeaderValue::from_str(&format!("Bearer {api_key}"))
            .map_err(|_| "--api-key: not a valid header value".to_owned())?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        let http = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Self {
            http,
            base: format!("http://{authority}"),
            authorization,
            timeout,
        })
    }

    /// The per-call deadline.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A request; the API key goes on agent calls only (streams carry their own token).
    fn request(&self, method: Method, path: &str, body: Option<&Value>) -> Request<Full<Bytes>> {
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", self.base));
        if method == Method::POST {
            builder = builder.header(header::AUTHORIZATION, self.authorization.clone());
        }
        let body = match body {
            Some(json) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(json.to_string())
            }
            None => Bytes::new(),
        };
        // Paths are built from the gateway's own ids, so this only fails on a bug; an
        // empty request to the base path is then answered with an error status, not a panic.
        builder
            .body(Full::new(body.clone()))
            .unwrap_or_else(|_| Request::new(Full::new(body)))
    }

    /// `POST path` with a JSON body; `Ok` only for `expect` and a JSON answer.
    pub async fn post_json(
        &self,
        path: &str,
        body: &Value,
        expect: StatusCode,
    ) -> Result<Reply, CallError> {
        self.send_json(self.request(Method::POST, path, Some(body)), expect)
            .await
    }

    /// [`post_json`](Self::post_json) with `Idempotency-Key: key`: repeated with the same
    /// key and body, the call is applied once and every attempt gets its answer.
    pub async fn post_json_once(
        &self,
        path: &str,
        body: &Value,
        expect: StatusCode,
        key: &str,
    ) -> Result<Reply, CallError> {
        let mut request = self.request(Method::POST, path, Some(body));
        let key = HeaderValue::from_str(key)
            .map_err(|_| CallError::BadResponse("idempotency key: not a header value".into()))?;
        request.headers_mut().insert("idempotency-key", key);
        self.send_json(request, expect).await
    }

    /// Sends `request`; `Ok` only for `expect` and a JSON answer.
    async fn send_json(
        &self,
        request: Request<Full<Bytes>>,
        expect: StatusCode,
    ) -> Result<Reply, CallError> {
        let started = Instant::now();
        let call = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| CallError::Transport(e.to_string()))?;
            let first_byte = started.elapsed();
            let status = response.status();
            let body = http_body_util::Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| CallError::Transport(e.to_string()))?
                .to_bytes();
            if status != expect {
                return Err(CallError::Status(status));
            }
            let json = serde_json::from_slice(&body)
                .map_err(|e| CallError::BadResponse(format!("not JSON: {e}")))?;
            Ok(Reply { first_byte, json })
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .unwrap_or(Err(CallError::Timeout))
    }

    /// `GET path` as an SSE stream, resuming after `last_event_id` (sent as `Last-Event-ID`,
    /// as a browser's `EventSource` does on reconnect) when given: `Ok` for a 200
    /// `text/event-stream` response head, read within the request timeout. The stream itself
    /// is not bounded here.
    pub async fn open_stream(
        &self,
        path: &str,
        last_event_id: Option<&str>,
    ) -> Result<SseReader, CallError> {
        let mut request = self.request(Method::GET, path, None);
        if let Some(id) = last_event_id.and_then(|id| HeaderValue::from_str(id).ok()) {
            request.headers_mut().insert("last-event-id", id);
        }
        let response = tokio::time::timeout(self.timeout, self.http.request(request))
            .await
            .map_err(|_| CallError::Timeout)?
            .map_err(|e| CallError::Transport(e.to_string()))?;
        if response.status() != StatusCode::OK {
            return Err(CallError::Status(response.status()));
        }
        let is_sse = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/event-stream"));
        if !is_sse {
            return Err(CallError::BadResponse(
                "stream content-type is not text/event-stream".to_owned(),
            ));
        }
        Ok(SseReader {
            body: response.into_body(),
            parser: Parser::new(),
            ended: false,
        })
    }
}

/// An open SSE response, read item by item. Dropping it closes the connection.
#[derive(Debug)]
pub struct SseReader {
    body: Incoming,
    parser: Parser,
    ended: bool,
}

impl SseReader {
    /// The stream's cursor: the last `id:` field read, as `EventSource` keeps it.
    pub fn last_event_id(&self) -> Option<&str> {
        self.parser.last_event_id()
    }

    /// The next item (event, `retry:`, comment), `Ok(None)` at the end of the body.
    ///
    /// # Errors
    ///
    /// [`CallError::Transport`] when the body fails, [`CallError::BadResponse`] when it is
    /// not valid SSE within the parser's limits.
    pub async fn next(&mut self) -> Result<Option<Item>, CallError> {
        loop {
            if let Some(item) = self.parser.next_item() {
                return Ok(Some(item));
            }
            if self.ended {
                return Ok(None);
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.parser
                            .feed(&data)
                            .map_err(|e| CallError::BadResponse(e.to_string()))?;
                    }
                }
                Some(Err(e)) => return Err(CallError::Transport(e.to_string())),
                None => self.ended = true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kinds() {
        assert_eq!(CallError::Timeout.kind(), "timeout");
        assert_eq!(CallError::Transport("x".into()).kind(), "transport");
        assert_eq!(
            CallError::Status(StatusCode::NOT_IMPLEMENTED).kind(),
            "status_501"
        );
        assert_eq!(CallError::BadResponse("x".into()).kind(), "bad_response");
    }

    #[test]
    fn only_http_targets_with_a_host() {
        let t = Duration::from_secs(1);
        assert!(Client::new(&"http://127.0.0.1:1".parse().unwrap(), "k", t).is_ok());
        assert!(Client::new(&"https://127.0.0.1:1".parse().unwrap(), "k", t).is_err());
        assert!(Client::new(&"/relative".parse().unwrap(), "k", t).is_err());
        assert!(Client::new(&"http://127.0.0.1:1".parse().unwrap(), "bad\nkey", t).is_err());
    }
}
