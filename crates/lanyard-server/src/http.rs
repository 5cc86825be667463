//! The HTTP listener: liveness and readiness (CRL and metrics join later).

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::{Router, extract::State, http::StatusCode, routing::get};
use tokio_util::sync::CancellationToken;

pub(crate) fn router(ready: Arc<AtomicBool>) -> Router {
    Router::new()
        .route("/health/live", get(|| async { (StatusCode::OK, "live\n") }))
        .route("/health/ready", get(readiness))
        .with_state(ready)
}

async fn readiness(State(ready): State<Arc<AtomicBool>>) -> (StatusCode, &'static str) {
    if ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    ready: Arc<AtomicBool>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(ready))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
