//! [`ResponseFuture`]: the inner service's future plus headers, or the ready `429`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{HeaderValue, Response};
use pin_project_lite::pin_project;

use super::service::{RATELIMIT_LIMIT, RATELIMIT_REMAINING};
use crate::json_error::ResponseBody;

pin_project! {
    /// Future of a [`RateLimitService`](super::RateLimitService) call.
    pub struct ResponseFuture<F, B> {
        #[pin]
        kind: Kind<F, B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B> {
        // Allowed: the inner call, and the headers to add to its response.
        Inner {
            #[pin]
            future: F,
            headers: Option<(HeaderValue, HeaderValue)>,
        },
        // Rejected: the layer's own answer.
        Limited {
            response: Option<Response<ResponseBody<B>>>,
        },
    }
}

impl<F, B> ResponseFuture<F, B> {
    /// The inner call; `headers` are `RateLimit-Limit` and `RateLimit-Remaining`.
    pub(crate) fn inner(future: F, headers: Option<(HeaderValue, HeaderValue)>) -> Self {
        Self {
            kind: Kind::Inner { future, headers },
        }
    }

    pub(crate) fn limited(response: Response<ResponseBody<B>>) -> Self {
        Self {
            kind: Kind::Limited {
                response: Some(response),
            },
        }
    }
}

impl<F, B> std::fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Inner { .. } => "inner",
            Kind::Limited { .. } => "limited",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish()
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future, headers } => {
                let mut response = ready!(future.poll(cx))?;
                if let Some((limit, remaining)) = headers.take() {
                    // A service that reports a limit of its own keeps its pair of headers.
                    let map = response.headers_mut();
                    if !map.contains_key(RATELIMIT_LIMIT) {
                        map.insert(RATELIMIT_LIMIT, limit);
                        map.insert(RATELIMIT_REMAINING, remaining);
                    }
                }
                Poll::Ready(Ok(response.map(ResponseBody::inner)))
            }
            KindProj::Limited { response } => Poll::Ready(Ok(response
                .take()
                .expect("ResponseFuture polled after completion"))),
        }
    }
}
