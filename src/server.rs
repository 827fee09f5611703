//! Serving the API over HTTP/1.1 and HTTP/2 with hyper-util, until the pingora edge proxy
//! takes over serving (its own issue).
//!
//! Graceful shutdown: stop accepting, cancel the app's shutdown token (open SSE streams end
//! cleanly, so their connections can close), let in-flight requests finish within the grace
//! period, then return.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::app::App;

/// Serves `app` on `listener` until `signal` resolves, then shuts down gracefully, waiting
/// at most `grace` for open connections.
pub async fn serve(
    listener: TcpListener,
    app: App,
    grace: Duration,
    signal: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    tokio::pin!(signal);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut signal => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.api.clone());
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    tracing::info!("shutting down: ending streams, draining connections");
    app.shutdown.cancel();
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(?grace, "grace period over; closing remaining connections");
    }
}

/// A gateway serving in the background (tests and embedding).
#[derive(Debug)]
pub struct Running {
    /// Address it listens on.
    pub addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Binds `addr` (port 0 picks a free port) and serves `app` in the background.
    pub async fn start(addr: SocketAddr, app: App, grace: Duration) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(serve(listener, app, grace, async {
            let _ = stopped.await;
        }));
        Ok(Self { addr, stop, task })
    }

    /// Shuts down gracefully and waits until it has.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}
