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

/// Completes on SIGTERM or Ctrl-C. The handlers are installed when this is
/// called, not when the future is first polled: a signal that arrives in
/// between is kept, not lost (nor left to its default action).
#[cfg(unix)]
pub fn terminated() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, Signal, SignalKind};
    async fn received(signal: Option<Signal>) {
        match signal {
            Some(mut s) => {
                s.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    }
    let (term, int) = (signal(SignalKind::terminate()).ok(), signal(SignalKind::interrupt()).ok());
    async move {
        tokio::select! {
            _ = received(term) => {}
            _ = received(int) => {}
        }
        tracing::info!("shutting down");
    }
}

/// Completes on Ctrl-C.
#[cfg(not(unix))]
pub async fn terminated() {
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("shutting down");
}
