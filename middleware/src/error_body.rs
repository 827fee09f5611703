//! The JSON error the layers answer with, `{"error":{"code":..,"message":..}}`:
//! [`json`] writes the body (both strings escaped), [`response`] a whole response with
//! `Content-Type: application/json`, and [`ResponseBody`] is the body of a layer that may
//! answer a request itself (the existence cache, the priority queue, the rate limiter).
//!
//! The one place this shape is written: the layers here and the SSE multiplexer call
//! [`json`], and so can applications that want their own errors to match (agentgate's
//! proxy and API do).
//!
//! ```
//! use agentgate_middleware::error_body;
//! use http::StatusCode;
//!
//! let body = error_body::json("not_found", "no \"session\" here");
//! assert_eq!(&body[..], br#"{"error":{"code":"not_found","message":"no \"session\" here"}}"#);
//!
//! let response = error_body::response(StatusCode::NOT_FOUND, body, |json| json);
//! assert_eq!(response.status(), StatusCode::NOT_FOUND);
//! assert_eq!(response.headers()["content-type"], "application/json");
//! ```

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};

/// `{"error":{"code":..,"message":..}}` with `code` and `message` escaped as JSON strings
/// (a configured message may hold quotes, backslashes or control characters).
pub fn json(code: &str, message: &str) -> Bytes {
    let mut json = String::with_capacity(32 + code.len() + message.len());
    json.push_str(r#"{"error":{"code":"#);
    push_json_string(&mut json, code);
    json.push_str(r#","message":"#);
    push_json_string(&mut json, message);
    json.push_str("}}");
    Bytes::from(json)
}

/// A response with `status`, `Content-Type: application/json` and `json` (from [`json`];
/// a layer's fixed errors are written once and cloned) as its body, made into the caller's
/// body type by `body`.
pub fn response<B>(status: StatusCode, json: Bytes, body: impl FnOnce(Bytes) -> B) -> Response<B> {
    let mut response = Response::new(body(json));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Appends `text` as a JSON string literal (RFC 8259 §7).
fn push_json_string(out: &mut String, text: &str) {
    use std::fmt::Write as _;
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Response body of a layer that may answer a request itself: the inner service's body
/// passed through, or the layer's own JSON error.
#[derive(Debug)]
pub struct ResponseBody<B> {
    kind: Kind<B>,
}

#[derive(Debug)]
enum Kind<B> {
    Inner(B),
    Error(Option<Bytes>),
}

impl<B> ResponseBody<B> {
    /// The inner service's body, passed through.
    pub fn inner(body: B) -> Self {
        Self {
            kind: Kind::Inner(body),
        }
    }

    /// A body holding one JSON error (from [`json`]).
    pub fn error(json: Bytes) -> Self {
        Self {
            kind: Kind::Error(Some(json)),
        }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match &mut self.get_mut().kind {
            Kind::Inner(body) => Pin::new(body).poll_frame(cx),
            Kind::Error(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner(body) => body.is_end_stream(),
            Kind::Error(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner(body) => body.size_hint(),
            Kind::Error(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::json;

    #[test]
    fn the_error_body_escapes_what_it_is_given() {
        let json = json("not_found", "no \"session\" \\ here\n\u{1}");
        assert_eq!(
            &json[..],
            br#"{"error":{"code":"not_found","message":"no \"session\" \\ here\n\u0001"}}"#
        );
    }
}
