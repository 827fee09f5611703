//! [`SessionIdentityLayer`]: the session a request is about, read once at the top of a
//! stack and handed to everything below as typed extensions.
//!
//! The agent API's URL layout lives here and in the handlers' route table, nowhere else:
//! the layer reads the `{id}` of `/v2/sessions/{id}[/…]` (else an `x-session-id` header,
//! which clients of upstream routes send), and on a stream connect
//! (`GET`/`HEAD /v2/sessions/{id}/stream`) verifies the stream token once (`?token=` or
//! `Authorization: Bearer`). It inserts:
//! - [`RequestSession`]: the id, and whether a valid stream token came with it — what the
//!   existence cache, the SSE fan-out ([`StreamSessionKey`](super::stream::StreamSessionKey))
//!   and the stream handler read instead of parsing and verifying again;
//! - [`SessionKey`]: for the rate limiter's `key = "session_id"` (a middleware type);
//! - [`Affinity`]: for consistent hashing and canary stickiness (a proxy type), also put in
//!   the response's extensions so the access line names the session.
//!
//! It records the id on the request's span (`session`). A request that names no valid
//! session id gets no extensions and passes untouched: the handlers answer it. A request
//! already carrying the [`RequestSession`] of the session it names passes untouched too, so
//! the layer can run again below the SSE multiplexer (whose per-session requests copy the
//! outer request's extensions) without verifying anything twice.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use agentgate_middleware::client::SessionKey;
use agentgate_proxy::Affinity;
use bytes::Bytes;
use http::{Method, Request, Response};

use super::{bearer, query_param};
use crate::auth::StreamTokens;
use crate::store::SessionId;

/// The session a request is about, as [`SessionIdentityLayer`] read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestSession {
    /// The session id.
    pub id: SessionId,
    /// The request is a stream connect carrying a valid stream token for this session.
    pub viewer: bool,
}

/// Reads the session of each request once; see the [module docs](self).
#[derive(Debug, Clone, Default)]
pub struct SessionIdentityLayer {
    tokens: Option<StreamTokens>,
}

impl SessionIdentityLayer {
    /// Reads session ids and verifies stream tokens with `tokens` (agent routes).
    pub fn new(tokens: StreamTokens) -> Self {
        Self {
            tokens: Some(tokens),
        }
    }

    /// Reads session ids only, verifying nothing (upstream routes: affinity and logs).
    pub fn ids_only() -> Self {
        Self::default()
    }

    /// The session `req` is about, if it names a valid id.
    pub fn read<B>(&self, req: &Request<B>) -> Option<RequestSession> {
        let (id, connect) = locate(req)?;
        Some(self.verify(req, id, connect))
    }

    fn verify<B>(&self, req: &Request<B>, id: SessionId, connect: bool) -> RequestSession {
        let viewer = connect
            && self.tokens.as_ref().is_some_and(|tokens| {
                let token = query_param(req.uri().query(), "token");
                let token = token.as_deref().or_else(|| bearer(req.headers()));
                tokens.verify(&id, token).is_ok()
            });
        RequestSession { id, viewer }
    }
}

/// The session id `req` names, and whether it is a stream connect.
fn locate<B>(req: &Request<B>) -> Option<(SessionId, bool)> {
    let (id, rest) = match req.uri().path().strip_prefix("/v2/sessions/") {
        Some(tail) => tail.split_once('/').unwrap_or((tail, "")),
        None => (req.headers().get("x-session-id")?.to_str().ok()?, ""),
    };
    let id: SessionId = id.parse().ok()?;
    let connect = rest == "stream" && matches!(*req.method(), Method::GET | Method::HEAD);
    Some((id, connect))
}

impl<S> tower::Layer<S> for SessionIdentityLayer {
    type Service = SessionIdentity<S>;

    fn layer(&self, inner: S) -> SessionIdentity<S> {
        SessionIdentity {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`SessionIdentityLayer`].
#[derive(Debug, Clone)]
pub struct SessionIdentity<S> {
    inner: S,
    layer: SessionIdentityLayer,
}

impl<S> SessionIdentity<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B, ResBody> tower::Service<Request<B>> for SessionIdentity<S>
where
    S: tower::Service<Request<B>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let mut affinity = None;
        // Below a multiplexer the layer runs again: it reads each per-session request, and
        // skips one whose session the layer above already read.
        if let Some((id, connect)) = locate(&req)
            && req
                .extensions()
                .get::<RequestSession>()
                .is_none_or(|known| known.id != id)
        {
            let session = self.layer.verify(&req, id, connect);
            tracing::Span::current().record("session", session.id.as_str());
            let key = Bytes::copy_from_slice(session.id.as_str().as_bytes());
            let extensions = req.extensions_mut();
            extensions.insert(SessionKey(key.clone()));
            extensions.insert(Affinity(key.clone()));
            extensions.insert(session);
            affinity = Some(Affinity(key));
        }
        ResponseFuture {
            inner: self.inner.call(req),
            affinity,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`SessionIdentity`]: puts the session's [`Affinity`] in the
    /// response's extensions.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        affinity: Option<Affinity>,
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let mut response = std::task::ready!(this.inner.poll(cx))?;
        if let Some(affinity) = this.affinity.take() {
            response.extensions_mut().insert(affinity);
        }
        Poll::Ready(Ok(response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> StreamTokens {
        StreamTokens::new(
            b"identity-test-secret-identity-test-secret",
            std::time::Duration::from_secs(60),
        )
    }

    fn get(uri: &str) -> Request<()> {
        Request::get(uri).body(()).unwrap()
    }

    #[test]
    fn reads_the_path_then_the_header_and_verifies_stream_tokens_once() {
        let tokens = tokens();
        let layer = SessionIdentityLayer::new(tokens.clone());
        let id: SessionId = "s1".parse().unwrap();
        let (token, _) = tokens.issue(&id);
        let read = |req: Request<()>| layer.read(&req);
        let viewer = read(get(&format!("/v2/sessions/s1/stream?token={token}"))).unwrap();
        assert_eq!(
            viewer,
            RequestSession {
                id: id.clone(),
                viewer: true
            }
        );
        let forged = read(get("/v2/sessions/s1/stream?token=v1.1.x")).unwrap();
        assert!(!forged.viewer);
        let other = read(get(&format!("/v2/sessions/s2/stream?token={token}"))).unwrap();
        assert!(!other.viewer, "a token is for one session");
        assert!(
            !read(get(&format!("/v2/sessions/s1/events?token={token}")))
                .unwrap()
                .viewer
        );
        assert_eq!(read(get("/v2/sessions/s1")).unwrap().id, id);
        let header = Request::get("/other")
            .header("x-session-id", "s1")
            .body(())
            .unwrap();
        assert_eq!(read(header).unwrap().id, id);
        assert_eq!(read(get("/v2/sessions/a%7Bb/events")), None);
        assert_eq!(read(get("/v2/sessions")), None);
        assert_eq!(read(get("/other")), None);
        let ids_only = SessionIdentityLayer::ids_only();
        let plain = ids_only.read(&get(&format!("/v2/sessions/s1/stream?token={token}")));
        assert!(!plain.unwrap().viewer);
    }
}
