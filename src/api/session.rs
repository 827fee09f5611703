//! `GET /v2/sessions/{id}`: a session's state, for the API key that owns it.

use std::sync::Arc;

use http::{HeaderMap, Response, StatusCode};

use super::body::{Body, json};
use super::{ApiError, ApiState};
use crate::store::{SessionId, StoreError};

/// Handles the state read.
pub async fn handle(
    state: &Arc<ApiState>,
    id: &SessionId,
    headers: &HeaderMap,
    extensions: &http::Extensions,
) -> Result<Response<Body>, ApiError> {
    let owner = state.owner(headers, extensions)?;
    let session = state
        .store
        .state(id)
        .await?
        .ok_or_else(ApiError::session_not_found)?;
    if session.owner != owner {
        return Err(StoreError::Forbidden.into());
    }
    // Stored JSON text is ours and valid; fall back to null rather than fail a read.
    let parse = |text: &str| serde_json::from_str(text).unwrap_or(serde_json::Value::Null);
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({
            "id": id.as_str(),
            "status": session.status,
            "created_at": session.created_at,
            "updated_at": session.updated_at,
            "completed_at": session.completed_at,
            "event_count": session.event_count,
            "metadata": parse(&session.metadata),
            "final_response": session.final_response.as_deref().map(parse),
        }),
    ))
}
