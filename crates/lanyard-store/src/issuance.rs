//! What the atomic issuance and revocation operations take and return.
//!
//! Issuance and revocation meet in the store, never in the caller: an
//! issuance records each serial in the same transaction that checks the
//! standing of its agent, entry and task; a revocation changes a standing
//! and sweeps every serial recorded under it in one transaction. Whichever
//! commits second sees the first, so nothing issued for a revoked subject
//! escapes the CRL and nothing is issued for it afterwards.

use lanyard_identity::{EntryId, SpiffeId};

use crate::TaskState;

/// One SVID the caller is about to sign: the serial and expiry it fixed in
/// advance, and the entry revision it planned the certificate from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssueItem {
    /// The entry the SVID is for.
    pub entry_id: EntryId,
    /// The entry revision the certificate's contents (SPIFFE ID, DNS names,
    /// TTL) were taken from; a different stored revision refuses the item.
    pub entry_revision: u64,
    /// The serial the certificate will carry, lower-case hex.
    pub serial: String,
    /// The SPIFFE ID the certificate will carry.
    pub spiffe_id: SpiffeId,
    /// The certificate's notAfter.
    pub not_after: i64,
}

/// SVIDs one agent asks for at once, checked and recorded together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssueBatch {
    /// The calling agent.
    pub agent_id: SpiffeId,
    /// The serial of the agent SVID it authenticated with: it must still be
    /// the agent's current one.
    pub agent_serial: String,
    /// The server's own SPIFFE ID: entries parented to it are node aliases.
    pub server_id: SpiffeId,
    /// The SVIDs, in request order.
    pub items: Vec<IssueItem>,
}

/// What an accepted [`IssueItem`] was recorded with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issued {
    /// The task grant the entry belongs to, if any; the SVID must carry its
    /// binding.
    pub task_id: Option<String>,
}

/// How a revoking operation puts serials on the CRL: every unexpired serial
/// recorded for the subject becomes a revocation with this time and reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sweep {
    /// When the revocation happens, seconds since the Unix epoch; serials
    /// that expire at or before it are left off.
    pub revoked_at: i64,
    /// The reason recorded on each revocation (an RFC 5280 reason name).
    pub reason: String,
}

/// Where an agent is put by an operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentStanding {
    /// Evicted: it must attest again with a new join token or x509pop.
    Evicted,
    /// Banned: it may never attest again.
    Banned,
}

/// Why the store refused to record an SVID, or to let an agent attest or
/// renew. Each names the record and the state that decided it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// No agent with this ID has attested.
    #[error("{agent} is not an attested agent")]
    AgentUnknown {
        /// The agent.
        agent: SpiffeId,
    },
    /// The agent is banned.
    #[error("agent {agent} is banned")]
    AgentBanned {
        /// The agent.
        agent: SpiffeId,
    },
    /// The agent was evicted.
    #[error("agent {agent} was evicted; attest again with a new join token or x509pop")]
    AgentEvicted {
        /// The agent.
        agent: SpiffeId,
    },
    /// The agent authenticated with an SVID that is no longer its current one.
    #[error(
        "agent SVID {presented} of {agent} has been superseded by {current}; reconnect with the current one"
    )]
    AgentSuperseded {
        /// The agent.
        agent: SpiffeId,
        /// The serial it presented.
        presented: String,
        /// Its current serial.
        current: String,
    },
    /// The entry does not exist (any more).
    #[error("entry {entry} does not exist")]
    EntryNotFound {
        /// The entry.
        entry: EntryId,
    },
    /// The entry changed since the request was planned.
    #[error(
        "entry {entry} changed (revision {found}, request made for {expected}); sync and retry"
    )]
    EntryChanged {
        /// The entry.
        entry: EntryId,
        /// The revision the request was made for.
        expected: u64,
        /// The stored revision.
        found: u64,
    },
    /// The entry is neither parented to the agent nor to a node alias that
    /// matches it.
    #[error("entry {entry} is not authorized for agent {agent}")]
    NotAuthorized {
        /// The entry.
        entry: EntryId,
        /// The agent.
        agent: SpiffeId,
    },
    /// The entry's own expiry has passed.
    #[error("entry {entry} expired at {expired_at}")]
    EntryExpired {
        /// The entry.
        entry: EntryId,
        /// Its `expires_at`.
        expired_at: i64,
    },
    /// The entry belongs to a task that is not active.
    #[error("task {task} is {}; nothing is issued for it", state.as_str())]
    TaskNotActive {
        /// The task.
        task: String,
        /// Its state.
        state: TaskState,
    },
    /// The SVID would outlive its task's window.
    #[error("task {task}'s window ends at {ends_at}; the SVID would end at {not_after}")]
    OutsideTaskWindow {
        /// The task.
        task: String,
        /// The window's end.
        ends_at: i64,
        /// The SVID's notAfter.
        not_after: i64,
    },
    /// The serial is already recorded (a random serial collided).
    #[error("serial {serial} is already recorded")]
    SerialTaken {
        /// The serial.
        serial: String,
    },
}
