//! Group-committed issuance: every batch of a group checked and recorded in
//! one SERIALIZABLE transaction. Each batch's records (its agent, node
//! aliases, entries, task links, tasks and already recorded serials) are
//! read in a few statements, whatever its size; the decisions are the
//! shared [`rules`](lanyard_store::rules); the accepted SVIDs are inserted in
//! pipelined chunks.

use std::collections::{HashMap, HashSet};

use deadpool_postgres::GenericClient;
use lanyard_identity::{Entry, EntryId, SpiffeId};
use lanyard_store::rules::{
    check_batch_agent, check_entry, check_task, claim_serial, is_alias_of, issued_record,
};
use lanyard_store::{AgentRecord, IssueBatch, IssueItem, Issued, Refusal, StoreError, TaskRecord};

use crate::rows::{self, ENTRY_COLUMNS};
use crate::sql::{pipelined, rows};
use crate::{PostgresStore, agents, entries, svids, tasks};

/// What the checks of one batch's items read.
#[derive(Debug, Default)]
struct BatchRecords {
    entries: HashMap<EntryId, Entry>,
    task_of: HashMap<EntryId, String>,
    tasks: HashMap<String, TaskRecord>,
    recorded: HashSet<String>,
}

/// The SPIFFE IDs of the agent's live node aliases: entries parented to the
/// server whose selectors are all among the agent's.
async fn aliases_of(
    c: &impl GenericClient,
    server_id: &SpiffeId,
    agent: &AgentRecord,
    now: i64,
) -> Result<Vec<SpiffeId>, StoreError> {
    Ok(entries::children(c, server_id.as_str())
        .await?
        .into_iter()
        .filter(|alias| is_alias_of(alias, agent, now))
        .map(|alias| alias.spiffe_id)
        .collect())
}

async fn read_batch(
    c: &impl GenericClient,
    batch: &IssueBatch,
) -> Result<BatchRecords, StoreError> {
    let ids: Vec<uuid::Uuid> = batch.items.iter().map(|i| i.entry_id.0).collect();
    let serials: Vec<&str> = batch.items.iter().map(|i| i.serial.as_str()).collect();
    let sql = format!("SELECT {ENTRY_COLUMNS} FROM entries WHERE id = ANY($1)");
    let entries = rows(c, &sql, &[&ids])
        .await?
        .iter()
        .map(|row| rows::entry(row).map(|e| (e.id, e)))
        .collect::<Result<_, _>>()?;
    let task_of: HashMap<EntryId, String> = rows(
        c,
        "SELECT entry_id, task_id FROM task_entries WHERE entry_id = ANY($1)",
        &[&ids],
    )
    .await?
    .iter()
    .map(|row| (EntryId(row.get(0)), row.get(1)))
    .collect();
    let task_ids: Vec<&str> = task_of.values().map(String::as_str).collect();
    let tasks = rows(
        c,
        "SELECT id, record FROM tasks WHERE id = ANY($1)",
        &[&task_ids],
    )
    .await?
    .iter()
    .map(|row| tasks::decode(row).map(|t| (t.id.clone(), t)))
    .collect::<Result<_, _>>()?;
    let recorded = rows(
        c,
        "SELECT serial FROM svids WHERE serial = ANY($1)",
        &[&serials],
    )
    .await?
    .iter()
    .map(|row| row.get(0))
    .collect();
    Ok(BatchRecords {
        entries,
        task_of,
        tasks,
        recorded,
    })
}

/// The checks of one item of a batch whose agent is in good standing.
fn check_item(
    records: &BatchRecords,
    batch: &IssueBatch,
    item: &IssueItem,
    aliases: &[SpiffeId],
    now: i64,
) -> Result<Issued, Refusal> {
    check_entry(
        batch,
        item,
        records.entries.get(&item.entry_id),
        aliases,
        now,
    )?;
    match records.task_of.get(&item.entry_id) {
        None => Ok(Issued { task_id: None }),
        Some(task_id) => check_task(task_id.clone(), records.tasks.get(task_id), item, now),
    }
}

impl PostgresStore {
    pub(crate) fn issue_svids_tx(
        &self,
        batches: &[IssueBatch],
        now: i64,
    ) -> Result<Vec<Vec<Result<Issued, Refusal>>>, StoreError> {
        self.serializable("issue_svids", async |tx| {
            let mut taken: HashSet<&str> = HashSet::new();
            let mut accepted = Vec::new();
            let mut results = Vec::with_capacity(batches.len());
            for batch in batches {
                let agent = agents::load(tx, &batch.agent_id).await?;
                let agent_ok = check_batch_agent(batch, agent.as_ref());
                let (aliases, records) = match (&agent, &agent_ok) {
                    (Some(a), Ok(())) => (
                        aliases_of(tx, &batch.server_id, a, now).await?,
                        read_batch(tx, batch).await?,
                    ),
                    _ => (Vec::new(), BatchRecords::default()),
                };
                let mut out = Vec::with_capacity(batch.items.len());
                for item in &batch.items {
                    let recorded = records.recorded.contains(&item.serial);
                    let decided = agent_ok
                        .clone()
                        .and_then(|()| check_item(&records, batch, item, &aliases, now))
                        .and_then(|issued| {
                            claim_serial(issued, &item.serial, &mut taken, recorded)
                        });
                    if let Ok(issued) = &decided {
                        accepted.push(issued_record(batch, item, issued, now));
                    }
                    out.push(decided);
                }
                results.push(out);
            }
            pipelined(&accepted, |svid| svids::insert(tx, svid)).await?;
            Ok(results)
        })
    }
}
