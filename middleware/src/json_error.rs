//! [`ResponseBody`]: the inner service's body, or the JSON error body a layer answers with
//! itself (shared by the existence cache, the priority queue and the rate limiter).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

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
    pub(crate) fn inner(body: B) -> Self {
        Self {
            kind: Kind::Inner(body),
        }
    }

    pub(crate) fn error(json: Bytes) -> Self {
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
