use clap::Parser;

/// mimalloc: intake and workers allocate many short-lived strings per
/// message; it is measurably faster than the system allocator for that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use tidings::cli::{Cli, Command};
use tidings::commands;
use tidings::fleet::{self, Roles};
use tidings_core::{Clock, Config};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // A drill's own lines say what happens; its log shows errors only, unless TIDINGS_LOG says more.
    let drill = matches!(&cli.command, Command::Dev(a) if a.drill.is_some());
    init_tracing(cli.log_json, if drill { "error" } else { "info,librdkafka=warn,rdkafka=warn" });
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    let load = || -> anyhow::Result<Arc<Config>> {
        let path = cli
            .config
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("no configuration: pass --config or set TIDINGS_CONFIG"))?;
        Ok(Arc::new(Config::load(Some(path))?))
    };
    match cli.command {
        Command::Dev(args) => commands::dev::run(args, cli.config.as_deref()).await,
        Command::Bench(tidings::cli::BenchCommand::Intake(args)) => commands::bench::run(args).await,
        Command::Bench(tidings::cli::BenchCommand::Worker(args)) => commands::bench_worker::run(args).await,
        Command::Templates(c) => commands::templates::run(c, cli.config.as_deref()),
        Command::Intake | Command::Scheduler | Command::Worker { .. } => {
            let config = load()?;
            fleet::install_metrics(&config)?;
            let store = fleet::open_store(&config).await?;
            let roles = match cli.command {
                Command::Intake => Roles { intake: true, scheduler: false, channels: vec![] },
                Command::Scheduler => Roles { intake: false, scheduler: true, channels: vec![] },
                Command::Worker { channel } => Roles { intake: false, scheduler: false, channels: vec![channel] },
                _ => unreachable!("matched above"),
            };
            let fleet = fleet::spawn_fleet(config, store, Clock::system(), roles)?;
            fleet.run_until(commands::terminated()).await?;
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Dlq(c) => commands::dlq::run(c, load()?).await,
        Command::Topics(c) => commands::topics::run(c, load()?).await,
        Command::Prefs(c) => commands::prefs::run(c, load()?).await,
    }
}

fn init_tracing(json: bool, default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("TIDINGS_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
