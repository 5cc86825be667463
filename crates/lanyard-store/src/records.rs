//! The records the store keeps besides registration entries. All times are
//! seconds since the Unix epoch.

use lanyard_identity::{EntryId, Selector, SpiffeId};
use serde::{Deserialize, Serialize};

/// An attested agent (one per node).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// The agent's SPIFFE ID, e.g. `spiffe://example.org/lanyard/agent/join_token/<id>`.
    pub spiffe_id: SpiffeId,
    /// How the agent attested: `join_token` or `x509pop`.
    pub attestation_type: String,
    /// The node selectors attestation produced (`join_token:id:...`, `x509pop:subject:cn:...`).
    pub selectors: Vec<Selector>,
    /// Serial of the agent's current SVID, lower-case hex.
    pub serial: String,
    /// When the agent's current SVID expires.
    pub expires_at: i64,
    /// When the agent last attested.
    pub attested_at: i64,
    /// A banned agent may never attest again.
    pub banned: bool,
    /// An evicted agent must attest again with a new token or x509pop.
    pub evicted: bool,
    /// Bumped by the store on every change; changes are compare-and-swap on
    /// it, so a writer holding a stale copy gets an error, never overwrites.
    #[serde(default)]
    pub revision: u64,
}

/// A one-time join token. Only a digest of the secret is stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokenRecord {
    /// The first 32 hex characters of the SHA-256 of the secret token.
    pub token_id: String,
    /// When the token stops being accepted.
    pub expires_at: i64,
    /// When the token was generated.
    pub created_at: i64,
    /// The agent ID to give the node that uses it, instead of the default
    /// `.../lanyard/agent/join_token/<token_id>`.
    pub spiffe_id: Option<SpiffeId>,
}

/// An issued X.509-SVID, recorded before it is returned so that it can be
/// revoked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SvidRecord {
    /// Certificate serial, lower-case hex.
    pub serial: String,
    /// The SPIFFE ID in the certificate.
    pub spiffe_id: SpiffeId,
    /// The entry it was issued for; `None` for agent and server SVIDs.
    pub entry_id: Option<EntryId>,
    /// The agent it was issued through; `None` for the server's own SVIDs.
    pub agent_id: Option<SpiffeId>,
    /// The task grant it was issued under, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// When it was issued.
    pub issued_at: i64,
    /// Its notAfter.
    pub not_after: i64,
}

/// A revoked serial, listed on the CRL until its certificate expires.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// Certificate serial, lower-case hex.
    pub serial: String,
    /// When it was revoked.
    pub revoked_at: i64,
    /// The certificate's notAfter; the revocation is pruned after it.
    pub not_after: i64,
    /// Why it was revoked (free text, e.g. `entry deleted`, `task completed`).
    pub reason: String,
}

/// How a join token is kept: the record plus when it was used. A used token
/// stays as a tombstone so that a second use is reported as
/// [`StoreError::TokenUsed`](crate::StoreError::TokenUsed), not as unknown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredJoinToken {
    pub(crate) token: JoinTokenRecord,
    pub(crate) used_at: Option<i64>,
}

/// Where a task grant is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting for a second operator's approval.
    Requested,
    /// Approved; its window has not started yet.
    Approved,
    /// Inside its window: its entry exists and SVIDs are issued.
    Active,
    /// Ended by `task complete`; its SVIDs are revoked.
    Completed,
    /// Its window ended; its SVIDs are revoked.
    Expired,
    /// Refused before it was active.
    Denied,
    /// Refused after approval (deny of an approved or active task); its SVIDs are revoked.
    Revoked,
}

impl TaskState {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::Approved => "approved",
            Self::Active => "active",
            Self::Completed => "completed",
            Self::Expired => "expired",
            Self::Denied => "denied",
            Self::Revoked => "revoked",
        }
    }

    /// Whether the task can no longer change (other than a break-glass review).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Expired | Self::Denied | Self::Revoked
        )
    }
}

/// One step in a task's life: the state it entered, when, by whom, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskTransition {
    /// The state entered.
    pub state: TaskState,
    /// When.
    pub at: i64,
    /// Who (an operator principal, or `lanyard-server` for the clock).
    pub principal: String,
    /// A note or reason, if one was given.
    pub note: Option<String>,
}

