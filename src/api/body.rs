//! Response bodies and reading JSON request bodies within the size limit.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode, header};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use super::error::ApiError;

/// Body of every API response: a whole buffer or a stream of frames (SSE).
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// A body holding `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

/// A `200`-family JSON response.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(full(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// A body fed by a bounded channel: the producer waits while the client is slow, so memory
/// per stream stays bounded; dropping the body (client gone) closes the channel.
#[derive(Debug)]
pub struct ChannelBody(pub mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

/// Reads and parses a JSON object body of at most `limit` bytes. An empty body parses as `{}` when
/// `empty_ok`, and is an error otherwise.
pub async fn read_json<T, B>(
    headers: &HeaderMap,
    body: B,
    limit: u64,
    empty_ok: bool,
) -> Result<T, ApiError>
where
    T: DeserializeOwned,
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
        let essence = ct.split(';').next().unwrap_or("").trim();
        if essence != "application/json" && !essence.ends_with("+json") {
            return Err(ApiError::unsupported_media_type());
        }
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::too_large(limit));
    }
    let limit_usize = usize::try_from(limit).unwrap_or(usize::MAX);
    let bytes = match Limited::new(body, limit_usize).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => return Err(ApiError::too_large(limit)),
        Err(e) => return Err(ApiError::invalid_body(format!("could not be read: {e}"))),
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        if empty_ok {
            return serde_json::from_slice(b"{}").map_err(ApiError::invalid_body);
        }
        return Err(ApiError::invalid_body("required, got an empty body"));
    }
    // Every body of this API is an object; serde would otherwise map an array onto a
    // struct's fields by position.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::invalid_body("must be a JSON object"));
    }
    serde_json::from_slice(&bytes).map_err(ApiError::invalid_body)
}
