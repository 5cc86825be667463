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
