//! Health endpoints on the agent's HTTP address: `/health/live` (the process
//! runs) and `/health/ready` (attested, synced, serving SVIDs).

use std::sync::Arc;

use axum::{Router, extract::State, http::StatusCode, routing::get};
use tokio::{net::TcpListener, sync::watch};
use tokio_util::sync::CancellationToken;

use crate::{
    AgentError,
    cache::{Readiness, Snapshot},
};

/// The body and status of `/health/ready` for a readiness.
pub fn ready_answer(readiness: &Readiness) -> (StatusCode, String) {
    match readiness {
        Readiness::Ready => (StatusCode::OK, "{\"status\":\"ready\"}\n".into()),
        Readiness::Starting => (
            StatusCode::SERVICE_UNAVAILABLE,
            "{\"status\":\"starting\"}\n".into(),
        ),
        Readiness::Stopped(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{}\n",
                serde_json::json!({ "status": "stopped", "reason": reason })
            ),
        ),
    }
}

/// Serves the health endpoints until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    let app = Router::new()
        .route(
            "/health/live",
            get(|| async { (StatusCode::OK, "{\"status\":\"live\"}\n") }),
        )
        .route(
            "/health/ready",
            get(
                |State(rx): State<watch::Receiver<Arc<Snapshot>>>| async move {
                    let readiness = rx.borrow().readiness.clone();
                    ready_answer(&readiness)
                },
            ),
        )
        .with_state(snapshots);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .map_err(|e| AgentError::Serve {
            what: "health endpoint",
            reason: e.to_string(),
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn readiness_answers() {
        assert_eq!(ready_answer(&Readiness::Ready).0, StatusCode::OK);
        assert_eq!(
            ready_answer(&Readiness::Starting).0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        let (code, body) = ready_answer(&Readiness::Stopped("agent is banned".into()));
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("banned"), "{body}");
    }
}
