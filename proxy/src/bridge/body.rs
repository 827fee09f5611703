//! [`RequestBody`]: the request body a bridged tower service reads, fed chunk by chunk from
//! the pingora session as the service consumes it (never buffered whole).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::sync::mpsc;

/// Why a request body could not be read to its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyError(pub(crate) String);

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "request body: {}", self.0)
    }
}

impl std::error::Error for BodyError {}

/// The body of a request handed to a bridged service.
#[derive(Debug)]
pub struct RequestBody {
    inner: Inner,
    /// Bytes still expected when the client declared a `Content-Length`.
    remaining: Option<u64>,
}

#[derive(Debug)]
enum Inner {
    Empty,
    Full(Option<Bytes>),
    Channel(mpsc::Receiver<Result<Bytes, BodyError>>),
}

impl RequestBody {
    /// A body with no bytes (requests without a body).
    pub fn empty() -> Self {
        Self {
            inner: Inner::Empty,
            remaining: Some(0),
        }
    }

    /// A body holding `bytes` (tests, and callers that already have the whole body).
    pub fn from_bytes(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        Self {
            remaining: Some(bytes.len() as u64),
            inner: Inner::Full(Some(bytes)),
        }
    }

    /// A body fed through a channel of `capacity` chunks; `length` is the declared
    /// `Content-Length`, if any.
    pub(crate) fn channel(
        capacity: usize,
        length: Option<u64>,
    ) -> (mpsc::Sender<Result<Bytes, BodyError>>, Self) {
        let (tx, rx) = mpsc::channel(capacity);
        let body = Self {
            inner: Inner::Channel(rx),
            remaining: length,
        };
        (tx, body)
    }
}

impl Default for RequestBody {
    /// [`RequestBody::empty`]: layers that re-issue a bodyless request (SSE fan-out) build
    /// it with `Default`.
    fn default() -> Self {
        Self::empty()
    }
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let polled = match &mut self.inner {
            Inner::Empty => None,
            Inner::Full(bytes) => bytes.take().map(Ok),
            Inner::Channel(rx) => match rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(chunk) => chunk,
            },
        };
        if let (Some(Ok(chunk)), Some(remaining)) = (&polled, &mut self.remaining) {
            *remaining = remaining.saturating_sub(chunk.len() as u64);
        }
        Poll::Ready(polled.map(|chunk| chunk.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Empty => true,
            Inner::Full(bytes) => bytes.is_none(),
            Inner::Channel(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn channel_body_yields_chunks_then_ends() {
        let (tx, body) = RequestBody::channel(2, Some(6));
        assert_eq!(body.size_hint().exact(), Some(6));
        tokio::spawn(async move {
            tx.send(Ok(Bytes::from_static(b"abc"))).await.unwrap();
            tx.send(Ok(Bytes::from_static(b"def"))).await.unwrap();
        });
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"abcdef");
    }

    #[tokio::test]
    async fn channel_errors_reach_the_reader() {
        let (tx, body) = RequestBody::channel(1, None);
        tx.send(Err(BodyError("client went away".into())))
            .await
            .unwrap();
        let err = body.collect().await.unwrap_err();
        assert_eq!(err.to_string(), "request body: client went away");
    }

    #[tokio::test]
    async fn empty_and_full() {
        assert!(RequestBody::empty().is_end_stream());
        let full = RequestBody::from_bytes("hi");
        assert_eq!(&full.collect().await.unwrap().to_bytes()[..], b"hi");
    }
}
