//! [`ResponseFuture`] of the layers whose response waits on state shared between requests
//! (the existence cache's single-flight lookup, the SSE fan-out's hub, the multiplexer's
//! inner calls): those steps are one `async` block, boxed once per request, behind a named
//! type so the service's `Future` is nameable and `Debug`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Future of an existence-cache, SSE fan-out or SSE multiplex call: resolves to the
/// response (`Result<Response<..>, E>`); see each layer's docs for the steps it takes.
pub struct ResponseFuture<T, E> {
    inner: Pin<Box<dyn Future<Output = Result<T, E>> + Send>>,
}

impl<T, E> ResponseFuture<T, E> {
    pub(crate) fn new(future: impl Future<Output = Result<T, E>> + Send + 'static) -> Self {
        Self {
            inner: Box::pin(future),
        }
    }
}

impl<T, E> Future for ResponseFuture<T, E> {
    type Output = Result<T, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<T, E> std::fmt::Debug for ResponseFuture<T, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
