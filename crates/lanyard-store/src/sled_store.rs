//! The embedded default backend, on sled 0.34.
//!
//! One tree per kind of record, each record a JSON document keyed by its
//! natural key (entry ID, agent SPIFFE ID, token ID, serial). The `meta` tree
//! holds the format-version marker, the write generation, the CRL number and
//! the CA journal.
//!
//! sled only syncs to disk every 500 ms on its own, so every write method
//! flushes before it returns, then advances the seal file (see
//! [`crate::seal`]). Opening fails closed (`sled_open`): an existing
//! directory is used only if it is a complete, undamaged store of our format
//! that holds every write it acknowledged. How records are encoded is
//! `sled_codec`; the operations that must be atomic are `sled_atomic`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use lanyard_identity::{Entry, EntryId, SpiffeId};
use tracing::{debug, info};

use crate::records::StoredJoinToken;
use crate::seal::Seal;
use crate::sled_codec::{
    Keyed, backend, decode, decode_counter, decode_record, encode, entry_key, get_record,
    increment_counter, list_records,
};
use crate::{
    AgentRecord, AgentStanding, Datastore, IssueBatch, Issued, JoinTokenRecord, Refusal,
    Revocation, StoreError, SvidRecord, Sweep, TaskRecord,
};

/// The format marker this build writes into new stores and accepts in
/// existing ones. Bump it (and write a migration) when the layout changes.
pub const FORMAT_VERSION: &str = "lanyard-store/2";
/// The previous format: the same records without the issuance indexes,
/// which opening builds (once) before it writes [`FORMAT_VERSION`].
pub(crate) const FORMAT_V1: &str = "lanyard-store/1";

pub(crate) const FORMAT_KEY: &[u8] = b"format_version";
pub(crate) const CRL_NUMBER_KEY: &[u8] = b"crl_number";
pub(crate) const CA_JOURNAL_KEY: &[u8] = b"ca_journal";
/// How many writes the store has acknowledged; see [`crate::seal`].
pub(crate) const GENERATION_KEY: &[u8] = b"generation";

pub(crate) const ENTRIES: &str = "entries";
pub(crate) const ENTRY_INDEX: &str = "entry_index";
pub(crate) const AGENTS: &str = "agents";
pub(crate) const JOIN_TOKENS: &str = "join_tokens";
pub(crate) const SVIDS: &str = "svids";
pub(crate) const REVOCATIONS: &str = "revocations";
pub(crate) const META: &str = "meta";
pub(crate) const TASKS: &str = "tasks";
pub(crate) const AUDIT_HEAD_KEY: &[u8] = b"audit_head";
/// Index: entry ID bytes ++ serial -> () for every recorded SVID of an entry.
pub(crate) const SVIDS_BY_ENTRY: &str = "svids_by_entry";
/// Index: agent SPIFFE ID ++ 0 ++ serial -> () for every SVID issued to or
/// through an agent.
pub(crate) const SVIDS_BY_AGENT: &str = "svids_by_agent";
/// Index: parent SPIFFE ID ++ 0 ++ entry key -> () (node aliases are found
/// under the server's ID).
pub(crate) const ENTRIES_BY_PARENT: &str = "entries_by_parent";
/// Index: entry key -> task ID, for the entries that carry task grants.
pub(crate) const TASK_ENTRIES: &str = "task_entries";

/// The trees a store of the previous format has.
pub(crate) const TREES_V1: [&str; 8] = [
    ENTRIES,
    ENTRY_INDEX,
    AGENTS,
    JOIN_TOKENS,
    SVIDS,
    REVOCATIONS,
    META,
    TASKS,
];

/// The indexes format 2 adds.
pub(crate) const INDEXES: [&str; 4] = [
    SVIDS_BY_ENTRY,
    SVIDS_BY_AGENT,
    ENTRIES_BY_PARENT,
    TASK_ENTRIES,
];

/// The files sled 0.34 keeps in its directory that we require to be present
/// in an existing store.
pub(crate) const SLED_DATA_FILE: &str = "db";
pub(crate) const SLED_CONF_FILE: &str = "conf";

