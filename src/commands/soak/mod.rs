//! `tidings soak --seed <n> --minutes <m>`: the whole fleet as processes
//! (intake, two workers per channel, the scheduler, the callbacks role) on
//! an embedded Kafka broker (or tansu) and a private `redis-server`, under
//! steady traffic of every event type, through fake providers, while a
//! schedule drawn from the seed injects faults, several at once. Then every
//! fault is lifted, the fleet drains, and the run is judged: `tidings audit`
//! over the topics, and what the providers took, message by message.
//!
//! Email goes through two SendGrid accounts, SMS through two Vonage
//! accounts, and webhooks to each user's endpoint: adapters that name the
//! notification in what they send, so the fakes can count each one.

mod config;
mod fakes;
mod judge;
mod procs;
mod schedule;

use crate::cli::{SoakArgs, SoakBroker};
use crate::embedded::{EmbeddedKafka, RedisServer, TansuBroker};
use fakes::Fakes;
use procs::Procs;
use schedule::{Fault, Role, Step};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tidings_core::Config;

/// How long a role asked to stop may take to drain and exit.
const EXIT_WITHIN: Duration = Duration::from_secs(30);

pub async fn run(args: SoakArgs) -> anyhow::Result<ExitCode> {
    // Interrupted, the run is dropped: its processes, Redis and broker with it.
    tokio::select! {
        code = soak(args) => code,
        _ = super::terminated() => anyhow::bail!("interrupted; the fleet, Redis and the broker are stopped"),
    }
}

async fn soak(args: SoakArgs) -> anyhow::Result<ExitCode> {
    let run_for = Duration::from_secs_f64(args.minutes * 60.0);
    let steps = schedule::schedule(args.seed, run_for, args.mean_gap);
    let replay = replay_command(&args);
    if !args.json {
        println!(
            "tidings soak: seed {}, {:.1} minutes, {} faults; replay: {replay}",
            args.seed,
            args.minutes,
            steps.len()
        );
    }
    let dir_path = std::env::temp_dir().join(format!("tidings-soak-{}-{}", args.seed, std::process::id()));
    std::fs::create_dir_all(&dir_path)?;
    let mut broker = Broker::start(args.broker)?;
    let mut redis = RedisServer::start()?;
    let (fakes, fakes_port) = Fakes::serve().await?;
    let callbacks_port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let text = config::text(&broker.bootstrap_servers(), &redis.url(), fakes_port, callbacks_port, &args.templates)?;
    let file = dir_path.join("tidings.toml");
    std::fs::write(&file, &text)?;
    let config = Arc::new(Config::from_toml(&text)?);
    broker.create_topics(&config).await?;
    let started = chrono::Utc::now();
    let users = config::users(args.seed, args.users, fakes_port, started, run_for);
    let store = crate::fleet::open_store(&config).await?;
    let (_, rejected) = super::prefs::import(store.as_ref(), &users.jsonl()).await?;
    anyhow::ensure!(rejected.is_empty(), "users rejected: {rejected:?}");

    let mut procs = Procs::new(&file, &dir_path, EXIT_WITHIN)?;
    for role in Role::all() {
        procs.add(&role.to_string(), &role_args(role))?;
    }
    let fed = Arc::new(AtomicUsize::new(0));
    let feeder = tokio::spawn(config::feed(
        config.clone(),
        args.seed,
        args.rate,
        args.users,
        run_for,
        args.templates.clone(),
        fed.clone(),
    ));

    let clock = Instant::now();
    let injected = inject(&steps, clock, &mut procs, &fakes, &mut redis, &mut broker, args.json).await?;
    let (feed_failures, usable) = feeder.await??;
    // Every fault has ended with the run; the fleet drains, then stops as
    // on a rollout (what hangs or fails on this SIGTERM is judged too).
    fakes.lift_all();
    let report = judge::drain(&config, &mut procs, Duration::from_secs(args.drain_minutes * 60)).await?;
    procs.stop_all().await?;
    let run = judge::Run { faults: injected, events: fed.load(Ordering::Relaxed), feed_failures, usable };
    let verdict = judge::judge(&config, &args, &users, &fakes, report, run, &procs.crashes).await?;
    let json = serde_json::to_string_pretty(&verdict)?;
    std::fs::write(dir_path.join("verdict.json"), &json)?;
    if args.json {
        println!("{json}");
    } else {
        verdict.print();
    }
    if !verdict.passed() {
        // What the failure left is kept for whoever replays it.
        eprintln!("the soak FAILED; logs in {}; replay: {replay}", dir_path.display());
        return Ok(ExitCode::FAILURE);
    }
    if !args.keep {
        let _ = std::fs::remove_dir_all(&dir_path);
    }
    Ok(ExitCode::SUCCESS)
}

fn replay_command(args: &SoakArgs) -> String {
    let mut command = format!("tidings soak --seed {} --minutes {}", args.seed, args.minutes);
    if args.broker == SoakBroker::Tansu {
        command.push_str(" --broker tansu");
    }
    if args.rate != SoakArgs::RATE {
        command.push_str(&format!(" --rate {}", args.rate));
    }
    if args.mean_gap != SoakArgs::MEAN_GAP {
        command.push_str(&format!(" --mean-gap {}", humantime::format_duration(args.mean_gap)));
    }
    if args.users != SoakArgs::USERS {
        command.push_str(&format!(" --users {}", args.users));
    }
    command
}

