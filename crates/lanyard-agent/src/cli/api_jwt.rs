//! `api fetch jwt`, `api fetch jwt-bundles` and `api validate jwt`: the JWT
//! half of the Workload API, called as a workload would.

use std::{fmt::Write as _, path::Path};

use lanyard_proto::workload::{JwtBundlesRequest, JwtsvidRequest, ValidateJwtsvidRequest};
use prost_types::{Struct, Value, value::Kind};
use tonic::Request;

use super::api::{connect, status_err};
use crate::{AgentError, workload_api::SECURITY_HEADER};

fn with_header<T>(message: T) -> Request<T> {
    let mut req = Request::new(message);
    req.metadata_mut().insert(
        SECURITY_HEADER,
        tonic::metadata::MetadataValue::from_static("true"),
    );
    req
}

/// `api fetch jwt`: one block per token: SPIFFE ID, expiry, the token.
pub async fn fetch_jwt(
    socket: &Path,
    audience: &[String],
    spiffe_id: Option<&str>,
) -> Result<String, AgentError> {
    let resp = connect(socket)
        .await?
        .fetch_jwtsvid(with_header(JwtsvidRequest {
            audience: audience.to_vec(),
            spiffe_id: spiffe_id.unwrap_or_default().to_owned(),
        }))
        .await
        .map_err(|s| status_err(&s))?
        .into_inner();
    let mut out = String::new();
    for svid in &resp.svids {
        let exp = unverified_exp(&svid.svid)
            .map(|t| humantime::format_rfc3339_seconds(crate::schedule::from_unix(t)).to_string())
            .unwrap_or_else(|| "unknown".into());
        let _ = writeln!(out, "SPIFFE ID: {}  expires: {exp}", svid.spiffe_id);
        let _ = writeln!(out, "{}", svid.svid);
    }
    Ok(out)
}

/// The `exp` of a token, read without verifying it (for display only).
fn unverified_exp(token: &str) -> Option<i64> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()?
        .get("exp")?
        .as_i64()
}

/// `api fetch jwt-bundles`: `{"<trust domain ID>": <JWK Set>, ...}`.
pub async fn fetch_jwt_bundles(socket: &Path) -> Result<String, AgentError> {
    let mut stream = connect(socket)
        .await?
        .fetch_jwt_bundles(with_header(JwtBundlesRequest {}))
        .await
        .map_err(|s| status_err(&s))?
        .into_inner();
    let resp = stream
        .message()
        .await
        .map_err(|s| status_err(&s))?
        .ok_or_else(|| {
            AgentError::Client("Workload API: the stream ended without an answer".into())
        })?;
    let mut bundles = serde_json::Map::new();
    for (td, jwks) in resp.bundles {
        let jwks: serde_json::Value = serde_json::from_slice(&jwks)
            .map_err(|e| AgentError::Client(format!("the JWT bundle of {td} is not JSON: {e}")))?;
        bundles.insert(td, jwks);
    }
    serde_json::to_string_pretty(&bundles).map_err(|e| AgentError::Client(e.to_string()))
}

/// `api validate jwt`: `{"spiffe_id": ..., "claims": {...}}`, or the
/// agent's reason for refusing the token.
pub async fn validate_jwt(
    socket: &Path,
    audience: &str,
    token: &str,
) -> Result<String, AgentError> {
    let resp = connect(socket)
        .await?
        .validate_jwtsvid(with_header(ValidateJwtsvidRequest {
            audience: audience.to_owned(),
            svid: token.to_owned(),
        }))
        .await
        .map_err(|s| status_err(&s))?
        .into_inner();
    let validated = Validated {
        spiffe_id: resp.spiffe_id,
        claims: resp.claims.map(struct_json).unwrap_or_default(),
    };
    serde_json::to_string_pretty(&validated).map_err(|e| AgentError::Client(e.to_string()))
}

/// What `api validate jwt` prints: whose token it is and its claims.
#[derive(serde::Serialize)]
struct Validated {
    spiffe_id: String,
    claims: serde_json::Value,
}

fn struct_json(s: Struct) -> serde_json::Value {
    serde_json::Value::Object(
        s.fields
            .into_iter()
            .map(|(k, v)| (k, value_json(v)))
            .collect(),
    )
}

fn value_json(v: Value) -> serde_json::Value {
    match v.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(b)) => b.into(),
        // Claims are times and counts: whole numbers print as integers.
        Some(Kind::NumberValue(n)) if n.fract() == 0.0 && n.abs() < 9e15 => (n as i64).into(),
        Some(Kind::NumberValue(n)) => n.into(),
        Some(Kind::StringValue(s)) => s.into(),
        Some(Kind::ListValue(l)) => l.values.into_iter().map(value_json).collect(),
        Some(Kind::StructValue(s)) => struct_json(s),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn claims_print_as_json_with_integer_times() {
        let s = Struct {
            fields: [
                (
                    "exp".to_owned(),
                    Value {
                        kind: Some(Kind::NumberValue(1_700_000_000.0)),
                    },
                ),
                (
                    "sub".to_owned(),
                    Value {
                        kind: Some(Kind::StringValue("spiffe://td/a".into())),
                    },
                ),
            ]
            .into_iter()
            .collect(),
        };
        assert_eq!(
            struct_json(s),
            json!({"exp": 1_700_000_000, "sub": "spiffe://td/a"})
        );
    }
}
