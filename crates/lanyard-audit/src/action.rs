//! The closed vocabulary of security decisions that are audited.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::AuditError;

/// What kind of security decision a record documents.
///
/// The serialized form (JSON, [`Display`](fmt::Display), [`FromStr`]) is the
/// snake_case name, for example `svid_issued`; it is part of the on-disk
/// format and of every record's hash, so a name never changes once released.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Action {
    /// A join token was created.
    TokenCreated,
    /// A join token was consumed by an attesting agent.
    TokenUsed,
    /// An agent passed node attestation.
    AgentAttested,
    /// A node attestation attempt was refused.
    AttestationRefused,
    /// An agent renewed its own SVID.
    AgentRenewed,
    /// An agent was evicted (it may attest again).
    AgentEvicted,
    /// An agent was banned (it may not attest again).
    AgentBanned,
    /// A registration entry was created.
    EntryCreated,
    /// A registration entry was changed.
    EntryUpdated,
    /// A registration entry was deleted.
    EntryDeleted,
    /// An SVID was signed.
    SvidIssued,
    /// An SVID was revoked.
    SvidRevoked,
    /// A task grant was requested.
    TaskRequested,
    /// A task grant was approved.
    TaskApproved,
    /// A task grant was denied (before or after approval).
    TaskDenied,
    /// A task grant's window opened.
    TaskActivated,
    /// A task grant was completed by its holder or an operator.
    TaskCompleted,
    /// A task grant's window closed without anyone acting.
    TaskExpired,
    /// A task grant was revoked.
    TaskRevoked,
    /// A break-glass task grant was reviewed by an approver.
    TaskReviewed,
    /// A break-glass task grant was opened without approval.
    BreakGlass,
    /// The task policy refused a task request or an approval.
    TaskRefused,
}

impl Action {
    /// Every action, in declaration order.
    pub const ALL: &'static [Action] = &[
        Action::TokenCreated,
        Action::TokenUsed,
        Action::AgentAttested,
        Action::AttestationRefused,
        Action::AgentRenewed,
        Action::AgentEvicted,
        Action::AgentBanned,
        Action::EntryCreated,
        Action::EntryUpdated,
        Action::EntryDeleted,
        Action::SvidIssued,
        Action::SvidRevoked,
        Action::TaskRequested,
        Action::TaskApproved,
        Action::TaskDenied,
        Action::TaskActivated,
        Action::TaskCompleted,
        Action::TaskExpired,
        Action::TaskRevoked,
        Action::TaskReviewed,
        Action::BreakGlass,
        Action::TaskRefused,
    ];

    /// The snake_case name, as written in the log.
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::TokenCreated => "token_created",
            Action::TokenUsed => "token_used",
            Action::AgentAttested => "agent_attested",
            Action::AttestationRefused => "attestation_refused",
            Action::AgentRenewed => "agent_renewed",
            Action::AgentEvicted => "agent_evicted",
            Action::AgentBanned => "agent_banned",
            Action::EntryCreated => "entry_created",
            Action::EntryUpdated => "entry_updated",
            Action::EntryDeleted => "entry_deleted",
            Action::SvidIssued => "svid_issued",
            Action::SvidRevoked => "svid_revoked",
            Action::TaskRequested => "task_requested",
            Action::TaskApproved => "task_approved",
            Action::TaskDenied => "task_denied",
            Action::TaskActivated => "task_activated",
            Action::TaskCompleted => "task_completed",
            Action::TaskExpired => "task_expired",
            Action::TaskRevoked => "task_revoked",
            Action::TaskReviewed => "task_reviewed",
            Action::BreakGlass => "break_glass",
            Action::TaskRefused => "task_refused",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Action {
    type Err = AuditError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Action::ALL
            .iter()
            .copied()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| AuditError::UnknownAction { name: s.to_owned() })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn display_from_str_and_serde_agree_for_every_action() {
        for &action in Action::ALL {
            let name = action.to_string();
            assert_eq!(name.parse::<Action>().unwrap(), action);
            let json = serde_json::to_string(&action).unwrap();
            assert_eq!(json, format!("\"{name}\""));
            assert_eq!(serde_json::from_str::<Action>(&json).unwrap(), action);
        }
        assert_eq!(Action::ALL.len(), 22);
    }

    #[test]
    fn unknown_names_are_refused() {
        let err = "svid-issued".parse::<Action>().unwrap_err();
        assert_eq!(err.to_string(), "unknown audit action \"svid-issued\"");
        assert!("SvidIssued".parse::<Action>().is_err());
    }
}
