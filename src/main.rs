//! The `agentgate` command: `serve` the gateway, `check-config` a file, `loadtest` a gateway.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use agentgate::app::App;
use agentgate::pid_file::PidFile;
use agentgate::runtime_dir;
use agentgate_config::{Config, LogFormat, ServerConfig};
use agentgate_proxy::{ServerSettings, unix_signals};
use clap::{Parser, Subcommand};

// A faster allocator than glibc's for many small, short-lived allocations across threads
// (headers, bodies, futures): see bench/README.md for its effect on the proxy path.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        /// Graceful upgrade: take the listening sockets over from the running instance
        /// (send it SIGQUIT once this one is waiting).
        #[arg(long)]
        upgrade: bool,
    },
    /// Check a configuration file: prints OK, or every error with its line and column.
    CheckConfig {
        /// Configuration file to check.
        #[arg(required_unless_present = "config", conflicts_with = "config")]
        file: Option<PathBuf>,
        /// Configuration file to check, named as `serve` names it.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Load a running gateway with agent sessions and report latencies and errors.
    ///
    /// Exit status: 0 when every threshold of the scenario holds, 3 when one is breached
    /// (each is listed), 2 for a bad scenario or argument, 1 when a report file cannot be
    /// written.
    Loadtest(LoadtestArgs),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::CheckConfig { file, config } => {
            // clap requires exactly one of the two.
            let Some(file) = file.or(config) else {
                return ExitCode::from(2);
            };
            check_config(&file)
        }
        Command::Loadtest(args) => loadtest(&args),
        Command::Serve {
            config: path,
            upgrade,
        } => {
            let Some(config) = load(&path) else {
                return ExitCode::from(2);
            };
            // Store connections, background tasks and span exports live on this runtime for
            // the whole process; requests are served on the edge server's own runtime.
            let app_runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("agentgate-app")
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    eprintln!("cannot start the application runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let telemetry = match init_tracing(&config, app_runtime.handle()) {
                Ok(telemetry) => telemetry,
                Err(e) => {
                    eprintln!("telemetry: {e}");
                    return ExitCode::from(2);
                }
            };
            let code = match serve(config, &path, upgrade, &app_runtime) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    ExitCode::FAILURE
                }
            };
            // Flush queued spans while the runtime that sends them still runs.
            telemetry.shutdown();
            code
        }
    }
}

/// Loads and validates a config file, printing every error as `FILE:LINE:COLUMN: ...`.
fn load(path: &Path) -> Option<Config> {
    match Config::load(path) {
        Ok(config) => match agentgate::telemetry::check(&config) {
            Ok(()) => Some(config),
            Err(e) => {
                eprintln!("{}: {e}", path.display());
                eprintln!("{}: 1 error(s)", path.display());
                None
            }
        },
        Err(errors) => {
            for e in &errors {
                eprintln!("{}", located(path, e));
            }
            eprintln!("{}: {} error(s)", path.display(), errors.len());
            None
        }
    }
}

/// `FILE:LINE:COL: KEY: message`, as much of it as is known.
fn located(path: &Path, e: &agentgate_config::ConfigError) -> String {
    let at = match (e.line, e.column) {
        (Some(line), Some(col)) => format!("{}:{line}:{col}", path.display()),
        _ => path.display().to_string(),
    };
    match &e.key {
        Some(key) => format!("{at}: {key}: {}", e.message),
        None => format!("{at}: {}", e.message),
    }
}

/// On every SIGHUP: re-reads `path` and reloads `app` from it (the admin endpoints read the
/// running generation, so they follow). A file that does not load or build is rejected with
/// its errors logged; the running configuration keeps serving.
async fn reload_on_sighup(app: Arc<App>, path: PathBuf) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::error!("cannot install the SIGHUP handler; reloading is off");
        return;
    };
    while hangups.recv().await.is_some() {
        let config = match Config::load(&path) {
            Ok(config) => config,
            Err(errors) => {
                for e in &errors {
                    tracing::error!(error = %located(&path, e), "reload rejected");
                }
                app.metrics().config_reload(false);
                continue;
            }
        };
        match app.reload(&config).await {
            Ok(reloaded) => {
                for key in &reloaded.needs_restart {
                    tracing::warn!(key, "changed; keeps its running value until a restart");
                }
                app.metrics().config_reload(true);
                tracing::info!(file = %path.display(), "configuration reloaded");
            }
            Err(e) => {
                tracing::error!(error = %e, "reload rejected");
                app.metrics().config_reload(false);
            }
        }
    }
}