/// A [`Datastore`] in a sled database in one directory.
///
/// Only one `SledStore` (in any process) may have a directory open at a time;
/// a second [`open`](SledStore::open) fails with [`StoreError::Open`].
pub struct SledStore {
    pub(crate) path: PathBuf,
    pub(crate) db: sled::Db,
    pub(crate) entries: sled::Tree,
    pub(crate) entry_index: sled::Tree,
    pub(crate) agents: sled::Tree,
    pub(crate) join_tokens: sled::Tree,
    pub(crate) svids: sled::Tree,
    pub(crate) revocations: sled::Tree,
    pub(crate) meta: sled::Tree,
    pub(crate) tasks: sled::Tree,
    pub(crate) svids_by_entry: sled::Tree,
    pub(crate) svids_by_agent: sled::Tree,
    pub(crate) entries_by_parent: sled::Tree,
    pub(crate) task_entries: sled::Tree,
    pub(crate) seal: Mutex<Seal>,
    /// Serializes the atomic operations (see [`crate::sled_atomic`]): each
    /// reads, decides and writes one transaction while holding it, so what
    /// it read is still true when it writes.
    pub(crate) writer: Mutex<()>,
}

impl fmt::Debug for SledStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

// === impl SledStore ===

impl SledStore {
    /// The directory this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn lock_seal(&self) -> Result<MutexGuard<'_, Seal>, StoreError> {
        self.seal
            .lock()
            .map_err(|_| StoreError::Backend("the seal file's lock was poisoned by a panic".into()))
    }

    /// Makes every write so far durable and acknowledged: bumps the write
    /// generation, flushes sled (fsync), then advances the seal file.
    pub(crate) fn commit(&self) -> Result<(), StoreError> {
        let generation = increment_counter(&self.meta, GENERATION_KEY)?;
        self.db.flush().map_err(backend)?;
        self.lock_seal()?.advance(generation)
    }

    /// Removes every record of `tree` whose expiry (read by `not_after`) is
    /// before `expired_before`. A record changed concurrently is left alone.
    fn prune<T: Keyed>(
        &self,
        tree: &sled::Tree,
        expired_before: i64,
        not_after: impl Fn(&T) -> i64,
    ) -> Result<usize, StoreError> {
        let mut removed = 0;
        for item in tree.iter() {
            let (key, value) = item.map_err(backend)?;
            let record: T = decode_record(&key, &value)?;
            if not_after(&record) < expired_before {
                let swapped = tree
                    .compare_and_swap(&key, Some(&value), None::<&[u8]>)
                    .map_err(backend)?;
                if swapped.is_ok() {
                    removed += 1;
                }
            }
        }
        if removed > 0 {
            self.commit()?;
            info!(
                tree = T::TREE,
                removed, expired_before, "pruned expired records"
            );
        }
        Ok(removed)
    }
}

// === impl Datastore for SledStore ===

impl Datastore for SledStore {
    fn create_entry(&self, entry: &Entry) -> Result<(), StoreError> {
        self.create_entry_atomic(entry)
    }

