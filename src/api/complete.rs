//! `POST /v2/sessions/{id}/complete`: finish a session in one atomic store round trip.
//!
//! Body (optional): `{"status": "succeeded" | "failed" | "cancelled", "final_response": <any
//! JSON>}`; status defaults to `succeeded`. Sets the terminal status, `completed_at` and the
//! final response, appends the `complete` event (which ends every stream of the session)
//! and starts the retention TTL. Completing twice answers `409`, unless the second call
//! repeats the first's `Idempotency-Key` and body: it then gets the first answer
//! ([`super::idempotency`]).

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use serde::Deserialize;

use super::body::{Body, json, read_json};
use super::{ApiError, ApiState, idempotency};
use crate::store::{Completion, SessionId};

/// Terminal statuses a session can complete with.
pub const STATUSES: [&str; 3] = ["succeeded", "failed", "cancelled"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CompleteBody {
    status: Option<String>,
    #[serde(default)]
    final_response: serde_json::Value,
}

/// Handles complete.
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
    let key = idempotency::key(req.headers())?;
    let (parts, body) = req.into_parts();
    let input: CompleteBody =
        read_json(&parts.headers, body, state.settings.max_body_bytes, true).await?;
    let status = input.status.unwrap_or_else(|| STATUSES[0].to_owned());
    if !STATUSES.contains(&status.as_str()) {
        return Err(ApiError::invalid(
            "status",
            "must be one of succeeded, failed, cancelled",
        ));
    }
    let completion = Completion {
        status: status.clone(),
        final_response: input.final_response.to_string(),
    };
    let applied = state
        .store
        .complete_idempotent(id, &owner, completion, key.as_ref())
        .await?;
    let response = json(
        StatusCode::OK,
        &serde_json::json!({
            "id": id.as_str(),
            "status": status,
            "event_id": applied.value.to_string(),
        }),
    );
    Ok(idempotency::mark(response, applied.replayed))
}
