//! `GET /admin/sessions/{id}/stream`: follow one session's events from the admin listener,
//! for the status page's session viewer.
//!
//! It is the agent API's own stream handler (`crate::api::stream`: replay, then live, ending
//! after `complete`; resume with `Last-Event-ID` or `?last_event_id=`), called in process
//! with a stream token minted here: the caller has passed the admin listener's own checks
//! (its Host allow-list and, when configured, the admin token), so it needs none. It skips the public route's layers (no
//! fan-out: each viewer reads the store itself; operators' viewers are few). Its frames are re-framed for a page that cannot
//! know every event kind in advance (a browser `EventSource` only delivers named events to
//! listeners of that name): each event becomes an unnamed message with the same `id:`, whose
//! data is `{"kind": <event kind>, "data": <event data>}`. Comments and `retry:` pass as
//! they are.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use agentgate_middleware::sse::{Frame, Item, Parser};
use bytes::{Bytes, BytesMut};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use tower::ServiceExt;

use crate::api::{AgentApi, ApiError, Body, query_param};
use crate::store::SessionId;

/// Follows session `raw_id` for the admin request `req`.
pub async fn follow(api: &AgentApi, raw_id: &str, req: &http::request::Parts) -> Response<Body> {
    let id: SessionId = match raw_id.parse() {
        Ok(id) => id,
        Err(e) => return ApiError::invalid("id", e).into_response(),
    };
    let (token, _expires) = api.state().tokens.issue(&id);
    let mut uri = format!("/v2/sessions/{id}/stream?token={token}");
    if let Some(cursor) = query_param(req.uri.query(), "last_event_id") {
        uri.push_str("&last_event_id=");
        uri.extend(form_urlencoded::byte_serialize(cursor.as_bytes()));
    }
    let mut inner = Request::get(uri);
    if let Some(cursor) = req.headers.get("last-event-id") {
        inner = inner.header("last-event-id", cursor.clone());
    }
    let inner = match inner.body(Empty::<Bytes>::new()) {
        Ok(inner) => inner,
        Err(e) => return ApiError::invalid("id", e).into_response(),
    };
    let response = match api.clone().oneshot(inner).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    if response.status() != StatusCode::OK {
        return response; // 404 and the like, as the API words them
    }
    let (parts, body) = response.into_parts();
    Response::from_parts(
        parts,
        Reframed {
            inner: body,
            parser: Parser::new(),
        }
        .boxed_unsync(),
    )
}

/// The API's SSE body with every event re-framed as an unnamed message (see the module docs).
struct Reframed {
    inner: Body,
    parser: Parser,
}

impl Reframed {
    /// Encodes every complete item the parser holds.
    fn drain(&mut self) -> BytesMut {
        let mut out = BytesMut::new();
        while let Some(item) = self.parser.next_item() {
            match item {
                Item::Event(event) => {
                    let data = serde_json::from_str(&event.data)
                        .unwrap_or(serde_json::Value::String(event.data));
                    let kind = event.event.as_deref().unwrap_or("message");
                    let data = serde_json::json!({"kind": kind, "data": data}).to_string();
                    let mut frame = Frame::message(&data);
                    if let Some(id) = &event.id {
                        frame = frame.id(id);
                    }
                    frame.encode_into(&mut out);
                }
                Item::Comment(text) => Frame::comment(&text).encode_into(&mut out),
                Item::Retry(ms) => Frame::retry(ms).encode_into(&mut out),
                Item::Id(_) => {} // the API sends none
            }
        }
        out
    }
}

impl http_body::Body for Reframed {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        loop {
            let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => frame,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Ready(Some(Err(never))) => match never {},
                Poll::Pending => return Poll::Pending,
            };
            let Ok(data) = frame.into_data() else {
                continue; // trailers: none on SSE
            };
            if self.parser.feed(&data).is_err() {
                return Poll::Ready(None); // the API's own frames never exceed the limits
            }
            let out = self.drain();
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(http_body::Frame::data(out.freeze()))));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn events_become_unnamed_messages_with_their_ids() {
        let source = Bytes::from_static(
            b"retry: 500\n\nid: 1-0\nevent: delta\ndata: {\"n\":1}\n\n: heartbeat\n",
        );
        let reframed = Reframed {
            inner: http_body_util::Full::new(source).boxed_unsync(),
            parser: Parser::new(),
        };
        let text = reframed.collect().await.unwrap().to_bytes();
        let text = std::str::from_utf8(&text).unwrap();
        assert!(text.contains("retry: 500\n"), "{text}");
        assert!(
            text.contains("id: 1-0\ndata: {\"data\":{\"n\":1},\"kind\":\"delta\"}\n\n"),
            "{text}"
        );
        assert!(!text.contains("event:"), "{text}");
        assert!(text.contains(": heartbeat\n"), "{text}");
    }
}
