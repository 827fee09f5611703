//! `POST /v2/sessions/{id}/tools`: tool execution arrives with its own issue; until then the
//! endpoint authenticates and answers `501 not_implemented`.

use std::sync::Arc;

use http::{HeaderMap, Response};

use super::body::Body;
use super::{ApiError, ApiState};
use crate::store::SessionId;

/// Handles a tool batch: not implemented yet.
pub fn handle(
    state: &Arc<ApiState>,
    _id: &SessionId,
    headers: &HeaderMap,
) -> Result<Response<Body>, ApiError> {
    state.owner(headers)?;
    Err(ApiError::not_implemented("POST /v2/sessions/{id}/tools"))
}
