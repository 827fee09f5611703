//! [`ResponseBody`]: the inner service's body holding the request's slot, or the layer's
//! own JSON error body.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::queue::Permit;

/// Response body of a [`PriorityQueueService`](super::PriorityQueueService).
///
/// Holds the request's slot until the inner body ends (or fails) or is dropped: a
/// streaming response counts as in flight for as long as it streams.
#[derive(Debug)]
pub struct ResponseBody<B> {
    kind: Kind<B>,
}

#[derive(Debug)]
enum Kind<B> {
    Inner { body: B, permit: Option<Permit> },
    Error(Option<Bytes>),
}

impl<B> ResponseBody<B> {
    pub(crate) fn inner(body: B, permit: Permit) -> Self {
        Self {
            kind: Kind::Inner {
                body,
                permit: Some(permit),
            },
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
            Kind::Inner { body, permit } => {
                let frame = Pin::new(&mut *body).poll_frame(cx);
                let finished = match &frame {
                    Poll::Ready(None | Some(Err(_))) => true,
                    // Servers may stop polling once the body says it is done.
                    Poll::Ready(Some(Ok(_))) => body.is_end_stream(),
                    Poll::Pending => false,
                };
                if finished {
                    permit.take();
                }
                frame
            }
            Kind::Error(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body, .. } => body.is_end_stream(),
            Kind::Error(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body, .. } => body.size_hint(),
            Kind::Error(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}
