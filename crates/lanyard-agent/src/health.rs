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

/// The body and status of `/health/ready` for a snapshot at `now` (unix
/// seconds): ready only while the CRL in force is not past its nextUpdate.
pub fn ready_answer(snapshot: &Snapshot, now: i64) -> (StatusCode, String) {
    match (&snapshot.readiness, snapshot.crl_next_update) {
        (Readiness::Ready, Some(next_update)) if next_update < now => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{}\n",
                serde_json::json!({ "status": "stale_crl", "crl_next_update": next_update })
            ),
        ),
        (readiness, _) => readiness_answer(readiness),
    }
}

fn readiness_answer(readiness: &Readiness) -> (StatusCode, String) {
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
                let snapshot = app.snapshots.borrow().clone();
                let now = SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
                ready_answer(&snapshot, now)
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

    fn snapshot(readiness: Readiness, crl_next_update: Option<i64>) -> Snapshot {
        let mut s = Snapshot::starting();
        s.readiness = readiness;
        s.crl_next_update = crl_next_update;
        s
    }

    #[test]
    fn readiness_answers() {
        let ready = |s| ready_answer(&s, 1_000);
        assert_eq!(ready(snapshot(Readiness::Ready, None)).0, StatusCode::OK);
        assert_eq!(
            ready(snapshot(Readiness::Starting, None)).0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        let (code, body) = ready(snapshot(Readiness::Stopped("agent is banned".into()), None));
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("banned"), "{body}");
    }

    #[test]
    fn a_stale_crl_makes_the_agent_not_ready() {
        assert_eq!(
            ready_answer(&snapshot(Readiness::Ready, Some(1_000)), 1_000).0,
            StatusCode::OK
        );
        let (code, body) = ready_answer(&snapshot(Readiness::Ready, Some(999)), 1_000);
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("stale_crl") && body.contains("999"), "{body}");
    }
}