fn role_args(role: Role) -> Vec<&'static str> {
    match role {
        Role::Intake => vec!["intake"],
        Role::Scheduler => vec!["scheduler"],
        Role::Callbacks => vec!["callbacks"],
        Role::Worker(lane, _) => vec!["worker", "--channel", lane.channel()],
    }
}

/// Runs the schedule: each fault at its offset from `clock`, lifted when
/// it ends; between them, crashed roles are started again. Returns how
/// many faults of each kind were injected.
async fn inject(
    steps: &[Step],
    clock: Instant,
    procs: &mut Procs,
    fakes: &Fakes,
    redis: &mut RedisServer,
    broker: &mut Broker,
    quiet: bool,
) -> anyhow::Result<BTreeMap<&'static str, usize>> {
    // (when, begins, step): ends sort before beginnings at the same instant.
    let mut actions: Vec<(Duration, bool, usize)> =
        steps.iter().enumerate().flat_map(|(i, s)| [(s.at, true, i), (s.until(), false, i)]).collect();
    actions.sort_by_key(|&(at, begins, i)| (at, begins, i));
    let mut injected: BTreeMap<&'static str, usize> = BTreeMap::new();
    // Down-counts: a resource two overlapping faults take comes back when both end.
    let mut redis_down = 0usize;
    let mut broker_down = 0usize;
    let mut roles_down: BTreeMap<String, usize> = BTreeMap::new();
    for (at, begins, i) in actions {
        let when = tokio::time::Instant::from_std(clock + at);
        while tokio::time::Instant::now() < when {
            procs.watch()?;
            tokio::time::sleep_until(when.min(tokio::time::Instant::now() + Duration::from_millis(500))).await;
        }
        let step = steps[i];
        if begins && !quiet {
            println!("{:>7.1}s  {} for {:.1}s", at.as_secs_f64(), step.fault, step.lasting.as_secs_f64());
        }
        if begins {
            *injected.entry(step.fault.kind()).or_default() += 1;
        }
        match step.fault {
            Fault::Kill(role) | Fault::Term(role) => {
                let name = role.to_string();
                let down = roles_down.entry(name.clone()).or_default();
                if begins {
                    *down += 1;
                    if matches!(step.fault, Fault::Kill(_)) {
                        procs.kill(&name);
                    } else {
                        procs.term(&name);
                    }
                } else {
                    *down -= 1;
                    if *down == 0 {
                        procs.start(&name)?;
                    }
                }
            }
            Fault::Provider(endpoint, mode) => {
                if begins {
                    fakes.set(i, endpoint, mode);
                } else {
                    fakes.lift(i);
                }
            }
            Fault::InvalidRecipients => {
                if begins {
                    fakes.refuse_recipients(i);
                } else {
                    fakes.lift(i);
                }
            }
            Fault::RedisDown => {
                if begins {
                    redis_down += 1;
                    redis.stop();
                } else {
                    redis_down -= 1;
                    if redis_down == 0 {
                        redis.restart()?;
                    }
                }
            }
            Fault::BrokerDown => {
                if begins {
                    broker_down += 1;
                    broker.down()?;
                } else {
                    broker_down -= 1;
                    if broker_down == 0 {
                        broker.up()?;
                    }
                }
            }
            Fault::ExtraWorker(lane) => {
                let name = format!("worker-{}-extra-{i}", lane.channel());
                if begins {
                    procs.add(&name, &role_args(Role::Worker(lane, 2)))?;
                } else {
                    procs.remove(&name);
                }
            }
        }
    }
    procs.watch()?;
    Ok(injected)
}

/// The Kafka broker of the run.
enum Broker {
    Embedded(EmbeddedKafka),
    Tansu(TansuBroker),
}

impl Broker {
    fn start(kind: SoakBroker) -> anyhow::Result<Self> {
        Ok(match kind {
            SoakBroker::Embedded => Broker::Embedded(EmbeddedKafka::start(1).map_err(|e| anyhow::anyhow!("{e}"))?),
            // SQLite storage: what was written outlives the broker's process.
            SoakBroker::Tansu => Broker::Tansu(TansuBroker::start_durable()?),
        })
    }

    fn bootstrap_servers(&self) -> String {
        match self {
            Broker::Embedded(k) => k.bootstrap_servers().to_string(),
            Broker::Tansu(t) => t.bootstrap_servers(),
        }
    }

    async fn create_topics(&self, config: &Config) -> anyhow::Result<()> {
        for topic in super::topics::topics(config) {
            match self {
                Broker::Embedded(k) => {
                    k.create_topic(&topic, config.kafka.partitions).map_err(|e| anyhow::anyhow!("{topic}: {e}"))?
                }
                Broker::Tansu(_) => {}
            }
        }
        if let Broker::Tansu(_) = self {
            let code = super::topics::create(config, false).await?;
            anyhow::ensure!(code == ExitCode::SUCCESS, "topics create failed on tansu");
        }
        Ok(())
    }

    fn down(&mut self) -> anyhow::Result<()> {
        match self {
            Broker::Embedded(k) => k.broker_down(1).map_err(|e| anyhow::anyhow!("{e}")),
            Broker::Tansu(t) => {
                t.stop();
                Ok(())
            }
        }
    }

    fn up(&mut self) -> anyhow::Result<()> {
        match self {
            Broker::Embedded(k) => k.broker_up(1).map_err(|e| anyhow::anyhow!("{e}")),
            Broker::Tansu(t) => Ok(t.restart()?),
        }
    }
}
