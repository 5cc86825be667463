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
use serde_json::json;
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
/// Entries whose SVID issuance is failing do not make the agent unready (it
/// serves every other workload) but are reported under `issuance`.
pub fn ready_answer(snapshot: &Snapshot, now: i64) -> (StatusCode, String) {
    let (code, mut body) = match (&snapshot.readiness, snapshot.crl_next_update) {
        (Readiness::Ready, Some(next_update)) if next_update < now => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "status": "stale_crl", "crl_next_update": next_update }),
        ),
        (readiness, _) => readiness_answer(readiness),
    };
    let issuance = &snapshot.issuance;
    if issuance.failing_entries > 0 {
        body["issuance"] = json!({
            "failing_entries": issuance.failing_entries,
            "consecutive_failures": issuance.consecutive_failures,
            "backoff_ms": issuance.backoff_ms,
            "next_retry_at": issuance.next_retry_at,
            "last_error": issuance.last_error,
        });
    }
    (code, format!("{body}\n"))
}

fn readiness_answer(readiness: &Readiness) -> (StatusCode, serde_json::Value) {
    match readiness {
        Readiness::Ready => (StatusCode::OK, json!({ "status": "ready" })),
        Readiness::Starting => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "status": "starting" }),
        ),
        Readiness::Stopped(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "status": "stopped", "reason": reason }),
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
                let now = lanyard_time::now_unix();
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
    fn failing_issuance_is_reported_without_making_the_agent_unready() {
        let mut s = snapshot(Readiness::Ready, None);
        assert_eq!(ready_answer(&s, 1_000).1, "{\"status\":\"ready\"}\n");
        s.issuance = crate::cache::IssuanceHealth {
            failing_entries: 2,
            consecutive_failures: 4,
            backoff_ms: 3_000,
            next_retry_at: Some(1_003),
            last_error: Some("server unreachable".into()),
        };
        let (code, body) = ready_answer(&s, 1_000);
        assert_eq!(code, StatusCode::OK);
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["status"], "ready");
        assert_eq!(body["issuance"]["failing_entries"], 2);
        assert_eq!(body["issuance"]["consecutive_failures"], 4);
        assert_eq!(body["issuance"]["backoff_ms"], 3_000);
        assert_eq!(body["issuance"]["last_error"], "server unreachable");
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
