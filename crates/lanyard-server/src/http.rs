//! The HTTP listener: liveness, readiness, the CRL (`GET /crl`, DER),
//! metrics, and OIDC discovery when `jwt_issuer` is set.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use tokio_util::sync::CancellationToken;

use crate::state::ServerState;

#[derive(Clone)]
struct Http {
    state: Arc<ServerState>,
    ready: Arc<AtomicBool>,
}

fn router(http: Http) -> Router {
    Router::new()
        .route("/health/live", get(|| async { (StatusCode::OK, "live\n") }))
        .route("/health/ready", get(readiness))
        .route("/crl", get(crl))
        .route("/metrics", get(metrics))
        .with_state(http.clone())
        .merge(crate::oidc::router(http.state))
}

async fn readiness(State(http): State<Http>) -> (StatusCode, &'static str) {
    if http.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// The trust domain's current CRL, DER-encoded (RFC 5280 section 5).
async fn crl(State(http): State<Http>) -> impl IntoResponse {
    let crl = http.state.crl.load_full();
    (
        [(header::CONTENT_TYPE, "application/pkix-crl")],
        crl.der.clone(),
    )
}

/// Prometheus text exposition.
async fn metrics(State(http): State<Http>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        http.state.metrics.encode(),
    )
}

pub(crate) async fn serve(
    listener: crate::listener::CappedListener,
    state: Arc<ServerState>,
    ready: Arc<AtomicBool>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let header_timeout = state.cfg.limits.http_header_timeout;
    let router = router(Http { state, ready });
    crate::listener::serve_http(listener, router, header_timeout, shutdown).await
}
