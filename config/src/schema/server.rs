use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

/// `[server]`: the listeners and the proxy service's process settings.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Addresses to listen on, each an `IP:port` such as `"0.0.0.0:8080"` or `"[::]:8080"`
    /// (host names are not accepted). In TOML either one string or a list of strings. Port 0
    /// picks a free port; the gateway logs the port it bound. At least one address, none
    /// repeated. Default `["127.0.0.1:8080"]` (loopback only, so a fresh install is not
    /// exposed).
    #[serde(deserialize_with = "one_or_many_addrs")]
    pub listen: Vec<SocketAddr>,
    /// Worker threads of the proxy service's runtime. 0 means one per CPU core (see
    /// [`worker_threads`](Self::worker_threads)). At most 1024. Default 0.
    pub threads: usize,
    /// Private directory for the pid file and the upgrade socket (when those keys are left
    /// unset). The gateway creates it with mode 0700 if it is missing, and refuses to start
    /// when it is a symbolic link, not a directory, not owned by the gateway's user, or open
    /// to group or others (any mode bit in 0o077): another local user must not be able to
    /// pre-create, replace or read what lives there. Must be absolute. Default unset, meaning
    /// `$XDG_RUNTIME_DIR/agentgate` when `XDG_RUNTIME_DIR` is set (an absolute path), else
    /// `<temp dir>/agentgate-<uid>` (see [`runtime_dir_path`](Self::runtime_dir_path)).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_dir: Option<PathBuf>,
    /// File the gateway writes its process id to, created exclusively with mode 0600; a
    /// symbolic link or another user's file there is refused, and so is a directory that
    /// other users can write to. A pid file left by a process that is gone is replaced; one
    /// of a live process is refused, except by `serve --upgrade` (its predecessor's). Default
    /// unset, meaning `<runtime_dir>/agentgate-<port>.pid` where `<port>` is the first bound
    /// listen port, so instances on different ports never collide (see
    /// [`pid_file_path`](Self::pid_file_path)).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid_file: Option<PathBuf>,
    /// Unix socket over which a graceful upgrade hands the listening sockets from the old
    /// process to the new one: start the new binary with `agentgate serve --upgrade`, then
    /// send SIGQUIT to the old process; it passes its sockets over this path, stops
    /// accepting, and drains open requests and streams for `shutdown_grace_secs`. Both
    /// processes must use the same path. The new process creates it with mode 0600 and
    /// accepts sockets only from a process of its own user; its directory must not be
    /// writable by other users. Default unset, meaning
    /// `<runtime_dir>/agentgate-<port>.upgrade.sock` where `<port>` is the first bound listen
    /// port (see [`upgrade_sock_path`](Self::upgrade_sock_path)).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upgrade_sock: Option<PathBuf>,
    /// Largest accepted request body, in bytes; larger bodies get 413. At least 1024.
    /// Default 1_048_576 (1 MiB).
    pub max_body_bytes: u64,
    /// On shutdown, how long open requests and streams may run before they are cut, in seconds.
    /// At most 3600. Default 10.
    pub shutdown_grace_secs: u64,
    /// Address of the admin listener — operators' endpoints, kept off the public
    /// listeners: `/metrics`, `/healthz`, `/readyz` (store reachable, a healthy peer in
    /// every upstream group a route uses), `/admin/config` (the effective configuration,
    /// secrets and URL credentials redacted) and the live status page `/` with its feeds
    /// `/admin/live` and `/admin/sessions/{id}/stream`. An `IP:port`; port 0 picks a free
    /// port. A non-loopback address requires [`admin_tokens`](Self::admin_tokens). Default
    /// unset: no admin listener.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_listen: Option<SocketAddr>,
    /// Host names the admin listener answers to, besides `localhost` and IP addresses
    /// (which it always accepts). A request whose `Host` is another name gets 421: a web
    /// page cannot read the admin endpoints by pointing its own domain at this address (DNS
    /// rebinding). Names only — no port, no scheme; compared case-insensitively. Default `[]`.
    pub admin_hosts: Vec<String>,
    /// Tokens of the admin listener. When any is set, every admin endpoint except
    /// `/healthz` needs one, as `Authorization: Bearer <token>` or, for a browser, the
    /// cookie set by opening `/?token=<token>` once. Required when `admin_listen` is not a
    /// loopback address. Each at least 16 visible ASCII characters, no whitespace, no
    /// duplicates; several allow rotation. Default `[]` (no token: loopback only).
    pub admin_tokens: Vec<String>,
    /// Log line format on standard output: `"text"` (for people) or `"json"` (one JSON
    /// object per line, for log pipelines). `RUST_LOG` sets the levels. Default `"text"`.
    pub log_format: LogFormat,
    /// One access log line per request (target `agentgate::access`): method, path, status,
    /// duration, bytes in and out, route, upstream peer, session id and request id. Default
    /// false (it costs a formatted line per request).
    pub access_log: bool,
    /// Read buffer of each client connection, in bytes, in front of the socket. It is
    /// allocated whole when a connection is accepted and kept for its life, so it is paid
    /// by every idle connection (an SSE viewer) too. 0 (the default) reads straight from the
    /// socket: the HTTP/1 parser reads request heads into a buffer of its own (heads of any
    /// allowed size work), request bodies are read in large chunks, and HTTP/2 frames its
    /// own reads. A buffer saves read calls where the reader asks for little at a time:
    /// TLS records are read 4 KiB at a time, so a TLS listener taking large uploads may
    /// want 16384 or more. At most 1048576. (pingora's own default is 65536.)
    pub read_buffer_bytes: usize,
    /// Accept HTTP/2 with prior knowledge (h2c) on the cleartext `listen` addresses, beside
    /// HTTP/1.1 (a connection starting with the HTTP/2 preface speaks HTTP/2). For clients
    /// and load balancers that speak HTTP/2 in cleartext; browsers use HTTP/2 only over
    /// TLS. Default false.
    pub h2c: bool,
    /// `[server.tls]`: TLS listeners and their certificates. Default unset: cleartext
    /// listeners only (behind a load balancer that terminates TLS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// `[server.limits]`: connection caps and timeouts of the public listeners.
    pub limits: LimitsConfig,
}

