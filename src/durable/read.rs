//! `GET`: catch-up reads and `live=long-poll` (§5.6, §5.7); `live=sse` goes to [`super::sse`].

use std::sync::Arc;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};

use super::{DurableState, cursor, empty, gone, headers, not_found, set, sse};
use crate::api::ApiError;
use crate::api::body::{Body, full};
use crate::store::durable::{Expiry, Offset, Read, StreamInfo, StreamKey, json};

/// Where a read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// `offset=now`: the tail.
    Now,
    /// `offset=-1` (or none: the start) or an offset.
    After(Offset),
}

/// Which read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Live {
    CatchUp,
    LongPoll,
    Sse,
}

/// Reads `key` as the query asks: catch-up, long-poll or SSE.
pub async fn handle(
    state: &Arc<DurableState>,
    key: StreamKey,
    parts: Parts,
) -> Result<Response<Body>, ApiError> {
    let query = parts.uri.query().unwrap_or("");
    let mut offset = None;
    let mut live = Live::CatchUp;
    let mut client_cursor = None;
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*name {
            "offset" if offset.is_some() => {
                return Err(ApiError::invalid("offset", "must be given once"));
            }
            "offset" => offset = Some(value.into_owned()),
            "live" => {
                live = match &*value {
                    "long-poll" => Live::LongPoll,
                    "sse" => Live::Sse,
                    _ => return Err(ApiError::invalid("live", "must be long-poll or sse")),
                }
            }
            "cursor" => client_cursor = Some(value.into_owned()),
            _ => {}
        }
    }
    let start_text = offset.clone().unwrap_or_else(|| "-1".to_owned());
    let start = match offset.as_deref() {
        None if live != Live::CatchUp => {
            return Err(ApiError::invalid("offset", "is required with live"));
        }
        None | Some("-1") => Start::After(Offset::START),
        Some("now") => Start::Now,
        Some(text) => Start::After(
            text.parse::<Offset>()
                .map_err(|e| ApiError::invalid("offset", e))?,
        ),
    };
    if live == Live::Sse {
        return sse::handle(state, key, start, client_cursor).await;
    }
    let long_poll = live == Live::LongPoll;
    // Register before reading, so an append between the read and the wait is not missed.
    let mut watch = long_poll.then(|| state.store.watch(&key));
    let max = state.settings.max_read_bytes;
    let after = match start {
        Start::Now => Offset::END,
        Start::After(o) => o,
    };
    let mut read = state
        .store
        .read(&key, after, max)
        .await?
        .ok_or_else(not_found)?;
    if read.info.gone {
        return Err(gone());
    }
    let at = match start {
        Start::Now => read.info.tail,
        Start::After(o) => o,
    };
    if start == Start::Now && !long_poll {
        return Ok(at_tail_now(&read));
    }
    if let Some(watch) = &mut watch
        && read.messages.is_empty()
        && at >= read.info.tail
    {
        let deadline = tokio::time::Instant::now() + state.settings.long_poll_timeout;
        loop {
            if read.info.closed {
                return Ok(no_content(at, &read.info, client_cursor.as_deref()));
            }
            tokio::select! {
                () = watch.changed() => {}
                () = tokio::time::sleep_until(deadline) => {
                    return Ok(no_content(at, &read.info, client_cursor.as_deref()));
                }
                () = state.shutdown.cancelled() => {
                    return Ok(no_content(at, &read.info, client_cursor.as_deref()));
                }
            }
            // Every waiter of this stream woke: they share the read.
            let woke = tokio::time::Instant::now();
            read = state
                .tail
                .after_wake(&state.store, &key, at, max, woke)
                .await?
                .ok_or_else(not_found)?;
            if read.info.gone {
                return Err(gone());
            }
            if !read.messages.is_empty() {
                break;
            }
        }
    }
    let next = read.messages.last().map_or(read.info.tail, |(end, _)| *end);
    let ends = read.info.closed && read.up_to_date && next >= read.info.tail;
    let tag = etag(&key, &start_text, next, ends);
    if parts
        .headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == tag.as_bytes())
    {
        let mut response = empty(StatusCode::NOT_MODIFIED);
        set(response.headers_mut(), header::ETAG, &tag);
        return Ok(response);
    }
    let body = if json::is_json(&read.info.content_type) {
        Bytes::from(json::array(read.messages.iter().map(|(_, d)| &d[..])))
    } else if read.messages.len() == 1 {
        read.messages[0].1.clone()
    } else {
        let mut out = Vec::new();
        for (_, data) in &read.messages {
            out.extend_from_slice(data);
        }
        Bytes::from(out)
    };
    let mut response = Response::new(full(body));
    let h = response.headers_mut();
    describe(h, &read.info);
    set(h, headers::NEXT_OFFSET, &next.to_string());
    if long_poll {
        set(h, headers::CURSOR, &cursor::next(client_cursor.as_deref()));
    }
    if read.up_to_date {
        set(h, headers::UP_TO_DATE, "true");
    }
    if ends {
        set(h, headers::CLOSED, "true");
    }
    set(h, header::ETAG, &tag);
    let cache = if state.settings.read_needs_key {
        "private, max-age=60, stale-while-revalidate=300"
    } else {
        "public, max-age=60, stale-while-revalidate=300"
    };
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    Ok(response)
}

/// `offset=now` without waiting: nothing, the tail, never cached.
fn at_tail_now(read: &Read) -> Response<Body> {
    let body: &'static [u8] = if json::is_json(&read.info.content_type) {
        b"[]"
    } else {
        b""
    };
    let mut response = Response::new(full(Bytes::from_static(body)));
    let h = response.headers_mut();
    describe(h, &read.info);
    set(h, headers::NEXT_OFFSET, &read.info.tail.to_string());
    set(h, headers::UP_TO_DATE, "true");
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if read.info.closed {
        set(h, headers::CLOSED, "true");
    }
    response
}

/// A long-poll that found nothing: 204 at `at`, with a cursor unless the stream is closed.
fn no_content(at: Offset, info: &StreamInfo, client_cursor: Option<&str>) -> Response<Body> {
    let mut response = empty(StatusCode::NO_CONTENT);
    let h = response.headers_mut();
    set(h, headers::NEXT_OFFSET, &at.to_string());
    set(h, headers::UP_TO_DATE, "true");
    set(h, headers::CURSOR, &cursor::next(client_cursor));
    if info.closed {
        set(h, headers::CLOSED, "true");
    }
    response
}

/// The stream's own headers: content type and TTL or expiry.
pub fn describe(h: &mut HeaderMap, info: &StreamInfo) {
    set(h, header::CONTENT_TYPE, &info.content_type);
    match &info.expiry {
        Expiry::Never => {}
        Expiry::Ttl(secs) => set(h, headers::TTL, &secs.to_string()),
        Expiry::At { text, .. } => set(h, headers::EXPIRES_AT, text),
    }
}

/// The entity tag of a read of `key` from `start` to `end`; `:c` when it ends the closed
/// stream, so closing changes it (§10.1).
pub fn etag(key: &StreamKey, start: &str, end: Offset, closed: bool) -> String {
    // `start` is -1, now or an offset we parsed: nothing to escape.
    let start: String = start.chars().filter(char::is_ascii_alphanumeric).collect();
    format!(
        "\"{}:{}:{}{}\"",
        key.tag(),
        start,
        end,
        if closed { ":c" } else { "" }
    )
}
