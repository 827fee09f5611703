//! [`EdgeServer`]: runs the [`Gateway`] on its listeners, with a drain-aware shutdown and
//! pingora's graceful upgrade.
//!
//! - Listeners are bound before anything runs (port 0 works; [`EdgeServer::local_addrs`]
//!   tells the real ports) and handed to pingora's listening service through its listener-fd
//!   table — the same table a graceful upgrade transfers.
//! - The proxy runs on `threads` worker threads, each its own single-threaded runtime.
//! - Cleartext listeners speak HTTP/1.1, and HTTP/2 with prior knowledge (h2c) when
//!   [`ServerSettings::h2c`] is on; TLS listeners ([`ServerSettings::tls_listen`]) present
//!   the [`Certificates`] (SNI, replaceable while serving) and offer `h2` and `http/1.1` by
//!   ALPN. Every listener applies the [`ConnectionLimits`] ([`listener`](crate::listener)).
//! - [`Stop::Graceful`] (SIGTERM): stop accepting, let in-flight requests finish — returning
//!   as soon as there are none (but not before an idle keep-alive connection had a second to
//!   deliver a request already on its way), or when `grace` is over — then stop. [`Stop::Fast`] (SIGINT):
//!   stop at once. pingora's own `Server::run` always sleeps the whole grace period, which
//!   is why the lifecycle is driven here.
//! - Graceful upgrade, pingora's protocol: start the new binary with `upgrade = true`
//!   (agentgate: `serve --upgrade`); it waits on the upgrade socket. Send SIGQUIT to the old
//!   process ([`Stop::Upgrade`]): it sends its listening sockets over the socket, then drains
//!   like a graceful stop. The listening sockets never close, so no connection is refused.
//!   The new process receives them itself ([`upgrade`]: a 0600 socket, only from its own
//!   user); the old one sends with pingora's sender, only to a socket of its own user.

use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::{IntoRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pingora::apps::HttpServerOptions;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::{Fds, ListenFds};
use pingora::services::Service as PingoraService;
use pingora::services::listening::Service;

use crate::Gateway;
use crate::http_app::{DRAIN_LINGER, HttpApp};
use crate::listener::{Admission, ConnectionLimits, ConnectionStats, EdgeApp};
use crate::tls::Certificates;
use crate::upgrade;
use crate::upstream::HealthChecker;

/// Concurrent streams one HTTP/2 client connection may open.
const H2_MAX_STREAMS: u32 = 128;
/// Largest request head an HTTP/2 client may send (decoded), in bytes.
const H2_MAX_HEADER_LIST: u32 = 64 * 1024;

/// How the edge server runs.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Cleartext addresses to listen on (port 0 picks a free port).
    pub listen: Vec<SocketAddr>,
    /// TLS addresses to listen on; they need [`certificates`](Self::certificates).
    pub tls_listen: Vec<SocketAddr>,
    /// The certificates TLS listeners present.
    pub certificates: Option<Arc<Certificates>>,
    /// Accept HTTP/2 with prior knowledge (h2c) on cleartext listeners.
    pub h2c: bool,
    /// Connection caps and timeouts of every listener.
    pub limits: ConnectionLimits,
    /// Where the listeners count connections held and refused.
    pub stats: Arc<ConnectionStats>,
    /// Worker threads of the proxy runtime.
    pub threads: usize,
    /// How long in-flight requests may run on a graceful stop.
    pub grace: Duration,
    /// Unix socket where listening sockets are handed over during a graceful upgrade.
    pub upgrade_sock: PathBuf,
    /// Take the listening sockets over from a running instance instead of binding.
    pub upgrade: bool,
    /// Read buffer of each client connection, in bytes (pingora allocates it whole when
    /// the connection is accepted: it is most of an idle connection's memory). `None`:
    /// pingora's default, 64 KiB.
    pub read_buffer: Option<usize>,
}

