//! Mount the agent API in your own hyper server, without the edge proxy.
//!
//! `AgentApi` is a plain tower `Service<http::Request<B>>` for any request body `B`, so any
//! tower-based server can host it. Here: hyper 1 with hyper-util, on 127.0.0.1:8082, using
//! the reference configuration (embedded store, demo agent).
//!
//! Optional arguments: `[ADDR] [THREADS]` (default `127.0.0.1:8082`, 2 worker threads); the
//! benchmark `bench/agent.sh` uses it as the bare-hyper baseline for the same handler.
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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8082".to_owned());
    let threads = args.next().map_or(Ok(2), |t| t.parse())?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?
        .block_on(serve(&addr))
}

async fn serve(addr: &str) -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::from_toml_str(agentgate_config::REFERENCE_TOML).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        lines.join("\n")
    })?;
    let app = App::build(&config).await?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("agent API on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = tokio::signal::ctrl_c() => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.api());
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
