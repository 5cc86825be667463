//! The agent's HTTP address: `/health/live` (the process runs),
//! `/health/ready` (attested, synced, serving SVIDs) and `/metrics`
//! (Prometheus / OpenMetrics text).

use std::{sync::Arc, time::SystemTime};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use tokio::{net::TcpListener, sync::watch};
use tokio_util::sync::CancellationToken;

use crate::{
    AgentError,
    cache::{Readiness, Snapshot},
    metrics::{CONTENT_TYPE, Metrics},
};

#[derive(Clone)]
struct AppState {
    snapshots: watch::Receiver<Arc<Snapshot>>,
    metrics: Arc<Metrics>,
}

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

/// `/metrics`: the registry, with the cache size read from what is served now.
async fn metrics(State(app): State<AppState>) -> Response {
    let cached = app.snapshots.borrow().svids.len();
    match app.metrics.render(cached, SystemTime::now()) {
        Ok(body) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "could not encode the metrics");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "metrics encoding failed\n",
            )
                .into_response()
        }
    }
}

/// Serves the health and metrics endpoints until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    metrics_handles: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    let app = Router::new()
        .route(
            "/health/live",
            get(|| async { (StatusCode::OK, "{\"status\":\"live\"}\n") }),
        )
        .route(
            "/health/ready",
            get(|State(app): State<AppState>| async move {
                let readiness = app.snapshots.borrow().readiness.clone();
                ready_answer(&readiness)
            }),
        )
        .route("/metrics", get(metrics))
        .with_state(AppState {
            snapshots,
            metrics: metrics_handles,
        });
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
