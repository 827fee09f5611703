//! The public listeners' connection rules: caps on open connections, a deadline for each
//! request head, and the counts of what they refused.
//!
//! `EdgeApp` (crate-private) stands between pingora's listeners and its HTTP server (the
//! [`HttpApp`](crate::http_app::HttpApp) over the [`Gateway`](crate::Gateway)): it sees
//! each connection once the TCP accept (and the TLS handshake, on a TLS listener) is done,
//! and for as long as it stays open.
//!
//! - **Caps** ([`ConnectionLimits::max_connections`], `max_connections_per_address`): a
//!   connection over either cap is closed at once, before any byte is read. The same check
//!   runs as pingora's connection filter right after `accept`, so a TLS listener spends no
//!   handshake on an address already at its cap. Connections still in their TLS handshake
//!   are not counted (pingora ends a handshake after 60 s). Connections from
//!   [`ConnectionLimits::trusted_proxies`] are not capped per address; the gateway counts
//!   each request they forward, while it is in progress, against its client's address
//!   (`Admission::hold`), and answers `429` over the cap.
//! - **Head deadline** ([`ConnectionLimits::head_timeout`]): a connection's first request
//!   head must arrive complete within the deadline of the accept, and every later head on
//!   a keep-alive connection within the deadline of its first byte; otherwise the
//!   connection is closed (a slowloris client dribbling header lines gets nowhere). The
//!   wait for the next request between two requests is the idle timeout's business, and a
//!   request's body and response are not timed here. For HTTP/2 the deadline covers the
//!   connection preface; the `h2` server bounds the rest.
//! - **Idle, write and per-connection request limits** are applied by pingora's HTTP server
//!   and the gateway ([`ConnectionLimits`] documents each).
//!
//! The gateway tells this layer where requests start and end through a task-local set for
//! the connection's task (`head_received`, `request_done`); HTTP/1 serves a connection's
//! requests on that task.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use pingora::apps::ServerApp;
use pingora::listeners::ConnectionFilter;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, Stream, UniqueID,
    UniqueIDType,
};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Connection-level limits of the public listeners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Time to receive a complete request head: from the accept for a connection's first
    /// request, from the head's first byte for later ones.
    pub head_timeout: Duration,
    /// How long a keep-alive connection may wait for its next request (HTTP/1.1), or an
    /// HTTP/2 connection may stay without streams.
    pub idle_timeout: Duration,
    /// Longest wait for the client to take one write of a response with a known length;
    /// streaming responses (SSE, streams of unknown length) have none.
    pub write_timeout: Duration,
    /// Connections open at once on all public listeners.
    pub max_connections: usize,
    /// Connections open at once from one client address. Requests in progress that one of
    /// [`trusted_proxies`](Self::trusted_proxies) forwarded for a client count against the
    /// client's address as connections would.
    pub max_connections_per_address: usize,
    /// Requests served on one HTTP/1.1 keep-alive connection before it is closed.
    pub max_requests_per_connection: u32,
    /// Proxies (load balancers) whose `X-Forwarded-For` is believed: their connections are
    /// not capped per address; each request they forward counts against its client's
    /// address, the right-most `X-Forwarded-For` hop that is not a trusted proxy.
    pub trusted_proxies: Vec<IpAddr>,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            head_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(30),
            max_connections: 25_000,
            max_connections_per_address: 2_500,
            max_requests_per_connection: 10_000,
            trusted_proxies: Vec::new(),
        }
    }
}

/// Counts of connections held and refused; the application exports them as metrics.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    open: AtomicU64,
    accepted: AtomicU64,
    refused_total: AtomicU64,
    refused_per_address: AtomicU64,
    head_timeouts: AtomicU64,
    write_timeouts: AtomicU64,
}

/// A reading of [`ConnectionStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnectionCounts {
    /// Connections open now (past the TLS handshake).
    pub open: u64,
    /// Connections accepted so far.
    pub accepted: u64,
    /// Connections closed at once because `max_connections` were open.
    pub refused_total: u64,
    /// Connections closed at once because their address had `max_connections_per_address`,
    /// and requests from behind a trusted proxy refused (429) for the same reason.
    pub refused_per_address: u64,
    /// Connections closed because a request head did not arrive within `head_timeout`.
    pub head_timeouts: u64,
    /// Responses cut because the client did not take a write within `write_timeout`.
    pub write_timeouts: u64,
}

impl ConnectionStats {
    /// The counts now.
    pub fn counts(&self) -> ConnectionCounts {
        let get = |n: &AtomicU64| n.load(Ordering::Relaxed);
        ConnectionCounts {
            open: get(&self.open),
            accepted: get(&self.accepted),
            refused_total: get(&self.refused_total),
            refused_per_address: get(&self.refused_per_address),
            head_timeouts: get(&self.head_timeouts),
            write_timeouts: get(&self.write_timeouts),
        }
    }

