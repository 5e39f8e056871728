//! Serving the role's routes to the internet with bounds on what clients
//! may hold: connections at once (past the cap, new ones wait in the listen
//! backlog), 16 KiB of buffer while a connection sends headers, the time to
//! send them, the time from the headers to the answer, and the body bytes
//! in flight over all connections. axum's own `serve` has none of these;
//! this is its accept loop over hyper with them (as axum's
//! `serve-with-hyper` example).

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
    let budget = Budget {
        timeout: limits.request_timeout,
        bytes: Arc::new(Semaphore::new(limits.body_budget.max(1))),
        limits: limits.max_body.clone(),
    };
    let app = app.layer(axum::middleware::from_fn_with_state(budget, within));
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    // A client reading headers holds this buffer at most (hyper's least).
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).max_buf_size(16 * 1024);
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

/// What every request shares: its time, and the bytes of the bodies being
/// read or handled at once.
#[derive(Clone)]
struct Budget {
    timeout: Duration,
    bytes: Arc<Semaphore>,
    /// What each route reads at most.
    limits: tidings_core::config::BodyLimits,
}

/// Answers 503 to a request whose body would take the role past its budget
/// of bytes in flight, and 408 to one not answered within its time (a body
/// that trickles in, say); the connection is closed after either.
async fn within(axum::extract::State(budget): axum::extract::State<Budget>, request: Request, next: Next) -> Response {
    // SendGrid's batches may be larger than the forms of every other route.
    let most = if request.uri().path().ends_with("/events") { budget.limits.batch } else { budget.limits.form };
    let length = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    // Without a length it may be as large as its route reads; a larger one is refused unread.
    let counted = match length {
        None => most,
        Some(n) if n > most => 1,
        Some(n) => n.max(1),
    };
    let permits = u32::try_from(counted).unwrap_or(u32::MAX);
    let Ok(_held) = budget.bytes.clone().try_acquire_many_owned(permits) else {
        metrics::counter!("tidings_callbacks_over_budget_total").increment(1);
        return closing(StatusCode::SERVICE_UNAVAILABLE, "too many requests being read; send it again later\n");
    };
    match tokio::time::timeout(budget.timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            metrics::counter!("tidings_callbacks_timed_out_total").increment(1);
            closing(StatusCode::REQUEST_TIMEOUT, "request timed out\n")
        }
    }
}

fn closing(status: StatusCode, text: &'static str) -> Response {
    let mut response = (status, text).into_response();
    response.headers_mut().insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
    response
}
