//! The storage interface the server is written against.

use lanyard_identity::{Entry, EntryId, SpiffeId};

use crate::{
    AgentRecord, AgentStanding, IssueBatch, Issued, JoinTokenRecord, Records, Refusal, Revocation,
    StoreError, SvidRecord, Sweep, TaskRecord,
};

/// Everything the server keeps durably.
///
/// Methods are synchronous: the server calls them from `spawn_blocking`
/// where latency matters, and a few directly from async code (so a backend
/// must not panic there). Every method that writes makes the write durable
/// (fsync, or a PostgreSQL commit) before it returns `Ok`. The trait
/// is object safe; the server holds an `Arc<dyn Datastore>`.
///
/// Every backend must pass `conformance::run_all` (the `conformance` feature
/// of this crate, enabled by backends' tests).
///
/// # Issuance against revocation
///
/// The methods that issue ([`issue_svids`](Datastore::issue_svids),
/// [`attest_agent`](Datastore::attest_agent),
/// [`renew_agent`](Datastore::renew_agent)) check the standing of agent,
/// entry and task and record the serial in one transaction, before the
/// caller signs. The methods that take a credential away
/// ([`delete_entry`](Datastore::delete_entry),
/// [`update_entry`](Datastore::update_entry) of SPIFFE ID, parent or
/// selectors, [`set_agent_standing`](Datastore::set_agent_standing),
/// [`end_task`](Datastore::end_task), [`revoke_svid`](Datastore::revoke_svid))
/// change the standing and turn every unexpired serial recorded under it into
/// a revocation in one transaction. The two are serialized: each sees the
/// other, never neither. Each method maps onto one SQL transaction.
pub trait Datastore: Send + Sync + 'static {
    /// Stores a new registration entry exactly as given.
    ///
    /// [`StoreError::AlreadyExists`] if an entry with the same ID exists, or
    /// one with the same SPIFFE ID, parent ID and selector set (order and
    /// duplicates of selectors do not matter).
    fn create_entry(&self, entry: &Entry) -> Result<(), StoreError>;

    /// Creates many entries in one transaction; each is checked as
    /// [`create_entry`](Datastore::create_entry) checks it (against the
    /// store and the entries before it), and one result per entry is
    /// returned in order. The entries that pass are all written, or none
    /// (the outer error).
    fn create_entries(&self, entries: &[Entry]) -> Result<Vec<Result<(), StoreError>>, StoreError>;

    /// Writes every record of a backup into an empty store, with the same
    /// indexes the operations keep, in one transaction (restoring a backup,
    /// or moving between backends). A store that holds any entry, agent,
    /// SVID, revocation or task is refused with
    /// [`StoreError::AlreadyExists`].
    fn import(&self, records: &Records) -> Result<(), StoreError>;

    /// The entry with this ID, or `None`.
    fn get_entry(&self, id: &EntryId) -> Result<Option<Entry>, StoreError>;

    /// Replaces the entry with `entry.id` by `entry` if the stored one is
    /// still at `entry.revision` (compare-and-swap), storing it at the next
    /// revision (`created_at` is kept from the stored entry). If the SPIFFE
    /// ID, the parent or the selector set changed, every unexpired SVID of
    /// the entry is revoked with `sweep` in the same transaction. Returns the
    /// stored entry and the new revocations.
    ///
    /// [`StoreError::NotFound`] if no entry has this ID;
    /// [`StoreError::Conflict`] if its revision moved on;
    /// [`StoreError::AlreadyExists`] if another entry already has the new
    /// SPIFFE ID, parent ID and selector set.
    fn update_entry(
        &self,
        entry: &Entry,
        sweep: &Sweep,
    ) -> Result<(Entry, Vec<Revocation>), StoreError>;

    /// Removes the entry and revokes every unexpired SVID issued for it, in
    /// one transaction; returns the entry and the new revocations.
    /// [`StoreError::NotFound`] if absent.
    fn delete_entry(
        &self,
        id: &EntryId,
        sweep: &Sweep,
    ) -> Result<(Entry, Vec<Revocation>), StoreError>;

    /// All entries, ordered by `created_at`, then by ID.
    fn list_entries(&self) -> Result<Vec<Entry>, StoreError>;

    /// Inserts an agent exactly as given (restoring a backup);
    /// [`StoreError::AlreadyExists`] if one with this ID exists.
    fn put_agent(&self, agent: &AgentRecord) -> Result<(), StoreError>;

    /// Records a (re-)attested agent and its new SVID in one transaction:
    /// the agent record is replaced (an evicted agent comes back in good
    /// standing) at the next revision, unless the stored one is banned
    /// ([`StoreError::Refused`] with [`Refusal::AgentBanned`]). Returns the
    /// stored record.
    fn attest_agent(
        &self,
        agent: &AgentRecord,
        svid: &SvidRecord,
    ) -> Result<AgentRecord, StoreError>;

    /// Records an agent's renewed SVID and makes it the agent's current one,
    /// if the agent is in good standing and `presented_serial` is still its
    /// current serial; otherwise [`StoreError::Refused`]. Returns the stored
    /// record.
    fn renew_agent(
        &self,
        agent_id: &SpiffeId,
        presented_serial: &str,
        svid: &SvidRecord,
    ) -> Result<AgentRecord, StoreError>;

    /// Evicts or bans an agent and revokes its own SVIDs and every SVID
    /// issued through it, in one transaction. Returns the stored record and
    /// the new revocations. [`StoreError::NotFound`] if unknown.
    fn set_agent_standing(
        &self,
        agent_id: &SpiffeId,
        standing: AgentStanding,
        sweep: &Sweep,
    ) -> Result<(AgentRecord, Vec<Revocation>), StoreError>;

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

    /// Records an issued SVID (the server's own, and backups being
    /// restored). Recording the identical record again is a no-op; a
    /// different record under the same serial is
    /// [`StoreError::AlreadyExists`], since serials must be unique.
    fn record_svid(&self, svid: &SvidRecord) -> Result<(), StoreError>;

    /// Checks and records the SVIDs of several batches in one transaction
    /// (group commit), at `now`. For each item, in order: the batch's agent
    /// is known, in good standing and authenticated with its current SVID;
    /// the entry exists at the planned revision, has not expired, and is
    /// parented to the agent or to a node alias (an entry parented to the
    /// server whose selectors are all among the agent's); if the entry
    /// belongs to a task, the task is active and the SVID ends within its
    /// window. An accepted item's serial is recorded with its entry, agent
    /// and task; a refused one records nothing. Returns one result per item.
    fn issue_svids(
        &self,
        batches: &[IssueBatch],
        now: i64,
    ) -> Result<Vec<Vec<Result<Issued, Refusal>>>, StoreError>;

    /// Revokes one recorded SVID. Returns `None` if it is already revoked or
    /// has expired; [`StoreError::NotFound`] if the serial was never recorded.
    fn revoke_svid(&self, serial: &str, sweep: &Sweep) -> Result<Option<Revocation>, StoreError>;

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

    /// Stores an activated task together with the entry that carries it, in
    /// one transaction; `task.entry_id` must name `entry`.
    fn activate_task(&self, task: &TaskRecord, entry: &Entry) -> Result<(), StoreError>;

    /// Stores an ended task (completed, expired, revoked), deletes its entry
    /// if it has one, and revokes every unexpired SVID of that entry, in one
    /// transaction. Returns the new revocations.
    fn end_task(&self, task: &TaskRecord, sweep: &Sweep) -> Result<Vec<Revocation>, StoreError>;

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