    fn create_entries(&self, entries: &[Entry]) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        self.create_entries_atomic(entries)
    }

    fn import(&self, records: &crate::Records) -> Result<(), StoreError> {
        self.import_atomic(records)
    }

    fn get_entry(&self, id: &EntryId) -> Result<Option<Entry>, StoreError> {
        get_record(&self.entries, entry_key(id).as_bytes())
    }

    fn update_entry(
        &self,
        entry: &Entry,
        sweep: &Sweep,
    ) -> Result<(Entry, Vec<Revocation>), StoreError> {
        self.update_entry_atomic(entry, sweep)
    }

    fn delete_entry(
        &self,
        id: &EntryId,
        sweep: &Sweep,
    ) -> Result<(Entry, Vec<Revocation>), StoreError> {
        self.delete_entry_atomic(id, sweep)
    }

    fn list_entries(&self) -> Result<Vec<Entry>, StoreError> {
        let mut entries: Vec<Entry> = list_records(&self.entries)?;
        entries.sort_by_key(|e| (e.created_at, e.id));
        Ok(entries)
    }

    fn put_agent(&self, agent: &AgentRecord) -> Result<(), StoreError> {
        self.put_agent_atomic(agent)
    }

    fn attest_agent(
        &self,
        agent: &AgentRecord,
        svid: &SvidRecord,
    ) -> Result<AgentRecord, StoreError> {
        self.attest_agent_atomic(agent, svid)
    }

    fn renew_agent(
        &self,
        agent_id: &SpiffeId,
        presented_serial: &str,
        svid: &SvidRecord,
    ) -> Result<AgentRecord, StoreError> {
        self.renew_agent_atomic(agent_id, presented_serial, svid)
    }

    fn set_agent_standing(
        &self,
        agent_id: &SpiffeId,
        standing: AgentStanding,
        sweep: &Sweep,
    ) -> Result<(AgentRecord, Vec<Revocation>), StoreError> {
        self.set_agent_standing_atomic(agent_id, standing, sweep)
    }

    fn get_agent(&self, id: &SpiffeId) -> Result<Option<AgentRecord>, StoreError> {
        get_record(&self.agents, id.as_str().as_bytes())
    }

    fn list_agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        list_records(&self.agents)
    }

    fn create_join_token(&self, token: &JoinTokenRecord) -> Result<(), StoreError> {
        let value = encode(
            "join token",
            &StoredJoinToken {
                token: token.clone(),
                used_at: None,
            },
        )?;
        let created = self
            .join_tokens
            .compare_and_swap(token.token_id.as_bytes(), None::<&[u8]>, Some(value))
            .map_err(backend)?;
        if created.is_err() {
            return Err(StoreError::AlreadyExists {
                kind: "join token",
                key: token.token_id.clone(),
            });
        }
        self.commit()?;
        info!(token_id = %token.token_id, expires_at = token.expires_at, "join token created");
        Ok(())
    }

    fn consume_join_token(&self, token_id: &str, now: i64) -> Result<JoinTokenRecord, StoreError> {
        let key = token_id.as_bytes();
        // Compare-and-swap from the unused record to its used tombstone:
        // exactly one caller's swap succeeds; the others see the tombstone
        // when they read again.
        loop {
            let Some(current) = self.join_tokens.get(key).map_err(backend)? else {
                return Err(StoreError::NotFound {
                    kind: "join token",
                    key: token_id.to_owned(),
                });
            };
            let stored: StoredJoinToken = decode_record(key, &current)?;
            if let Some(used_at) = stored.used_at {
                info!(token_id, used_at, "refused join token: already used");
                return Err(StoreError::TokenUsed);
            }
            if now >= stored.token.expires_at {
                info!(
                    token_id,
                    expired_at = stored.token.expires_at,
                    now,
                    "refused join token: expired"
                );
                return Err(StoreError::TokenExpired {
                    expired_at: stored.token.expires_at,
                });
            }
            let used = encode(
                "join token",
                &StoredJoinToken {
                    token: stored.token.clone(),
                    used_at: Some(now),
                },
            )?;
            let swapped = self
                .join_tokens
                .compare_and_swap(key, Some(&current), Some(used))
                .map_err(backend)?;
            if swapped.is_ok() {
                self.commit()?;
                info!(token_id, "join token consumed");
                return Ok(stored.token);
            }
        }
    }

    fn record_svid(&self, svid: &SvidRecord) -> Result<(), StoreError> {
        self.record_svid_atomic(svid)
    }

    fn issue_svids(
        &self,
        batches: &[IssueBatch],
        now: i64,
    ) -> Result<Vec<Vec<Result<Issued, Refusal>>>, StoreError> {
        self.issue_svids_atomic(batches, now)
    }

    fn revoke_svid(&self, serial: &str, sweep: &Sweep) -> Result<Option<Revocation>, StoreError> {
        self.revoke_svid_atomic(serial, sweep)
    }

    fn get_svid(&self, serial: &str) -> Result<Option<SvidRecord>, StoreError> {
        get_record(&self.svids, serial.as_bytes())
    }

    fn list_svids(&self) -> Result<Vec<SvidRecord>, StoreError> {
        list_records(&self.svids)
    }

    fn prune_svids(&self, expired_before: i64) -> Result<usize, StoreError> {
        self.prune_svids_atomic(expired_before)
    }

    fn put_revocation(&self, revocation: &Revocation) -> Result<(), StoreError> {
        let value = encode("revocation", revocation)?;
        self.revocations
            .insert(revocation.serial.as_bytes(), value)
            .map_err(backend)?;
        self.commit()?;
        info!(serial = %revocation.serial, reason = %revocation.reason, "revocation stored");
        Ok(())
    }

    fn list_revocations(&self) -> Result<Vec<Revocation>, StoreError> {
        list_records(&self.revocations)
    }

    fn prune_revocations(&self, expired_before: i64) -> Result<usize, StoreError> {
        self.prune(&self.revocations, expired_before, |r: &Revocation| {
            r.not_after
        })
    }

    fn next_crl_number(&self) -> Result<u64, StoreError> {
        let next = increment_counter(&self.meta, CRL_NUMBER_KEY)?;
        self.commit()?;
        debug!(crl_number = next, "CRL number allocated");
        Ok(next)
    }

    fn raise_crl_number(&self, issued: u64) -> Result<(), StoreError> {
        loop {
            let current = self.meta.get(CRL_NUMBER_KEY).map_err(backend)?;
            let last = match &current {
                None => 0,
                Some(bytes) => decode_counter(CRL_NUMBER_KEY, bytes)?,
            };
            if last >= issued {
                return Ok(());
            }
            let swapped = self
                .meta
                .compare_and_swap(CRL_NUMBER_KEY, current, Some(&issued.to_be_bytes()))
                .map_err(backend)?;
            if swapped.is_ok() {
                self.commit()?;
                info!(crl_number = issued, "CRL counter raised");
                return Ok(());
            }
        }
    }

    fn get_ca_journal(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .meta
            .get(CA_JOURNAL_KEY)
            .map_err(backend)?
            .map(|v| v.to_vec()))
    }

    fn put_ca_journal(&self, journal: &[u8]) -> Result<(), StoreError> {
        self.meta.insert(CA_JOURNAL_KEY, journal).map_err(backend)?;
        self.commit()?;
        info!(bytes = journal.len(), "CA journal stored");
        Ok(())
    }

    fn put_task(&self, task: &TaskRecord) -> Result<(), StoreError> {
        self.put_task_atomic(task)
    }

    fn activate_task(&self, task: &TaskRecord, entry: &Entry) -> Result<(), StoreError> {
        self.activate_task_atomic(task, entry)
    }

    fn end_task(&self, task: &TaskRecord, sweep: &Sweep) -> Result<Vec<Revocation>, StoreError> {
        self.end_task_atomic(task, sweep)
    }

    fn get_task(&self, id: &str) -> Result<Option<TaskRecord>, StoreError> {
        get_record(&self.tasks, id.as_bytes())
    }

    fn list_tasks(&self) -> Result<Vec<TaskRecord>, StoreError> {
        list_records(&self.tasks)
    }

    fn get_audit_head(&self) -> Result<Option<(u64, String)>, StoreError> {
        match self.meta.get(AUDIT_HEAD_KEY).map_err(backend)? {
            Some(bytes) => decode(META, AUDIT_HEAD_KEY, &bytes).map(Some),
            None => Ok(None),
        }
    }

    fn put_audit_head(&self, seq: u64, hash: &str) -> Result<(), StoreError> {
        let value = encode("audit head", &(seq, hash))?;
        self.meta.insert(AUDIT_HEAD_KEY, value).map_err(backend)?;
        self.commit()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::sled_codec::{describe_unique, read_counter, unique_key};
    use lanyard_identity::Selector;

    fn open() -> (tempfile::TempDir, SledStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        (dir, store)
    }

    fn assert_corrupt_naming<T: fmt::Debug>(result: Result<T, StoreError>, tree: &str, key: &str) {
        match result {
            Err(StoreError::Corrupt { what }) => assert!(
                what.contains(&format!("`{tree}`")) && what.contains(key),
                "the error must name tree {tree} and key {key}: {what}"
            ),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn undecodable_records_are_errors_on_read_never_skipped() {
        let (_dir, store) = open();
        store.svids.insert("0f", &b"{\"serial\":"[..]).unwrap();
        assert_corrupt_naming(store.list_svids(), SVIDS, "\"0f\"");
        assert_corrupt_naming(store.get_svid("0f"), SVIDS, "\"0f\"");
        assert_corrupt_naming(store.prune_svids(i64::MAX), SVIDS, "\"0f\"");

        store.join_tokens.insert("t", &b"[]"[..]).unwrap();
        assert_corrupt_naming(store.consume_join_token("t", 0), JOIN_TOKENS, "\"t\"");

        let id = EntryId(uuid::Uuid::new_v4());
        store
            .entries
            .insert(entry_key(&id).as_bytes(), &b"null"[..])
            .unwrap();
        assert_corrupt_naming(store.list_entries(), ENTRIES, &entry_key(&id));
        assert_corrupt_naming(store.get_entry(&id), ENTRIES, &entry_key(&id));
        assert_corrupt_naming(
            store.delete_entry(
                &id,
                &Sweep {
                    revoked_at: 0,
                    reason: String::new(),
                },
            ),
            ENTRIES,
            &entry_key(&id),
        );

        store.meta.insert(CRL_NUMBER_KEY, &b"7"[..]).unwrap();
        assert_corrupt_naming(store.next_crl_number(), META, "crl_number");
        assert!(matches!(store.verify(), Err(StoreError::Corrupt { .. })));
    }

    #[test]
    fn a_missing_revocation_index_key_is_refused() {
        let (_dir, store) = open();
        let agent = SpiffeId::new("spiffe://example.org/lanyard/agent/join_token/n").unwrap();
        store
            .record_svid(&SvidRecord {
                serial: "0a".into(),
                spiffe_id: SpiffeId::new("spiffe://example.org/w").unwrap(),
                entry_id: Some(EntryId(uuid::Uuid::new_v4())),
                agent_id: Some(agent.clone()),
                task_id: None,
                issued_at: 0,
                not_after: 10,
            })
            .unwrap();
        assert!(store.verify().is_ok());
        let key = store.svids_by_agent.iter().next().unwrap().unwrap().0;
        store.svids_by_agent.remove(key).unwrap();
        match store.verify() {
            Err(StoreError::Corrupt { what }) => assert!(what.contains("svids_by_agent"), "{what}"),
            other => panic!("a sweep could miss that serial, yet verify said {other:?}"),
        }
    }

    #[test]
    fn every_write_advances_the_generation_and_the_seal() {
        let (dir, store) = open();
        assert_eq!(read_counter(&store.meta, GENERATION_KEY).unwrap(), 0);
        store.put_ca_journal(b"j").unwrap();
        store.next_crl_number().unwrap();
        assert_eq!(read_counter(&store.meta, GENERATION_KEY).unwrap(), 2);
        assert_eq!(store.lock_seal().unwrap().sealed(), 2);
        // A read-only or no-op call acknowledges nothing new.
        assert_eq!(store.prune_svids(i64::MAX).unwrap(), 0);
        assert_eq!(store.verify().unwrap().generation, 2);
        drop(store);
        assert_eq!(Seal::open(dir.path()).unwrap().sealed(), 2);
    }

    #[test]
    fn uniqueness_key_ignores_selector_order_and_duplicates() {
        let selector = |s: &str| s.parse::<Selector>().unwrap();
        let base = Entry {
            id: EntryId(uuid::Uuid::new_v4()),
            spiffe_id: SpiffeId::new("spiffe://example.org/a").unwrap(),
            parent_id: SpiffeId::new("spiffe://example.org/p").unwrap(),
            selectors: vec![selector("unix:uid:1"), selector("unix:gid:2")],
            x509_svid_ttl_secs: None,
            jwt_svid_ttl_secs: None,
            dns_names: Vec::new(),
            expires_at: None,
            hint: String::new(),
            revision: 0,
            created_at: 0,
        };
        let mut shuffled = base.clone();
        shuffled.selectors = vec![
            selector("unix:gid:2"),
            selector("unix:uid:1"),
            selector("unix:gid:2"),
        ];
        shuffled.id = EntryId(uuid::Uuid::new_v4());
        assert_eq!(unique_key(&base).unwrap(), unique_key(&shuffled).unwrap());
        let mut other_parent = base.clone();
        other_parent.parent_id = SpiffeId::new("spiffe://example.org/q").unwrap();
        assert_ne!(
            unique_key(&base).unwrap(),
            unique_key(&other_parent).unwrap()
        );
        assert_eq!(
            describe_unique(&shuffled),
            "with spiffe_id spiffe://example.org/a parent_id spiffe://example.org/p \
             and selectors [unix:gid:2, unix:uid:1]"
        );
    }
}