/// What must be flushed when the process ends: the OTLP pipeline, with the `otlp` feature
/// and a `[telemetry]` section.
struct TelemetryGuard(#[cfg(feature = "otlp")] Option<agentgate::telemetry::Telemetry>);

impl TelemetryGuard {
    fn shutdown(self) {
        #[cfg(feature = "otlp")]
        if let Some(telemetry) = self.0 {
            telemetry.shutdown();
        }
    }
}

/// Installs the global subscriber: `RUST_LOG` (default `info`) filtering a layered
/// registry of the fmt layer (text or JSON lines on stdout, credentials redacted; JSON lines
/// carry the request span's fields under `span`) and, with `[telemetry]`, the OpenTelemetry layer exporting spans
/// from `runtime`. `log` records (pingora's) are captured too.
fn init_tracing(
    config: &Config,
    runtime: &tokio::runtime::Handle,
) -> Result<TelemetryGuard, Box<dyn std::error::Error>> {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Every line passes the redactor: dependencies' DEBUG/TRACE lines dump request heads.
    let writer = agentgate::redact::Redacting(std::io::stdout);
    let fmt = match config.server.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer().with_writer(writer).boxed(),
        // The current span (the request's) under "span"; no "spans" list repeating it.
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .json()
            .flatten_event(true)
            .with_span_list(false)
            .boxed(),
    };
    // Client-caused connection failures are counted, and few of them logged.
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(agentgate::client_noise::ClientNoise)
        .with(fmt);
    #[cfg(feature = "otlp")]
    {
        let telemetry = config
            .telemetry
            .as_ref()
            .map(|t| agentgate::telemetry::Telemetry::new(t, runtime.clone()))
            .transpose()?;
        let layer = telemetry.as_ref().map(|t| t.layer());
        registry.with(layer).try_init()?;
        Ok(TelemetryGuard(telemetry))
    }
    #[cfg(not(feature = "otlp"))]
    {
        let _ = runtime; // only the exporter needs it
        registry.try_init()?;
        Ok(TelemetryGuard())
    }
}

/// The warning for a published example credential on a loopback-only gateway (elsewhere
/// validation refuses it).
fn published_warning(key: &str) -> String {
    format!(
        "{key} is an example value published with agentgate: accepted only because every \
         public listener is on loopback; {}",
        agentgate_config::GENERATE_HINT
    )
}

fn serve(
    config: Config,
    path: &Path,
    upgrade: bool,
    app_runtime: &tokio::runtime::Runtime,
) -> Result<(), Box<dyn std::error::Error>> {
    let runtime_dir = private_runtime_dir(&config.server)?;
    for key in config.published_credentials() {
        tracing::warn!("{}", published_warning(&key));
    }
    let app = Arc::new(app_runtime.block_on(App::build(&config))?);
    let settings = ServerSettings {
        upgrade, // the upgrade socket is set below, once the real port is known
        ..app.server_settings()
    };
    let mut server = app.edge_server(settings)?;
    if let Some(addr) = config.server.admin_listen {
        let admin = Arc::new(app.admin());
        let bound = app_runtime.block_on(admin.start(addr, app.shutdown.clone()))?;
        tracing::info!(%bound, "admin listener: /metrics /healthz /readyz /admin/config");
    }
    app_runtime.spawn(reload_on_sighup(Arc::clone(&app), path.to_owned()));
    let port = server.local_addrs().first().map_or(0, |a| a.port());
    let upgrade_sock = config.server.upgrade_sock_path(&runtime_dir, port);
    server.set_upgrade_sock(upgrade_sock.clone());
    let pid_file = PidFile::create(config.server.pid_file_path(&runtime_dir, port), upgrade)?;
    tracing::info!(
        addrs = ?server.local_addrs(),
        threads = config.server.worker_threads(),
        store = ?config.store.kind,
        dispatch = ?config.agent.dispatch,
        pid_file = %pid_file.path().display(),
        upgrade_sock = %upgrade_sock.display(),
        "agentgate listening"
    );
    let shutdown = app.shutdown.clone();
    server.run(async move {
        let how = unix_signals().await;
        tracing::info!(?how, "stopping");
        shutdown.cancel(); // SSE streams end cleanly; clients resume elsewhere
        how
    })?;
    drop(pid_file);
    Ok(())
}

