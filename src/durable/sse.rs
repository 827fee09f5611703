//! `GET ?live=sse` (§5.8): the stream as Server-Sent Events.
//!
//! Each message is one `data` event followed by one `control` event carrying
//! `streamNextOffset`, `streamCursor` and `upToDate` (or `streamClosed` at the end of a
//! closed stream, after which the response ends). Text and JSON streams send text (a JSON
//! append as an array of its values); any other content type sends base64 and says so in
//! `Stream-SSE-Data-Encoding`. An idle stream gets a keep-alive `control` event every
//! `long_poll_timeout_ms`; the response ends after `sse_max_ms` (the client resumes from
//! its offset). Events go through a small bounded channel: a slow client holds at most a
//! few events (and one read of at most `max_read_bytes`) of memory.

use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use http::{HeaderValue, Response, header};
use http_body_util::BodyExt;
use tokio::sync::mpsc;

use super::read::Start;
use super::{DurableState, cursor, gone, headers, not_found, set};
use crate::api::ApiError;
use crate::api::body::{Body, ChannelBody};
use crate::store::durable::{Offset, Read, StreamKey, json};

/// Events buffered for a slow client.
const CHANNEL_EVENTS: usize = 16;

/// How a stream's bytes travel in `data` events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Text,
    Json,
    Base64,
}

/// Opens the event stream of `key` from `start` (404 before anything is sent when there
/// is no such stream).
pub async fn handle(
    state: &Arc<DurableState>,
    key: StreamKey,
    start: Start,
    client_cursor: Option<String>,
) -> Result<Response<Body>, ApiError> {
    let mut watch = state.store.watch(&key);
    let max = state.settings.max_read_bytes;
    let after = match start {
        Start::Now => Offset::END,
        Start::After(o) => o,
    };
    let first = state
        .store
        .read(&key, after, max)
        .await?
        .ok_or_else(not_found)?;
    if first.info.gone {
        return Err(gone());
    }
    let mut at = match start {
        Start::Now => first.info.tail,
        Start::After(o) => o,
    };
    let ct = json::essence(&first.info.content_type);
    let encoding = if ct == "application/json" {
        Encoding::Json
    } else if ct.starts_with("text/") {
        Encoding::Text
    } else {
        Encoding::Base64
    };
    let (tx, rx) = mpsc::channel::<Bytes>(CHANNEL_EVENTS);
    let state = Arc::clone(state);
    tokio::spawn(async move {
        let end = tokio::time::Instant::now() + state.settings.sse_max;
        let mut pending = Some(first);
        let mut announce = true;
        // When this reader last woke on a change (see `tail`: reads are shared).
        let mut woke = tokio::time::Instant::now();
        loop {
            let read = match pending.take() {
                Some(read) => read,
                None => match state
                    .tail
                    .after_wake(&state.store, &key, at, max, woke)
                    .await
                {
                    Ok(Some(read)) if !read.info.gone => read,
                    // Deleted, or the store failed: end; the client resumes from `at`.
                    Ok(_) | Err(_) => return,
                },
            };
            let Ok(done) = send_read(
                &tx,
                &read,
                encoding,
                &mut at,
                client_cursor.as_deref(),
                announce,
            )
            .await
            else {
                return;
            };
            if done {
                return;
            }
            announce = false;
            // After sending anything, read again before waiting: the read may have been a
            // shared one that started before the latest change (see `tail`).
            if !read.up_to_date || !read.messages.is_empty() {
                continue;
            }
            tokio::select! {
                () = watch.changed() => woke = tokio::time::Instant::now(),
                () = tokio::time::sleep(state.settings.long_poll_timeout) => announce = true,
                () = tokio::time::sleep_until(end) => return,
                () = state.shutdown.cancelled() => return,
                () = tx.closed() => return,
            }
        }
    });
    let mut response = Response::new(ChannelBody(rx).boxed_unsync());
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if encoding == Encoding::Base64 {
        set(h, headers::SSE_DATA_ENCODING, "base64");
    }
    Ok(response)
}

/// Sends one read's events, moving `at`; true when the stream ended (closed, all sent).
/// With no messages, sends a `control` event only if `announce` (first read, keep-alive)
/// or the stream is closed. Err: the client is gone.
async fn send_read(
    tx: &mpsc::Sender<Bytes>,
    read: &Read,
    encoding: Encoding,
    at: &mut Offset,
    client_cursor: Option<&str>,
    announce: bool,
) -> Result<bool, ()> {
    let count = read.messages.len();
    for (i, (end, data)) in read.messages.iter().enumerate() {
        *at = *end;
        let last = i + 1 == count;
        let mut event = Vec::with_capacity(data.len() + 64);
        event.extend_from_slice(b"event: data\n");
        match encoding {
            Encoding::Base64 => {
                let text = base64::engine::general_purpose::STANDARD.encode(data);
                data_lines(&mut event, &text);
            }
            Encoding::Json => data_lines(
                &mut event,
                &String::from_utf8_lossy(&json::array([&data[..]])),
            ),
            Encoding::Text => data_lines(&mut event, &String::from_utf8_lossy(data)),
        }
        control(
            &mut event,
            read,
            *at,
            last && read.up_to_date,
            client_cursor,
        );
        tx.send(Bytes::from(event)).await.map_err(|_| ())?;
    }
    let closed_here = read.info.closed && read.up_to_date && *at >= read.info.tail;
    if count == 0 && (announce || closed_here) {
        let mut event = Vec::new();
        control(&mut event, read, *at, read.up_to_date, client_cursor);
        tx.send(Bytes::from(event)).await.map_err(|_| ())?;
    }
    Ok(closed_here)
}

/// Appends a `control` event for position `at`.
fn control(
    event: &mut Vec<u8>,
    read: &Read,
    at: Offset,
    up_to_date: bool,
    client_cursor: Option<&str>,
) {
    let value = if read.info.closed && up_to_date && at >= read.info.tail {
        serde_json::json!({ "streamNextOffset": at.to_string(), "streamClosed": true, "upToDate": true })
    } else if up_to_date {
        serde_json::json!({
            "streamNextOffset": at.to_string(),
            "streamCursor": cursor::next(client_cursor),
            "upToDate": true,
        })
    } else {
        serde_json::json!({
            "streamNextOffset": at.to_string(),
            "streamCursor": cursor::next(client_cursor),
        })
    };
    event.extend_from_slice(b"event: control\n");
    data_lines(event, &value.to_string());
}

/// `payload` as `data:` lines (one per line of it, any line ending) and the blank line.
fn data_lines(event: &mut Vec<u8>, payload: &str) {
    let mut rest = payload;
    loop {
        let cut = rest.find(['\r', '\n']);
        let (line, tail) = match cut {
            Some(i) => {
                let skip = if rest[i..].starts_with("\r\n") { 2 } else { 1 };
                (&rest[..i], Some(&rest[i + skip..]))
            }
            None => (rest, None),
        };
        event.extend_from_slice(b"data:");
        event.extend_from_slice(line.as_bytes());
        event.push(b'\n');
        match tail {
            Some(t) => rest = t,
            None => break,
        }
    }
    event.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_ending_starts_a_data_line() {
        let mut out = Vec::new();
        data_lines(&mut out, "a\r\nb\rc\nd");
        assert_eq!(out, b"data:a\ndata:b\ndata:c\ndata:d\n\n");
        let mut out = Vec::new();
        data_lines(&mut out, "");
        assert_eq!(out, b"data:\n\n");
    }
}
