//! The storage interface the server is written against.

use lanyard_identity::{Entry, EntryId, SpiffeId};

use crate::{AgentRecord, JoinTokenRecord, Revocation, StoreError, SvidRecord, TaskRecord};

/// Everything the server keeps durably.
///
/// Methods are synchronous: backends are embedded and fast, and the server
/// calls them from `spawn_blocking` where latency matters. Every method that
/// writes makes the write durable (fsync) before it returns `Ok`. The trait
/// is object safe; the server holds an `Arc<dyn Datastore>`.
///
/// Every backend must pass [`conformance::run_all`](crate::conformance::run_all).
pub trait Datastore: Send + Sync + 'static {
    /// Stores a new registration entry exactly as given.
    ///
    /// [`StoreError::AlreadyExists`] if an entry with the same ID exists, or
    /// one with the same SPIFFE ID, parent ID and selector set (order and
    /// duplicates of selectors do not matter).
    fn create_entry(&self, entry: &Entry) -> Result<(), StoreError>;

    /// The entry with this ID, or `None`.
    fn get_entry(&self, id: &EntryId) -> Result<Option<Entry>, StoreError>;

    /// Replaces the entry with `entry.id` by `entry`, exactly as given (the
    /// caller sets `revision` and keeps `created_at`).
    ///
    /// [`StoreError::NotFound`] if no entry has this ID;
    /// [`StoreError::AlreadyExists`] if another entry already has the new
    /// SPIFFE ID, parent ID and selector set.
    fn update_entry(&self, entry: &Entry) -> Result<(), StoreError>;

    /// Removes the entry and returns it; [`StoreError::NotFound`] if absent.
    fn delete_entry(&self, id: &EntryId) -> Result<Entry, StoreError>;

    /// All entries, ordered by `created_at`, then by ID.
    fn list_entries(&self) -> Result<Vec<Entry>, StoreError>;

    /// Inserts or replaces the agent keyed by its SPIFFE ID.
    fn put_agent(&self, agent: &AgentRecord) -> Result<(), StoreError>;

    /// The agent with this SPIFFE ID, or `None`.
    fn get_agent(&self, id: &SpiffeId) -> Result<Option<AgentRecord>, StoreError>;

    /// All agents, ordered by SPIFFE ID.
    fn list_agents(&self) -> Result<Vec<AgentRecord>, StoreError>;

    /// Stores a new join token; [`StoreError::AlreadyExists`] if its ID is
    /// taken (used tokens included).
    fn create_join_token(&self, token: &JoinTokenRecord) -> Result<(), StoreError>;

    /// Consumes a join token: atomic and single use, so of any number of
    /// concurrent callers exactly one gets `Ok`.
    ///
    /// Unknown token: [`StoreError::NotFound`]; already consumed:
    /// [`StoreError::TokenUsed`]; `now >= expires_at`:
    /// [`StoreError::TokenExpired`] (an expired token is not consumed).
    fn consume_join_token(&self, token_id: &str, now: i64) -> Result<JoinTokenRecord, StoreError>;

    /// Records an issued SVID. Recording the identical record again is a
    /// no-op; a different record under the same serial is
    /// [`StoreError::AlreadyExists`], since serials must be unique.
    fn record_svid(&self, svid: &SvidRecord) -> Result<(), StoreError>;

    /// The SVID with this serial, or `None`.
    fn get_svid(&self, serial: &str) -> Result<Option<SvidRecord>, StoreError>;

    /// All recorded SVIDs, ordered by serial.
    fn list_svids(&self) -> Result<Vec<SvidRecord>, StoreError>;

    /// Removes SVIDs whose `not_after` is before `expired_before`; returns how
    /// many were removed.
    fn prune_svids(&self, expired_before: i64) -> Result<usize, StoreError>;

    /// Inserts or replaces the revocation of `revocation.serial`.
    fn put_revocation(&self, revocation: &Revocation) -> Result<(), StoreError>;

    /// All revocations, ordered by serial.
    fn list_revocations(&self) -> Result<Vec<Revocation>, StoreError>;

    /// Removes revocations whose `not_after` is before `expired_before`;
    /// returns how many were removed.
    fn prune_revocations(&self, expired_before: i64) -> Result<usize, StoreError>;

    /// The next CRL number: persisted, strictly increasing, starting at 1.
    fn next_crl_number(&self) -> Result<u64, StoreError>;

    /// Raises the CRL counter so that every later
    /// [`next_crl_number`](Datastore::next_crl_number) is above `issued`
    /// (restoring a backup); never lowers it.
    fn raise_crl_number(&self, issued: u64) -> Result<(), StoreError>;

    /// The CA's opaque journal (its rotation state), or `None` before the
    /// first [`put_ca_journal`](Datastore::put_ca_journal).
    fn get_ca_journal(&self) -> Result<Option<Vec<u8>>, StoreError>;

    /// Replaces the CA's journal.
    fn put_ca_journal(&self, journal: &[u8]) -> Result<(), StoreError>;

    /// Stores a task grant, replacing the one with the same ID.
    fn put_task(&self, task: &TaskRecord) -> Result<(), StoreError>;

    /// The task with this ID, if any.
    fn get_task(&self, id: &str) -> Result<Option<TaskRecord>, StoreError>;

    /// Every task, ordered by ID.
    fn list_tasks(&self) -> Result<Vec<TaskRecord>, StoreError>;

    /// The audit log's head (last sequence number and hash), recorded after
    /// every append so that a dropped tail of the log is detected.
    fn get_audit_head(&self) -> Result<Option<(u64, String)>, StoreError>;

    /// Records the audit log's head.
    fn put_audit_head(&self, seq: u64, hash: &str) -> Result<(), StoreError>;
}
