//! SSE load program for `bench/sse.sh`: many stream clients over a few sessions, events
//! appended at a fixed rate, delivery latency and exactness measured end to end.
//!
//! One process plays both sides, over loopback:
//!
//! 1. creates `--sessions` sessions (`POST /v2/sessions`);
//! 2. opens `--clients-per-session` SSE streams per session, at most `--connect-concurrency`
//!    opening at a time; a client counts as connected when its first frame (`retry:`)
//!    arrives. Failures are counted by kind, not retried. The viewers' transport is the one
//!    thing that varies ([`Viewers`]): by default each client has its own HTTP/1.1
//!    connection; with `--h2-connections N` the clients are HTTP/2 streams multiplexed over
//!    N connections (client i on connection i mod N, all N opened first), as browsers
//!    share one connection between tabs. `--tls-ca` makes the viewers speak TLS (ALPN
//!    `http/1.1` or `h2`, certificate verified, no resumption) to `--stream-addr`, e.g. the
//!    gateway's TLS listener; without it HTTP/2 is prior knowledge (h2c). Sessions and
//!    appends always use HTTP/1.1 on `--addr`;
//! 3. prints `CONNECTED ...` on stdout, then waits for `--go-file` to exist (so a script can
//!    measure the idle gateway) or `--idle-secs`;
//! 4. appends `--rate` events/s in total for `--warmup` + `--duration` seconds, spread evenly
//!    over the sessions, one append in flight per session (so each session's events are
//!    numbered in store order); an append that fell behind schedule sends what is due as one
//!    batch. A failed append (error status, transport error, `--request-timeout`) may or may
//!    not have been written, so its numbers are never reused: they are "uncertain", neither
//!    expected nor an error when they arrive. Each event's data is `{"s": <seq in its session>, "t": <µs since start>}`, where
//!    the clock is one `Instant` shared by appender and clients (same process, no skew);
//! 5. prints `APPENDED ...` on stdout, completes every session, which ends its streams, and
//!    waits at most `--drain` seconds for the clients to see the end.
//!
//! Every client checks it received each event of its session exactly once and in order
//! (missing, duplicate, out of order, unexpected sequence numbers), and records
//! `receive − send` for the events sent after the warm-up. Output: a human summary on
//! stderr and one `RESULT key=value ...` line on stdout.
//!
//! ```text
//! cargo build --release --example sse_load
//! target/release/examples/sse_load --addr 127.0.0.1:8080 --api-key dev-api-key-change-me \
//!     --sessions 10 --clients-per-session 10 --rate 100 --duration 5 --warmup 1
//! # the same clients as HTTP/2 streams over 1 TLS connection to the TLS listener:
//! target/release/examples/sse_load --addr 127.0.0.1:8080 --stream-addr 127.0.0.1:8443 \
//!     --tls-ca cert.pem --h2-connections 1 --sessions 10 --clients-per-session 10
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;

#[path = "support/tls_client.rs"]
mod tls_client;
use tls_client::TlsClient;

/// Latency histograms are sharded by client, not one per client: a 3-digit histogram up to
/// 10 minutes is ~140 KiB, too much times 10,000 clients.
const HIST_SHARDS: usize = 64;

/// Highest latency the histograms track, in µs (10 minutes); larger values are clamped.
const HIST_MAX_US: u64 = 600_000_000;

