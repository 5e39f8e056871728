//! Subcommands that are more than running a role.

pub mod audit;
pub mod bench;
pub mod bench_audit;
pub mod bench_callbacks;
pub mod bench_cluster;
pub mod bench_worker;
pub mod dev;
pub mod dlq;
pub mod drill;
pub mod live;
pub mod prefs;
pub mod preview;
pub mod soak;
pub mod suppressions;
pub mod templates;
pub mod topics;

/// Completes on SIGTERM or Ctrl-C.
pub async fn terminated() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutting down");
}
