//! Serving the role's routes to the internet with bounds on what one client
//! may hold: connections at once (past the cap, new ones wait in the listen
//! backlog), the time to send a request's headers, and the time from the
//! headers to the answer. axum's own `serve` has none of these; this is its
//! accept loop over hyper with them (as axum's `serve-with-hyper` example).

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tidings_core::config::CallbacksConfig;
use tokio::sync::Semaphore;

/// How long connections still open at shutdown have to finish their request.
const DRAIN: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `shutdown`, within `limits`; then lets
/// open connections finish their request (for [`DRAIN`] at most).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    limits: &CallbacksConfig,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let app = app.layer(axum::middleware::from_fn_with_state(limits.request_timeout, within));
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    tokio::pin!(shutdown);
    loop {
        // A slot first: past the cap, connections wait in the backlog, unread.
        let slot = tokio::select! {
            _ = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, say: wait a little rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let connection = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "a callbacks connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open at shutdown were closed");
    }
}

/// Answers 408 to a request not answered within `limit` (a body that
/// trickles in, say); the connection is closed after it.
async fn within(axum::extract::State(limit): axum::extract::State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            metrics::counter!("tidings_callbacks_timed_out_total").increment(1);
            let mut response = (StatusCode::REQUEST_TIMEOUT, "request timed out\n").into_response();
            response.headers_mut().insert(axum::http::header::CONNECTION, "close".parse().expect("a header value"));
            response
        }
    }
}