/// Most events the API accepts in one append.
const MAX_BATCH: u64 = 1000;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// SSE load: N sessions × M stream clients, events appended at a fixed rate.
#[derive(Debug, Parser)]
struct Args {
    /// Gateway address (loopback).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// API key (`[auth] api_keys`).
    #[arg(long, default_value = "dev-api-key-change-me")]
    api_key: String,
    /// Sessions to create.
    #[arg(long, default_value_t = 100)]
    sessions: usize,
    /// SSE clients per session.
    #[arg(long, default_value_t = 100)]
    clients_per_session: usize,
    /// Where the SSE clients connect (default `--addr`), e.g. the gateway's TLS listener.
    #[arg(long)]
    stream_addr: Option<SocketAddr>,
    /// 0: each SSE client has its own HTTP/1.1 connection. N > 0: the clients are HTTP/2
    /// streams over N shared connections (prior knowledge, or ALPN `h2` with `--tls-ca`).
    #[arg(long, default_value_t = 0)]
    h2_connections: usize,
    /// SSE clients speak TLS, trusting the CA certificates in this PEM file.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// Name the TLS clients send (SNI) and verify the certificate against.
    #[arg(long, default_value = "localhost")]
    tls_name: String,
    /// Events appended per second, over all sessions.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Seconds of appending before latencies are recorded.
    #[arg(long, default_value_t = 5.0)]
    warmup: f64,
    /// Clients connecting at once.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// Seconds one client may take from connect to its first frame.
    #[arg(long, default_value_t = 30.0)]
    connect_timeout: f64,
    /// Seconds all clients together may take to connect; the rest count as failed.
    #[arg(long, default_value_t = 180.0)]
    connect_phase_timeout: f64,
    /// Once connected, wait for this file to exist before appending (at most `--idle-secs`).
    #[arg(long)]
    go_file: Option<PathBuf>,
    /// Seconds to stay idle after all clients connected (the bound on `--go-file`).
    #[arg(long, default_value_t = 0.0)]
    idle_secs: f64,
    /// Seconds the clients get, after the sessions are completed, to receive the rest.
    #[arg(long, default_value_t = 10.0)]
    drain: f64,
    /// Seconds one append or complete call may take; slower ones count as failed.
    #[arg(long, default_value_t = 5.0)]
    request_timeout: f64,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() {
    let args = Args::parse();
    assert!(
        args.sessions > 0 && args.clients_per_session > 0,
        "need at least one session and one client per session"
    );
    assert!(
        args.rate > 0.0 && args.duration > 0.0 && args.warmup >= 0.0,
        "--rate and --duration must be positive, --warmup not negative"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .expect("cannot build the tokio runtime");
    runtime.block_on(run(args));
}

/// A session under load, as init returned it.
#[derive(Debug, Deserialize)]
struct Session {
    id: String,
    stream_token: String,
}

/// Event data as the appender writes it.
#[derive(Debug, Deserialize)]
struct Stamp {
    /// Sequence number within the session, from 0.
    s: u64,
    /// Send time, µs since the shared clock's start.
    t: u64,
}

/// State shared by the clients and the main task.
struct Shared {
    base: Instant,
    /// Events sent at or after this (µs on `base`) are measured.
    measure_from_us: AtomicU64,
    connected: AtomicUsize,
    failed: AtomicUsize,
    shards: Vec<Mutex<Histogram<u64>>>,
    viewers: Viewers,
}

impl Shared {
    fn now_us(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).expect("valid histogram bounds")
}

/// A client connection: TCP, or TLS over TCP.
type Io = TokioIo<Either<TcpStream, TlsStream<TcpStream>>>;

/// Connects to `addr` (`TCP_NODELAY`), with a TLS handshake when `tls` is given; the server
/// must choose the ALPN protocol `alpn` (the client offers only that one).
async fn dial(addr: SocketAddr, tls: Option<&TlsClient>, alpn: &str) -> Result<Io, BoxError> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let Some(tls) = tls else {
        return Ok(TokioIo::new(Either::Left(tcp)));
    };
    let stream = tls.connector.connect(tls.server_name.clone(), tcp).await?;
    let chosen = stream.get_ref().1.alpn_protocol();
    if chosen != Some(alpn.as_bytes()) {
        return Err(format!(
            "ALPN: offered {alpn}, the server chose {:?}",
            chosen.map(String::from_utf8_lossy)
        )
        .into());
    }
    Ok(TokioIo::new(Either::Right(stream)))
}

/// Opens one HTTP/1.1 connection over `io`; the connection task runs until the sender is
/// dropped.
async fn handshake_http1<B>(io: Io) -> Result<SendRequest<B>, BoxError>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let (sender, conn) = http1::handshake(io).await?;
    tokio::spawn(async move {
        let _ = conn.await; // its errors show up on the requests
    });
    Ok(sender)
}

/// Opens one cleartext HTTP/1.1 connection (sessions and appends).
async fn connect<B>(addr: SocketAddr) -> Result<SendRequest<B>, BoxError>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    handshake_http1(dial(addr, None, "").await?).await
}

/// How the SSE clients reach the gateway: the only part of the program that differs
/// between HTTP/1.1 and HTTP/2 (sessions, appends, checks and the report are shared).
struct Viewers {
    addr: SocketAddr,
    tls: Option<TlsClient>,
    /// `:authority` of HTTP/2 requests and `Host` of HTTP/1.1 ones.
    authority: String,
    scheme: &'static str,
    /// The shared HTTP/2 connections; empty: one HTTP/1.1 connection per client.
    h2: Vec<http2::SendRequest<Empty<Bytes>>>,
}

