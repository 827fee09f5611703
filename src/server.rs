//! Running a gateway in the background of a process: tests and embedding.
//!
//! `agentgate serve` runs the edge server on the main thread until a signal; [`Running`]
//! runs the same server on its own thread and stops it on request.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use agentgate_proxy::{ServerSettings, Stop};

use crate::app::App;

/// Worker threads of a background gateway.
const BACKGROUND_THREADS: usize = 2;

/// A gateway serving on its own thread.
#[derive(Debug)]
pub struct Running {
    /// Address it listens on.
    pub addr: SocketAddr,
    /// Its TLS listeners' addresses (`[server.tls] listen` of the app's configuration).
    pub tls_addrs: Vec<SocketAddr>,
    stop: tokio::sync::oneshot::Sender<Stop>,
    thread: std::thread::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Binds `addr` (port 0 picks a free port), and the TLS listeners of the app's
    /// configuration, and serves `app` behind the edge proxy until
    /// [`stop`](Self::stop); a graceful stop drains for at most `grace`.
    pub async fn start(addr: SocketAddr, app: App, grace: Duration) -> std::io::Result<Self> {
        let settings = ServerSettings {
            listen: vec![addr],
            threads: BACKGROUND_THREADS,
            grace,
            upgrade_sock: unique_upgrade_sock(),
            ..app.server_settings()
        };
        let server = app.edge_server(settings)?;
        let addr = server.local_addrs()[0];
        let tls_addrs = server.tls_addrs().to_vec();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let shutdown = app.shutdown.clone();
        let thread = std::thread::Builder::new()
            .name("agentgate-edge".to_owned())
            .spawn(move || {
                server.run(async move {
                    let how = stopped.await.unwrap_or(Stop::Fast);
                    shutdown.cancel(); // streams end, demo runs stop
                    how
                })
            })?;
        Ok(Self {
            addr,
            tls_addrs,
            stop,
            thread,
        })
    }

    /// Stops gracefully (in-flight requests finish, streams end) and waits until it has.
    pub async fn stop(self) -> std::io::Result<()> {
        let _ = self.stop.send(Stop::Graceful);
        let thread = self.thread;
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .map_err(std::io::Error::other)?
            .map_err(|_| std::io::Error::other("edge server thread panicked"))?
    }
}

/// An upgrade socket path no other instance in this process or elsewhere uses.
fn unique_upgrade_sock() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("agentgate-{}-{n}.upgrade.sock", std::process::id()))
}
