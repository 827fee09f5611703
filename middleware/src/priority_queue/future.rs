//! [`ResponseFuture`]: waits for a slot, then calls the inner service; or the ready `503`.

use std::future::Future;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_service::Service;

use super::body::{Held, ResponseBody};
use super::error::{OverloadReason, Overloaded};
use super::queue::{Permit, Waiter};
use crate::error_body;

pin_project! {
    /// Future of a [`PriorityQueue`](super::PriorityQueue) call.
    pub struct ResponseFuture<S, R>
    where
        S: Service<R>,
    {
        #[pin]
        kind: Kind<S, R>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S, R>
    where
        S: Service<R>,
    {
        // Queued: the ready inner service and the request, called once a slot comes.
        Waiting {
            waiter: Waiter,
            #[pin]
            deadline: Sleep,
            pending: Option<(S, R)>,
        },
        // Running: the inner call and the slot its body will hold.
        Calling {
            #[pin]
            future: S::Future,
            permit: Option<Permit>,
        },
        // Turned away.
        Rejected {
            reason: OverloadReason,
        },
    }
}

impl<S: Service<R>, R> ResponseFuture<S, R> {
    pub(crate) fn calling(future: S::Future, permit: Permit) -> Self {
        Self {
            kind: Kind::Calling {
                future,
                permit: Some(permit),
            },
        }
    }

    pub(crate) fn waiting(waiter: Waiter, service: S, request: R) -> Self {
        let deadline = tokio::time::sleep(waiter.max_wait());
        Self {
            kind: Kind::Waiting {
                waiter,
                deadline,
                pending: Some((service, request)),
            },
        }
    }

    pub(crate) fn rejected(reason: OverloadReason) -> Self {
        Self {
            kind: Kind::Rejected { reason },
        }
    }
}

impl<S: Service<R>, R> std::fmt::Debug for ResponseFuture<S, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Waiting { .. } => "waiting",
            Kind::Calling { .. } => "calling",
            Kind::Rejected { .. } => "rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish()
    }
}

impl<S, R, B> Future for ResponseFuture<S, R>
where
    S: Service<R, Response = Response<B>>,
{
    type Output = Result<Response<ResponseBody<B>>, S::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut kind = self.as_mut().project().kind;
            match kind.as_mut().project() {
                KindProj::Waiting {
                    waiter,
                    deadline,
                    pending,
                } => {
                    // A slot that arrived counts even if the deadline passed meanwhile.
                    let permit = match Pin::new(&mut waiter.rx).poll(cx) {
                        Poll::Ready(Ok(permit)) => {
                            waiter.admitted();
                            permit
                        }
                        Poll::Ready(Err(_)) => {
                            tracing::debug!("priority queue: evicted");
                            kind.set(Kind::Rejected {
                                reason: OverloadReason::Evicted,
                            });
                            continue;
                        }
                        Poll::Pending => {
                            ready!(deadline.poll(cx));
                            tracing::debug!("priority queue: waited too long");
                            waiter.timed_out();
                            // Leaves the queue now (dropping the waiter).
                            kind.set(Kind::Rejected {
                                reason: OverloadReason::TimedOut,
                            });
                            continue;
                        }
                    };
                    let (mut service, request) = pending
                        .take()
                        .expect("ResponseFuture polled after completion");
                    let future = service.call(request);
                    kind.set(Kind::Calling {
                        future,
                        permit: Some(permit),
                    });
                }
                KindProj::Calling { future, permit } => {
                    // An error drops the permit: the slot is free again.
                    let response = ready!(future.poll(cx))?;
                    let permit = permit
                        .take()
                        .expect("ResponseFuture polled after completion");
                    return Poll::Ready(Ok(
                        response.map(|body| ResponseBody::inner(Held::new(body, permit)))
                    ));
                }
                KindProj::Rejected { reason } => {
                    return Poll::Ready(Ok(overloaded(*reason)));
                }
            }
        }
    }
}

/// The message of each `503`.
fn overloaded_message(reason: OverloadReason) -> &'static str {
    match reason {
        OverloadReason::QueueFull => "server busy, queue full; retry later",
        OverloadReason::Evicted => {
            "server busy, displaced by higher-priority requests; retry later"
        }
        OverloadReason::TimedOut => "server busy, waited too long; retry later",
    }
}

/// The body of each `503`, written once.
fn overloaded_json(reason: OverloadReason) -> Bytes {
    const REASONS: [OverloadReason; 3] = [
        OverloadReason::QueueFull,
        OverloadReason::Evicted,
        OverloadReason::TimedOut,
    ];
    static BODIES: LazyLock<[Bytes; 3]> = LazyLock::new(|| {
        REASONS.map(|reason| error_body::json("overloaded", overloaded_message(reason)))
    });
    let index = REASONS.iter().position(|r| *r == reason).unwrap_or(0);
    BODIES[index].clone()
}

/// The layer's `503`.
pub(crate) fn overloaded<B>(reason: OverloadReason) -> Response<ResponseBody<B>> {
    let json = overloaded_json(reason);
    let mut response =
        error_body::response(StatusCode::SERVICE_UNAVAILABLE, json, ResponseBody::error);
    let headers = response.headers_mut();
    headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response.extensions_mut().insert(Overloaded { reason });
    response
}
