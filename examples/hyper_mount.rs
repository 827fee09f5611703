//! Mount the agent API in your own hyper server, without the edge proxy.
//!
//! `AgentApi` is a plain tower `Service<http::Request<B>>` for any request body `B`, so any
//! tower-based server can host it. Here: hyper 1 with hyper-util, on 127.0.0.1:8082, using
//! the reference configuration (embedded store, demo agent).
//!
//! ```sh
//! cargo run --example hyper_mount
//! curl -s -X POST localhost:8082/v2/sessions -H 'Authorization: Bearer dev-api-key-change-me'
//! curl -N "<the stream_url it returned>"
//! ```

use std::time::Duration;

use agentgate::app::App;
use agentgate_config::Config;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::from_toml_str(agentgate_config::REFERENCE_TOML).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        lines.join("\n")
    })?;
    let app = App::build(&config).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8082").await?;
    println!("agent API on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = tokio::signal::ctrl_c() => break,
        };
        let service = TowerToHyperService::new(app.api.clone());
        tokio::spawn(async move {
            let conn = auto::Builder::new(TokioExecutor::new());
            let _ = conn.serve_connection(TokioIo::new(stream), service).await;
        });
    }
    // End open SSE streams cleanly before exiting.
    app.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(())
}
