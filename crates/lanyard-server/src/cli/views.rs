//! What `--output json` prints: one `Serialize` view per record, borrowing
//! from the Admin API's message, so that the JSON shape is declared in one
//! place and checked by the compiler.
//!
//! Times are RFC 3339 strings; a time that is unset ("never") is `null`.
//! Empty optional strings (an entry ID, a note) are `null` too.

use lanyard_proto::admin::v1 as pb;
use serde::Serialize;

use super::output::time;

/// RFC 3339, or `None` for unset (0 or negative).
fn opt_time(secs: i64) -> Option<String> {
    (secs > 0).then(|| time(secs))
}

/// `None` for an empty string.
fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// `None` for an unset (0) TTL.
fn opt_ttl(secs: i64) -> Option<i64> {
    (secs > 0).then_some(secs)
}

/// A registration entry.
#[derive(Serialize)]
pub(crate) struct EntryView<'a> {
    id: &'a str,
    spiffe_id: &'a str,
    parent_id: &'a str,
    selectors: &'a [String],
    x509_svid_ttl: Option<i64>,
    jwt_svid_ttl: Option<i64>,
    dns_names: &'a [String],
    expires_at: Option<String>,
    hint: &'a str,
    revision: u64,
    created_at: Option<String>,
}

impl<'a> From<&'a pb::Entry> for EntryView<'a> {
    fn from(e: &'a pb::Entry) -> Self {
        Self {
            id: &e.id,
            spiffe_id: &e.spiffe_id,
            parent_id: &e.parent_id,
            selectors: &e.selectors,
            x509_svid_ttl: opt_ttl(e.x509_svid_ttl_seconds),
            jwt_svid_ttl: opt_ttl(e.jwt_svid_ttl_seconds),
            dns_names: &e.dns_names,
            expires_at: opt_time(e.expires_at),
            hint: &e.hint,
            revision: e.revision,
            created_at: opt_time(e.created_at),
        }
    }
}

/// An attested agent.
#[derive(Serialize)]
pub(crate) struct AgentView<'a> {
    spiffe_id: &'a str,
    attestation_type: &'a str,
    selectors: &'a [String],
    serial: &'a str,
    expires_at: Option<String>,
    attested_at: Option<String>,
    banned: bool,
    evicted: bool,
}

impl<'a> From<&'a pb::Agent> for AgentView<'a> {
    fn from(a: &'a pb::Agent) -> Self {
        Self {
            spiffe_id: &a.spiffe_id,
            attestation_type: &a.attestation_type,
            selectors: &a.selectors,
            serial: &a.serial,
            expires_at: opt_time(a.expires_at),
            attested_at: opt_time(a.attested_at),
            banned: a.banned,
            evicted: a.evicted,
        }
    }
}

/// An issued SVID, as `svid list` shows it.
#[derive(Serialize)]
pub(crate) struct SvidView<'a> {
    serial: &'a str,
    spiffe_id: &'a str,
    entry_id: Option<&'a str>,
    agent_id: Option<&'a str>,
    issued_at: Option<String>,
    not_after: Option<String>,
    revoked: bool,
}

impl<'a> From<&'a pb::Svid> for SvidView<'a> {
    fn from(s: &'a pb::Svid) -> Self {
        Self {
            serial: &s.serial,
            spiffe_id: &s.spiffe_id,
            entry_id: non_empty(&s.entry_id),
            agent_id: non_empty(&s.agent_id),
            issued_at: opt_time(s.issued_at),
            not_after: opt_time(s.not_after),
            revoked: s.revoked,
        }
    }
}

/// One step of a task's history, an approval or a review.
#[derive(Serialize)]
pub(crate) struct TransitionView<'a> {
    state: &'a str,
    at: String,
    principal: &'a str,
    note: Option<&'a str>,
}

impl<'a> From<&'a pb::TaskTransition> for TransitionView<'a> {
    fn from(t: &'a pb::TaskTransition) -> Self {
        Self {
            state: &t.state,
            at: time(t.at),
            principal: &t.principal,
            note: non_empty(&t.note),
        }
    }
}

/// A task-scoped identity grant.
#[derive(Serialize)]
pub(crate) struct TaskView<'a> {
    id: &'a str,
    ticket: &'a str,
    purpose: &'a str,
    spiffe_id: &'a str,
    parent_id: &'a str,
    selectors: &'a [String],
    dns_names: &'a [String],
    audiences: &'a [String],
    starts_at: String,
    ends_at: String,
    state: &'a str,
    entry_id: Option<&'a str>,
    break_glass: bool,
    awaiting_review: bool,
    reviewed: Option<TransitionView<'a>>,
    approvals_required: u32,
    approver_groups: &'a [String],
    approvals: Vec<TransitionView<'a>>,
    policy_sha256: Option<&'a str>,
    policy_rule: Option<&'a str>,
    history: Vec<TransitionView<'a>>,
}

