//! [`ResponseBody`]: the inner service's body holding the request's slot ([`Held`]), or the
//! layer's own JSON error body (the crate's shared error body).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::queue::Permit;

/// Response body of a [`PriorityQueue`](super::PriorityQueue): the inner body
/// with its slot, or a `503` JSON error.
pub type ResponseBody<B> = crate::error_body::ResponseBody<Held<B>>;

/// The inner service's body, holding the request's slot until the body ends (or fails) or
/// is dropped: a streaming response counts as in flight for as long as it streams.
#[derive(Debug)]
pub struct Held<B> {
    body: B,
    permit: Option<Permit>,
}

impl<B> Held<B> {
    pub(crate) fn new(body: B, permit: Permit) -> Self {
        Self {
            body,
            permit: Some(permit),
        }
    }
}

impl<B> Body for Held<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        let finished = match &frame {
            Poll::Ready(None | Some(Err(_))) => true,
            // Servers may stop polling once the body says it is done.
            Poll::Ready(Some(Ok(_))) => this.body.is_end_stream(),
            Poll::Pending => false,
        };
        if finished {
            this.permit.take();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
