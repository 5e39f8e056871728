//! Building the roles from a configuration and running them as tasks.

use anyhow::Context as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tidings_core::progress::Progress;
use tidings_core::store::{RedisStore, SharedStore};
use tidings_core::telemetry::Health;
use tidings_core::{Channel, Clock, Config};
use tidings_providers::Provider;
use tidings_workers::render::Renderer;
use tidings_workers::service::Worker;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Connects to the configured Redis.
pub async fn open_store(config: &Config) -> anyhow::Result<SharedStore> {
    let r = &config.redis;
    let store = async {
        RedisStore::connect(&r.url, &r.key_prefix)
            .await?
            .replicate_deferrals(&r.url, r.deferral_replicas, r.deferral_wait)
            .await
    }
    .await
    .with_context(|| format!("cannot reach Redis at {}", tidings_core::redact::credentials(&r.url)))?;
    Ok(Arc::new(store))
}

/// [`open_store`] for a role: one started while Redis is down waits for it
/// (its probes served meanwhile: alive, not ready) instead of exiting into
/// a crash loop whose back-off would outlast the outage. `None` when `stop`
/// completes first.
pub async fn open_store_waiting(
    config: &Config,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<Option<SharedStore>> {
    let error = match open_store(config).await {
        Ok(store) => return Ok(Some(store)),
        Err(e) => e,
    };
    tracing::warn!(error = format!("{error:#}"), "Redis is unreachable; waiting for it");
    let health = Health::shared();
    let _unready = health.check("redis answers", false);
    let server = match config.metrics.listen {
        Some(addr) => Some(crate::serve::start(addr, health.clone())?),
        None => None,
    };
    tokio::pin!(stop);
    let mut wait = Duration::from_millis(250);
    let store = loop {
        tokio::select! {
            _ = &mut stop => break None,
            _ = tokio::time::sleep(wait) => {}
        }
        match open_store(config).await {
            Ok(store) => break Some(store),
            Err(e) => {
                wait = (wait * 2).min(Duration::from_secs(5));
                tracing::warn!(error = format!("{e:#}"), "Redis is still unreachable");
            }
        }
    };
    // The roles serve the endpoints from here on, on the same address.
    if let Some(server) = server {
        server.abort();
        let _ = server.await;
    }
    Ok(store)
}

/// The providers of `channel`, in failover order. A provider that cannot
/// deliver on the channel it is listed for is a configuration error.
pub fn providers(config: &Config, channel: Channel) -> anyhow::Result<Vec<Arc<dyn Provider>>> {
    let names = config.channels.get(&channel).map(|c| c.providers.as_slice()).unwrap_or_default();
    names
        .iter()
        .map(|name| {
            let c = config.providers.get(name).with_context(|| format!("provider `{name}` is not configured"))?;
            let provider = tidings_providers::build(name, c)?;
            anyhow::ensure!(
                provider.serves(channel),
                "channels.{channel}: provider `{name}` does not deliver {channel}"
            );
            Ok(provider)
        })
        .collect()
}

/// The templates folder: as configured, else the one shipped beside the sources.
pub fn templates_dir(config: &Config) -> PathBuf {
    let dir = &config.templates.dir;
    if dir.is_relative() && !dir.exists() {
        let shipped = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(dir);
        if shipped.exists() {
            return shipped;
        }
    }
    dir.clone()
}

/// Installs the Prometheus recorder (once a process) when `[metrics] listen`
/// is set; the roles register their series with it as they start, so it
/// comes first. [`spawn_fleet`] serves it, with the health endpoints.
pub fn install_metrics(config: &Config) -> anyhow::Result<()> {
    if config.metrics.listen.is_some() {
        crate::serve::recorder()?;
    }
    Ok(())
}

/// Which roles a process runs.
#[derive(Debug, Clone)]
pub struct Roles {
    pub intake: bool,
    pub scheduler: bool,
    /// Provider callbacks and unsubscribe links in, on `callbacks.listen`.
    pub callbacks: bool,
    pub channels: Vec<Channel>,
}

impl Roles {
    /// Intake, the scheduler, and a worker for every configured channel.
    pub fn all(config: &Config) -> Self {
        Roles { intake: true, scheduler: true, callbacks: false, channels: config.channels.keys().copied().collect() }
    }
}

/// Running roles, stopped together.
pub struct Fleet {
    token: CancellationToken,
    tasks: JoinSet<anyhow::Result<()>>,
    pub progress: Arc<Progress>,
    pub health: Arc<Health>,
    /// The metrics and health endpoints, served while the roles run and drain.
    server: Option<tokio::task::JoinHandle<()>>,
}

/// How often, and how long at most, the fleet asks Redis whether it answers.
const REDIS_CHECK: Duration = Duration::from_secs(2);

/// Starts `roles` as tasks of this process, and serves `/metrics`,
/// `/healthz` and `/readyz` when `[metrics] listen` is set.
pub fn spawn_fleet(config: Arc<Config>, store: SharedStore, clock: Clock, roles: Roles) -> anyhow::Result<Fleet> {
    let token = CancellationToken::new();
    let progress = Progress::shared();
    let health = Health::shared();
    let server = match config.metrics.listen {
        Some(addr) => Some(crate::serve::start(addr, health.clone())?),
        None => None,
    };
    let mut tasks = JoinSet::new();
    let (s, t, redis) = (store.clone(), token.clone(), health.check("redis answers", false));
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(REDIS_CHECK);
        loop {
            tokio::select! {
                _ = t.cancelled() => return Ok(()),
                _ = tick.tick() => {
                    let answered = tokio::time::timeout(REDIS_CHECK, s.ping()).await;
                    redis.set(matches!(answered, Ok(Ok(()))));
                }
            }
        }
    });
    if roles.intake {
        let (c, s, p, h, t) = (config.clone(), store.clone(), progress.clone(), health.clone(), token.clone());
        let clock = clock.clone();
        tasks.spawn(async move { Ok(tidings_intake::run(c, s, clock, p, h, t.cancelled_owned()).await?) });
    }
    if roles.scheduler {
        let (c, s, p, h, t) = (config.clone(), store.clone(), progress.clone(), health.clone(), token.clone());
        let clock = clock.clone();
        tasks.spawn(async move { Ok(tidings_intake::scheduler::run(c, s, clock, p, h, t.cancelled_owned()).await?) });
    }
    if !roles.channels.is_empty() {
        let links = tidings_core::unsubscribe::Links::new(&config.unsubscribe);
        let renderer = Arc::new(Renderer::load(&templates_dir(&config))?.with_links(links));
        for channel in roles.channels {
            let worker = Worker {
                channel,
                config: config.clone(),
                store: store.clone(),
                renderer: renderer.clone(),
                providers: providers(&config, channel)?,
                clock: clock.clone(),
                progress: progress.clone(),
                health: health.clone(),
            };
            let t = token.clone();
            tasks.spawn(async move { Ok(tidings_workers::run(worker, t.cancelled_owned()).await?) });
        }
    }
    if roles.callbacks {
        let addr = config.callbacks.listen;
        let listener =
            std::net::TcpListener::bind(addr).with_context(|| format!("cannot serve callbacks on {addr}"))?;
        listener.set_nonblocking(true)?;
        let (c, s, t, h) = (config.clone(), store.clone(), token.clone(), health.clone());
        // The probes stay off the public listener when the metrics listener serves them.
        let probes = match config.metrics.listen {
            Some(_) => axum::Router::new(),
            None => crate::serve::probes(health.clone()),
        };
        tasks.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            Ok(tidings_callbacks::run(c, s, clock, h, listener, probes, t.cancelled_owned()).await?)
        });
    }
    Ok(Fleet { token, tasks, progress, health, server })
}

impl Fleet {
    /// Graceful: not ready from now on, then every role drains, commits and
    /// leaves its group.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.health.drain();
        self.token.cancel();
        let mut result = Ok(());
        while let Some(r) = self.tasks.join_next().await {
            if let Err(e) = ended(r) {
                result = Err(e);
            }
        }
        result
    }

    /// Waits until any role ends (which only happens on a fatal error) or `shutdown` completes.
    pub async fn run_until(mut self, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
        tokio::select! {
            _ = shutdown => {}
            Some(r) = self.tasks.join_next() => {
                if let Err(e) = ended(r) {
                    self.token.cancel();
                    while self.tasks.join_next().await.is_some() {}
                    return Err(e);
                }
            }
        }
        self.shutdown().await
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// How a role's task ended: a role that panicked failed, it did not stop cleanly.
fn ended(joined: Result<anyhow::Result<()>, tokio::task::JoinError>) -> anyhow::Result<()> {
    match joined {
        Ok(result) => result,
        Err(e) if e.is_panic() => Err(anyhow::anyhow!("a role panicked: {e}")),
        Err(_) => Ok(()),
    }
}