/// What keeps a client's stream open: its own HTTP/1.1 connection, or its handle on a
/// shared HTTP/2 connection. Held, never read: dropping it closes an HTTP/1.1 connection.
#[allow(dead_code)]
enum ViewerConn {
    Http1(SendRequest<Empty<Bytes>>),
    Http2(http2::SendRequest<Empty<Bytes>>),
}

impl Viewers {
    /// The transport `args` ask for; opens the HTTP/2 connections, if any. A connection
    /// that cannot be opened ends the run (a setup failure: nothing could be measured).
    async fn new(args: &Args) -> Result<Self, BoxError> {
        let addr = args.stream_addr.unwrap_or(args.addr);
        let alpn = if args.h2_connections > 0 {
            "h2"
        } else {
            "http/1.1"
        };
        let tls = match &args.tls_ca {
            Some(ca) => Some(TlsClient::new(ca, &args.tls_name, &[alpn], false)?),
            None => None,
        };
        let (scheme, authority) = match &tls {
            Some(_) => ("https", format!("{}:{}", args.tls_name, addr.port())),
            None => ("http", addr.to_string()),
        };
        let mut h2 = Vec::with_capacity(args.h2_connections);
        for _ in 0..args.h2_connections {
            let io = dial(addr, tls.as_ref(), alpn).await?;
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .handshake(io)
                .await?;
            tokio::spawn(async move {
                let _ = conn.await; // its errors show up on the streams
            });
            h2.push(sender);
        }
        Ok(Self {
            addr,
            tls,
            authority,
            scheme,
            h2,
        })
    }

    /// `http1` or `http2`, and `+tls` over TLS.
    fn describe(&self) -> String {
        let version = if self.h2.is_empty() { "http1" } else { "http2" };
        let tls = if self.tls.is_some() { "+tls" } else { "" };
        format!("{version}{tls}")
    }

    /// Opens client `ix`'s stream: `GET path` with `Accept: text/event-stream`.
    async fn open(
        &self,
        ix: usize,
        path: &str,
    ) -> Result<(ViewerConn, http::Response<Incoming>), &'static str> {
        let request = |uri: String| {
            Request::get(uri)
                .header(header::ACCEPT, "text/event-stream")
                .body(Empty::<Bytes>::new())
                .map_err(|_| "request")
        };
        if self.h2.is_empty() {
            let io = dial(self.addr, self.tls.as_ref(), "http/1.1")
                .await
                .map_err(|_| "connect")?;
            let mut sender = handshake_http1::<Empty<Bytes>>(io)
                .await
                .map_err(|_| "connect")?;
            let mut req = request(path.to_owned())?;
            let host = http::HeaderValue::from_str(&self.authority).map_err(|_| "request")?;
            req.headers_mut().insert(header::HOST, host);
            let resp = sender.send_request(req).await.map_err(|_| "request")?;
            Ok((ViewerConn::Http1(sender), resp))
        } else {
            // HTTP/2 takes scheme and authority from the URI (pseudo-headers), not `Host`.
            let mut sender = self.h2[ix % self.h2.len()].clone();
            let req = request(format!("{}://{}{path}", self.scheme, self.authority))?;
            sender.ready().await.map_err(|_| "connection_closed")?;
            let resp = sender.send_request(req).await.map_err(|_| "request")?;
            Ok((ViewerConn::Http2(sender), resp))
        }
    }
}

