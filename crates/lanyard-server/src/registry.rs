//! The registry: entries, agents' standing, join tokens and single-SVID
//! revocation, as operators change them. No gRPC here: the Admin API parses
//! requests into these calls and maps [`RegistryError`] to statuses.
//!
//! Every change that takes a credential away is one store transaction that
//! also sweeps the serials issued under it (see [`lanyard_store::Datastore`]);
//! the audit record is written and the new CRL published before the call
//! returns.

use std::sync::Arc;

use lanyard_audit::{Action, Event};
use lanyard_ca::RevocationReason;
use lanyard_identity::{Entry, EntryId, Selector, SpiffeId};
use lanyard_store::{AgentRecord, AgentStanding, JoinTokenRecord, StoreError};

use crate::{
    admin::{Principal, check_entry_ids},
    clock::unix,
    join_token,
    revocation::{self, RevocationError},
    state::{AuditFailed, ServerState},
};

/// Why a registry change was refused or failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RegistryError {
    /// The input is invalid; the message names the field and what is accepted.
    #[error("{0}")]
    Invalid(String),
    /// What was named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// It exists but cannot be changed that way.
    #[error("{0}")]
    Precondition(String),
    /// The random generator failed.
    #[error("random generator failed")]
    Random,
    /// The store failed or refused (conflicts and duplicates included).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The audit log could not be written.
    #[error(transparent)]
    Audit(#[from] AuditFailed),
    /// Revocations are recorded but could not be announced.
    #[error(transparent)]
    Revocation(#[from] RevocationError),
}

/// The fields an `entry update` may change; `None` keeps the stored value.
#[derive(Debug, Default)]
pub(crate) struct EntryUpdate {
    pub spiffe_id: Option<SpiffeId>,
    pub parent_id: Option<SpiffeId>,
    pub selectors: Option<Vec<Selector>>,
    pub x509_svid_ttl_secs: Option<Option<u64>>,
    pub dns_names: Option<Vec<String>>,
    pub expires_at: Option<Option<i64>>,
    pub hint: Option<String>,
    pub jwt_svid_ttl_secs: Option<Option<u64>>,
}

fn entry_event(who: &Principal, action: Action, entry: &Entry) -> Event {
    Event::new(who.to_string(), action, entry.id.to_string())
        .detail("spiffe_id", entry.spiffe_id.to_string())
        .detail("parent_id", entry.parent_id.to_string())
        .detail(
            "selectors",
            entry
                .selectors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
        )
}

/// Creates one entry.
pub(crate) async fn create_entry(
    state: &ServerState,
    who: &Principal,
    entry: Entry,
) -> Result<Entry, RegistryError> {
    check_entry_ids(state, &entry).map_err(RegistryError::Invalid)?;
    let record = entry.clone();
    state.db(move |s| s.create_entry(&record)).await?;
    state.entries_changed([entry.id]);
    state
        .audit(entry_event(who, Action::EntryCreated, &entry))
        .await?;
    tracing::info!(principal = %who, entry = %entry.id, spiffe_id = %entry.spiffe_id, "entry created");
    Ok(entry)
}

/// Creates many entries in one store transaction; one result per entry.
pub(crate) async fn create_entries(
    state: &ServerState,
    who: &Principal,
    entries: Vec<Result<Entry, String>>,
) -> Result<Vec<Result<Entry, RegistryError>>, RegistryError> {
    let checked: Vec<Result<Entry, String>> = entries
        .into_iter()
        .map(|e| e.and_then(|entry| check_entry_ids(state, &entry).map(|()| entry)))
        .collect();
    let valid: Vec<Entry> = checked
        .iter()
        .filter_map(|c| c.as_ref().ok().cloned())
        .collect();
    let stored = {
        let valid = valid.clone();
        state.db(move |s| s.create_entries(&valid)).await?
    };
    let mut stored = valid.into_iter().zip(stored);
    let mut events = Vec::new();
    let results: Vec<Result<Entry, RegistryError>> = checked
        .into_iter()
        .map(|c| {
            let entry = c.map_err(RegistryError::Invalid)?;
            match stored.next() {
                Some((stored, Ok(()))) if stored.id == entry.id => {
                    events.push(entry_event(who, Action::EntryCreated, &stored));
                    Ok(stored)
                }
                Some((_, Err(e))) => Err(RegistryError::Store(e)),
                _ => Err(RegistryError::Store(StoreError::Backend(
                    "the store answered for other entries than were sent".into(),
                ))),
            }
        })
        .collect();
    let created = events.len();
    if created > 0 {
        state.entries_changed(results.iter().filter_map(|r| r.as_ref().ok().map(|e| e.id)));
        state.audit_all(events).await?;
    }
    tracing::info!(principal = %who, created, "entries created in one batch");
    Ok(results)
}

/// Changes an entry (compare-and-swap on the revision it read); a change of
/// SPIFFE ID, parent or selectors revokes the entry's SVIDs at once.
pub(crate) async fn update_entry(
    state: &Arc<ServerState>,
    who: &Principal,
    id: EntryId,
    update: EntryUpdate,
) -> Result<Entry, RegistryError> {
    let mut entry = state
        .db(move |s| s.get_entry(&id))
        .await?
        .ok_or_else(|| RegistryError::NotFound(format!("no entry {id}")))?;
    let EntryUpdate {
        spiffe_id,
        parent_id,
        selectors,
        x509_svid_ttl_secs,
        dns_names,
        expires_at,
        hint,
        jwt_svid_ttl_secs,
    } = update;
    entry.spiffe_id = spiffe_id.unwrap_or(entry.spiffe_id);
    entry.parent_id = parent_id.unwrap_or(entry.parent_id);
    entry.selectors = selectors.unwrap_or(entry.selectors);
    entry.x509_svid_ttl_secs = x509_svid_ttl_secs.unwrap_or(entry.x509_svid_ttl_secs);
    entry.dns_names = dns_names.unwrap_or(entry.dns_names);
    entry.expires_at = expires_at.unwrap_or(entry.expires_at);
    entry.hint = hint.unwrap_or(entry.hint);
    entry.jwt_svid_ttl_secs = jwt_svid_ttl_secs.unwrap_or(entry.jwt_svid_ttl_secs);
    check_entry_ids(state, &entry).map_err(RegistryError::Invalid)?;
    let sweep = revocation::sweep(state, RevocationReason::Superseded);
    let (entry, revoked) = state.db(move |s| s.update_entry(&entry, &sweep)).await?;
    state.entries_changed([entry.id]);
    revocation::announce(state, &revoked, &who.to_string(), None).await?;
    state
        .audit(entry_event(who, Action::EntryUpdated, &entry))
        .await?;
    tracing::info!(principal = %who, entry = %entry.id, revision = entry.revision, revoked = revoked.len(), "entry updated");
    Ok(entry)
}

/// Deletes an entry and revokes every SVID issued for it.
pub(crate) async fn delete_entry(
    state: &Arc<ServerState>,
    who: &Principal,
    id: EntryId,
) -> Result<Entry, RegistryError> {
    let sweep = revocation::sweep(state, RevocationReason::CessationOfOperation);
    let (entry, revoked) = state.db(move |s| s.delete_entry(&id, &sweep)).await?;
    state.entries_changed([entry.id]);
    revocation::announce(state, &revoked, &who.to_string(), None).await?;
    state
        .audit(entry_event(who, Action::EntryDeleted, &entry))
        .await?;
    tracing::info!(principal = %who, entry = %entry.id, spiffe_id = %entry.spiffe_id, revoked = revoked.len(), "entry deleted");
    Ok(entry)
}

/// Evicts or bans an agent and revokes its SVID and every SVID issued
/// through it.
pub(crate) async fn set_agent_standing(
    state: &Arc<ServerState>,
    who: &Principal,
    id: SpiffeId,
    standing: AgentStanding,
) -> Result<AgentRecord, RegistryError> {
    let reason = match standing {
        AgentStanding::Banned => RevocationReason::KeyCompromise,
        AgentStanding::Evicted => RevocationReason::CessationOfOperation,
    };
    let sweep = revocation::sweep(state, reason);
    let (agent, revoked) = state
        .db(move |s| s.set_agent_standing(&id, standing, &sweep))
        .await?;
    state.notify();
    revocation::announce(state, &revoked, &who.to_string(), None).await?;
    let action = match standing {
        AgentStanding::Banned => Action::AgentBanned,
        AgentStanding::Evicted => Action::AgentEvicted,
    };
    state
        .audit(
            Event::new(who.to_string(), action, agent.spiffe_id.to_string())
                .detail("revoked_svids", revoked.len().to_string()),
        )
        .await?;
    tracing::warn!(principal = %who, agent = %agent.spiffe_id, ?standing, revoked = revoked.len(), "agent standing changed");
    Ok(agent)
}

/// A generated join token: the secret (shown once), when it expires, and
/// the agent ID it will give.
pub(crate) struct NewToken {
    pub token: String,
    pub expires_at: i64,
    pub agent_id: SpiffeId,
}

/// Generates a one-time join token valid for `ttl_seconds` (the configured
/// default for 0), optionally for a chosen agent ID.
pub(crate) async fn generate_join_token(
    state: &ServerState,
    who: &Principal,
    ttl_seconds: i64,
    spiffe_id: Option<SpiffeId>,
) -> Result<NewToken, RegistryError> {
    let ttl = match ttl_seconds {
        0 => state.cfg.join_token_ttl.as_secs() as i64,
        s if s > 0 => s,
        s => {
            return Err(RegistryError::Invalid(format!(
                "ttl must be positive, got {s}s"
            )));
        }
    };
    let td = &state.cfg.trust_domain;
    if let Some(id) = &spiffe_id {
        check_token_agent_id(state, id).await?;
    }
    let token = join_token::generate().map_err(|_| RegistryError::Random)?;
    let token_id = join_token::token_id(&token);
    let now = unix(state.now());
    let agent_id = match &spiffe_id {
        Some(id) => id.clone(),
        None => SpiffeId::from_parts(td, &format!("/lanyard/agent/join_token/{token_id}"))
            .map_err(|e| RegistryError::Invalid(e.to_string()))?,
    };
    let record = JoinTokenRecord {
        token_id: token_id.clone(),
        expires_at: now + ttl,
        created_at: now,
        spiffe_id,
    };
    state.db(move |s| s.create_join_token(&record)).await?;
    state
        .audit(
            Event::new(who.to_string(), Action::TokenCreated, token_id.clone())
                .detail("agent_id", agent_id.to_string())
                .detail("expires_at", (now + ttl).to_string()),
        )
        .await?;
    tracing::info!(principal = %who, token_id = %token_id, ttl_seconds = ttl, "join token created");
    Ok(NewToken {
        token,
        expires_at: now + ttl,
        agent_id,
    })
}

/// The prefix every agent ID's path starts with.
const AGENT_PATH_PREFIX: &str = "/lanyard/agent/";

/// A join token may name its agent's ID only if that ID is an agent ID of
/// this trust domain (`/lanyard/agent/...`) that no agent in good standing
/// holds: absent, or evicted. A workload's ID would turn the token into a
/// way to obtain that workload's identity as a node; a live agent's ID
/// would let a second node impersonate it; a banned agent's ID would undo
/// the ban.
async fn check_token_agent_id(state: &ServerState, id: &SpiffeId) -> Result<(), RegistryError> {
    let td = &state.cfg.trust_domain;
    let is_agent_path = id
        .path()
        .strip_prefix(AGENT_PATH_PREFIX)
        .is_some_and(|rest| !rest.is_empty());
    if !id.is_member_of(td) || !is_agent_path {
        return Err(RegistryError::Invalid(format!(
            "spiffe_id {id} cannot be an agent ID: it must be spiffe://{td}{AGENT_PATH_PREFIX}<attestor>/<id>"
        )));
    }
    let lookup = id.clone();
    let existing = state.db(move |s| s.get_agent(&lookup)).await?;
    match existing {
        Some(agent) if agent.banned => Err(RegistryError::Precondition(format!(
            "spiffe_id {id} names a banned agent; a banned agent's ID is never issued again, \
             choose a new agent ID or omit --spiffe-id"
        ))),
        Some(agent) if !agent.evicted => Err(RegistryError::Precondition(format!(
            "spiffe_id {id} names an attested agent in good standing; \
             evict it first (agent evict) or choose an agent ID no agent holds"
        ))),
        _ => Ok(()),
    }
}

/// Revokes one SVID by serial (normalized); returns the serials newly put
/// on the CRL (none if it already was, or has expired).
pub(crate) async fn revoke_svid(
    state: &Arc<ServerState>,
    who: &Principal,
    serial: String,
    reason: RevocationReason,
) -> Result<Vec<String>, RegistryError> {
    let sweep = revocation::sweep(state, reason);
    let lookup = serial.clone();
    let revoked = state
        .db(move |s| s.revoke_svid(&lookup, &sweep))
        .await
        .map_err(|e| match e {
            StoreError::NotFound { .. } => RegistryError::NotFound(format!(
                "no SVID with serial {serial} was issued by this server"
            )),
            e => RegistryError::Store(e),
        })?;
    let Some(revoked) = revoked else {
        let lookup = serial.clone();
        let record = state.db(move |s| s.get_svid(&lookup)).await?;
        if let Some(record) = record.filter(|r| r.not_after <= sweep_time(state)) {
            return Err(RegistryError::Precondition(format!(
                "SVID {serial} already expired at {} (unix seconds); expired SVIDs need no revocation",
                record.not_after
            )));
        }
        // Already on the CRL: revoking again changes nothing.
        return Ok(Vec::new());
    };
    revocation::announce(
        state,
        std::slice::from_ref(&revoked),
        &who.to_string(),
        None,
    )
    .await?;
    Ok(vec![revoked.serial])
}

fn sweep_time(state: &ServerState) -> i64 {
    unix(state.now())
}
