//! `PUT`: create a stream, or confirm an identical one (§5.1).

use std::sync::Arc;

use agentgate_proxy::bridge::ClientTls;
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};

use super::{DurableState, empty, headers, read_body, set};
use crate::api::ApiError;
use crate::api::body::Body;
use crate::store::durable::{Create, Created, Fork, MAX_PATH_BYTES, Offset, StreamKey, json};

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
    let location = location(&parts, key);
    let fork = fork(state, &parts.headers)?;
    let content_type = content_type(&parts.headers);
    // A fork without a content type inherits its source's.
    let content_type = match (&fork, content_type) {
        (Some(_), None) => None,
        (_, ct) => Some(ct.unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_owned())),
    };
    let expiry = headers::expiry(&parts.headers, state.settings.max_ttl_secs)?;
    let closed = headers::closed(&parts.headers);
    let body = read_body(body, state.settings.max_append_bytes).await?;
    let data = if body.is_empty() {
        None
    } else if json::is_json(content_type.as_deref().unwrap_or_default()) {
        json::frame(&body, true).map_err(ApiError::invalid_body)?
    } else {
        Some(body)
    };
    let create = Create {
        content_type,
        expiry,
        closed,
        data,
        fork,
    };
    let (status, info) = match state
        .store
        .create(key, create, &state.settings.limits)
        .await?
    {
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
        Created::TooLarge => {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "stream_too_large",
                "body: the stream would exceed its maximum size ([routes.durable] \
                 max_stream_bytes)",
            ));
        }
        Created::SourceNotFound => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "source_not_found",
                "Stream-Forked-From: no such stream",
            ));
        }
        Created::Gone => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "stream_gone",
                "the stream (or the fork's source) was deleted and is kept only for its \
                 forks: its path cannot be used until they are deleted",
            ));
        }
        Created::ForkOffsetBeyond => {
            return Err(ApiError::invalid(
                "Stream-Fork-Offset",
                "lies past the source stream's tail",
            ));
        }
        Created::SubOffsetBeyond => {
            return Err(ApiError::invalid(
                "Stream-Fork-Sub-Offset",
                "reaches past the next message of the source",
            ));
        }
        Created::ContentTypeMismatch => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "content_type_mismatch",
                "Content-Type: differs from the fork's source stream",
            ));
        }
    };
    let mut response = empty(status);
    let h = response.headers_mut();
    set(h, header::CONTENT_TYPE, &info.content_type);
    set(h, headers::NEXT_OFFSET, &info.tail.to_string());
    if status == StatusCode::CREATED {
        set(h, header::LOCATION, &location);
    }
    if info.closed {
        set(h, headers::CLOSED, "true");
    }
    Ok(response)
}

/// The stream's absolute URL: the scheme the client used, its `Host` (or HTTP/2
/// authority), the path; just the path when the request names no host.
fn location(parts: &http::request::Parts, key: &StreamKey) -> String {
    let scheme = if parts.extensions.get::<ClientTls>().is_some() {
        "https"
    } else {
        "http"
    };
    let host = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        });
    match host {
        Some(host) => format!("{scheme}://{host}{}", key.path()),
        None => key.path().to_owned(),
    }
}

/// `Stream-Forked-From`, `Stream-Fork-Offset`, `Stream-Fork-Sub-Offset` (§4.2): the
/// source must be a stream of this route (its path under the route's prefix).
fn fork(state: &DurableState, h: &http::HeaderMap) -> Result<Option<Fork>, ApiError> {
    let source = headers::text(h, headers::FORKED_FROM)?;
    let offset = headers::text(h, headers::FORK_OFFSET)?;
    let sub = headers::text(h, headers::FORK_SUB_OFFSET)?;
    let Some(source) = source else {
        if offset.is_some() || sub.is_some() {
            return Err(ApiError::invalid(
                "Stream-Forked-From",
                "is required with Stream-Fork-Offset and Stream-Fork-Sub-Offset",
            ));
        }
        return Ok(None);
    };
    let dot_segment = source.split('/').any(|s| s == "." || s == "..");
    if !source.starts_with(&state.path_prefix)
        || source.len() > MAX_PATH_BYTES
        || dot_segment
        || source.contains(['?', '#'])
    {
        return Err(ApiError::invalid(
            "Stream-Forked-From",
            format!(
                "must be the path of a stream of this route (under {:?}, at most \
                 {MAX_PATH_BYTES} bytes, no . or .. segments)",
                state.path_prefix
            ),
        ));
    }
    let offset = offset
        .map(|o| {
            o.parse::<Offset>()
                .map_err(|e| ApiError::invalid("Stream-Fork-Offset", e))
        })
        .transpose()?;
    let sub = match sub {
        None => 0,
        Some(text) => {
            let canonical = text == "0"
                || (!text.starts_with('0')
                    && !text.is_empty()
                    && text.bytes().all(|b| b.is_ascii_digit()));
            text.parse::<u64>()
                .ok()
                .filter(|_| canonical)
                .ok_or_else(|| {
                    ApiError::invalid("Stream-Fork-Sub-Offset", "must be a non-negative integer")
                })?
        }
    };
    Ok(Some(Fork {
        source: StreamKey::new(source),
        offset,
        sub,
    }))
}

/// The request's content type; `None` when it is missing or not a `type/subtype`.
fn content_type(h: &http::HeaderMap) -> Option<String> {
    let value = h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok())?;
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    match json::essence(value).split_once('/') {
        Some((kind, sub)) if token(kind) && token(sub) => Some(value.trim().to_owned()),
        _ => None,
    }
}
