//! `PUT`: create a stream, or confirm an identical one (§5.1).

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};

use super::{DurableState, empty, headers, read_body, set};
use crate::api::ApiError;
use crate::api::body::Body;
use crate::store::durable::{Create, Created, StreamKey, json};

/// Content type of a stream created without a usable one.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// Creates the stream at `key`: 201 (with `Location`), 200 when an identical one exists,
/// 409 when a different one does.
pub async fn handle<B>(
    state: &Arc<DurableState>,
    key: &StreamKey,
    req: Request<B>,
) -> Result<Response<Body>, ApiError>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, body) = req.into_parts();
    let content_type = content_type(&parts.headers);
    let expiry = headers::expiry(&parts.headers, state.settings.max_ttl_secs)?;
    let closed = headers::closed(&parts.headers);
    let body = read_body(body, state.settings.max_append_bytes).await?;
    let data = if body.is_empty() {
        None
    } else if json::is_json(&content_type) {
        json::frame(&body, true).map_err(ApiError::invalid_body)?
    } else {
        Some(body)
    };
    let create = Create {
        content_type,
        expiry,
        closed,
        data,
    };
    let (status, info) = match state.store.create(key, create, &state.settings.limits).await? {
        Created::New(info) => (StatusCode::CREATED, info),
        Created::Existing(info) => (StatusCode::OK, info),
        Created::Conflict => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "stream_exists",
                "a stream with a different content type, expiry or closure exists at this path",
            ));
        }
        Created::TooMany => {
            return Err(ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "too_many_streams",
                "the route holds its maximum number of streams ([routes.durable] max_streams)",
            ));
        }
        Created::TooLarge => return Err(ApiError::too_large(state.settings.max_append_bytes)),
    };
    let mut response = empty(status);
    let h = response.headers_mut();
    set(h, header::CONTENT_TYPE, &info.content_type);
    set(h, headers::NEXT_OFFSET, &info.tail.to_string());
    if status == StatusCode::CREATED {
        set(h, header::LOCATION, key.path());
    }
    if info.closed {
        set(h, headers::CLOSED, "true");
    }
    Ok(response)
}

/// The request's content type, or [`DEFAULT_CONTENT_TYPE`] when it is missing or not a
/// `type/subtype`.
fn content_type(h: &http::HeaderMap) -> String {
    let Some(value) = h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return DEFAULT_CONTENT_TYPE.to_owned();
    };
    let token = |s: &str| {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    match json::essence(value).split_once('/') {
        Some((kind, sub)) if token(kind) && token(sub) => value.trim().to_owned(),
        _ => DEFAULT_CONTENT_TYPE.to_owned(),
    }
}
