//! Hosting a tower service in pingora: an axum `Router` served by pingora's listeners
//! through agentgate-proxy's bridge — the way to put any tower `Service` (axum, tonic's
//! HTTP services, a `ServiceBuilder` stack of your own layers) behind pingora.
//!
//! An axum `Router` is a tower `Service`, so [`route_service`] boxes it for a route and the
//! bridge serves it inside pingora: request bodies are streamed into the handlers, and
//! response bodies (SSE included) go out frame by frame, never buffered. The server brings
//! pingora's graceful upgrade and drain-aware shutdown, the connection limits and (with
//! `ServerSettings::certificates`) TLS and HTTP/2.
//!
//! ```text
//! cargo run -p agentgate-proxy --example axum   # serves on 127.0.0.1:8081 until Ctrl-C
//!
//! curl -i http://127.0.0.1:8081/app/hello
//! curl -i -X POST --data-binary 'echo me' http://127.0.0.1:8081/app/echo
//! curl -N http://127.0.0.1:8081/app/ticks  # five SSE events, one per second
//! curl -i http://127.0.0.1:8081/other      # no route: the gateway's JSON 404
//! ```

use std::convert::Infallible;
use std::time::Duration;

use agentgate_proxy::{
    EdgeServer, Gateway, Route, RouteTable, ServerSettings, route_service, unix_signals,
};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::response::IntoResponse;
use axum::routing::{get, post};

/// `GET /app/hello`.
async fn hello() -> &'static str {
    "hello from axum, served by pingora\n"
}

/// `POST /app/echo`: the request body back (read whole; up to 1 MiB).
async fn echo(body: Bytes) -> Bytes {
    body
}

/// `GET /app/ticks`: five SSE events one second apart, each sent as soon as it is made.
async fn ticks() -> impl IntoResponse {
    let events = futures_util::stream::unfold(1u32, |n| async move {
        if n > 5 {
            return None;
        }
        if n > 1 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let event = format!("event: tick\ndata: {n}\n\n");
        Some((Ok::<_, Infallible>(event), n + 1))
    });
    (
        [
            ("content-type", "text/event-stream"),
            ("cache-control", "no-cache"),
        ],
        Body::from_stream(events),
    )
}

fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt().init();

    let app = Router::new()
        .route("/app/hello", get(hello))
        .route("/app/echo", post(echo))
        .route("/app/ticks", get(ticks));

    // Requests under /app/ go to the router; anything else gets the gateway's JSON 404.
    // Upstream routes (an `UpstreamClient` over a group) and more services can be pushed alongside.
    let mut routes = RouteTable::new();
    routes.push(Route {
        name: "app".to_owned(),
        host: None,
        path_prefix: "/app/".to_owned(),
        methods: Vec::new(),
        service: route_service(app),
    });

    let settings = ServerSettings {
        grace: Duration::from_secs(5),
        ..ServerSettings::new(
            vec!["127.0.0.1:8081".parse().expect("a valid address")],
            std::env::temp_dir().join("agentgate-proxy-axum-example.upgrade.sock"),
        )
    };
    let server = EdgeServer::bind(settings, Gateway::new(routes), Vec::new())?;
    tracing::info!(addr = %server.local_addrs()[0], "listening; Ctrl-C stops");
    // Ctrl-C (SIGINT) stops at once, SIGTERM drains in-flight requests first.
    server.run(unix_signals())
}
