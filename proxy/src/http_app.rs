//! [`HttpApp`]: the [`Gateway`] as pingora's HTTP server application, what runs for each
//! request of a connection (each stream of an HTTP/2 one) once pingora's listener, TLS and
//! HTTP session have it.
//!
//! Per request: read its head (an idle keep-alive connection is dropped when the server
//! shuts down; a malformed head gets `400`, `CONNECT` gets `405`, as pingora's own proxy
//! answers them), serve it with [`Gateway`]'s phases (routing, the bridge), write the access
//! line, and hand the connection back to pingora for the next request when it can be reused.
//!
//! Why not pingora's `HttpProxy` (its `ProxyHttp` driver): every request here is served in
//! process through the bridge, so the cache, the upstream phases, retries and response
//! modules it drives are never used — but their state is in its per-request future all the
//! same, about 14 KB held for as long as the request runs (with its session and module
//! contexts). A streaming response holds it for the stream's whole life: it was the largest
//! part of an idle SSE viewer's memory (bench/README.md, "Memory per idle viewer"), and it
//! would be most of an HTTP/2 stream's. This loop keeps only the session, the request
//! context and the bridge's own state.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::Method;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, HttpServerOptions, ReusedHttpStream};
use pingora::protocols::http::ServerSession;
use pingora::protocols::http::v2::server::H2Options;
use pingora::server::ShutdownWatch;
use pingora::{Error, ErrorSource, ErrorType};

use crate::Gateway;
use crate::gateway::RequestCtx;

/// The [`Gateway`] as pingora's HTTP server application (see the [module docs](self)).
/// The options are those of pingora's `HttpProxy`, with the same meaning.
pub struct HttpApp {
    gateway: Gateway,
    /// pingora's HTTP server options: h2c, requests per connection, the HTTP/2 idle
    /// timeout. `None`: pingora's defaults.
    pub server_options: Option<HttpServerOptions>,
    /// Settings of each client HTTP/2 connection. `None`: pingora's defaults.
    pub h2_options: Option<H2Options>,
}

impl HttpApp {
    /// `gateway` served with pingora's default options.
    pub fn new(gateway: Gateway) -> Self {
        Self {
            gateway,
            server_options: None,
            h2_options: None,
        }
    }
}

impl std::fmt::Debug for HttpApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpApp")
            .field("gateway", &self.gateway)
            .field("server_options", &self.server_options)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl HttpServerApp for HttpApp {
    fn server_options(&self) -> Option<&HttpServerOptions> {
        self.server_options.as_ref()
    }

    fn h2_options(&self) -> Option<H2Options> {
        self.h2_options.clone()
    }

    // Written out instead of `async fn`: an `async fn` (and `#[async_trait]`) keeps a moved
    // argument twice in its future, and the session is 680 bytes held for the request's
    // whole life. The block below uses the captured session in place.
    fn process_new_http<'app, 'shutdown, 'future>(
        self: &'app Arc<Self>,
        mut session: ServerSession,
        shutdown: &'shutdown ShutdownWatch,
    ) -> Pin<Box<dyn Future<Output = Option<ReusedHttpStream>> + Send + 'future>>
    where
        'app: 'future,
        'shutdown: 'future,
        Self: 'future,
    {
        Box::pin(async move {
            // The request context (its in-flight count, its span) lasts until the connection
            // is finished: finishing may still write the end of the response.
            let mut ctx = None;
            let settings = self.serve(&mut session, &mut ctx, shutdown).await?;
            // Boxed: finishing takes the session by value, and its future would otherwise
            // add its size to this one for the request's whole life.
            let reusable = Box::pin(session.finish()).await.ok().flatten();
            drop(ctx);
            Some(ReusedHttpStream::from_reusable_stream(reusable?, settings))
        })
    }
}