/// A task-scoped, just-in-time identity grant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The task ID (`task-` and 16 hex digits).
    pub id: String,
    /// The change ticket it is bound to, e.g. `CHG-1234`.
    pub ticket: String,
    /// What the work is.
    pub purpose: String,
    /// The SPIFFE ID granted.
    pub spiffe_id: SpiffeId,
    /// The agent (or node alias) that may fetch it.
    pub parent_id: SpiffeId,
    /// The workload selectors.
    pub selectors: Vec<Selector>,
    /// DNS SANs.
    pub dns_names: Vec<String>,
    /// SPIFFE IDs of the servers the SVID may be presented to (empty: any).
    pub audiences: Vec<SpiffeId>,
    /// Window start.
    pub starts_at: i64,
    /// Window end: no SVID of the task is valid past it.
    pub ends_at: i64,
    /// Current state.
    pub state: TaskState,
    /// Every transition, oldest first (the first is `Requested`).
    pub history: Vec<TaskTransition>,
    /// The entry that carries the grant while it is active.
    pub entry_id: Option<EntryId>,
    /// Emergency access: active without approval, awaiting review.
    pub break_glass: bool,
    /// Who reviewed a break-glass task, and when.
    pub reviewed: Option<TaskTransition>,
    /// Distinct approvers the task policy requires before the task becomes
    /// approved; 0 (records from before policies) counts as 1.
    #[serde(default)]
    pub approvals_required: u32,
    /// Approvers must belong to one of these groups (empty: any approver).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approver_groups: Vec<String>,
    /// Every approval so far, oldest first (each also in `history`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvals: Vec<TaskTransition>,
    /// SHA-256 of the task policy that allowed the request.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub policy_sha256: String,
    /// The policy rule that allowed the request.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub policy_rule: String,
}

impl TaskRecord {
    /// Who requested the task.
    pub fn requester(&self) -> &str {
        self.history
            .first()
            .map(|t| t.principal.as_str())
            .unwrap_or("")
    }

    /// Distinct approvals needed (at least one).
    pub fn approvals_needed(&self) -> u32 {
        self.approvals_required.max(1)
    }

    /// The transition into `state`, if it happened.
    pub fn transition(&self, state: TaskState) -> Option<&TaskTransition> {
        self.history.iter().find(|t| t.state == state)
    }
}

/// Every record of a store, as a backup carries them, for
/// [`Datastore::import`](crate::Datastore::import).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Records {
    /// Registration entries.
    pub entries: Vec<lanyard_identity::Entry>,
    /// Attested agents.
    pub agents: Vec<AgentRecord>,
    /// Issued SVIDs.
    pub svids: Vec<SvidRecord>,
    /// Revoked serials.
    pub revocations: Vec<Revocation>,
    /// Task grants.
    pub tasks: Vec<TaskRecord>,
}

impl Records {
    /// Logs, once an import committed, how many records of each kind it wrote.
    pub fn log_imported(&self) {
        tracing::info!(
            entries = self.entries.len(),
            agents = self.agents.len(),
            svids = self.svids.len(),
            revocations = self.revocations.len(),
            tasks = self.tasks.len(),
            "records imported"
        );
    }

    /// Refuses a backup that repeats a key (an entry ID or identity, an
    /// agent ID, a serial, a task ID): an import would collapse the repeats
    /// silently into one record.
    pub fn check_distinct(&self) -> Result<(), crate::StoreError> {
        fn distinct(keys: impl Iterator<Item = String>) -> bool {
            let mut seen = std::collections::HashSet::new();
            keys.into_iter().all(|k| seen.insert(k))
        }
        let identities = self
            .entries
            .iter()
            .map(crate::rules::identity_key)
            .collect::<Result<Vec<_>, _>>()?;
        let checks = [
            (
                "entry IDs",
                distinct(self.entries.iter().map(|e| e.id.to_string())),
            ),
            ("entry identities", distinct(identities.into_iter())),
            (
                "agent IDs",
                distinct(self.agents.iter().map(|a| a.spiffe_id.to_string())),
            ),
            (
                "SVID serials",
                distinct(self.svids.iter().map(|s| s.serial.clone())),
            ),
            (
                "revoked serials",
                distinct(self.revocations.iter().map(|r| r.serial.clone())),
            ),
            (
                "task IDs",
                distinct(self.tasks.iter().map(|t| t.id.clone())),
            ),
        ];
        match checks.iter().find(|(_, ok)| !ok) {
            Some((what, _)) => Err(crate::StoreError::AlreadyExists {
                kind: "record",
                key: format!("(the import repeats {what})"),
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_task_stored_before_policies_reads_with_one_approval_needed() {
        let old = r#"{"id":"task-01","ticket":"CHG-1","purpose":"p",
            "spiffe_id":"spiffe://a.org/m","parent_id":"spiffe://a.org/lanyard/agent/x/1",
            "selectors":["unix:uid:1"],"dns_names":[],"audiences":[],"starts_at":1,
            "ends_at":2,"state":"requested","history":[],"entry_id":null,
            "break_glass":false,"reviewed":null}"#;
        let task: TaskRecord = serde_json::from_str(old).unwrap();
        assert_eq!(task.approvals_required, 0);
        assert_eq!(task.approvals_needed(), 1);
        assert!(task.approvals.is_empty() && task.policy_sha256.is_empty());
        let again = serde_json::to_string(&task).unwrap();
        assert!(
            !again.contains("approvals\""),
            "empty new fields are not written: {again}"
        );
    }
}
