//! OIDC discovery, so that third parties (cloud STS web-identity
//! federation, Vault's JWT auth, API gateways) validate JWT-SVIDs with
//! nothing but this server's keys: with `jwt_issuer` configured, the HTTP
//! address serves `/.well-known/openid-configuration` and the JWK Set it
//! points to (`/keys`). Both are public by design; front them with TLS at
//! the issuer's URL (docs/operations.md).

use std::sync::Arc;

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::json;

use crate::state::ServerState;

/// Where the JWK Set is served, relative to the issuer.
pub(crate) const JWKS_PATH: &str = "/keys";

/// The discovery routes.
pub(crate) fn router(state: Arc<ServerState>) -> Router {
    Router::new()
        .route("/.well-known/openid-configuration", get(configuration))
        .route(JWKS_PATH, get(keys))
        .with_state(state)
}

fn not_configured() -> Response {
    (
        StatusCode::NOT_FOUND,
        "OIDC discovery is off: set jwt_issuer in the server configuration\n",
    )
        .into_response()
}

/// The discovery document (OpenID Connect Discovery 1.0 §3).
async fn configuration(State(state): State<Arc<ServerState>>) -> Response {
    let Some(issuer) = &state.cfg.jwt_issuer else {
        return not_configured();
    };
    let algs: Vec<String> = {
        let mut algs: Vec<String> = state
            .jwt_bundle()
            .keys
            .into_iter()
            .filter_map(|k| k.alg)
            .collect();
        algs.sort();
        algs.dedup();
        algs
    };
    let document = json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}{JWKS_PATH}"),
        "authorization_endpoint": "",
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": algs,
    });
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        document.to_string(),
    )
        .into_response()
}

/// The JWK Set: every published JWT key, `use: sig`, as OIDC consumers
/// expect (the SPIFFE bundle says `jwt-svid` for the same keys).
async fn keys(State(state): State<Arc<ServerState>>) -> Response {
    if state.cfg.jwt_issuer.is_none() {
        return not_configured();
    }
    let mut jwks = state.jwt_bundle();
    for key in &mut jwks.keys {
        key.use_ = Some("sig".into());
    }
    (
        [
            (header::CONTENT_TYPE, "application/jwk-set+json"),
            (header::CACHE_CONTROL, "max-age=60"),
        ],
        jwks.to_json(),
    )
        .into_response()
}
