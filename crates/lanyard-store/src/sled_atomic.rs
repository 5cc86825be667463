//! The sled backend's atomic operations: issuance, revocation sweeps and
//! every other write that must see a consistent store.
//!
//! sled transactions cannot scan, and a revocation must find every serial
//! recorded for a subject. So each operation here holds the store's writer
//! lock while it reads (point reads and index scans), decides, and writes
//! everything it decided in one multi-tree sled transaction, then flushes
//! once. Every operation that writes records the issuance or revocation
//! indexes holds the same lock, so what an operation read cannot change
//! before its transaction commits: the operations are serializable, and the
//! transaction makes each one all-or-nothing on disk.

use std::collections::HashSet;
use std::sync::MutexGuard;

use lanyard_identity::{Entry, EntryId, SpiffeId};
use sled::Transactional;
use sled::transaction::ConflictableTransactionError;
use tracing::{debug, info, warn};

use crate::rules::{
    attested, check_batch_agent, check_entry, check_task, claim_serial, entry_not_found,
    is_alias_of, issued_record, reissues, renewed, updated_entry, with_standing,
};
use crate::sled_codec::{
    backend, decode_record, describe_unique, encode, entry_key, transaction_error, unique_key,
};
use crate::sled_store::{FORMAT_KEY, FORMAT_VERSION};
use crate::{
    AgentRecord, AgentStanding, Datastore, IssueBatch, IssueItem, Issued, Refusal, Revocation,
    SledStore, StoreError, SvidRecord, Sweep, TaskRecord,
};

/// The trees an operation may write, by position in [`SledStore::trees`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum T {
    Entries,
    EntryIndex,
    Agents,
    Svids,
    Revocations,
    Tasks,
    SvidsByEntry,
    SvidsByAgent,
    EntriesByParent,
    TaskEntries,
    Meta,
}

/// What one operation writes, applied in one transaction.
#[derive(Debug, Default)]
pub(crate) struct WriteSet(Vec<(T, Vec<u8>, Option<Vec<u8>>)>);

impl WriteSet {
    fn put(&mut self, tree: T, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.0.push((tree, key.into(), Some(value.into())));
    }