    /// Counts a response cut by the write timeout.
    pub(crate) fn write_timed_out(&self) {
        self.write_timeouts.fetch_add(1, Ordering::Relaxed);
    }
}

/// The open-connection caps: counts per address, shared by every listener and thread.
#[derive(Debug)]
pub(crate) struct Admission {
    limits: ConnectionLimits,
    stats: Arc<ConnectionStats>,
    per_address: Mutex<HashMap<IpAddr, usize>>,
}

impl Admission {
    pub(crate) fn new(limits: ConnectionLimits, stats: Arc<ConnectionStats>) -> Self {
        Self {
            limits,
            stats,
            per_address: Mutex::new(HashMap::new()),
        }
    }

    /// The limits this admission applies.
    pub(crate) fn limits(&self) -> &ConnectionLimits {
        &self.limits
    }

    /// The counts it keeps.
    pub(crate) fn stats(&self) -> &Arc<ConnectionStats> {
        &self.stats
    }

    /// The address a connection from `ip` counts against: none for a trusted proxy (its
    /// requests count against the clients behind it, [`Admission::hold`]).
    fn counted(&self, ip: Option<IpAddr>) -> Option<IpAddr> {
        ip.filter(|ip| !self.limits.trusted_proxies.contains(ip))
    }

    /// Whether a connection from `ip` would be refused now (counting it as refused if so).
    fn over_cap(&self, ip: Option<IpAddr>) -> bool {
        if self.stats.open.load(Ordering::Relaxed) >= self.limits.max_connections as u64 {
            self.stats.refused_total.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        let Some(ip) = self.counted(ip) else {
            return false;
        };
        let at_cap = self
            .per_address
            .lock()
            .get(&ip)
            .is_some_and(|n| *n >= self.limits.max_connections_per_address);
        if at_cap {
            self.refused_per_address();
        }
        at_cap
    }

    /// Takes a slot for a connection from `ip`, or refuses it (`None`).
    fn admit(self: &Arc<Self>, ip: Option<IpAddr>) -> Option<Slot> {
        let open = self.stats.open.fetch_add(1, Ordering::Relaxed);
        if open >= self.limits.max_connections as u64 {
            self.stats.open.fetch_sub(1, Ordering::Relaxed);
            self.stats.refused_total.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let ip = self.counted(ip);
        if let Some(ip) = ip
            && !self.take_address(ip)
        {
            self.stats.open.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
        Some(Slot {
            admission: Arc::clone(self),
            ip,
            connection: true,
        })
    }

    /// A place for one request that a trusted proxy forwarded for `client`, under the same
    /// per-address cap as a connection of the client's own; `None` (counted as refused)
    /// when the client is at its cap. Held until the response is over.
    pub(crate) fn hold(self: &Arc<Self>, client: IpAddr) -> Option<Slot> {
        self.take_address(client).then(|| Slot {
            admission: Arc::clone(self),
            ip: Some(client),
            connection: false,
        })
    }

    /// Counts one more for `ip` unless it is at its cap (then counts a refusal).
    fn take_address(&self, ip: IpAddr) -> bool {
        let mut per_address = self.per_address.lock();
        let count = per_address.entry(ip).or_insert(0);
        if *count >= self.limits.max_connections_per_address {
            drop(per_address);
            self.refused_per_address();
            return false;
        }
        *count += 1;
        true
    }

    fn refused_per_address(&self) {
        self.stats
            .refused_per_address
            .fetch_add(1, Ordering::Relaxed);
    }
}

/// pingora's filter right after `accept`: refuses an address already at its cap before
/// any TLS work.
#[async_trait]
impl ConnectionFilter for Admission {
    async fn should_accept(&self, addr: Option<&SocketAddr>) -> bool {
        !self.over_cap(addr.map(SocketAddr::ip))
    }
}

/// A place under the caps — an admitted connection's, or a forwarded request's under its
/// client's address — given back when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    admission: Arc<Admission>,
    ip: Option<IpAddr>,
    /// A connection (counted in `open` too), not a forwarded request.
    connection: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(ip) = self.ip {
            let mut per_address = self.admission.per_address.lock();
            if let Some(count) = per_address.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    per_address.remove(&ip);
                }
            }
        }
        if self.connection {
            self.admission.stats.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// pingora's server app for the public listeners: admission and the head deadline around
/// pingora's HTTP server `inner`.
pub(crate) struct EdgeApp<A> {
    inner: Arc<A>,
    admission: Arc<Admission>,
}

impl<A> EdgeApp<A> {
    pub(crate) fn new(inner: A, admission: Arc<Admission>) -> Self {
        Self {
            inner: Arc::new(inner),
            admission,
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for EdgeApp<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let ip = stream
            .get_socket_digest()
            .and_then(|digest| digest.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let _slot = self.admission.admit(ip)?;
        let phase = Arc::new(AtomicU8::new(FIRST_HEAD));
        let stream = Box::new(HeadDeadline {
            inner: stream,
            phase: Arc::clone(&phase),
            seen: FIRST_HEAD,
            started: Some(Instant::now()),
            timeout: self.admission.limits.head_timeout,
            sleep: None,
            preface: 0,
            stats: Arc::clone(&self.admission.stats),
        });
        CONNECTION
            .scope(phase, self.inner.process_new(stream, shutdown))
            .await;
        None
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}

/// The connection's first request head is on its way.
const FIRST_HEAD: u8 = 0;
/// A later request head is on its way (its first byte has been read).
const HEAD: u8 = 1;
/// A request is being served: no deadline.
const SERVING: u8 = 2;
/// The last request is over; the next head's first byte starts its deadline.
const BETWEEN: u8 = 3;

tokio::task_local! {
    /// The phase of the connection whose task this is.
    static CONNECTION: Arc<AtomicU8>;
}

/// Tells the connection's head deadline that a request head has been read whole.
pub(crate) fn head_received() {
    let _ = CONNECTION.try_with(|phase| phase.store(SERVING, Ordering::Relaxed));
}

/// Tells the connection's head deadline that a request is over: the next head gets its own.
pub(crate) fn request_done() {
    let _ = CONNECTION.try_with(|phase| phase.store(BETWEEN, Ordering::Relaxed));
}

/// The HTTP/2 connection preface; a connection that sends it is past its "head".
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A client connection whose reads fail with `TimedOut` once a request head is late.
struct HeadDeadline {
    inner: Stream,
    phase: Arc<AtomicU8>,
    /// The phase this connection last acted on.
    seen: u8,
    /// When the head being awaited started (the accept, or its first byte).
    started: Option<Instant>,
    timeout: Duration,
    /// Armed only while a read waits on an unfinished head.
    sleep: Option<Pin<Box<Sleep>>>,
    /// Bytes of the HTTP/2 preface seen at the start of the connection.
    preface: usize,
    stats: Arc<ConnectionStats>,
}

impl std::fmt::Debug for HeadDeadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadDeadline")
            .field("inner", &self.inner)
            .field("phase", &self.phase.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl HeadDeadline {
    /// Notes bytes just read: a later head starts its clock; the HTTP/2 preface ends the
    /// first head's.
    fn read(&mut self, got: &[u8], phase: u8) {
        match phase {
            BETWEEN => {
                self.started = Some(Instant::now());
                self.seen = HEAD;
                self.phase.store(HEAD, Ordering::Relaxed);
            }
            FIRST_HEAD if self.preface < H2_PREFACE.len() => {
                let want = &H2_PREFACE[self.preface..];
                let n = got.len().min(want.len());
                if got[..n] == want[..n] {
                    self.preface += n;
                    if self.preface == H2_PREFACE.len() {
                        self.seen = SERVING;
                        self.started = None;
                        self.phase.store(SERVING, Ordering::Relaxed);
                    }
                } else {
                    // Not HTTP/2: never matches again.
                    self.preface = usize::MAX;
                }
            }
            _ => {}
        }
    }
}

impl AsyncRead for HeadDeadline {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let phase = this.phase.load(Ordering::Relaxed);
        if phase != this.seen {
            // The gateway moved on: a head arrived, or a request ended.
            this.seen = phase;
            if phase == SERVING || phase == BETWEEN {
                this.started = None;
                this.sleep = None;
            }
        }
        if phase == SERVING {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let got = &buf.filled()[before..];
                if !got.is_empty() {
                    this.read(got, phase);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let Some(started) = this.started else {
                    return Poll::Pending;
                };
                let deadline = started + this.timeout;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if sleep.deadline() != deadline {
                    sleep.as_mut().reset(deadline);
                }
                ready!(sleep.as_mut().poll(cx));
                this.stats.head_timeouts.fetch_add(1, Ordering::Relaxed);
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "request head not received in time",
                )))
            }
        }
    }
}

impl AsyncWrite for HeadDeadline {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for HeadDeadline {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await;
    }
}

impl UniqueID for HeadDeadline {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for HeadDeadline {
    fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<pingora::protocols::ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for HeadDeadline {
    fn get_timing_digest(&self) -> Vec<Option<pingora::protocols::TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for HeadDeadline {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for HeadDeadline {
    fn get_socket_digest(&self) -> Option<Arc<pingora::protocols::SocketDigest>> {
        self.inner.get_socket_digest()
    }
}

#[async_trait]
impl Peek for HeadDeadline {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}
