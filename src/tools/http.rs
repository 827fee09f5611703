//! `kind = "http"` tools: POST the call's input to an upstream group.
//!
//! The peer comes from the same [`UpstreamGroup`] the proxy routes use: only peers its
//! health checks consider healthy, chosen by its balancing (round robin, or consistent
//! hashing on the session id, so one session's calls keep reaching one peer). A refused
//! connection is retried once on another healthy peer when the group has
//! `retry_connect`, as proxying does. Connections are pooled (hyper-util's client) and kept
//! for the group's `idle_timeout_ms`; connecting is bounded by its `connect_timeout_ms`, the
//! whole call by the tool's deadline.
//!
//! The request: `POST <path>` with the input as its JSON body, and headers `x-session-id`
//! and `x-tool-call-id`, plus `traceparent` (and the caller's `tracestate`) when the batch
//! runs within a traced request, so the tool's service joins the request's trace. A 2xx answer's JSON body (empty: `null`) is the output; any other
//! status, a body that is not JSON, or one larger than `tools.max_output_bytes` fails the
//! call with a message saying which.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use serde_json::value::RawValue;

use agentgate_proxy::UpstreamGroup;
use agentgate_proxy::client::PooledClient;

use super::{Tool, ToolContext, ToolError};

/// Bytes of an error answer quoted in the call's error.
const ERROR_SNIPPET: usize = 200;

/// A tool that POSTs its input to a peer of an upstream group.
#[derive(Clone)]
pub struct HttpTool {
    group: Arc<UpstreamGroup>,
    path: String,
    max_output_bytes: usize,
    client: PooledClient<Full<Bytes>>,
}

impl std::fmt::Debug for HttpTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpTool")
            .field("upstream", &self.group.name())
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// How one attempt failed.
enum Attempt {
    /// No connection was made: nothing reached the peer, so another may be tried.
    Connect(ToolError),
    /// Anything after connecting.
    Failed(ToolError),
}

impl HttpTool {
    /// A tool calling `path` on `group`'s peers, accepting answers of at most
    /// `max_output_bytes`.
    pub fn new(
        group: Arc<UpstreamGroup>,
        path: impl Into<String>,
        max_output_bytes: usize,
    ) -> Self {
        let client = agentgate_proxy::client::pooled_client(&group);
        Self {
            group,
            path: path.into(),
            max_output_bytes,
            client,
        }
    }

    async fn attempt(
        &self,
        peer: SocketAddr,
        body: Bytes,
        cx: &ToolContext,
    ) -> Result<Box<RawValue>, Attempt> {
        let name = self.group.name();
        let failed = |message: String| Attempt::Failed(ToolError::new(message));
        let mut request = Request::post(format!("http://{peer}{}", self.path))
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json")
            .header("x-session-id", cx.session().as_str())
            .header("x-tool-call-id", cx.call_id())
            .body(Full::new(body))
            .map_err(|e| failed(format!("upstream {name}: invalid request: {e}")))?;
        if let Some(trace) = cx.trace() {
            trace.inject(request.headers_mut());
        }
        tracing::debug!(upstream = name, %peer, path = %self.path, call = cx.call_id(),
            "http tool call");
        let response = self.client.request(request).await.map_err(|e| {
            let message = format!("upstream {name} ({peer}): {}", error_chain(&e));
            if e.is_connect() {
                Attempt::Connect(ToolError::new(message))
            } else {
                failed(message)
            }
        })?;
        let status = response.status();
        let bytes = match Limited::new(response.into_body(), self.max_output_bytes)
            .collect()
            .await
        {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<LengthLimitError>() => {
                return Err(failed(format!(
                    "upstream {name} answered more than {} bytes",
                    self.max_output_bytes
                )));
            }
            Err(e) => return Err(failed(format!("upstream {name}: reading the answer: {e}"))),
        };
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes);
            let snippet: String = text.chars().take(ERROR_SNIPPET).collect();
            return Err(failed(format!(
                "upstream {name} answered {status}: {snippet}"
            )));
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return RawValue::from_string("null".to_owned())
                .map_err(|e| failed(format!("upstream {name}: {e}")));
        }
        // Kept as the text that came (checked to be JSON), not parsed into a tree.
        serde_json::from_slice(&bytes).map_err(|e| {
            failed(format!(
                "upstream {name} answered {status} with a body that is not JSON: {e}"
            ))
        })
    }
}

impl Tool for HttpTool {
    type Input = Box<RawValue>;
    type Output = Box<RawValue>;

    async fn call(
        &self,
        input: Box<RawValue>,
        cx: &ToolContext,
    ) -> Result<Box<RawValue>, ToolError> {
        let name = self.group.name();
        // The resolved input is already JSON text: sent as it is.
        let body = Bytes::from(Box::<str>::from(input).into_string());
        let key = cx.session().as_str().as_bytes();
        let first = self
            .group
            .select_by_key(key, None)
            .ok_or_else(|| ToolError::new(format!("upstream {name}: no healthy peer")))?;
        match self.attempt(first, body.clone(), cx).await {
            Ok(output) => Ok(output),
            Err(Attempt::Failed(e)) => Err(e),
            Err(Attempt::Connect(e)) => {
                let retry = self.group.settings().retry_connect;
                match self.group.select_by_key(key, Some(first)) {
                    Some(second) if retry && second != first => {
                        match self.attempt(second, body, cx).await {
                            Ok(output) => Ok(output),
                            Err(Attempt::Connect(e) | Attempt::Failed(e)) => Err(e),
                        }
                    }
                    _ => Err(e),
                }
            }
        }
    }
}

/// An error and its sources, `a: b: c` (hyper-util's top-level message alone is vague).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}