    fn del(&mut self, tree: T, key: impl Into<Vec<u8>>) {
        self.0.push((tree, key.into(), None));
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn by_entry_prefix(entry: &EntryId) -> Vec<u8> {
    let mut key = entry_key(entry).into_bytes();
    key.push(b'/');
    key
}

fn by_id_prefix(id: &SpiffeId) -> Vec<u8> {
    let mut key = id.as_str().as_bytes().to_vec();
    key.push(0);
    key
}

fn joined(mut prefix: Vec<u8>, rest: &str) -> Vec<u8> {
    prefix.extend_from_slice(rest.as_bytes());
    prefix
}

// === impl SledStore ===

impl SledStore {
    fn trees(&self) -> [&sled::Tree; 11] {
        [
            &self.entries,
            &self.entry_index,
            &self.agents,
            &self.svids,
            &self.revocations,
            &self.tasks,
            &self.svids_by_entry,
            &self.svids_by_agent,
            &self.entries_by_parent,
            &self.task_entries,
            &self.meta,
        ]
    }

    pub(crate) fn lock_writer(&self) -> Result<MutexGuard<'_, ()>, StoreError> {
        self.writer.lock().map_err(|_| {
            StoreError::Backend("the store's writer lock was poisoned by a panic".into())
        })
    }

    /// Writes `ws` in one transaction and makes it durable. The caller holds
    /// the writer lock.
    pub(crate) fn apply(&self, ws: WriteSet) -> Result<(), StoreError> {
        if ws.is_empty() {
            return Ok(());
        }
        let trees = self.trees();
        trees[..]
            .transaction(|views| {
                for (tree, key, value) in &ws.0 {
                    let view = &views[*tree as usize];
                    match value {
                        Some(v) => view.insert(key.as_slice(), v.as_slice())?,
                        None => view.remove(key.as_slice())?,
                    };
                }
                Ok::<(), ConflictableTransactionError<StoreError>>(())
            })
            .map_err(transaction_error)?;
        self.commit()
    }

    // --- records and their indexes ---

    fn write_svid(ws: &mut WriteSet, svid: &SvidRecord) -> Result<(), StoreError> {
        ws.put(T::Svids, svid.serial.as_bytes(), encode("svid", svid)?);
        if let Some(entry) = &svid.entry_id {
            ws.put(
                T::SvidsByEntry,
                joined(by_entry_prefix(entry), &svid.serial),
                [],
            );
        }
        if let Some(agent) = &svid.agent_id {
            ws.put(
                T::SvidsByAgent,
                joined(by_id_prefix(agent), &svid.serial),
                [],
            );
        }
        Ok(())
    }

    fn remove_svid(ws: &mut WriteSet, svid: &SvidRecord) {
        ws.del(T::Svids, svid.serial.as_bytes());
        if let Some(entry) = &svid.entry_id {
            ws.del(
                T::SvidsByEntry,
                joined(by_entry_prefix(entry), &svid.serial),
            );
        }
        if let Some(agent) = &svid.agent_id {
            ws.del(T::SvidsByAgent, joined(by_id_prefix(agent), &svid.serial));
        }
    }

    fn write_entry(ws: &mut WriteSet, entry: &Entry) -> Result<(), StoreError> {
        let key = entry_key(&entry.id);
        ws.put(T::Entries, key.as_bytes(), encode("entry", entry)?);
        ws.put(T::EntryIndex, unique_key(entry)?, key.as_bytes());
        ws.put(
            T::EntriesByParent,
            joined(by_id_prefix(&entry.parent_id), &key),
            [],
        );
        Ok(())
    }

    fn remove_entry(ws: &mut WriteSet, entry: &Entry) -> Result<(), StoreError> {
        let key = entry_key(&entry.id);
        ws.del(T::Entries, key.as_bytes());
        ws.del(T::EntryIndex, unique_key(entry)?);
        ws.del(
            T::EntriesByParent,
            joined(by_id_prefix(&entry.parent_id), &key),
        );
        ws.del(T::TaskEntries, key.as_bytes());
        Ok(())
    }

    /// Refuses a serial that is already recorded (a random serial collided).
    fn check_serial_free(&self, serial: &str) -> Result<(), StoreError> {
        if self
            .svids
            .contains_key(serial.as_bytes())
            .map_err(backend)?
        {
            return Err(Refusal::SerialTaken {
                serial: serial.to_owned(),
            }
            .into());
        }
        Ok(())
    }

    /// Refuses a new entry whose ID is taken, or whose SPIFFE ID, parent and
    /// selector set another entry already has.
    fn check_new_entry(&self, entry: &Entry) -> Result<(), StoreError> {
        if self.get_entry(&entry.id)?.is_some() {
            return Err(StoreError::AlreadyExists {
                kind: "entry",
                key: entry_key(&entry.id),
            });
        }
        self.check_unique(entry)
    }

    /// Refuses an entry whose SPIFFE ID, parent and selector set another
    /// entry already has.
    fn check_unique(&self, entry: &Entry) -> Result<(), StoreError> {
        if let Some(other) = self.entry_index.get(unique_key(entry)?).map_err(backend)?
            && other.as_ref() != entry_key(&entry.id).as_bytes()
        {
            return Err(StoreError::AlreadyExists {
                kind: "entry",
                key: format!(
                    "{} (entry {})",
                    describe_unique(entry),
                    String::from_utf8_lossy(&other)
                ),
            });
        }
        Ok(())
    }

    /// Turns every unexpired, not yet revoked serial under `prefix` of
    /// `index` into a revocation written by `ws`.
    fn sweep(
        &self,
        index: T,
        prefix: &[u8],
        sweep: &Sweep,
        ws: &mut WriteSet,
        out: &mut Vec<Revocation>,
    ) -> Result<(), StoreError> {
        let tree = self.trees()[index as usize];
        let mut seen: HashSet<String> = out.iter().map(|r| r.serial.clone()).collect();
        for item in tree.scan_prefix(prefix) {
            let (key, _) = item.map_err(backend)?;
            let serial = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
            let Some(svid) = self.get_svid(&serial)? else {
                continue;
            };
            if svid.not_after <= sweep.revoked_at || !seen.insert(serial.clone()) {
                continue;
            }
            if self
                .revocations
                .contains_key(serial.as_bytes())
                .map_err(backend)?
            {
                continue;
            }
            let revocation = Revocation {
                serial,
                revoked_at: sweep.revoked_at,
                not_after: svid.not_after,
                reason: sweep.reason.clone(),
            };
            ws.put(
                T::Revocations,
                revocation.serial.as_bytes(),
                encode("revocation", &revocation)?,
            );
            out.push(revocation);
        }
        Ok(())
    }

    /// The SPIFFE IDs of the live node-alias entries whose selectors are all
    /// among `agent`'s.
    fn aliases_of(
        &self,
        server_id: &SpiffeId,
        agent: &AgentRecord,
        now: i64,
    ) -> Result<Vec<SpiffeId>, StoreError> {
        let prefix = by_id_prefix(server_id);
        let mut aliases = Vec::new();
        for item in self.entries_by_parent.scan_prefix(&prefix) {
            let (key, _) = item.map_err(backend)?;
            let entry_key = &key[prefix.len()..];
            let Some(bytes) = self.entries.get(entry_key).map_err(backend)? else {
                continue;
            };
            let alias = decode_record::<Entry>(entry_key, &bytes)?;
            if is_alias_of(&alias, agent, now) {
                aliases.push(alias.spiffe_id);
            }
        }
        Ok(aliases)
    }

    // --- the operations ---

    pub(crate) fn create_entry_atomic(&self, entry: &Entry) -> Result<(), StoreError> {
        let _w = self.lock_writer()?;
        self.check_new_entry(entry)?;
        let mut ws = WriteSet::default();
        Self::write_entry(&mut ws, entry)?;
        self.apply(ws)?;
        debug!(entry_id = %entry.id, spiffe_id = entry.spiffe_id.as_str(), "entry created");
        Ok(())
    }

    pub(crate) fn create_entries_atomic(
        &self,
        entries: &[Entry],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let _w = self.lock_writer()?;
        let mut ws = WriteSet::default();
        let mut ids: HashSet<EntryId> = HashSet::new();
        let mut uniques: HashSet<Vec<u8>> = HashSet::new();
        let mut results = Vec::with_capacity(entries.len());
        for entry in entries {
            let unique = unique_key(entry)?;
            let result = if !ids.insert(entry.id) || self.get_entry(&entry.id)?.is_some() {
                Err(StoreError::AlreadyExists {
                    kind: "entry",
                    key: entry_key(&entry.id),
                })
            } else if !uniques.insert(unique) {
                Err(StoreError::AlreadyExists {
                    kind: "entry",
                    key: format!("{} (earlier in the same batch)", describe_unique(entry)),
                })
            } else {
                self.check_unique(entry)
            };
            if result.is_ok() {
                Self::write_entry(&mut ws, entry)?;
            }
            results.push(result);
        }
        self.apply(ws)?;
        debug!(entries = entries.len(), "entries created in one batch");
        Ok(results)
    }

    pub(crate) fn update_entry_atomic(
        &self,
        entry: &Entry,
        sweep: &Sweep,
    ) -> Result<(Entry, Vec<Revocation>), StoreError> {
        let _w = self.lock_writer()?;
        let stored = self
            .get_entry(&entry.id)?
            .ok_or_else(|| entry_not_found(&entry.id))?;
        let updated = updated_entry(&stored, entry)?;
        self.check_unique(&updated)?;
        let mut ws = WriteSet::default();
        Self::remove_entry(&mut ws, &stored)?;
        // The task link survives an update; remove_entry dropped it.
        if let Some(task) = self
            .task_entries
            .get(entry_key(&entry.id))
            .map_err(backend)?
        {
            ws.put(
                T::TaskEntries,
                entry_key(&entry.id).as_bytes(),
                task.to_vec(),
            );
        }
        Self::write_entry(&mut ws, &updated)?;
        let mut revoked = Vec::new();
        if reissues(&stored, &updated) {
            self.sweep(
                T::SvidsByEntry,
                &by_entry_prefix(&entry.id),
                sweep,
                &mut ws,
                &mut revoked,
            )?;
        }
        self.apply(ws)?;
        debug!(entry_id = %entry.id, revision = updated.revision, revoked = revoked.len(), "entry updated");
        Ok((updated, revoked))
    }

    pub(crate) fn delete_entry_atomic(
        &self,
        id: &EntryId,
        sweep: &Sweep,
    ) -> Result<(Entry, Vec<Revocation>), StoreError> {
        let _w = self.lock_writer()?;
        let stored = self.get_entry(id)?.ok_or_else(|| StoreError::NotFound {
            kind: "entry",
            key: entry_key(id),
        })?;
        let mut ws = WriteSet::default();
        Self::remove_entry(&mut ws, &stored)?;
        let mut revoked = Vec::new();
        self.sweep(
            T::SvidsByEntry,
            &by_entry_prefix(id),
            sweep,
            &mut ws,
            &mut revoked,
        )?;
        self.apply(ws)?;
        debug!(entry_id = %id, revoked = revoked.len(), "entry deleted");
        Ok((stored, revoked))
    }

    pub(crate) fn put_agent_atomic(&self, agent: &AgentRecord) -> Result<(), StoreError> {
        let _w = self.lock_writer()?;
        if self.get_agent(&agent.spiffe_id)?.is_some() {
            return Err(StoreError::AlreadyExists {
                kind: "agent",
                key: agent.spiffe_id.to_string(),
            });
        }
        let mut ws = WriteSet::default();
        ws.put(
            T::Agents,
            agent.spiffe_id.as_str().as_bytes(),
            encode("agent", agent)?,
        );
        self.apply(ws)
    }

    pub(crate) fn attest_agent_atomic(
        &self,
        agent: &AgentRecord,
        svid: &SvidRecord,
    ) -> Result<AgentRecord, StoreError> {
        let _w = self.lock_writer()?;
        let previous = self.get_agent(&agent.spiffe_id)?;
        let stored = attested(previous.as_ref(), agent)?;
        self.check_serial_free(&svid.serial)?;
        let mut ws = WriteSet::default();
        ws.put(
            T::Agents,
            stored.spiffe_id.as_str().as_bytes(),
            encode("agent", &stored)?,
        );
        Self::write_svid(&mut ws, svid)?;
        self.apply(ws)?;
        info!(
            agent = stored.spiffe_id.as_str(),
            revision = stored.revision,
            "agent attested"
        );
        Ok(stored)
    }

    pub(crate) fn renew_agent_atomic(
        &self,
        agent_id: &SpiffeId,
        presented: &str,
        svid: &SvidRecord,
    ) -> Result<AgentRecord, StoreError> {
        let _w = self.lock_writer()?;
        let stored = renewed(self.get_agent(agent_id)?, agent_id, presented, svid)?;
        self.check_serial_free(&svid.serial)?;
        let mut ws = WriteSet::default();
        ws.put(
            T::Agents,
            agent_id.as_str().as_bytes(),
            encode("agent", &stored)?,
        );
        Self::write_svid(&mut ws, svid)?;
        self.apply(ws)?;
        debug!(agent = agent_id.as_str(), serial = %svid.serial, "agent SVID renewal recorded");
        Ok(stored)
    }

    pub(crate) fn set_agent_standing_atomic(
        &self,
        agent_id: &SpiffeId,
        standing: AgentStanding,
        sweep: &Sweep,
    ) -> Result<(AgentRecord, Vec<Revocation>), StoreError> {
        let _w = self.lock_writer()?;
        let agent = with_standing(self.get_agent(agent_id)?, agent_id, standing)?;
        let mut ws = WriteSet::default();
        ws.put(
            T::Agents,
            agent_id.as_str().as_bytes(),
            encode("agent", &agent)?,
        );
        let mut revoked = Vec::new();
        self.sweep(
            T::SvidsByAgent,
            &by_id_prefix(agent_id),
            sweep,
            &mut ws,
            &mut revoked,
        )?;
        self.apply(ws)?;
        warn!(
            agent = agent_id.as_str(),
            ?standing,
            revoked = revoked.len(),
            "agent standing changed"
        );
        Ok((agent, revoked))
    }

    pub(crate) fn record_svid_atomic(&self, svid: &SvidRecord) -> Result<(), StoreError> {
        let _w = self.lock_writer()?;
        if let Some(current) = self.get_svid(&svid.serial)? {
            if current == *svid {
                return Ok(());
            }
            warn!(serial = %svid.serial, "refused to record a second SVID with a used serial");
            return Err(StoreError::AlreadyExists {
                kind: "svid",
                key: svid.serial.clone(),
            });
        }
        let mut ws = WriteSet::default();
        Self::write_svid(&mut ws, svid)?;
        self.apply(ws)?;
        debug!(serial = %svid.serial, spiffe_id = svid.spiffe_id.as_str(), not_after = svid.not_after, "svid recorded");
        Ok(())
    }

    pub(crate) fn prune_svids_atomic(&self, expired_before: i64) -> Result<usize, StoreError> {
        let _w = self.lock_writer()?;
        let mut ws = WriteSet::default();
        let mut removed = 0;
        for item in self.svids.iter() {
            let (key, value) = item.map_err(backend)?;
            let svid: SvidRecord = decode_record::<SvidRecord>(&key, &value)?;
            if svid.not_after < expired_before {
                Self::remove_svid(&mut ws, &svid);
                removed += 1;
            }
        }
        self.apply(ws)?;
        if removed > 0 {
            info!(removed, expired_before, "pruned expired SVID records");
        }
        Ok(removed)
    }

    pub(crate) fn revoke_svid_atomic(
        &self,
        serial: &str,
        sweep: &Sweep,
    ) -> Result<Option<Revocation>, StoreError> {
        let _w = self.lock_writer()?;
        let Some(svid) = self.get_svid(serial)? else {
            return Err(StoreError::NotFound {
                kind: "svid",
                key: serial.to_owned(),
            });
        };
        if svid.not_after <= sweep.revoked_at
            || self
                .revocations
                .contains_key(serial.as_bytes())
                .map_err(backend)?
        {
            return Ok(None);
        }
        let revocation = Revocation {
            serial: serial.to_owned(),
            revoked_at: sweep.revoked_at,
            not_after: svid.not_after,
            reason: sweep.reason.clone(),
        };
        let mut ws = WriteSet::default();
        ws.put(
            T::Revocations,
            serial.as_bytes(),
            encode("revocation", &revocation)?,
        );
        self.apply(ws)?;
        Ok(Some(revocation))
    }

    /// Stores a task and keeps its entry linked to it while the task is not
    /// final (a restored active task stays a task, never a plain entry).
    pub(crate) fn put_task_atomic(&self, task: &TaskRecord) -> Result<(), StoreError> {
        let _w = self.lock_writer()?;
        let mut ws = WriteSet::default();
        ws.put(T::Tasks, task.id.as_bytes(), encode("task", task)?);
        if let Some(entry) = &task.entry_id {
            if task.state.is_final() {
                ws.del(T::TaskEntries, entry_key(entry).as_bytes());
            } else {
                ws.put(
                    T::TaskEntries,
                    entry_key(entry).as_bytes(),
                    task.id.as_bytes(),
                );
            }
        }
        self.apply(ws)?;
        debug!(task = %task.id, state = task.state.as_str(), "task stored");
        Ok(())
    }

    pub(crate) fn activate_task_atomic(
        &self,
        task: &TaskRecord,
        entry: &Entry,
    ) -> Result<(), StoreError> {
        let _w = self.lock_writer()?;
        if task.entry_id != Some(entry.id) {
            return Err(StoreError::Corrupt {
                what: format!(
                    "task {} does not name entry {} it is activated with",
                    task.id, entry.id
                ),
            });
        }
        self.check_new_entry(entry)?;
        let mut ws = WriteSet::default();
        Self::write_entry(&mut ws, entry)?;
        ws.put(
            T::TaskEntries,
            entry_key(&entry.id).as_bytes(),
            task.id.as_bytes(),
        );
        ws.put(T::Tasks, task.id.as_bytes(), encode("task", task)?);
        self.apply(ws)
    }

    pub(crate) fn end_task_atomic(
        &self,
        task: &TaskRecord,
        sweep: &Sweep,
    ) -> Result<Vec<Revocation>, StoreError> {
        let _w = self.lock_writer()?;
        let mut ws = WriteSet::default();
        ws.put(T::Tasks, task.id.as_bytes(), encode("task", task)?);
        let mut revoked = Vec::new();
        if let Some(entry_id) = &task.entry_id {
            if let Some(entry) = self.get_entry(entry_id)? {
                Self::remove_entry(&mut ws, &entry)?;
            }
            self.sweep(
                T::SvidsByEntry,
                &by_entry_prefix(entry_id),
                sweep,
                &mut ws,
                &mut revoked,
            )?;
        }
        self.apply(ws)?;
        info!(task = %task.id, state = task.state.as_str(), revoked = revoked.len(), "task ended");
        Ok(revoked)
    }

    pub(crate) fn issue_svids_atomic(
        &self,
        batches: &[IssueBatch],
        now: i64,
    ) -> Result<Vec<Vec<Result<Issued, Refusal>>>, StoreError> {
        let _w = self.lock_writer()?;
        let mut ws = WriteSet::default();
        let mut taken: HashSet<&str> = HashSet::new();
        let mut results = Vec::with_capacity(batches.len());
        for batch in batches {
            let agent = self.get_agent(&batch.agent_id)?;
            let agent_ok = check_batch_agent(batch, agent.as_ref());
            let aliases = match (&agent, &agent_ok) {
                (Some(a), Ok(())) => self.aliases_of(&batch.server_id, a, now)?,
                _ => Vec::new(),
            };
            let mut out = Vec::with_capacity(batch.items.len());
            for item in &batch.items {
                let decided = match &agent_ok {
                    Err(refusal) => Err(refusal.clone()),
                    Ok(()) => self.check_item(batch, item, &aliases, now)?,
                };
                // A failing store fails the group, never passes for a
                // collision.
                let recorded = decided.is_ok()
                    && self
                        .svids
                        .contains_key(item.serial.as_bytes())
                        .map_err(backend)?;
                let decided = decided
                    .and_then(|issued| claim_serial(issued, &item.serial, &mut taken, recorded));
                if let Ok(issued) = &decided {
                    Self::write_svid(&mut ws, &issued_record(batch, item, issued, now))?;
                }
                out.push(decided);
            }
            results.push(out);
        }
        self.apply(ws)?;
        Ok(results)
    }

    /// The checks of [`issue_svids`](crate::Datastore::issue_svids) for one
    /// item of a batch whose agent is in good standing.
    fn check_item(
        &self,
        batch: &IssueBatch,
        item: &IssueItem,
        aliases: &[SpiffeId],
        now: i64,
    ) -> Result<Result<Issued, Refusal>, StoreError> {
        let entry = self.get_entry(&item.entry_id)?;
        if let Err(refusal) = check_entry(batch, item, entry.as_ref(), aliases, now) {
            return Ok(Err(refusal));
        }
        let Some(task_id) = self
            .task_entries
            .get(entry_key(&item.entry_id))
            .map_err(backend)?
        else {
            return Ok(Ok(Issued { task_id: None }));
        };
        let task_id = String::from_utf8_lossy(&task_id).into_owned();
        let task = self.get_task(&task_id)?;
        Ok(check_task(task_id, task.as_ref(), item, now))
    }

    /// Checks the indexes revocation relies on: every recorded SVID is under
    /// its entry and its agent, every entry under its parent, and nothing
    /// else is indexed. A missing index key would let a sweep miss a serial,
    /// so a store whose indexes disagree is refused like a damaged one.
    pub(crate) fn verify_indexes(
        &self,
        svids: &[SvidRecord],
        entries: usize,
    ) -> Result<(), StoreError> {
        let corrupt = |what: String| StoreError::Corrupt { what };
        let (mut by_entry, mut by_agent) = (0usize, 0usize);
        let listed =
            |tree: &sled::Tree, name: &str, key: Vec<u8>, under: String, serial: &str| match tree
                .contains_key(key)
                .map_err(backend)?
            {
                true => Ok(()),
                false => Err(corrupt(format!(
                    "tree `{name}` does not list SVID {serial} under {under}"
                ))),
            };
        for svid in svids {
            if let Some(entry) = &svid.entry_id {
                by_entry += 1;
                let key = joined(by_entry_prefix(entry), &svid.serial);
                let under = format!("entry {entry}");
                listed(
                    &self.svids_by_entry,
                    "svids_by_entry",
                    key,
                    under,
                    &svid.serial,
                )?;
            }
            if let Some(agent) = &svid.agent_id {
                by_agent += 1;
                let key = joined(by_id_prefix(agent), &svid.serial);
                let under = format!("agent {agent}");
                listed(
                    &self.svids_by_agent,
                    "svids_by_agent",
                    key,
                    under,
                    &svid.serial,
                )?;
            }
        }
        for (tree, name, expected) in [
            (&self.svids_by_entry, "svids_by_entry", by_entry),
            (&self.svids_by_agent, "svids_by_agent", by_agent),
            (&self.entries_by_parent, "entries_by_parent", entries),
        ] {
            if tree.len() != expected {
                return Err(corrupt(format!(
                    "tree `{name}` has {} keys where {expected} are expected",
                    tree.len()
                )));
            }
        }
        for item in self.entries.iter() {
            let (key, value) = item.map_err(backend)?;
            let entry = decode_record::<Entry>(&key, &value)?;
            let indexed = joined(by_id_prefix(&entry.parent_id), &entry_key(&entry.id));
            if !self
                .entries_by_parent
                .contains_key(indexed)
                .map_err(backend)?
            {
                return Err(corrupt(format!(
                    "tree `entries_by_parent` does not list entry {} under {}",
                    entry.id, entry.parent_id
                )));
            }
        }
        Ok(())
    }

    pub(crate) fn import_atomic(&self, records: &crate::Records) -> Result<(), StoreError> {
        let _w = self.lock_writer()?;
        let trees = [
            &self.entries,
            &self.agents,
            &self.svids,
            &self.revocations,
            &self.tasks,
        ];
        if trees.iter().any(|t| !t.is_empty()) {
            return Err(StoreError::AlreadyExists {
                kind: "store",
                key: format!(
                    "{} (it already holds records; import only into a fresh one)",
                    self.path().display()
                ),
            });
        }
        records.check_distinct()?;
        let mut ws = WriteSet::default();
        for entry in &records.entries {
            Self::write_entry(&mut ws, entry)?;
        }
        for agent in &records.agents {
            ws.put(
                T::Agents,
                agent.spiffe_id.as_str().as_bytes(),
                encode("agent", agent)?,
            );
        }
        for svid in &records.svids {
            Self::write_svid(&mut ws, svid)?;
        }
        for r in &records.revocations {
            ws.put(
                T::Revocations,
                r.serial.as_bytes(),
                encode("revocation", r)?,
            );
        }
        for task in &records.tasks {
            ws.put(T::Tasks, task.id.as_bytes(), encode("task", task)?);
            if let Some(entry) = task.entry_id.filter(|_| !task.state.is_final()) {
                ws.put(
                    T::TaskEntries,
                    entry_key(&entry).as_bytes(),
                    task.id.as_bytes(),
                );
            }
        }
        self.apply(ws)?;
        records.log_imported();
        Ok(())
    }

    /// Builds the indexes of format 2 over a store of format 1 and marks it
    /// format 2, in one transaction.
    pub(crate) fn migrate_from_v1(&self) -> Result<(), StoreError> {
        let _w = self.lock_writer()?;
        let mut ws = WriteSet::default();
        for item in self.svids.iter() {
            let (key, value) = item.map_err(backend)?;
            let svid: SvidRecord = decode_record::<SvidRecord>(&key, &value)?;
            Self::write_svid(&mut ws, &svid)?;
        }
        for item in self.entries.iter() {
            let (key, value) = item.map_err(backend)?;
            let entry = decode_record::<Entry>(&key, &value)?;
            Self::write_entry(&mut ws, &entry)?;
        }
        for item in self.tasks.iter() {
            let (key, value) = item.map_err(backend)?;
            let task: TaskRecord = decode_record::<TaskRecord>(&key, &value)?;
            if let Some(entry) = task.entry_id.filter(|_| !task.state.is_final()) {
                ws.put(
                    T::TaskEntries,
                    entry_key(&entry).as_bytes(),
                    task.id.as_bytes(),
                );
            }
        }
        ws.put(T::Meta, FORMAT_KEY, FORMAT_VERSION.as_bytes());
        self.apply(ws)?;
        info!(path = %self.path().display(), format = FORMAT_VERSION, "store migrated from format 1");
        Ok(())
    }
}
