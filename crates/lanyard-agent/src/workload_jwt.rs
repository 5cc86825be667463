//! The JWT half of the Workload API: what FetchJWTSVID, FetchJWTBundles
//! and ValidateJWTSVID answer, from a snapshot and the token cache.

use std::collections::{BTreeMap, HashMap};

use lanyard_identity::{Selector, SpiffeId};
use lanyard_jwt::JwtError;
use lanyard_proto::workload::{
    JwtBundlesResponse, Jwtsvid, JwtsvidResponse, ValidateJwtsvidResponse,
};
use prost_types::{ListValue, Struct, Value, value::Kind};
use tonic::Status;

use crate::{
    cache::{Snapshot, select_for},
    jwt_svids::JwtSvids,
    workload_response::{NO_IDENTITY, serving},
};

/// FetchJWTSVID: a token for each of the caller's identities (or only
/// `spiffe_id`'s), default first. With no `spiffe_id`, an identity the
/// server refuses for these audiences (a task's token outside the task's
/// audiences) is left out when another one is served.
pub async fn fetch_jwt_svids(
    snapshot: &Snapshot,
    selectors: &[Selector],
    audience: &[String],
    spiffe_id: &str,
    tokens: &JwtSvids,
    now: i64,
) -> Result<JwtsvidResponse, Status> {
    serving(snapshot)?;
    let wanted: Option<SpiffeId> = (!spiffe_id.is_empty())
        .then(|| spiffe_id.parse())
        .transpose()
        .map_err(|e| Status::invalid_argument(format!("spiffe_id {spiffe_id:?}: {e}")))?;
    let identities: Vec<_> = select_for(&snapshot.svids, selectors, now)
        .into_iter()
        .filter(|s| wanted.as_ref().is_none_or(|w| *w == s.entry.spiffe_id))
        .collect();
    if identities.is_empty() {
        return Err(Status::permission_denied(NO_IDENTITY));
    }
    let mut svids = Vec::new();
    let mut refused = None;
    for identity in &identities {
        match tokens.fetch(&identity.entry, audience).await {
            Ok(token) => svids.push(Jwtsvid {
                spiffe_id: token.spiffe_id,
                svid: token.token,
                hint: identity.entry.hint.clone(),
            }),
            Err(status) => {
                tracing::warn!(spiffe_id = %identity.entry.spiffe_id, code = ?status.code(), reason = status.message(), "JWT-SVID not served");
                refused.get_or_insert(status);
            }
        }
    }
    match refused {
        Some(status) if svids.is_empty() || wanted.is_some() => Err(status),
        _ => Ok(JwtsvidResponse { svids }),
    }
}

/// FetchJWTBundles: the trust domain's JWK Set, for a caller with an
/// identity.
pub fn jwt_bundles_response(
    snapshot: &Snapshot,
    selectors: &[Selector],
    now: i64,
) -> Result<JwtBundlesResponse, Status> {
    serving(snapshot)?;
    if select_for(&snapshot.svids, selectors, now).is_empty() {
        return Err(Status::permission_denied(NO_IDENTITY));
    }
    let td = snapshot
        .trust_domain
        .as_ref()
        .ok_or_else(|| Status::unavailable("agent is not ready yet: trust domain unknown"))?;
    Ok(JwtBundlesResponse {
        bundles: HashMap::from([(td.id().to_string(), snapshot.jwt_bundle.to_json())]),
    })
}

/// ValidateJWTSVID: signature, `alg`, `kid`, `exp` and audience against the
/// trust domain's JWT bundle, then revocation: a token whose `jti` the CRL
/// lists is refused. Every refusal is InvalidArgument naming the reason.
pub fn validate(
    snapshot: &Snapshot,
    audience: &str,
    token: &str,
    tokens: &JwtSvids,
    now: i64,
) -> Result<ValidateJwtsvidResponse, Status> {
    if audience.is_empty() {
        return Err(Status::invalid_argument("audience is required"));
    }
    if token.is_empty() {
        return Err(Status::invalid_argument(
            "svid is required: the token to validate",
        ));
    }
    serving(snapshot)?;
    let verified = snapshot
        .jwt_bundle
        .verify(token, audience, now)
        .map_err(|e| match e {
            JwtError::Key(_) => Status::internal(e.to_string()),
            e => Status::invalid_argument(e.to_string()),
        })?;
    let spiffe_id: SpiffeId = verified
        .claims
        .sub
        .parse()
        .map_err(|e| Status::invalid_argument(format!("sub is not a SPIFFE ID: {e}")))?;
    if let Some(td) = &snapshot.trust_domain
        && !spiffe_id.is_member_of(td)
    {
        return Err(Status::invalid_argument(format!(
            "{spiffe_id} is not in trust domain {td}, whose keys signed the token"
        )));
    }
    let jti = verified.claims.jti.as_deref().unwrap_or_default();
    if jti.is_empty() {
        return Err(Status::invalid_argument(
            "the token has no jti; Lanyard JWT-SVIDs carry one so they can be revoked",
        ));
    }
    if tokens.revoked(jti) {
        return Err(Status::invalid_argument(format!(
            "token {jti} has been revoked"
        )));
    }
    Ok(ValidateJwtsvidResponse {
        spiffe_id: spiffe_id.to_string(),
        claims: Some(to_struct(verified.raw)),
    })
}

/// A JSON object as a protobuf Struct.
fn to_struct(map: serde_json::Map<String, serde_json::Value>) -> Struct {
    Struct {
        fields: map
            .into_iter()
            .map(|(k, v)| (k, to_value(v)))
            .collect::<BTreeMap<_, _>>(),
    }
}

fn to_value(v: serde_json::Value) -> Value {
    use serde_json::Value as J;
    let kind = match v {
        J::Null => Kind::NullValue(0),
        J::Bool(b) => Kind::BoolValue(b),
        J::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        J::String(s) => Kind::StringValue(s),
        J::Array(a) => Kind::ListValue(ListValue {
            values: a.into_iter().map(to_value).collect(),
        }),
        J::Object(o) => Kind::StructValue(to_struct(o)),
    };
    Value { kind: Some(kind) }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn claims_become_a_struct() {
        let json = serde_json::json!({
            "sub": "spiffe://td/a", "aud": ["x"], "exp": 5,
            "lanyard_task": {"id": "t", "ticket": "CHG-1"}, "n": null, "b": true
        });
        let serde_json::Value::Object(map) = json else {
            unreachable!()
        };
        let s = to_struct(map);
        assert_eq!(
            s.fields["aud"].kind,
            Some(Kind::ListValue(ListValue {
                values: vec![Value {
                    kind: Some(Kind::StringValue("x".into()))
                }]
            }))
        );
        assert_eq!(s.fields["exp"].kind, Some(Kind::NumberValue(5.0)));
        let Some(Kind::StructValue(task)) = &s.fields["lanyard_task"].kind else {
            panic!("lanyard_task is an object")
        };
        assert_eq!(
            task.fields["ticket"].kind,
            Some(Kind::StringValue("CHG-1".into()))
        );
    }
}
