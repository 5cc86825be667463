//! Issuing JWT-SVIDs in the same order as X.509-SVIDs: plan, record, sign,
//! audit.
//!
//! A token's `jti` is drawn from the X.509 serial space and recorded with
//! its entry, agent and task in the one store transaction that checks
//! their standing ([`Datastore::issue_svids`](lanyard_store::Datastore)).
//! Every revoking operation therefore sweeps tokens exactly as it sweeps
//! certificates: a revoked token's `jti` is listed on the CRL until its
//! `exp`, and agents refuse it in ValidateJWTSVID.

use std::time::{Duration, Instant};

use lanyard_audit::{Action, Event};
use lanyard_identity::{EntryId, SpiffeId};
use lanyard_jwt::{Claims, TaskClaim};
use lanyard_store::{IssueBatch, IssueItem, Refusal, TaskRecord};

use crate::{
    clock::unix,
    issuance::{IssueError, within_entry},
    state::ServerState,
};

/// Most audiences one token may carry.
pub(crate) const MAX_AUDIENCES: usize = 16;
/// Longest audience accepted.
pub(crate) const MAX_AUDIENCE_LEN: usize = 512;

/// A JWT-SVID an authenticated agent asks for.
#[derive(Clone, Debug)]
pub(crate) struct JwtRequest {
    pub agent_id: SpiffeId,
    /// The serial of the agent SVID it authenticated with.
    pub agent_serial: String,
    pub entry_id: EntryId,
    pub audiences: Vec<String>,
}

/// A signed JWT-SVID.
#[derive(Clone, Debug)]
pub(crate) struct IssuedJwt {
    pub token: String,
    pub spiffe_id: SpiffeId,
    pub issued_at: i64,
    pub expires_at: i64,
    /// Its `jti`.
    pub id: String,
}

/// Checks the audiences a caller asked for: at least one, none empty, at
/// most [`MAX_AUDIENCES`] of at most [`MAX_AUDIENCE_LEN`] bytes.
pub(crate) fn check_audiences(audiences: &[String]) -> Result<(), String> {
    if audiences.is_empty() {
        return Err("an audience is required".into());
    }
    if audiences.len() > MAX_AUDIENCES {
        return Err(format!(
            "{} audiences; at most {MAX_AUDIENCES} are accepted",
            audiences.len()
        ));
    }
    match audiences
        .iter()
        .find(|a| a.is_empty() || a.len() > MAX_AUDIENCE_LEN)
    {
        Some(a) if a.is_empty() => Err("an audience is empty".into()),
        Some(a) => Err(format!(
            "an audience is {} bytes; at most {MAX_AUDIENCE_LEN} are accepted",
            a.len()
        )),
        None => Ok(()),
    }
}

/// Plans, records, signs and audits one JWT-SVID (blocking: it writes the
/// store and the audit log).
pub(crate) fn issue_jwt_svid(
    state: &ServerState,
    request: &JwtRequest,
) -> Result<IssuedJwt, IssueError> {
    let started = Instant::now();
    check_audiences(&request.audiences).map_err(IssueError::Invalid)?;
    let now = state.now();
    let iat = unix(now);

    // 1. Plan: the entry as stored now, and the lifetime it allows.
    let entry = state
        .store
        .get_entry(&request.entry_id)?
        .ok_or(Refusal::EntryNotFound {
            entry: request.entry_id,
        })?;
    let ttl = within_entry(
        &entry,
        entry.jwt_svid_ttl_secs.map(Duration::from_secs),
        state.cfg.default_jwt_svid_ttl,
        now,
    )?;
    let exp = iat.saturating_add(ttl.as_secs() as i64);
    let jti = lanyard_ca::random_serial_hex()?;

    // 2. Record, checking the standing of agent, entry and task.
    let batch = IssueBatch {
        agent_id: request.agent_id.clone(),
        agent_serial: request.agent_serial.clone(),
        server_id: state.server_id.clone(),
        items: vec![IssueItem {
            entry_id: entry.id,
            entry_revision: entry.revision,
            serial: jti.clone(),
            spiffe_id: entry.spiffe_id.clone(),
            not_after: exp,
        }],
    };
    let verdict = state
        .store
        .issue_svids(std::slice::from_ref(&batch), iat)?
        .into_iter()
        .flatten()
        .next()
        .ok_or_else(|| IssueError::Invalid("the store returned no verdict".into()))?;
    let issued = verdict?;
    let task = match issued.task_id {
        None => None,
        Some(id) => {
            let task = state.store.get_task(&id)?.ok_or(Refusal::TaskNotActive {
                task: id,
                state: lanyard_store::TaskState::Completed,
            })?;
            check_task_audiences(&task, &request.audiences)?;
            Some(task)
        }
    };

    // 3. Sign.
    let claims = Claims {
        sub: entry.spiffe_id.to_string(),
        aud: lanyard_jwt::Audience(request.audiences.clone()),
        exp,
        iat,
        iss: state.cfg.jwt_issuer.clone(),
        jti: Some(jti.clone()),
        lanyard_task: task.as_ref().map(|t| TaskClaim {
            id: t.id.clone(),
            ticket: t.ticket.clone(),
        }),
    };
    let (token, exp) = {
        let ca = match state.ca.read() {
            Ok(ca) => ca,
            Err(poisoned) => poisoned.into_inner(),
        };
        ca.sign_jwt_svid(claims, now)?
    };

    // 4. Audit.
    let mut event = Event::new(
        request.agent_id.to_string(),
        Action::SvidIssued,
        entry.spiffe_id.to_string(),
    )
    .detail("kind", "jwt")
    .detail("jti", jti.clone())
    .detail("audience", request.audiences.join(" "))
    .detail("not_after", exp.to_string())
    .detail("entry_id", entry.id.to_string());
    if let Some(task) = &task {
        event = event
            .ticket(task.ticket.clone())
            .detail("task_id", task.id.clone());
    }
    state
        .audit_blocking(vec![event])
        .map_err(IssueError::Audit)?;
    state.metrics.issued("jwt", started.elapsed());
    tracing::debug!(spiffe_id = %entry.spiffe_id, jti = %jti, exp, "JWT-SVID issued");
    Ok(IssuedJwt {
        token,
        spiffe_id: entry.spiffe_id,
        issued_at: iat,
        expires_at: exp,
        id: jti,
    })
}

/// A task's token may only be for the task's audiences.
fn check_task_audiences(task: &TaskRecord, audiences: &[String]) -> Result<(), IssueError> {
    match audiences
        .iter()
        .find(|a| !task.audiences.iter().any(|t| t.as_str() == a.as_str()))
    {
        None => Ok(()),
        Some(outside) => Err(IssueError::Forbidden(format!(
            "audience {outside:?} is not one of task {}'s audiences ({})",
            task.id,
            task.audiences
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn audiences_are_required_bounded_and_non_empty() {
        assert!(check_audiences(&[]).unwrap_err().contains("required"));
        assert!(check_audiences(&["".into()]).unwrap_err().contains("empty"));
        let many = vec!["a".to_owned(); MAX_AUDIENCES + 1];
        assert!(check_audiences(&many).unwrap_err().contains("at most"));
        let long = vec!["a".repeat(MAX_AUDIENCE_LEN + 1)];
        assert!(check_audiences(&long).unwrap_err().contains("bytes"));
        assert!(check_audiences(&["spiffe://td/db".into()]).is_ok());
    }
}