/// Arguments of `agentgate loadtest`.
#[derive(Debug, clap::Args)]
struct LoadtestArgs {
    /// Base URL of the gateway, e.g. http://127.0.0.1:8080 (loopback unless
    /// --allow-remote).
    #[arg(long)]
    target: http::Uri,
    /// API key the simulated agents use (one of the gateway's `auth.api_keys`).
    #[arg(long, env = "AGENTGATE_API_KEY", hide_env_values = true)]
    api_key: String,
    /// Scenario file (see bench/scenarios/smoke.toml for every key).
    #[arg(long)]
    scenario: PathBuf,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also write SVG charts of latency percentiles over time into this directory.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// No progress bar and no table (the exit status and files still tell).
    #[arg(long)]
    quiet: bool,
    /// Allow a target that is not a loopback address.
    #[arg(long)]
    allow_remote: bool,
}

fn loadtest(args: &LoadtestArgs) -> ExitCode {
    use agentgate::loadtest::{self, Scenario};

    let scenario = match Scenario::load(&args.scenario) {
        Ok(scenario) => scenario,
        Err(e) => {
            eprintln!("{}:{e}", args.scenario.display());
            return ExitCode::from(2);
        }
    };
    if let Err(e) = loadtest::check_target(&args.target, args.allow_remote) {
        eprintln!("{e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .thread_name("agentgate-loadtest")
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let finished = match runtime.block_on(loadtest::run(
        &args.target,
        &args.api_key,
        &scenario,
        !args.quiet,
    )) {
        Ok(finished) => finished,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let report = &finished.report;
    if !args.quiet {
        print!("{report}");
    }
    if let Some(path) = &args.json {
        let written = serde_json::to_vec_pretty(report)
            .map_err(|e| e.to_string())
            .and_then(|json| std::fs::write(path, json).map_err(|e| e.to_string()));
        if let Err(e) = written {
            eprintln!("{}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    if let Some(dir) = &args.plot {
        match loadtest::plot::write_charts(dir, &finished.collected) {
            Ok(files) if !args.quiet => {
                for file in files {
                    println!("chart: {}", file.display());
                }
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if report.passed {
        return ExitCode::SUCCESS;
    }
    for t in report.breached() {
        let value = t
            .value
            .map_or_else(|| "no samples".to_owned(), |v| v.to_string());
        eprintln!(
            "threshold breached: {} = {value} (limit {})",
            t.name, t.limit
        );
    }
    ExitCode::from(3)
}

/// The checked runtime directory, created if missing, when the pid file or the upgrade
/// socket lives there; and the directories of those configured elsewhere, checked.
fn private_runtime_dir(server: &ServerConfig) -> std::io::Result<PathBuf> {
    for (key, path) in [
        ("server.pid_file", &server.pid_file),
        ("server.upgrade_sock", &server.upgrade_sock),
    ] {
        if let Some(path) = path {
            runtime_dir::check_file_dir(key, path)?;
        }
    }
    let path = server.runtime_dir_path(runtime_dir::current_uid());
    if server.uses_runtime_dir() {
        runtime_dir::prepare(&path)?;
    }
    Ok(path)
}

/// `check-config`: OK (with a warning per published example credential), or every error.
fn check_config(file: &std::path::Path) -> ExitCode {
    match load(file) {
        Some(config) => {
            if let Err(e) = App::certificates(&config) {
                eprintln!("{}: server.tls.certificates: {e}", file.display());
                return ExitCode::from(2);
            }
            for key in config.published_credentials() {
                eprintln!("{}: warning: {}", file.display(), published_warning(&key));
            }
            println!("{}: OK", file.display());
            ExitCode::SUCCESS
        }
        None => ExitCode::from(2),
    }
}