impl HttpApp {
    /// Serves one request of `session`; what the next request on the connection keeps,
    /// when the connection may serve one.
    async fn serve(
        &self,
        session: &mut ServerSession,
        ctx: &mut Option<RequestCtx>,
        shutdown: &ShutdownWatch,
    ) -> Option<HttpPersistentSettings> {
        let gateway = &self.gateway;
        if !read_head(session, shutdown).await {
            return None;
        }
        // A keep-alive client may send its next request before this one's exchange is over
        // (pipelined, or only racing the bridge, which watches the connection while the
        // response streams): keep those bytes for the next request instead of failing the
        // connection ("Sent data after end of body"). Requests are still served one at a
        // time, in order (RFC 9112 §9.3.2). No effect on HTTP/2.
        session.set_pipelining_enabled(true);
        if *shutdown.borrow() {
            // Shutting down: this is the connection's last request.
            session.set_keepalive(None);
        }
        let ctx = ctx.insert(gateway.new_ctx());
        match gateway.request_filter(session, ctx).await {
            Ok(()) => {
                gateway.logging(session, None, ctx);
                Some(HttpPersistentSettings::for_session(session))
            }
            Err(e) => {
                let status = error_status(&e);
                if status > 0
                    && let Err(write) = session.respond_error(status).await
                {
                    tracing::debug!(error = %write, "cannot send the error response");
                }
                if !gateway.suppress_error_log(ctx, &e) {
                    tracing::error!(
                        "request failed: {e}, status: {status}, {}",
                        gateway.request_summary(session)
                    );
                }
                gateway.logging(session, Some(&e), ctx);
                // The connection is not reused after a failure (pingora's default too).
                session.on_proxy_failure(e);
                None
            }
        }
    }
}

/// How long an idle keep-alive connection stays open once a graceful stop begins, for a
/// request already on its way (see [`read_head`]); the stop waits at least this long before
/// it cuts connections (`EdgeServer::run`).
pub(crate) const DRAIN_LINGER: Duration = Duration::from_secs(1);

/// Reads the request head; false when there is no request to serve (the client closed, the
/// head was malformed and answered, or the server is shutting down).
async fn read_head(session: &mut ServerSession, shutdown: &ShutdownWatch) -> bool {
    let mut stop = shutdown.clone();
    let stopping = async move {
        // A shutdown watch whose sender is gone never signals.
        if stop.wait_for(|down| *down).await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let read = tokio::select! {
        // A head already buffered is served, not dropped.
        biased;
        read = session.read_request() => Some(read),
        () = stopping => None,
    };
    let read = match read {
        Some(read) => read,
        // Stopping while the connection is idle. A keep-alive client may be sending its next
        // request right now: closing at once would fail it (a read error on its side, the
        // race every graceful restart of a keep-alive server has). So the connection lingers
        // for `DRAIN_LINGER`: a request that arrives is served, its answer saying
        // `Connection: close`, and the client reconnects — to the listening socket, which a
        // graceful upgrade has handed to the new process. Still idle then: closed.
        None => match tokio::time::timeout(DRAIN_LINGER, session.read_request()).await {
            Ok(read) => read,
            Err(_) => return false,
        },
    };
    match read {
        Ok(true) => {}
        Ok(false) => return false,
        Err(e) => {
            if matches!(e.etype(), ErrorType::InvalidHTTPHeader) {
                tracing::debug!(error = %e, "malformed request head");
                if let Err(write) = session.respond_error(400).await {
                    tracing::debug!(error = %write, "cannot send the error response");
                }
            } else {
                tracing::debug!(error = %e, "client went away before its request head");
            }
            session.shutdown().await;
            return false;
        }
    }
    // CONNECT changes how the exchange is framed; no route tunnels.
    if session.req_header().method == Method::CONNECT {
        if let Err(write) = session.respond_error(405).await {
            tracing::debug!(error = %write, "cannot send the error response");
        }
        session.shutdown().await;
        return false;
    }
    true
}

/// The status of the error response for a failed request, as pingora's proxy chooses it:
/// the error's own HTTP status, `502` for an upstream's failure, `400` for a broken request,
/// `500` for an internal failure; 0 (nothing to send) when the client connection is dead.
fn error_status(e: &Error) -> u16 {
    match e.etype() {
        ErrorType::HTTPStatus(code) => *code,
        _ => match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream => match e.etype() {
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                _ => 400,
            },
            ErrorSource::Internal | ErrorSource::Unset => 500,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_status_follows_the_error() {
        let status = |e: Box<Error>| error_status(&e);
        assert_eq!(
            status(Error::new(ErrorType::HTTPStatus(429)).into_in()),
            429
        );
        assert_eq!(status(Error::new(ErrorType::ConnectError).into_up()), 502);
        assert_eq!(status(Error::new(ErrorType::ReadError).into_down()), 0);
        assert_eq!(
            status(Error::new(ErrorType::InvalidHTTPHeader).into_down()),
            400
        );
        assert_eq!(status(Error::new(ErrorType::InternalError)), 500);
    }
}
