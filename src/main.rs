//! The `agentgate` command: `serve` the gateway, `check-config` a file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use agentgate::app::App;
use agentgate_config::Config;
use clap::{Parser, Subcommand};

/// agentgate: an edge gateway for streaming LLM-agent sessions.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the gateway.
    Serve {
        /// Configuration file (see config/agentgate.toml for the annotated reference).
        #[arg(long, short, default_value = "config/agentgate.toml")]
        config: PathBuf,
    },
    /// Check a configuration file: prints OK, or every error with its line and column.
    CheckConfig {
        /// Configuration file to check.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::CheckConfig { file } => match load(&file) {
            Some(_) => {
                println!("{}: OK", file.display());
                ExitCode::SUCCESS
            }
            None => ExitCode::from(2),
        },
        Command::Serve { config } => {
            let Some(config) = load(&config) else {
                return ExitCode::from(2);
            };
            init_tracing();
            match serve(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Loads and validates a config file, printing every error as `FILE:LINE:COLUMN: ...`.
fn load(path: &Path) -> Option<Config> {
    match Config::load(path) {
        Ok(config) => Some(config),
        Err(errors) => {
            for e in &errors {
                match (e.line, e.column) {
                    (Some(line), Some(col)) => eprint!("{}:{line}:{col}: ", path.display()),
                    _ => eprint!("{}: ", path.display()),
                }
                match &e.key {
                    Some(key) => eprintln!("{key}: {}", e.message),
                    None => eprintln!("{}", e.message),
                }
            }
            eprintln!("{}: {} error(s)", path.display(), errors.len());
            None
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
}

fn serve(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let app = App::build(&config).await?;
        let listener = tokio::net::TcpListener::bind(config.server.listen).await?;
        tracing::info!(
            addr = %listener.local_addr()?,
            store = ?config.store.kind,
            dispatch = ?config.agent.dispatch,
            "agentgate listening"
        );
        agentgate::server::serve(
            listener,
            app,
            config.server.shutdown_grace(),
            shutdown_signal(),
        )
        .await;
        Ok(())
    })
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
