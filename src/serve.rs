//! The endpoints a process serves on `[metrics] listen`, for Prometheus and
//! for its orchestrator's probes:
//!
//! - `/metrics`: every series, in Prometheus' text format;
//! - `/healthz`: 200 while every loop turns (a loop waiting out an outage
//!   still turns), 503 naming the loops that stopped: restart me;
//! - `/readyz`: 200 when every role's conditions hold (joined its group,
//!   Redis answers, a provider of each channel not open), 503 naming those
//!   that do not, and always while draining: send me no work, page no one
//!   unless it lasts.

use anyhow::Context as _;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tidings_core::telemetry::Health;

/// A loop that has not turned for this long is stuck.
pub const STALE: Duration = Duration::from_secs(60);

static RECORDER: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's Prometheus recorder, installed the first time it is asked for.
pub fn recorder() -> anyhow::Result<PrometheusHandle> {
    if let Some(handle) = RECORDER.get() {
        return Ok(handle.clone());
    }
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).context("a metrics recorder is already installed")?;
    let _ = RECORDER.set(handle.clone());
    // Histograms are summarised on a timer, not on every scrape.
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

/// Serves the endpoints on `addr` until the returned task is aborted.
pub fn start(addr: SocketAddr, health: Arc<Health>) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let metrics = recorder()?;
    let listener = std::net::TcpListener::bind(addr).with_context(|| format!("cannot serve metrics on {addr}"))?;
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let app = Router::new().route("/metrics", get(move || std::future::ready(metrics.render()))).merge(probes(health));
    tracing::info!(%addr, "metrics at /metrics, probes at /healthz and /readyz");
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics endpoint stopped");
        }
    }))
}

/// `/healthz` and `/readyz` alone: what the callbacks role serves beside its own routes.
pub fn probes(health: Arc<Health>) -> Router {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).with_state(health)
}

async fn healthz(State(health): State<Arc<Health>>) -> (StatusCode, String) {
    answer(health.live(STALE), "alive")
}

async fn readyz(State(health): State<Arc<Health>>) -> (StatusCode, String) {
    answer(health.ready(), "ready")
}

fn answer(result: Result<(), Vec<String>>, ok: &str) -> (StatusCode, String) {
    match result {
        Ok(()) => (StatusCode::OK, format!("{ok}\n")),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why.join("\n") + "\n"),
    }
}