/// `[server.tls]`: TLS listeners. TLS 1.2 and 1.3 only; ALPN offers `h2` and `http/1.1`,
/// so browsers speak HTTP/2 (one connection for all their streams). The certificates are
/// read again on SIGHUP: handshakes after a reload present the new files, open connections
/// and streams go on. `check-config` loads them (and reports a file it cannot use).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Addresses of the TLS listeners, as for [`ServerConfig::listen`] (one string or a
    /// list); none may repeat a cleartext address.
    #[serde(deserialize_with = "one_or_many_addrs")]
    pub listen: Vec<SocketAddr>,
    /// The certificates, at least one. A client's SNI name picks the first whose subject
    /// alternative names cover it (wildcards as a client checks them); a client without
    /// SNI, or with a name none covers, gets the first.
    pub certificates: Vec<CertificateConfig>,
}

/// One `[[server.tls.certificates]]` entry: PEM files, relative paths from the working
/// directory.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    /// The certificate chain: the server's certificate first, then its intermediates.
    pub chain: PathBuf,
    /// The certificate's private key (PKCS#8, PKCS#1 or SEC1). Keep it readable by the
    /// gateway's user only.
    pub key: PathBuf,
}

/// `[server.limits]`: what one client can hold on the public listeners. Every limit
/// refused shows in `agentgate_connections_refused_total` or
/// `agentgate_connection_timeouts_total` on `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Time to receive a complete request head, in milliseconds: from the accept for a
    /// connection's first request (the TLS handshake done), from the head's first byte for
    /// later ones. A client dribbling header lines is closed when it runs out. At least
    /// 100. Default 10_000.
    pub head_timeout_ms: u64,
    /// How long an HTTP/1.1 keep-alive connection may wait for its next request, and an
    /// HTTP/2 connection may stay without an open stream, in seconds. 1..=3600.
    /// Default 60.
    pub idle_timeout_secs: u64,
    /// Longest wait for the client to take one write of a response of known length, in
    /// milliseconds; then the response is cut. Streaming responses (SSE) have no write
    /// timeout: the fan-out layer detaches a viewer that stops reading. At least 100.
    /// Default 30_000.
    pub write_timeout_ms: u64,
    /// Connections open at once on all public listeners; over it a new connection is
    /// closed at once. At least 1. Default 25_000.
    pub max_connections: usize,
    /// Connections open at once from one client IP address; over it a new connection from
    /// that address is closed at once. At least 1, at most `max_connections`.
    /// Default 2_500 (a tenth of the total: clients behind one NAT share an address).
    pub max_connections_per_address: usize,
    /// Requests served on one HTTP/1.1 keep-alive connection, after which it is closed
    /// (the client opens another). At least 1. Default 10_000.
    pub max_requests_per_connection: u32,
    /// Load balancers or proxies in front of the gateway whose `X-Forwarded-For` is
    /// believed (IP addresses). Their connections are not capped per address; instead each
    /// request they forward counts, while it is in progress, against its client's address
    /// (the right-most `X-Forwarded-For` hop that is not a trusted proxy) under
    /// `max_connections_per_address`, and over it gets `429` with `Retry-After`.
    /// Default: none.
    pub trusted_proxies: Vec<IpAddr>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            head_timeout_ms: 10_000,
            idle_timeout_secs: 60,
            write_timeout_ms: 30_000,
            max_connections: 25_000,
            max_connections_per_address: 2_500,
            max_requests_per_connection: 10_000,
            trusted_proxies: Vec::new(),
        }
    }
}

