//! The [`Datastore`] trait on [`PostgresStore`]: each method is one
//! transaction (see the crate documentation for the isolation levels).

use lanyard_identity::{Entry, EntryId, SpiffeId};
use lanyard_store::{
    AgentRecord, AgentStanding, Datastore, IssueBatch, Issued, JoinTokenRecord, Records, Refusal,
    Revocation, StoreError, SvidRecord, Sweep, TaskRecord,
};

use crate::PostgresStore;

impl Datastore for PostgresStore {
    fn create_entry(&self, entry: &Entry) -> Result<(), StoreError> {
        self.create_entry_tx(entry)
    }

    fn create_entries(&self, entries: &[Entry]) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        self.create_entries_tx(entries)
    }

    fn import(&self, records: &Records) -> Result<(), StoreError> {
        self.import_tx(records)
    }

    fn get_entry(&self, id: &EntryId) -> Result<Option<Entry>, StoreError> {
        self.get_entry_now(id)
    }

    fn update_entry(
        &self,
        entry: &Entry,
        sweep: &Sweep,
    ) -> Result<(Entry, Vec<Revocation>), StoreError> {
        self.update_entry_tx(entry, sweep)
    }

    fn delete_entry(
        &self,
        id: &EntryId,
        sweep: &Sweep,
    ) -> Result<(Entry, Vec<Revocation>), StoreError> {
        self.delete_entry_tx(id, sweep)
    }

    fn list_entries(&self) -> Result<Vec<Entry>, StoreError> {
        self.list_entries_now()
    }

    fn put_agent(&self, agent: &AgentRecord) -> Result<(), StoreError> {
        self.put_agent_tx(agent)
    }

    fn attest_agent(
        &self,
        agent: &AgentRecord,
        svid: &SvidRecord,
    ) -> Result<AgentRecord, StoreError> {
        self.attest_agent_tx(agent, svid)
    }

    fn renew_agent(
        &self,
        agent_id: &SpiffeId,
        presented_serial: &str,
        svid: &SvidRecord,
    ) -> Result<AgentRecord, StoreError> {
        self.renew_agent_tx(agent_id, presented_serial, svid)
    }

    fn set_agent_standing(
        &self,
        agent_id: &SpiffeId,
        standing: AgentStanding,
        sweep: &Sweep,
    ) -> Result<(AgentRecord, Vec<Revocation>), StoreError> {
        self.set_agent_standing_tx(agent_id, standing, sweep)
    }

    fn get_agent(&self, id: &SpiffeId) -> Result<Option<AgentRecord>, StoreError> {
        self.get_agent_now(id)
    }

    fn list_agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        self.list_agents_now()
    }

    fn create_join_token(&self, token: &JoinTokenRecord) -> Result<(), StoreError> {
        self.create_join_token_now(token)
    }

    fn consume_join_token(&self, token_id: &str, now: i64) -> Result<JoinTokenRecord, StoreError> {
        self.consume_join_token_now(token_id, now)
    }

    fn record_svid(&self, svid: &SvidRecord) -> Result<(), StoreError> {
        self.record_svid_tx(svid)
    }

    fn issue_svids(
        &self,
        batches: &[IssueBatch],
        now: i64,
    ) -> Result<Vec<Vec<Result<Issued, Refusal>>>, StoreError> {
        self.issue_svids_tx(batches, now)
    }

    fn revoke_svid(&self, serial: &str, sweep: &Sweep) -> Result<Option<Revocation>, StoreError> {
        self.revoke_svid_tx(serial, sweep)
    }

    fn get_svid(&self, serial: &str) -> Result<Option<SvidRecord>, StoreError> {
        self.get_svid_now(serial)
    }

    fn list_svids(&self) -> Result<Vec<SvidRecord>, StoreError> {
        self.list_svids_now()
    }

    fn prune_svids(&self, expired_before: i64) -> Result<usize, StoreError> {
        self.prune("svids", expired_before)
    }

    fn put_revocation(&self, revocation: &Revocation) -> Result<(), StoreError> {
        self.put_revocation_now(revocation)
    }

    fn list_revocations(&self) -> Result<Vec<Revocation>, StoreError> {
        self.list_revocations_now()
    }

    fn prune_revocations(&self, expired_before: i64) -> Result<usize, StoreError> {
        self.prune("revocations", expired_before)
    }

    fn next_crl_number(&self) -> Result<u64, StoreError> {
        self.next_crl_number_now()
    }

    fn raise_crl_number(&self, issued: u64) -> Result<(), StoreError> {
        self.raise_crl_number_now(issued)
    }

    fn get_ca_journal(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.get_ca_journal_now()
    }

    fn put_ca_journal(&self, journal: &[u8]) -> Result<(), StoreError> {
        self.put_ca_journal_now(journal)
    }

    fn put_task(&self, task: &TaskRecord) -> Result<(), StoreError> {
        self.put_task_tx(task)
    }

    fn activate_task(&self, task: &TaskRecord, entry: &Entry) -> Result<(), StoreError> {
        self.activate_task_tx(task, entry)
    }

    fn end_task(&self, task: &TaskRecord, sweep: &Sweep) -> Result<Vec<Revocation>, StoreError> {
        self.end_task_tx(task, sweep)
    }

    fn get_task(&self, id: &str) -> Result<Option<TaskRecord>, StoreError> {
        self.get_task_now(id)
    }

    fn list_tasks(&self) -> Result<Vec<TaskRecord>, StoreError> {
        self.list_tasks_now()
    }

    fn get_audit_head(&self) -> Result<Option<(u64, String)>, StoreError> {
        self.get_audit_head_now()
    }

    fn put_audit_head(&self, seq: u64, hash: &str) -> Result<(), StoreError> {
        self.put_audit_head_now(seq, hash)
    }
}