impl ServerSettings {
    /// Cleartext listeners on `listen`, serving on one thread, draining for up to 10 s,
    /// the default [`ConnectionLimits`], no TLS, no h2c, pingora's read buffer, the
    /// upgrade socket `upgrade_sock`. Change what you need with struct update syntax.
    pub fn new(listen: Vec<SocketAddr>, upgrade_sock: PathBuf) -> Self {
        Self {
            listen,
            tls_listen: Vec::new(),
            certificates: None,
            h2c: false,
            limits: ConnectionLimits::default(),
            stats: Arc::default(),
            threads: 1,
            grace: Duration::from_secs(10),
            upgrade_sock,
            upgrade: false,
            read_buffer: None,
        }
    }
}

/// How to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Stop accepting, drain in-flight requests (up to the grace period), stop.
    Graceful,
    /// Stop now.
    Fast,
    /// Hand the listening sockets to a new process, then drain like [`Stop::Graceful`].
    Upgrade,
}

/// The gateway, its listeners and background tasks, ready to run.
pub struct EdgeServer {
    settings: ServerSettings,
    gateway: Gateway,
    health: Vec<Arc<dyn HealthChecker>>,
    addrs: Vec<SocketAddr>,
    prebound: Vec<(String, RawFd)>,
}

impl std::fmt::Debug for EdgeServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeServer")
            .field("addrs", &self.addrs)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl EdgeServer {
    /// Binds the listeners (unless upgrading: then they arrive from the old process).
    pub fn bind(
        settings: ServerSettings,
        gateway: Gateway,
        health: Vec<Arc<dyn HealthChecker>>,
    ) -> std::io::Result<Self> {
        if !settings.tls_listen.is_empty() && settings.certificates.is_none() {
            return Err(std::io::Error::other("TLS listeners need certificates"));
        }
        let mut addrs = Vec::with_capacity(settings.listen.len() + settings.tls_listen.len());
        let mut prebound = Vec::new();
        for addr in settings.listen.iter().chain(&settings.tls_listen) {
            if settings.upgrade {
                addrs.push(*addr);
                continue;
            }
            let listener = std::net::TcpListener::bind(addr)?;
            // tokio (inside pingora) needs a non-blocking socket, or accept() blocks a worker.
            listener.set_nonblocking(true)?;
            let bound = listener.local_addr()?;
            addrs.push(bound);
            prebound.push((bound.to_string(), listener.into_raw_fd()));
        }
        Ok(Self {
            settings,
            gateway,
            health,
            addrs,
            prebound,
        })
    }

    /// The addresses the server listens on (real ports, also when configured as 0):
    /// the cleartext ones, then the TLS ones.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The TLS listeners' addresses (real ports).
    pub fn tls_addrs(&self) -> &[SocketAddr] {
        &self.addrs[self.settings.listen.len()..]
    }

    /// Sets the upgrade socket once the real ports are known (a path derived from a port).
    pub fn set_upgrade_sock(&mut self, path: PathBuf) {
        self.settings.upgrade_sock = path;
    }

    /// Serves until `stop` resolves, then stops as it says. Blocks the calling thread.
    pub fn run(self, stop: impl Future<Output = Stop> + Send + 'static) -> std::io::Result<()> {
        // pingora's no-steal runtime: one single-threaded tokio runtime per worker thread,
        // connections spread across them. A connection's tasks never hop threads, which
        // saves the cross-thread wake-ups a work-stealing runtime pays on every request.
        let runtime =
            pingora_runtime::Runtime::new_no_steal(self.settings.threads.max(1), "agentgate-proxy");
        let handle = runtime.get_handle().clone();
        let fds: ListenFds = Arc::new(parking_lot::Mutex::new(Fds::new()));
        let sock = self.settings.upgrade_sock.to_string_lossy().into_owned();
        if self.settings.upgrade {
            let received = upgrade::receive(&self.settings.upgrade_sock, upgrade::RECEIVE_WAIT)?;
            let mut table = fds.lock();
            for (addr, fd) in received {
                table.add(addr, fd);
            }
        } else {
            let mut table = fds.lock();
            for (addr, fd) in self.prebound {
                table.add(addr, fd);
            }
        }
        let in_flight = self.gateway.in_flight();
        let limits = self.settings.limits.clone();
        let admission = Arc::new(Admission::new(
            limits.clone(),
            Arc::clone(&self.settings.stats),
        ));
        let gateway = self.gateway.with_admission(Arc::clone(&admission));
        let mut http = HttpApp::new(gateway);
        let mut options = HttpServerOptions::default();
        options.h2c = self.settings.h2c;
        options.keepalive_request_limit = Some(limits.max_requests_per_connection);
        options.h2_idle_timeout = Some(limits.idle_timeout);
        http.server_options = Some(options);
        let mut h2 = h2::server::Builder::new();
        h2.max_concurrent_streams(H2_MAX_STREAMS)
            .max_header_list_size(H2_MAX_HEADER_LIST);
        http.h2_options = Some(h2);
        let mut proxy = Service::new(
            "agentgate".to_owned(),
            EdgeApp::new(http, Arc::clone(&admission)),
        );
        proxy.set_connection_filter(admission);
        let mut buffers = L4BufferSettings::default();
        if let Some(read) = self.settings.read_buffer {
            buffers = buffers.read(read);
        }
        let cleartext = self.settings.listen.len();
        for (i, addr) in self.addrs.iter().enumerate() {
            let mut listener = ListenerConfig::tcp(addr.to_string()).l4_buffer(buffers);
            if i >= cleartext
                && let Some(certificates) = &self.settings.certificates
            {
                let tls = certificates
                    .tls_settings(true)
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                listener = listener.tls(tls);
            }
            proxy.add_listener(listener);
        }
        let grace = self.settings.grace;
        let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
        // Spawned onto the worker threads, so per-connection tasks spread over all of them.
        let listening = {
            let (fds, shutdown) = (fds.clone(), shutdown_rx.clone());
            handle.spawn(async move { proxy.start_service(Some(fds), shutdown, 1).await })
        };
        for checker in self.health {
            let shutdown = shutdown_rx.clone();
            handle.spawn(async move { checker.run(shutdown).await });
        }
        // The main thread waits for the stop on a runtime of its own: blocking on a worker's
        // handle would let this thread compete with the worker for its scheduler.
        let control = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        control.block_on(async move {
            let how = stop.await;
            if how == Stop::Fast {
                return;
            }
            if how == Stop::Upgrade {
                let sent = upgrade::check_receiver(Path::new(&sock))
                    .map_err(|e| e.to_string())
                    .and_then(|()| {
                        fds.lock()
                            .send_to_sock(sock.as_str())
                            .map_err(|e| e.to_string())
                    });
                match sent {
                    Ok(_) => tracing::info!(%sock, "listening sockets handed to the new process"),
                    Err(e) => tracing::error!(%sock, error = %e, "graceful upgrade failed"),
                }
            }
            // Stop accepting and tell keep-alive connections to close after their request
            // (an idle one lingers a moment for a request on its way: `DRAIN_LINGER`).
            let _ = shutdown_tx.send(true);
            let _ = listening.await;
            tracing::info!(in_flight = in_flight.count(), ?grace, "draining");
            let linger = grace.min(DRAIN_LINGER);
            tokio::time::sleep(linger).await;
            if tokio::time::timeout(grace - linger, in_flight.idle())
                .await
                .is_err()
            {
                tracing::warn!(
                    in_flight = in_flight.count(),
                    "grace period over; cutting the rest"
                );
            }
        });
        runtime.shutdown_timeout(Duration::from_secs(1));
        Ok(())
    }
}

/// Resolves with the stop the process's signals ask for: SIGTERM graceful, SIGINT fast,
/// SIGQUIT graceful upgrade.
pub async fn unix_signals() -> Stop {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut quit)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::quit()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => Stop::Graceful,
        _ = int.recv() => Stop::Fast,
        _ = quit.recv() => Stop::Upgrade,
    }
}
