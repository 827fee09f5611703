//! Origin server for the benchmarks in `bench/`: the cheapest HTTP/1.1 server hyper can be.
//!
//! Every request gets `200` with the fixed body `hello from origin\n` (content-length set);
//! `GET /healthz` gets `200 ok\n`; a `GET` of any path ending in `/stream` gets an endless `text/event-stream`, an
//! event every 100 ms. Connections are kept alive and `TCP_NODELAY` is set, as
//! nginx does, so the origin never adds Nagle delays to a proxy measurement.
//!
//! It is the upstream of `bench/proxy.sh` and the "bare hyper" baseline of `bench/agent.sh`:
//! whatever a proxy or handler in front of it costs is measured against this.
//!
//! ```text
//! cargo build --release --example bench_origin
//! target/release/examples/bench_origin --addr 127.0.0.1:9000 --threads 1
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http::{Request, Response, header};
use http_body_util::{Either, Full, StreamBody};
use hyper::body::Frame;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const BODY: &[u8] = b"hello from origin\n";
const HEALTH_BODY: &[u8] = b"ok\n";

/// Benchmark origin: answers every request 200 with a small fixed body.
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on; port 0 picks a free port (printed on stderr).
    #[arg(long, default_value = "127.0.0.1:9000")]
    addr: SocketAddr,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Milliseconds every answer (but `/healthz`) waits before it is sent: a fixed service
    /// time, so a route's capacity is known (`bench/faults.sh`, overload). Default 0.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(serve(args.addr, Duration::from_millis(args.delay_ms)))
}

async fn serve(addr: SocketAddr, delay: Duration) -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind(addr).await?;
    eprintln!("bench_origin listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            // Out of file descriptors and the like: keep serving the connections we have.
            Err(e) => {
                eprintln!("accept: {e}");
                continue;
            }
        };
        // Best effort: a socket that refuses NODELAY still serves, just slower.
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            // Errors here are clients going away at the end of a load run: not worth a log.
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(
                    TokioIo::new(stream),
                    service_fn(move |req| respond(req, delay)),
                )
                .await;
        });
    }
}

/// The answer's body: the fixed one, or the endless stream of `/stream`.
type Body = Either<Full<Bytes>, StreamBody<Ticks>>;

/// `/stream`'s frames: an SSE event every 100 ms, forever.
type Ticks = futures_util::stream::BoxStream<'static, Result<Frame<Bytes>, Infallible>>;

async fn respond(req: Request<Incoming>, delay: Duration) -> Result<Response<Body>, Infallible> {
    let body = match req.uri().path() {
        "/healthz" => HEALTH_BODY,
        path if path.ends_with("/stream") => return Ok(stream()),
        _ => {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            BODY
        }
    };
    let mut response = Response::new(Either::Left(Full::new(Bytes::from_static(body))));
    response.headers_mut().insert(
        header::CONTENT_LENGTH,
        header::HeaderValue::from(body.len()),
    );
    Ok(response)
}

/// `GET .../stream`: `text/event-stream` that never ends (`bench/faults.sh` kills the origin
/// under it, mid-response).
fn stream() -> Response<Body> {
    let ticks = futures_util::stream::unfold(0u64, |n| async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let event = Bytes::from(format!("id: {n}\ndata: tick {n}\n\n"));
        Some((Ok(Frame::data(event)), n + 1))
    });
    let mut response = Response::new(Either::Right(StreamBody::new(Box::pin(ticks) as Ticks)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    response
}