/// POSTs JSON; returns the status and the body.
async fn post(
    sender: &mut SendRequest<Full<Bytes>>,
    addr: SocketAddr,
    path: &str,
    api_key: &str,
    body: String,
    timeout: Duration,
) -> Result<(StatusCode, Bytes), BoxError> {
    let req = Request::post(path)
        .header(header::HOST, addr.to_string())
        .header(header::AUTHORIZATION, format!("Bearer {api_key}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))?;
    let call = async {
        sender.ready().await?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok::<_, BoxError>((status, body))
    };
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| BoxError::from(TIMED_OUT))?
}

/// The error message of a call that took longer than `--request-timeout`.
const TIMED_OUT: &str = "timed out";

async fn run(args: Args) {
    let args = Arc::new(args);
    // The HTTP/2 connections, if any, are opened first: a failure ends the run.
    let viewers = Viewers::new(&args).await.unwrap_or_else(|e| {
        panic!(
            "cannot open the viewers' connections to {}: {e}",
            args.stream_addr.unwrap_or(args.addr)
        )
    });
    let shared = Arc::new(Shared {
        base: Instant::now(),
        measure_from_us: AtomicU64::new(u64::MAX),
        connected: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        shards: (0..HIST_SHARDS).map(|_| Mutex::new(histogram())).collect(),
        viewers,
    });

    // 1. Sessions. A setup failure ends the run: nothing could be measured.
    let mut setup = connect::<Full<Bytes>>(args.addr)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the gateway at {}: {e}", args.addr));
    let mut sessions = Vec::with_capacity(args.sessions);
    for _ in 0..args.sessions {
        let (status, body) = post(
            &mut setup,
            args.addr,
            "/v2/sessions",
            &args.api_key,
            "{}".into(),
            Duration::from_secs(30),
        )
        .await
        .unwrap_or_else(|e| panic!("POST /v2/sessions failed: {e}"));
        assert!(
            status == StatusCode::CREATED,
            "POST /v2/sessions answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
        let session: Session = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("unexpected POST /v2/sessions answer ({e}): {body:?}"));
        sessions.push(Arc::new(session));
    }
    eprintln!(
        "sse_load: {} sessions created; clients over {}{}",
        sessions.len(),
        shared.viewers.describe(),
        match shared.viewers.h2.len() {
            0 => " (one connection each)".to_owned(),
            n => format!(" ({n} shared connections)"),
        }
    );

    // 2. Clients.
    let total = args.sessions * args.clients_per_session;
    let (stop_tx, stop_rx) = watch::channel(false);
    let permits = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let connect_start = Instant::now();
    let mut clients: Vec<JoinHandle<ClientReport>> = Vec::with_capacity(total);
    for ix in 0..total {
        let session_ix = ix % args.sessions;
        clients.push(tokio::spawn(client(
            ix,
            session_ix,
            Arc::clone(&sessions[session_ix]),
            Arc::clone(&args),
            Arc::clone(&shared),
            Arc::clone(&permits),
            stop_rx.clone(),
        )));
    }
    let phase_deadline = connect_start + Duration::from_secs_f64(args.connect_phase_timeout);
    let mut last_progress = Instant::now();
    loop {
        let connected = shared.connected.load(Ordering::Relaxed);
        let failed = shared.failed.load(Ordering::Relaxed);
        if connected + failed >= total || Instant::now() >= phase_deadline {
            break;
        }
        if last_progress.elapsed() >= Duration::from_secs(2) {
            eprintln!("sse_load: connecting: {connected} connected, {failed} failed of {total}");
            last_progress = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let connect_secs = connect_start.elapsed().as_secs_f64();
    let connected = shared.connected.load(Ordering::Relaxed);
    let failed = shared.failed.load(Ordering::Relaxed);
    println!(
        "CONNECTED clients={total} connected={connected} failed={failed} pending={} secs={connect_secs:.2}",
        total - connected - failed
    );
    eprintln!(
        "sse_load: all connected: {connected} of {total} in {connect_secs:.1}s ({failed} failed)"
    );

    // 3. Idle, for the script's measurements.
    let idle_until = Instant::now() + Duration::from_secs_f64(args.idle_secs);
    match &args.go_file {
        Some(path) => {
            while !path.exists() && Instant::now() < idle_until {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        None => tokio::time::sleep_until(idle_until.into()).await,
    }

    // 4. Appends.
    let warmup_us = (args.warmup * 1e6) as u64;
    let append_start_us = shared.now_us();
    shared
        .measure_from_us
        .store(append_start_us + warmup_us, Ordering::Relaxed);
    eprintln!(
        "sse_load: appending {} events/s for {}s warm-up + {}s",
        args.rate, args.warmup, args.duration
    );
    let append_start = Instant::now();
    let appenders: Vec<_> = sessions
        .iter()
        .enumerate()
        .map(|(i, s)| {
            tokio::spawn(append(
                i,
                Arc::clone(s),
                Arc::clone(&args),
                Arc::clone(&shared),
                append_start,
            ))
        })
        .collect();
    let mut appended = Vec::with_capacity(sessions.len());
    let mut uncertain = Vec::with_capacity(sessions.len());
    let mut append_errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut measured_appends = 0u64;
    let mut append_hist = histogram();
    for handle in appenders {
        let report = handle.await.expect("appender task panicked");
        appended.push(report.sent);
        uncertain.push(report.uncertain);
        for (kind, n) in report.errors {
            *append_errors.entry(kind).or_default() += n;
        }
        measured_appends += report.measured;
        append_hist
            .add(&report.latency)
            .expect("histograms with equal bounds");
    }
    let append_secs = append_start.elapsed().as_secs_f64();
    println!("APPENDED secs={append_secs:.2}");

    // 5. Complete the sessions (ends their streams), then drain.
    // In parallel, each on its own connection: a slow gateway must not stretch this phase.
    drop(setup);
    let completes: Vec<_> = sessions
        .iter()
        .map(|s| {
            let args = Arc::clone(&args);
            let path = format!("/v2/sessions/{}/complete", s.id);
            tokio::spawn(async move {
                let timeout = Duration::from_secs_f64(args.request_timeout);
                let mut conn = tokio::time::timeout(timeout, connect(args.addr))
                    .await
                    .map_err(|_| BoxError::from(TIMED_OUT))??;
                let (status, _) = post(
                    &mut conn,
                    args.addr,
                    &path,
                    &args.api_key,
                    "{}".into(),
                    timeout,
                )
                .await?;
                if status.is_success() {
                    Ok(())
                } else {
                    Err(BoxError::from(format!("HTTP {status}")))
                }
            })
        })
        .collect();
    let mut complete_errors = 0u64;
    for handle in completes {
        if !matches!(handle.await, Ok(Ok(()))) {
            complete_errors += 1;
        }
    }
    let drain_deadline = Instant::now() + Duration::from_secs_f64(args.drain);
    while clients.iter().any(|c| !c.is_finished()) && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop_tx.send(true);

    // 6. Results.
    let mut totals = Totals::default();
    for handle in clients {
        match handle.await {
            Ok(report) => totals.add(
                &report,
                appended[report.session],
                &uncertain[report.session],
            ),
            Err(_) => *totals.failures.entry("client_panicked").or_default() += 1,
        }
    }
    let mut latency = histogram();
    for shard in &shared.shards {
        let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
        latency.add(&*shard).expect("histograms with equal bounds");
    }
    let summary = Summary {
        args: &args,
        transport: shared.viewers.describe(),
        total,
        connected,
        connect_secs,
        appended: appended.iter().sum(),
        uncertain: uncertain.iter().flatten().map(|r| r.end - r.start).sum(),
        measured_appends,
        append_errors: &append_errors,
        append_secs,
        complete_errors,
        append_hist: &append_hist,
        latency: &latency,
        totals: &totals,
    };
    summary.print();
}

/// What one appender did.
struct AppendReport {
    /// Sequence numbers used: the session's events are numbered `0..sent`.
    sent: u64,
    /// Of them, acknowledged and sent after the warm-up.
    measured: u64,
    /// Numbers of failed appends: maybe written, maybe not.
    uncertain: Vec<Range<u64>>,
    /// Failed appends by kind (`timeout`, `transport`, `connect`, `http_<status>`).
    errors: BTreeMap<String, u64>,
    /// Append call latency, µs.
    latency: Histogram<u64>,
}

/// Appends to one session: its share of the rate, staggered against the other sessions,
/// one call at a time; whatever is due when a call returns goes as one batch.
async fn append(
    ix: usize,
    session: Arc<Session>,
    args: Arc<Args>,
    shared: Arc<Shared>,
    start: Instant,
) -> AppendReport {
    let per_sec = args.rate / args.sessions as f64;
    let phase = ix as f64 / args.sessions as f64 / per_sec;
    let end = start + Duration::from_secs_f64(args.warmup + args.duration);
    let measure_from = shared.measure_from_us.load(Ordering::Relaxed);
    let path = format!("/v2/sessions/{}/events", session.id);
    let timeout = Duration::from_secs_f64(args.request_timeout);
    let mut report = AppendReport {
        sent: 0,
        measured: 0,
        uncertain: Vec::new(),
        errors: BTreeMap::new(),
        latency: histogram(),
    };
    let mut sender: Option<SendRequest<Full<Bytes>>> = None;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let elapsed = (now - start).as_secs_f64() - phase;
        let due = if elapsed >= 0.0 {
            (elapsed * per_sec).floor() as u64 + 1
        } else {
            0
        };
        if due <= report.sent {
            let next = start + Duration::from_secs_f64(phase + report.sent as f64 / per_sec);
            tokio::time::sleep_until(next.min(end).into()).await;
            continue;
        }
        let n = (due - report.sent).min(MAX_BATCH);
        let conn = match sender.as_mut() {
            Some(conn) => conn,
            None => match tokio::time::timeout(timeout, connect(args.addr)).await {
                Ok(Ok(conn)) => sender.insert(conn),
                _ => {
                    *report.errors.entry("connect".into()).or_default() += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let t = shared.now_us();
        let mut body = String::with_capacity(24 + 48 * n as usize);
        body.push_str("{\"events\":[");
        for seq in report.sent..report.sent + n {
            if seq > report.sent {
                body.push(',');
            }
            let _ = write!(
                body,
                "{{\"kind\":\"bench\",\"data\":{{\"s\":{seq},\"t\":{t}}}}}"
            );
        }
        body.push_str("]}");
        let numbers = report.sent..report.sent + n;
        report.sent += n;
        let kind = match post(conn, args.addr, &path, &args.api_key, body, timeout).await {
            Ok((status, _)) if status == StatusCode::OK => {
                if t >= measure_from {
                    report.measured += n;
                }
                let _ = report
                    .latency
                    .record(shared.now_us().saturating_sub(t).clamp(1, HIST_MAX_US));
                continue;
            }
            Ok((status, _)) => format!("http_{}", status.as_u16()),
            Err(e) => {
                sender = None; // the connection's state is unknown: start afresh
                if e.to_string() == TIMED_OUT {
                    "timeout".into()
                } else {
                    "transport".into()
                }
            }
        };
        *report.errors.entry(kind).or_default() += 1;
        report.uncertain.push(numbers);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    report
}

/// What one SSE client saw.
#[derive(Default)]
struct ClientReport {
    session: usize,
    /// Why it never connected, if it did not.
    failure: Option<&'static str>,
    /// How the stream ended abnormally, if it did: `stream_error`, `ended_early`, `stopped`.
    ended: Option<&'static str>,
    /// Sequence numbers received, as a bitset.
    seen: Vec<u64>,
    received: u64,
    duplicates: u64,
    out_of_order: u64,
    /// Events whose data was not a stamp this program wrote.
    malformed: u64,
}

impl ClientReport {
    /// Records sequence number `seq`; `next` is the one expected in order.
    fn see(&mut self, seq: u64, next: &mut u64) {
        self.received += 1;
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if word >= self.seen.len() {
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & bit != 0 {
            self.duplicates += 1;
            return;
        }
        self.seen[word] |= bit;
        if seq < *next {
            self.out_of_order += 1; // an earlier gap filled late
        } else {
            *next = seq + 1;
        }
    }

    fn has(&self, seq: u64) -> bool {
        self.seen
            .get((seq / 64) as usize)
            .is_some_and(|word| word & (1u64 << (seq % 64)) != 0)
    }

    fn distinct_below(&self, limit: u64) -> u64 {
        let mut n = 0u64;
        for (i, word) in self.seen.iter().enumerate() {
            let first = i as u64 * 64;
            if first >= limit {
                break;
            }
            let mask = if limit - first >= 64 {
                u64::MAX
            } else {
                (1u64 << (limit - first)) - 1
            };
            n += u64::from((word & mask).count_ones());
        }
        n
    }
}

/// One SSE client: connect (under the connect semaphore), wait for the first frame, then
/// read events until `complete`, the stream ends, or the stop signal.
async fn client(
    ix: usize,
    session_ix: usize,
    session: Arc<Session>,
    args: Arc<Args>,
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) -> ClientReport {
    let mut report = ClientReport {
        session: session_ix,
        ..ClientReport::default()
    };
    let fail = |report: &mut ClientReport, kind: &'static str| {
        report.failure = Some(kind);
        shared.failed.fetch_add(1, Ordering::Relaxed);
    };
    let permit = tokio::select! {
        permit = permits.acquire_owned() => permit.expect("semaphore never closed"),
        _ = stop.changed() => {
            fail(&mut report, "not_started");
            return report;
        }
    };
    let opening = async {
        let path = format!(
            "/v2/sessions/{}/stream?token={}",
            session.id, session.stream_token
        );
        let (sender, resp) = shared.viewers.open(ix, &path).await?;
        if resp.status() != StatusCode::OK {
            return Err("http_status");
        }
        let mut body = resp.into_body();
        // The first frame (`retry:`) proves the stream is live end to end.
        loop {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref()
                        && !data.is_empty()
                    {
                        return Ok((sender, body, data.clone()));
                    }
                }
                Some(Err(_)) => return Err("stream_error_before_first_frame"),
                None => return Err("ended_before_first_frame"),
            }
        }
    };
    let timeout = Duration::from_secs_f64(args.connect_timeout);
    let opened = tokio::select! {
        opened = tokio::time::timeout(timeout, opening) => opened,
        _ = stop.changed() => {
            fail(&mut report, "stopped_while_connecting");
            return report;
        }
    };
    let (_sender, mut body, first) = match opened {
        Ok(Ok(open)) => open,
        Ok(Err(kind)) => {
            fail(&mut report, kind);
            return report;
        }
        Err(_) => {
            fail(&mut report, "first_frame_timeout");
            return report;
        }
    };
    drop(permit);
    shared.connected.fetch_add(1, Ordering::Relaxed);

    let shard = &shared.shards[ix % HIST_SHARDS];
    let mut lines = LineBuffer::default();
    let mut next = 0u64;
    let mut kind_is_complete = false;
    let mut chunk = first;
    loop {
        let mut complete = false;
        let measure_from = shared.measure_from_us.load(Ordering::Relaxed);
        let mut latencies: Vec<u64> = Vec::new();
        lines.feed(&chunk, |line| {
            if let Some(kind) = line.strip_prefix(b"event:") {
                kind_is_complete = kind.trim_ascii() == b"complete";
            } else if let Some(data) = line.strip_prefix(b"data:") {
                if kind_is_complete {
                    complete = true;
                } else {
                    match serde_json::from_slice::<Stamp>(data.trim_ascii()) {
                        Ok(stamp) => {
                            report.see(stamp.s, &mut next);
                            if stamp.t >= measure_from {
                                latencies.push(shared.now_us().saturating_sub(stamp.t));
                            }
                        }
                        Err(_) => report.malformed += 1,
                    }
                }
            } else if line.is_empty() {
                kind_is_complete = false; // end of frame
            }
        });
        if !latencies.is_empty() {
            let mut hist = shard.lock().unwrap_or_else(|e| e.into_inner());
            for us in latencies {
                let _ = hist.record(us.clamp(1, HIST_MAX_US));
            }
        }
        if complete {
            return report;
        }
        chunk = tokio::select! {
            frame = body.frame() => match frame {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => data,
                    Err(_) => Bytes::new(), // trailers: nothing to parse
                },
                Some(Err(_)) => {
                    report.ended = Some("stream_error");
                    return report;
                }
                None => {
                    report.ended = Some("ended_early");
                    return report;
                }
            },
            _ = stop.changed() => {
                report.ended = Some("stopped_before_complete");
                return report;
            }
        };
    }
}

/// Splits a byte stream into lines (`\n`, optional `\r`), keeping a partial last line.
#[derive(Default)]
struct LineBuffer {
    partial: Vec<u8>,
}

impl LineBuffer {
    fn feed(&mut self, chunk: &[u8], mut on_line: impl FnMut(&[u8])) {
        let mut rest = chunk;
        while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
            let (line, tail) = rest.split_at(pos);
            rest = &tail[1..];
            if self.partial.is_empty() {
                on_line(line.strip_suffix(b"\r").unwrap_or(line));
            } else {
                self.partial.extend_from_slice(line);
                let whole = std::mem::take(&mut self.partial);
                on_line(whole.strip_suffix(b"\r").unwrap_or(&whole));
            }
        }
        self.partial.extend_from_slice(rest);
    }
}

/// Client reports summed up.
#[derive(Default)]
struct Totals {
    received: u64,
    /// Deliveries of events whose append failed (they were written after all).
    uncertain_received: u64,
    missing: u64,
    duplicates: u64,
    out_of_order: u64,
    unexpected: u64,
    malformed: u64,
    /// Connect failures by kind.
    failures: BTreeMap<&'static str, u64>,
    /// Abnormal stream ends by kind (connected clients only).
    ended: BTreeMap<&'static str, u64>,
}

impl Totals {
    fn add(&mut self, report: &ClientReport, appended: u64, uncertain: &[Range<u64>]) {
        if let Some(kind) = report.failure {
            *self.failures.entry(kind).or_default() += 1;
            return;
        }
        if let Some(kind) = report.ended {
            *self.ended.entry(kind).or_default() += 1;
        }
        let distinct = report.distinct_below(appended);
        let all_distinct = report.received - report.duplicates;
        let uncertain_total: u64 = uncertain.iter().map(|r| r.end - r.start).sum();
        let uncertain_seen: u64 = uncertain
            .iter()
            .flat_map(Clone::clone)
            .filter(|&seq| report.has(seq))
            .count() as u64;
        self.received += report.received;
        self.uncertain_received += uncertain_seen;
        self.missing += (appended - uncertain_total) - (distinct - uncertain_seen);
        self.unexpected += all_distinct - distinct;
        self.duplicates += report.duplicates;
        self.out_of_order += report.out_of_order;
        self.malformed += report.malformed;
    }

    fn errors(&self) -> u64 {
        self.missing + self.duplicates + self.out_of_order + self.unexpected + self.malformed
    }
}

/// Everything the final report needs.
struct Summary<'a> {
    args: &'a Args,
    /// The viewers' protocol ([`Viewers::describe`]).
    transport: String,
    total: usize,
    connected: usize,
    connect_secs: f64,
    appended: u64,
    uncertain: u64,
    measured_appends: u64,
    append_errors: &'a BTreeMap<String, u64>,
    append_secs: f64,
    complete_errors: u64,
    append_hist: &'a Histogram<u64>,
    latency: &'a Histogram<u64>,
    totals: &'a Totals,
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        f64::NAN
    } else {
        h.value_at_quantile(q) as f64 / 1000.0
    }
}

fn kinds<K: std::fmt::Display>(map: &BTreeMap<K, u64>) -> String {
    if map.is_empty() {
        return "none".into();
    }
    map.iter()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect::<Vec<_>>()
        .join(",")
}

impl Summary<'_> {
    fn print(&self) {
        let a = self.args;
        let t = self.totals;
        let lat = self.latency;
        let delivered = lat.len();
        let expected = self.measured_appends * a.clients_per_session as u64;
        let failed: u64 = t.failures.values().sum();
        let append_errors: u64 = self.append_errors.values().sum();
        let lat_max = if lat.is_empty() {
            f64::NAN
        } else {
            lat.max() as f64 / 1000.0
        };
        eprintln!();
        eprintln!(
            "sse_load: {} sessions x {} clients = {} clients; {} connected in {:.1}s; connect failures: {}",
            a.sessions,
            a.clients_per_session,
            self.total,
            self.connected,
            self.connect_secs,
            kinds(&t.failures)
        );
        eprintln!(
            "  appended {} events in {:.1}s ({:.0}/s; target {}/s), {} after warm-up; failed appends {} ({}; {} events uncertain); append call p50 {:.2} ms p99 {:.2} ms; complete errors {}",
            self.appended,
            self.append_secs,
            self.appended as f64 / self.append_secs,
            a.rate,
            self.measured_appends,
            append_errors,
            kinds(self.append_errors),
            self.uncertain,
            ms(self.append_hist, 0.5),
            ms(self.append_hist, 0.99),
            self.complete_errors
        );
        eprintln!(
            "  delivered {} of {} measured events to clients ({:.0}/s); latency append->client: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            delivered,
            expected,
            delivered as f64 / a.duration,
            ms(lat, 0.5),
            ms(lat, 0.9),
            ms(lat, 0.99),
            lat_max
        );
        eprintln!(
            "  errors: missing {}, duplicate {}, out_of_order {}, unexpected {}, malformed {}; abnormal stream ends: {}; deliveries of uncertain events: {}",
            t.missing,
            t.duplicates,
            t.out_of_order,
            t.unexpected,
            t.malformed,
            kinds(&t.ended),
            t.uncertain_received
        );
        println!(
            "RESULT transport={} h2_connections={} clients={} connected={} connect_failed={} connect_secs={:.2} \
             appended={} append_rate={:.1} append_errors={} append_error_kinds={} \
             uncertain_events={} uncertain_received={} append_p99_ms={:.3} \
             measured_events={} expected_deliveries={} delivered={} delivered_per_s={:.0} \
             p50_ms={:.3} p90_ms={:.3} p99_ms={:.3} max_ms={:.3} \
             missing={} duplicates={} out_of_order={} unexpected={} malformed={} errors={} \
             complete_errors={} failures={} ended={}",
            self.transport,
            a.h2_connections,
            self.total,
            self.connected,
            failed,
            self.connect_secs,
            self.appended,
            self.appended as f64 / self.append_secs,
            append_errors,
            kinds(self.append_errors),
            self.uncertain,
            t.uncertain_received,
            ms(self.append_hist, 0.99),
            self.measured_appends,
            expected,
            delivered,
            delivered as f64 / a.duration,
            ms(lat, 0.5),
            ms(lat, 0.9),
            ms(lat, 0.99),
            lat_max,
            t.missing,
            t.duplicates,
            t.out_of_order,
            t.unexpected,
            t.malformed,
            t.errors(),
            self.complete_errors,
            kinds(&t.failures),
            kinds(&t.ended)
        );
    }
}