impl<'a> From<&'a pb::Task> for TaskView<'a> {
    fn from(t: &'a pb::Task) -> Self {
        Self {
            id: &t.id,
            ticket: &t.ticket,
            purpose: &t.purpose,
            spiffe_id: &t.spiffe_id,
            parent_id: &t.parent_id,
            selectors: &t.selectors,
            dns_names: &t.dns_names,
            audiences: &t.audiences,
            starts_at: time(t.starts_at),
            ends_at: time(t.ends_at),
            state: &t.state,
            entry_id: non_empty(&t.entry_id),
            break_glass: t.break_glass,
            awaiting_review: t.awaiting_review,
            reviewed: t.reviewed.as_ref().map(TransitionView::from),
            approvals_required: t.approvals_required,
            approver_groups: &t.approver_groups,
            approvals: t.approvals.iter().map(TransitionView::from).collect(),
            policy_sha256: non_empty(&t.policy_sha256),
            policy_rule: non_empty(&t.policy_rule),
            history: t.history.iter().map(TransitionView::from).collect(),
        }
    }
}

/// `healthcheck`.
#[derive(Serialize)]
pub(crate) struct HealthView<'a> {
    pub ready: bool,
    pub trust_domain: &'a str,
}

/// `token generate`.
#[derive(Serialize)]
pub(crate) struct TokenView<'a> {
    pub token: &'a str,
    pub expires_at: String,
    pub agent_id: &'a str,
}

/// `svid revoke`: the serials newly revoked and the CRL that lists them.
#[derive(Serialize)]
pub(crate) struct RevokedView<'a> {
    pub serials: &'a [String],
    pub crl_number: u64,
}

/// `policy show`.
#[derive(Serialize)]
pub(crate) struct PolicyView<'a> {
    pub origin: &'a str,
    pub sha256: &'a str,
    pub source: &'a str,
}

/// `audit verify`.
#[derive(Serialize)]
pub(crate) struct AuditReportView<'a> {
    pub ok: bool,
    pub records: u64,
    pub head_hash: &'a str,
}

/// `crl show --format text`.
#[derive(Serialize)]
pub(crate) struct CrlView {
    pub crl_number: u64,
    pub issuer: String,
    pub this_update: String,
    pub next_update: String,
    pub revoked: Vec<RevokedSerialView>,
}

/// One serial on the CRL.
#[derive(Serialize)]
pub(crate) struct RevokedSerialView {
    pub serial: String,
    pub revoked_at: String,
    pub reason: String,
}

/// One X.509 authority as a JWK of a SPIFFE bundle (`use: x509-svid`).
#[derive(Serialize)]
pub(crate) struct X509AuthorityJwk {
    #[serde(rename = "use")]
    pub use_: &'static str,
    pub kty: &'static str,
    pub crv: &'static str,
    pub x: String,
    pub y: String,
    pub x5c: [String; 1],
}

/// A key of a SPIFFE bundle: an X.509 authority or a JWT authority.
#[derive(Serialize)]
#[serde(untagged)]
pub(crate) enum BundleKey {
    X509(X509AuthorityJwk),
    Jwt(lanyard_jwt::Jwk),
}

/// `bundle show --format spiffe`: the SPIFFE bundle format (a JWK Set).
#[derive(Serialize)]
pub(crate) struct SpiffeBundleView {
    pub keys: Vec<BundleKey>,
    pub spiffe_refresh_hint: u64,
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn unset_times_and_empty_strings_are_null() {
        let svid = pb::Svid {
            serial: "4001".into(),
            spiffe_id: "spiffe://td/a".into(),
            not_after: 1_700_000_000,
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(SvidView::from(&svid)).unwrap(),
            json!({
                "serial": "4001",
                "spiffe_id": "spiffe://td/a",
                "entry_id": null,
                "agent_id": null,
                "issued_at": null,
                "not_after": "2023-11-14T22:13:20Z",
                "revoked": false,
            })
        );
        let entry = pb::Entry {
            x509_svid_ttl_seconds: 600,
            ..Default::default()
        };
        let v = serde_json::to_value(EntryView::from(&entry)).unwrap();
        assert_eq!(v["x509_svid_ttl"], 600);
        assert_eq!(v["jwt_svid_ttl"], serde_json::Value::Null);
        assert_eq!(v["expires_at"], serde_json::Value::Null);
    }
}
