use clap::Parser;

/// mimalloc: intake and workers allocate many short-lived strings per
/// message; it is measurably faster than the system allocator for that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use tidings::cli::{Cli, Command};
use tidings::commands;
use tidings::fleet::{self, Roles};
use tidings::traces;
use tidings_core::{Clock, Config};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // A role takes SIGTERM from its first moment: it drains and exits 0, even
    // while it starts (a handler installed later leaves the default action).
    let is_role =
        matches!(cli.command, Command::Intake | Command::Scheduler | Command::Worker { .. } | Command::Callbacks);
    let stop = is_role.then(commands::terminated);
    // A drill's (and a soak's) own lines say what happens; its log shows errors only, unless TIDINGS_LOG says more.
    let drill =
        matches!(&cli.command, Command::Dev(a) if a.drill.is_some()) || matches!(&cli.command, Command::Soak(_));
    let default = if drill { "error" } else { "info,librdkafka=warn,rdkafka=warn" };
    // A role's configuration is read first: it says whether its spans are exported.
    let role = match &cli.command {
        Command::Intake => Some("tidings-intake".to_string()),
        Command::Scheduler => Some("tidings-scheduler".to_string()),
        Command::Worker { channel } => Some(format!("tidings-worker-{channel}")),
        _ => None,
    };
    let config = match role.as_ref().map(|_| load(&cli)).transpose() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let export = match init_tracing(cli.log_json, default, config.as_deref(), role.as_deref().unwrap_or_default()) {
        Ok(export) => export,
        Err(e) => {
            eprintln!("error: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let code = match run(cli, config, stop).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    };
    if let Some(export) = export {
        export.shutdown().await;
    }
    code
}

/// The configuration named by `--config` or `TIDINGS_CONFIG`.
fn load(cli: &Cli) -> anyhow::Result<Arc<Config>> {
    load_from(cli.config.as_deref())
}

fn load_from(path: Option<&std::path::Path>) -> anyhow::Result<Arc<Config>> {
    let path = path.ok_or_else(|| anyhow::anyhow!("no configuration: pass --config or set TIDINGS_CONFIG"))?;
    let config = Config::load(Some(path))?;
    tidings_providers::registry::check(&config)?;
    Ok(Arc::new(config))
}

async fn run(
    cli: Cli,
    role_config: Option<Arc<Config>>,
    stop: Option<impl std::future::Future<Output = ()>>,
) -> anyhow::Result<std::process::ExitCode> {
    let path = cli.config.clone();
    let load = || match &role_config {
        Some(config) => Ok(config.clone()),
        None => load_from(path.as_deref()),
    };
    match cli.command {
        Command::Dev(args) => commands::dev::run(args, cli.config.as_deref()).await,
        Command::Bench(tidings::cli::BenchCommand::Intake(args)) => commands::bench::run(args).await,
        Command::Bench(tidings::cli::BenchCommand::Worker(args)) => commands::bench_worker::run(args).await,
        Command::Bench(tidings::cli::BenchCommand::Callbacks(args)) => commands::bench_callbacks::run(args).await,
        Command::Bench(tidings::cli::BenchCommand::Audit(args)) => commands::bench_audit::run(args).await,
        Command::Soak(args) => commands::soak::run(args).await,
        Command::Templates(c) => commands::templates::run(c, cli.config.as_deref()).await,
        Command::Intake | Command::Scheduler | Command::Worker { .. } | Command::Callbacks => {
            let stop = stop.expect("a role's signal handlers are installed in main");
            tokio::pin!(stop);
            let config = load()?;
            fleet::install_metrics(&config)?;
            let Some(store) = fleet::open_store_waiting(&config, stop.as_mut()).await? else {
                return Ok(std::process::ExitCode::SUCCESS);
            };
            let roles = match cli.command {
                Command::Intake => Roles { intake: true, scheduler: false, callbacks: false, channels: vec![] },
                Command::Callbacks => Roles { intake: false, scheduler: false, callbacks: true, channels: vec![] },
                Command::Scheduler => Roles { intake: false, scheduler: true, callbacks: false, channels: vec![] },
                Command::Worker { channel } => {
                    Roles { intake: false, scheduler: false, callbacks: false, channels: vec![channel] }
                }
                _ => unreachable!("matched above"),
            };
            let fleet = fleet::spawn_fleet(config, store, Clock::system(), roles)?;
            fleet.run_until(stop).await?;
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Dlq(c) => commands::dlq::run(c, load()?).await,
        Command::Audit(args) => commands::audit::run(args, load()?).await,
        Command::Topics(c) => commands::topics::run(c, load()?).await,
        Command::Prefs(c) => commands::prefs::run(c, load()?).await,
        Command::Suppressions(c) => commands::suppressions::run(c, load()?).await,
    }
}

/// Logs to stderr, filtered by `TIDINGS_LOG`; and for a role whose
/// configuration names an OTLP endpoint, spans exported as `service`.
fn init_tracing(
    json: bool,
    default: &str,
    config: Option<&Config>,
    service: &str,
) -> anyhow::Result<Option<tidings::traces::Export>> {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::{EnvFilter, Layer as _};
    let filter = EnvFilter::try_from_env("TIDINGS_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    // Colours only for a person at a terminal: a log file or a collector gets
    // plain text (and every span's fields are formatted without escape codes).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi);
    let fmt = if json { fmt.json().boxed() } else { fmt.boxed() };
    // Two shapes, not an `Option` layer: an absent layer would still make
    // every span callsite interesting, and a span a message be built in vain.
    match config.map(|c| tidings::traces::layer(&c.traces, service)).transpose()?.flatten() {
        Some((otel, export)) => {
            tracing_subscriber::registry()
                .with(fmt.with_filter(filter))
                .with(otel.with_filter(traces::wanted()))
                .init();
            Ok(Some(export))
        }
        None => {
            tracing_subscriber::registry().with(fmt.with_filter(filter)).init();
            Ok(None)
        }
    }
}
