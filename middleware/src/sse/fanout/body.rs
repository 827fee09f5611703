//! [`FanoutBody`]: the inner service's own body, or a subscriber's share of a stream that
//! continues through its own inner call if it is detached.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use super::BoxError;
use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame};
use pin_project_lite::pin_project;

use super::hub::Subscription;

/// The inner call a detached subscriber continues with, from its cursor.
pub(crate) type Resume<B> = Box<
    dyn FnOnce(
            Option<String>,
        ) -> Pin<Box<dyn Future<Output = Result<Response<B>, BoxError>> + Send>>
        + Send,
>;

pin_project! {
    /// Body of an [`SseFanout`](super::SseFanout) response.
    pub struct FanoutBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        // Not shared: the inner service's body as is.
        Direct { #[pin] body: B },
        // A share of a stream.
        Shared { shared: Box<Shared<B>> },
    }
}

enum Phase<B> {
    /// Reading the backlog, then the queue.
    Queue,
    /// Detached: making its own inner call.
    Resuming(Pin<Box<dyn Future<Output = Result<Response<B>, BoxError>> + Send>>),
    /// Detached: streaming its own inner call.
    Own(Pin<Box<B>>),
    Done,
}

pub(crate) struct Shared<B> {
    sub: Subscription,
    resume: Option<Resume<B>>,
    phase: Phase<B>,
}

impl<B> FanoutBody<B> {
    pub(crate) fn direct(body: B) -> Self {
        Self {
            kind: Kind::Direct { body },
        }
    }

    pub(crate) fn shared(sub: Subscription, resume: Resume<B>) -> Self {
        Self {
            kind: Kind::Shared {
                shared: Box::new(Shared {
                    sub,
                    resume: Some(resume),
                    phase: Phase::Queue,
                }),
            },
        }
    }

    /// Whether this body is a share of a stream (not the inner service's own body).
    pub fn is_shared(&self) -> bool {
        matches!(self.kind, Kind::Shared { .. })
    }
}

impl<B> std::fmt::Debug for FanoutBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Direct { .. } => "direct",
            Kind::Shared { .. } => "shared",
        };
        f.debug_struct("FanoutBody").field("kind", &kind).finish()
    }
}

impl<B> Body for FanoutBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            KindProj::Direct { body } => body.poll_frame(cx).map_err(Into::into),
            KindProj::Shared { shared } => shared.poll_frame(cx),
        }
    }
}

impl<B> Shared<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            match &mut self.phase {
                Phase::Queue => {
                    if let Some(frame) = self.sub.backlog.pop_front() {
                        return Poll::Ready(Some(Ok(Frame::data(frame))));
                    }
                    match ready!(self.sub.rx.poll_recv(cx)) {
                        Some(frame) => return Poll::Ready(Some(Ok(Frame::data(frame)))),
                        None => {
                            // The queue is drained: detached (continue alone) or ended.
                            match (self.sub.detached.get(), self.resume.take()) {
                                (Some(cursor), Some(resume)) => {
                                    self.phase = Phase::Resuming(resume(cursor.clone()));
                                }
                                _ => self.phase = Phase::Done,
                            }
                        }
                    }
                }
                Phase::Resuming(call) => match ready!(call.as_mut().poll(cx)) {
                    Ok(response) if response.status().is_success() => {
                        self.phase = Phase::Own(Box::pin(response.into_body()));
                    }
                    Ok(response) => {
                        // The stream is gone meanwhile (ended, expired): end; the client
                        // reconnects with its Last-Event-ID and learns why.
                        tracing::debug!(status = %response.status(), "sse fan-out: resume refused");
                        self.phase = Phase::Done;
                    }
                    Err(e) => {
                        self.phase = Phase::Done;
                        return Poll::Ready(Some(Err(e)));
                    }
                },
                Phase::Own(body) => return body.as_mut().poll_frame(cx).map_err(Into::into),
                Phase::Done => return Poll::Ready(None),
            }
        }
    }
}