/// `server.log_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 8080))],
            threads: 0,
            runtime_dir: None,
            pid_file: None,
            upgrade_sock: None,
            max_body_bytes: 1_048_576,
            shutdown_grace_secs: 10,
            admin_listen: None,
            admin_hosts: Vec::new(),
            admin_tokens: Vec::new(),
            log_format: LogFormat::Text,
            access_log: false,
            read_buffer_bytes: 0,
            h2c: false,
            tls: None,
            limits: LimitsConfig::default(),
        }
    }
}

impl ServerConfig {
    /// [`shutdown_grace_secs`](Self::shutdown_grace_secs) as a [`Duration`].
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    /// [`threads`](Self::threads) with 0 resolved to the number of CPU cores available to
    /// the process (1 if that cannot be determined).
    pub fn worker_threads(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism().map_or(1, NonZeroUsize::get),
            n => n,
        }
    }

    /// [`runtime_dir`](Self::runtime_dir), or its default for the user `uid`:
    /// `$XDG_RUNTIME_DIR/agentgate` when that variable holds an absolute path (systemd's
    /// per-user `/run/user/<uid>`, private already), else `<temp dir>/agentgate-<uid>`.
    pub fn runtime_dir_path(&self, uid: u32) -> PathBuf {
        if let Some(dir) = &self.runtime_dir {
            return dir.clone();
        }
        match std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
            Some(xdg) if xdg.is_absolute() => xdg.join("agentgate"),
            _ => std::env::temp_dir().join(format!("agentgate-{uid}")),
        }
    }

    /// [`pid_file`](Self::pid_file), or `<runtime_dir>/agentgate-<first_port>.pid` when
    /// unset. `runtime_dir` is the resolved [`runtime_dir_path`](Self::runtime_dir_path); `first_port`
    /// is the port actually bound for the first `listen` address.
    pub fn pid_file_path(&self, runtime_dir: &Path, first_port: u16) -> PathBuf {
        self.pid_file
            .clone()
            .unwrap_or_else(|| runtime_dir.join(format!("agentgate-{first_port}.pid")))
    }

    /// [`upgrade_sock`](Self::upgrade_sock), or
    /// `<runtime_dir>/agentgate-<first_port>.upgrade.sock` when unset. `runtime_dir` is the
    /// resolved [`runtime_dir_path`](Self::runtime_dir_path); `first_port` is the port actually bound
    /// for the first `listen` address.
    pub fn upgrade_sock_path(&self, runtime_dir: &Path, first_port: u16) -> PathBuf {
        self.upgrade_sock
            .clone()
            .unwrap_or_else(|| runtime_dir.join(format!("agentgate-{first_port}.upgrade.sock")))
    }

    /// Every public listener's address: `listen`, then `tls.listen`.
    pub fn public_addrs(&self) -> impl Iterator<Item = &SocketAddr> {
        self.listen
            .iter()
            .chain(self.tls.iter().flat_map(|tls| &tls.listen))
    }

    /// Whether the pid file or the upgrade socket lives in the runtime directory (one of
    /// them is left at its default).
    pub fn uses_runtime_dir(&self) -> bool {
        self.pid_file.is_none() || self.upgrade_sock.is_none()
    }
}

/// Deserializes `listen`: one address string or a list of them.
fn one_or_many_addrs<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<SocketAddr>, D::Error> {
    struct OneOrMany;

    impl<'de> Visitor<'de> for OneOrMany {
        type Value = Vec<SocketAddr>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an IP:port address or a list of them")
        }

        fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
            parse_addr(value).map(|addr| vec![addr])
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut addrs = Vec::new();
            while let Some(ListenAddr(addr)) = seq.next_element()? {
                addrs.push(addr);
            }
            Ok(addrs)
        }
    }

    deserializer.deserialize_any(OneOrMany)
}

/// One element of a `listen` list, parsed with the same message as a single address.
struct ListenAddr(SocketAddr);

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Addr;

        impl Visitor<'_> for Addr {
            type Value = ListenAddr;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an IP:port address string")
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
                parse_addr(value).map(ListenAddr)
            }
        }

        deserializer.deserialize_str(Addr)
    }
}

fn parse_addr<E: de::Error>(value: &str) -> Result<SocketAddr, E> {
    value.parse().map_err(|_| {
        E::custom(format!(
            "invalid listen address {value:?}: expected IP:port such as \"0.0.0.0:8080\" \
             or \"[::]:8080\" (host names are not accepted)"
        ))
    })
}
