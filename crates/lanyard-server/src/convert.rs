//! Conversions between the identity types and the Node/Admin protos, with
//! input validation that says what was wrong.

use lanyard_identity::{Entry, EntryId, Selector, SpiffeId};
use lanyard_proto::{admin::v1 as admin, types::v1 as pb};
use tonic::Status;

/// An entry as both the Node and the Admin API carry it.
pub(crate) fn entry_proto(e: &Entry) -> pb::Entry {
    pb::Entry {
        id: e.id.to_string(),
        spiffe_id: e.spiffe_id.to_string(),
        parent_id: e.parent_id.to_string(),
        selectors: e.selectors.iter().map(ToString::to_string).collect(),
        x509_svid_ttl_seconds: e.x509_svid_ttl_secs.unwrap_or(0) as i64,
        dns_names: e.dns_names.clone(),
        expires_at: e.expires_at.unwrap_or(0),
        hint: e.hint.clone(),
        revision: e.revision,
        created_at: e.created_at,
        jwt_svid_ttl_seconds: e.jwt_svid_ttl_secs.unwrap_or(0) as i64,
    }
}

pub(crate) fn spiffe_id(field: &str, value: &str) -> Result<SpiffeId, Status> {
    if value.is_empty() {
        return Err(Status::invalid_argument(format!("{field} is required")));
    }
    value
        .parse()
        .map_err(|e| Status::invalid_argument(format!("{field}: {e}")))
}

pub(crate) fn selectors(values: &[String]) -> Result<Vec<Selector>, Status> {
    values
        .iter()
        .map(|s| {
            s.parse()
                .map_err(|e| Status::invalid_argument(format!("selector {s:?}: {e}")))
        })
        .collect()
}

pub(crate) fn entry_id(value: &str) -> Result<EntryId, Status> {
    value
        .parse()
        .map_err(|e: lanyard_identity::IdError| Status::invalid_argument(e.to_string()))
}

pub(crate) fn ttl(field: &str, secs: i64) -> Result<Option<u64>, Status> {
    match secs {
        0 => Ok(None),
        s if s > 0 => Ok(Some(s as u64)),
        s => Err(Status::invalid_argument(format!(
            "{field} must be positive, got {s}"
        ))),
    }
}

pub(crate) fn expires_at(secs: i64) -> Result<Option<i64>, Status> {
    match secs {
        0 => Ok(None),
        s if s > 0 => Ok(Some(s)),
        s => Err(Status::invalid_argument(format!(
            "expires_at must be a positive unix time, got {s}"
        ))),
    }
}

/// A `task request` from the Admin API, parsed into the domain's form.
pub(crate) fn task_request(
    r: lanyard_proto::admin::v1::RequestTaskRequest,
) -> Result<crate::tasks::TaskRequest, Status> {
    Ok(crate::tasks::TaskRequest {
        spiffe_id: spiffe_id("spiffe_id", &r.spiffe_id)?,
        parent_id: spiffe_id("parent_id", &r.parent_id)?,
        selectors: selectors(&r.selectors)?,
        audiences: r
            .audiences
            .iter()
            .map(|a| spiffe_id("audience", a))
            .collect::<Result<_, _>>()?,
        ticket: r.ticket,
        purpose: r.purpose,
        dns_names: r.dns_names,
        ttl_seconds: r.ttl_seconds,
        starts_at: r.starts_at,
        break_glass: r.break_glass,
        reason: r.reason,
    })
}

fn transition_pb(t: &lanyard_store::TaskTransition) -> admin::TaskTransition {
    admin::TaskTransition {
        state: t.state.as_str().to_owned(),
        at: t.at,
        principal: t.principal.clone(),
        note: t.note.clone().unwrap_or_default(),
    }
}

pub(crate) fn task_pb(t: &lanyard_store::TaskRecord) -> admin::Task {
    admin::Task {
        id: t.id.clone(),
        ticket: t.ticket.clone(),
        purpose: t.purpose.clone(),
        spiffe_id: t.spiffe_id.to_string(),
        parent_id: t.parent_id.to_string(),
        selectors: t.selectors.iter().map(ToString::to_string).collect(),
        dns_names: t.dns_names.clone(),
        audiences: t.audiences.iter().map(ToString::to_string).collect(),
        starts_at: t.starts_at,
        ends_at: t.ends_at,
        state: t.state.as_str().to_owned(),
        history: t.history.iter().map(transition_pb).collect(),
        entry_id: t.entry_id.map(|e| e.to_string()).unwrap_or_default(),
        break_glass: t.break_glass,
        awaiting_review: t.break_glass && t.reviewed.is_none(),
        reviewed: t.reviewed.as_ref().map(transition_pb),
        approvals_required: t.approvals_needed(),
        approver_groups: t.approver_groups.clone(),
        approvals: t.approvals.iter().map(transition_pb).collect(),
        policy_sha256: t.policy_sha256.clone(),
        policy_rule: t.policy_rule.clone(),
    }
}
