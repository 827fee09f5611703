//! Floor reference for `bench/proxy.sh`: the barest reverse proxy hyper can be.
//!
//! A hyper 1 HTTP/1.1 server (keep-alive, `TCP_NODELAY` on accepted sockets) forwards every
//! request to one upstream through a `hyper_util` legacy `Client`: pooled keep-alive
//! connections, `HttpConnector` with `TCP_NODELAY`. Bodies stream both ways: the request's
//! `Incoming` is the client's body, the upstream response's `Incoming` is returned as is. No
//! routing, no header rewriting beyond the hop-by-hop headers, no logging.
//!
//! It is what a tower-native proxy behind pingora could at best reach: agentgate does at
//! least this work per request, so agentgate/hyper shows what agentgate's own layers cost and
//! hyper/nginx what the hyper stack itself costs against nginx.
//!
//! With `--stack`, the same hyper server serves agentgate's own upstream route stack instead
//! (`agentgate::stack::upstream` over an `UpstreamClient`, no policies): what agentgate's
//! tower layers and upstream client cost without pingora's HTTP server in front — the
//! measurement behind the question "pingora's server or our stack?" (`bench/README.md`).
//! A request body is read whole first in this mode (the benchmark sends none).
//!
//! `--threads 1` runs on ONE current-thread tokio runtime (the measured reference). With
//! `--threads N` there are N threads, each with its own current-thread runtime and its own
//! client pool, accepting from one shared listener (no `SO_REUSEPORT`): agentgate's model of
//! one single-threaded runtime per worker.
//!
//! ```text
//! cargo build --release --example bench_hyper_proxy
//! target/release/examples/bench_hyper_proxy --addr 127.0.0.1:9001 --upstream 127.0.0.1:9000
//! ```

use std::net::SocketAddr;

use bytes::Bytes;
use clap::Parser;
use http::uri::{Authority, Scheme};
use http::{HeaderName, Request, Response, StatusCode, Uri, header};
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

type Error = Box<dyn std::error::Error + Send + Sync>;
type Body = Either<Incoming, Empty<Bytes>>;

/// Headers that belong to one connection, never forwarded (RFC 9110 §7.6.1).
static HOP_BY_HOP: [HeaderName; 4] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::UPGRADE,
];

/// Bare hyper reverse proxy: the floor reference of the proxy benchmark.
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on; port 0 picks a free port (printed on stderr).
    #[arg(long, default_value = "127.0.0.1:9001")]
    addr: SocketAddr,
    /// The one upstream every request goes to (host:port, plain HTTP/1.1).
    #[arg(long, default_value = "127.0.0.1:9000")]
    upstream: Authority,
    /// Threads, each with its own current-thread runtime and client pool.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Serve agentgate's upstream route stack instead of the bare forwarder.
    #[arg(long)]
    stack: bool,
}

fn main() -> Result<(), Error> {
    let args = Args::parse();
    let listener = std::net::TcpListener::bind(args.addr)?;
    listener.set_nonblocking(true)?;
    eprintln!("bench_hyper_proxy listening on {}", listener.local_addr()?);
    for _ in 1..args.threads.max(1) {
        let (listener, upstream) = (listener.try_clone()?, args.upstream.clone());
        let stack = args.stack;
        std::thread::spawn(move || {
            // Workers serve forever; returning means setup failed, and then so does the proxy.
            if let Err(e) = worker(listener, upstream, stack) {
                eprintln!("worker: {e}");
                std::process::exit(1);
            }
        });
    }
    // The calling thread is worker 0.
    worker(listener, args.upstream, args.stack)
}

/// One worker: a current-thread runtime accepting from its clone of the shared listener.
fn worker(listener: std::net::TcpListener, upstream: Authority, stack: bool) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if stack {
        runtime.block_on(serve_stack(listener, upstream))
    } else {
        runtime.block_on(serve(listener, upstream))
    }
}

/// Serves agentgate's upstream route stack (see the module docs) on hyper's server.
async fn serve_stack(listener: std::net::TcpListener, upstream: Authority) -> Result<(), Error> {
    use agentgate_proxy::bridge::RequestBody;
    use agentgate_proxy::{Balance, UpstreamClient, UpstreamGroup, UpstreamSettings};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let listener = TcpListener::from_std(listener)?;
    let peer: SocketAddr = upstream.as_str().parse()?;
    let group = UpstreamGroup::new(UpstreamSettings {
        name: "origin".to_owned(),
        peers: vec![peer],
        balance: Balance::RoundRobin,
        connect_timeout: std::time::Duration::from_secs(1),
        read_timeout: Some(std::time::Duration::from_secs(30)),
        idle_timeout: std::time::Duration::from_secs(60),
        retry_connect: true,
        health_check: None,
        tls: None,
    })?;
    let route = agentgate::stack::upstream(
        UpstreamClient::new(std::sync::Arc::new(group)),
        agentgate::stack::Policies::default(),
    );
    loop {
        let (stream, client) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                eprintln!("accept: {e}");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let route = route.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let route = route.clone();
                async move {
                    let (mut parts, body) = req.into_parts();
                    parts
                        .extensions
                        .insert(agentgate_proxy::bridge::ClientAddr(client));
                    let body = if http_body::Body::is_end_stream(&body) {
                        Some(RequestBody::empty())
                    } else {
                        body.collect()
                            .await
                            .ok()
                            .map(|whole| RequestBody::from_bytes(whole.to_bytes()))
                    };
                    let answer = match body {
                        Some(body) => route.oneshot(Request::from_parts(parts, body)).await.ok(),
                        None => None,
                    };
                    Ok::<_, std::convert::Infallible>(answer.unwrap_or_else(|| {
                        let mut failed = Response::new(agentgate_proxy::empty_body());
                        *failed.status_mut() = StatusCode::BAD_GATEWAY;
                        failed
                    }))
                }
            });
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn serve(listener: std::net::TcpListener, upstream: Authority) -> Result<(), Error> {
    let listener = TcpListener::from_std(listener)?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> =
        Client::builder(TokioExecutor::new()).build(connector);
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
        let (client, upstream) = (client.clone(), upstream.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req| forward(client.clone(), upstream.clone(), req));
            // Errors here are clients going away at the end of a load run: not worth a log.
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Sends `req` to the upstream and returns its response; 502 if the upstream fails.
async fn forward(
    client: Client<HttpConnector, Incoming>,
    upstream: Authority,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, http::Error> {
    let mut parts = std::mem::take(req.uri_mut()).into_parts();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(upstream);
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    *req.uri_mut() = Uri::from_parts(parts)?;
    for name in &HOP_BY_HOP {
        req.headers_mut().remove(name);
    }
    match client.request(req).await {
        Ok(mut response) => {
            for name in &HOP_BY_HOP {
                response.headers_mut().remove(name);
            }
            Ok(response.map(Either::Left))
        }
        Err(_) => Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .body(Either::Right(Empty::new())),
    }
}
