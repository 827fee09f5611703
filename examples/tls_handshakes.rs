//! TLS handshake load for `bench/edge.sh`: how many new TLS connections a server completes
//! per second when every connection is a new visitor (a full handshake, no resumption).
//!
//! `--concurrency` tasks each loop for `--warmup` + `--duration` seconds: connect over TCP
//! (`TCP_NODELAY`), complete a TLS handshake (the server's certificate verified against
//! `--ca` for `--server-name`, ALPN `--alpn`, session resumption off), send `close_notify`
//! and close. Handshakes that finish between the end of the warm-up and the end are
//! counted; their time (TCP connect to handshake done) goes into a histogram. A failed
//! connection (refused, reset, timed out, certificate rejected) is counted by kind, and its
//! task pauses 10 ms so a server that refuses everything is not hammered in a tight loop.
//!
//! Output: a summary on stderr and one `RESULT key=value ...` line on stdout, including what
//! the first handshake negotiated (TLS version, cipher suite, key exchange group, ALPN), so
//! two servers compared are seen to do the same work.
//!
//! ```text
//! cargo build --release --example tls_handshakes
//! target/release/examples/tls_handshakes --addr 127.0.0.1:8443 --ca cert.pem \
//!     --concurrency 32 --duration 10
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[path = "support/tls_client.rs"]
mod tls_client;
use tls_client::TlsClient;

/// Highest handshake time the histogram tracks, in µs (1 minute); larger values are clamped.
const HIST_MAX_US: u64 = 60_000_000;

/// TLS handshake load: new connections with full handshakes, as fast as the server takes them.
#[derive(Debug, Parser)]
struct Args {
    /// TLS server address (loopback).
    #[arg(long, default_value = "127.0.0.1:8443")]
    addr: SocketAddr,
    /// PEM file with the CA certificate(s) the server's certificate must chain to.
    #[arg(long)]
    ca: PathBuf,
    /// Name sent as SNI and verified against the certificate.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// ALPN protocols offered, comma-separated, in preference order (a browser's default).
    #[arg(long, default_value = "h2,http/1.1")]
    alpn: String,
    /// Connections in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before counting starts.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Seconds one connect plus handshake may take; slower ones count as `timeout`.
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() {
    let args = Args::parse();
    assert!(
        args.concurrency > 0 && args.duration > 0.0 && args.warmup >= 0.0,
        "--concurrency and --duration must be positive, --warmup not negative"
    );
    let alpn: Vec<&str> = args.alpn.split(',').filter(|p| !p.is_empty()).collect();
    let client = TlsClient::new(&args.ca, &args.server_name, &alpn, false)
        .unwrap_or_else(|e| panic!("TLS client configuration: {e}"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .expect("cannot build the tokio runtime");
    runtime.block_on(run(Arc::new(args), client));
}

/// What one task did in the measured window.
struct TaskReport {
    handshakes: u64,
    errors: BTreeMap<&'static str, u64>,
    latency: Histogram<u64>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).expect("valid histogram bounds")
}

/// What the first completed handshake negotiated, as `key=value` pairs.
static NEGOTIATED: OnceLock<String> = OnceLock::new();

async fn run(args: Arc<Args>, client: TlsClient) {
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(args.warmup);
    let end = measure_from + Duration::from_secs_f64(args.duration);
    let tasks: Vec<_> = (0..args.concurrency)
        .map(|_| {
            tokio::spawn(connect_loop(
                Arc::clone(&args),
                client.clone(),
                measure_from,
                end,
            ))
        })
        .collect();
    let mut handshakes = 0u64;
    let mut errors: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut latency = histogram();
    for task in tasks {
        let report = task.await.expect("handshake task panicked");
        handshakes += report.handshakes;
        for (kind, n) in report.errors {
            *errors.entry(kind).or_default() += n;
        }
        latency
            .add(&report.latency)
            .expect("histograms with equal bounds");
    }
    let per_s = handshakes as f64 / args.duration;
    let error_count: u64 = errors.values().sum();
    let error_kinds = if errors.is_empty() {
        "none".to_owned()
    } else {
        errors
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let ms = |q: f64| {
        if latency.is_empty() {
            f64::NAN
        } else {
            latency.value_at_quantile(q) as f64 / 1000.0
        }
    };
    let negotiated = NEGOTIATED.get().map_or("negotiated=none", String::as_str);
    eprintln!(
        "tls_handshakes: {handshakes} full handshakes in {}s ({per_s:.0}/s) with {} in flight; \
         errors {error_count} ({error_kinds}); connect+handshake p50 {:.2} ms p99 {:.2} ms; {negotiated}",
        args.duration,
        args.concurrency,
        ms(0.5),
        ms(0.99)
    );
    println!(
        "RESULT handshakes={handshakes} per_s={per_s:.1} errors={error_count} \
         error_kinds={error_kinds} p50_ms={:.3} p99_ms={:.3} {negotiated}",
        ms(0.5),
        ms(0.99)
    );
}

/// One task: new connection, full handshake, close, again, until `end`.
async fn connect_loop(
    args: Arc<Args>,
    client: TlsClient,
    measure_from: Instant,
    end: Instant,
) -> TaskReport {
    let mut report = TaskReport {
        handshakes: 0,
        errors: BTreeMap::new(),
        latency: histogram(),
    };
    let timeout = Duration::from_secs_f64(args.timeout);
    loop {
        let began = Instant::now();
        if began >= end {
            return report;
        }
        let outcome = tokio::time::timeout(timeout, handshake(&args, &client)).await;
        let done = Instant::now();
        let measured = done >= measure_from && done <= end;
        let kind = match outcome {
            Ok(Ok(())) => {
                if measured {
                    report.handshakes += 1;
                    let us = u64::try_from((done - began).as_micros()).unwrap_or(u64::MAX);
                    let _ = report.latency.record(us.clamp(1, HIST_MAX_US));
                }
                continue;
            }
            Ok(Err(kind)) => kind,
            Err(_) => "timeout",
        };
        if measured {
            *report.errors.entry(kind).or_default() += 1;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One connection: TCP connect, full handshake, `close_notify`, close.
async fn handshake(args: &Args, client: &TlsClient) -> Result<(), &'static str> {
    let tcp = TcpStream::connect(args.addr).await.map_err(|_| "connect")?;
    tcp.set_nodelay(true).map_err(|_| "connect")?;
    let mut tls = client
        .connector
        .connect(client.server_name.clone(), tcp)
        .await
        .map_err(|_| "handshake")?;
    if NEGOTIATED.get().is_none() {
        let conn = tls.get_ref().1;
        let _ = NEGOTIATED.set(format!(
            "version={:?} suite={:?} kx={:?} alpn={}",
            conn.protocol_version(),
            conn.negotiated_cipher_suite().map(|s| s.suite()),
            conn.negotiated_key_exchange_group().map(|g| g.name()),
            conn.alpn_protocol()
                .map_or_else(|| "none".into(), String::from_utf8_lossy)
        ));
    }
    // The handshake is done; how the peer takes the close does not count.
    let _ = tls.shutdown().await;
    Ok(())
}
