//! `POST /v2/sessions/{id}/tools`: run a batch of tool calls as a dependency graph.
//!
//! Body: `{"calls": [{"id": "a", "tool": "sha256", "input": {..}, "depends_on": []}, ..]}`.
//! The batch is checked as a whole first; any problem is a 400 naming the field
//! (`calls[1].depends_on[0]: ...`, `calls: dependency cycle: a → b → a`) and nothing runs
//! or is written. A batch that would hold more than its memory budget (see
//! [`crate::tools::budget`]) is a 413 `tool_budget_exceeded` naming the call
//! (`calls[1] (id "b"): input after $ref resolution is 240012021 bytes, over
//! tools.max_input_bytes (65536)`): before anything runs when the inputs as sent show it,
//! else when the call is about to start or has produced its result, and then the batch is
//! stopped (its events end with a `tool_finished` for each call). Then [`Executor::run`](crate::tools::Executor::run) runs it, appending
//! `tool_started` / `tool_finished` events to the session as it goes (404, 409 or 403 if the
//! session is unknown, completed or another key's; then nothing has run).
//!
//! Answer `200`: `{"batch", "calls": [{"id", "tool", "status", "output" | "error",
//! "cause", "duration_ms"}, ..], "succeeded", "failed", "skipped"}`, calls in request order;
//! `status` is `succeeded`, `failed`, `timed_out` or `skipped`. A batch whose calls failed is
//! still a 200: the failures are results. See [`crate::tools`] for references between calls.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use serde::Deserialize;
use serde_json::Value;

use agentgate_proxy::TraceContext;

use super::body::{Body, full, read_json};
use super::{ApiError, ApiState};
use crate::store::SessionId;
use crate::tools::executor::{BatchError, Progress};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ToolsBody {
    calls: Vec<Value>,
}

/// Handles a tool batch.
pub async fn handle<B>(
    state: &Arc<ApiState>,
    id: &SessionId,
    req: Request<B>,
) -> Result<Response<Body>, ApiError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let owner = state.owner(req.headers(), req.extensions())?;
    let (parts, body) = req.into_parts();
    let body: ToolsBody =
        read_json(&parts.headers, body, state.settings.max_body_bytes, false).await?;
    let plan = state.tools.plan(body.calls).map_err(batch_error)?;
    let progress = Progress {
        store: state.store.as_ref(),
        session: id,
        owner: &owner,
        trace: parts.extensions.get::<TraceContext>(),
    };
    let report = state.tools.run(plan, progress).await.map_err(batch_error)?;
    // Written straight from the calls' output text: no copy of the outputs as a tree.
    let body = serde_json::to_vec(&report)
        .map_err(|e| ApiError::internal(format!("the report could not be encoded: {e}")))?;
    let mut response = Response::new(full(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// The answer to a batch that got no report.
fn batch_error(error: BatchError) -> ApiError {
    match error {
        BatchError::Invalid(e) => ApiError::invalid(&e.field, e.reason),
        BatchError::OverBudget(e) => ApiError::tool_budget_exceeded(e.to_string()),
        BatchError::Store(e) => e.into(),
    }
}
