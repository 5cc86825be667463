//! The decisions every backend makes the same way: an agent's standing, an
//! issuance item against its entry and task, an entry's identity. Backends
//! read the records inside their transaction and ask these functions; only
//! the reading differs between them.

use std::collections::HashSet;

use lanyard_identity::{Entry, Selector, SpiffeId, matches_all};

use crate::{
    AgentRecord, AgentStanding, IssueBatch, IssueItem, Issued, Refusal, StoreError, SvidRecord,
    TaskRecord, TaskState,
};

/// Whether the agent may still receive SVIDs, and (with `presented`)
/// authenticated with its current one.
pub fn check_standing(agent: &AgentRecord, presented: Option<&str>) -> Result<(), Refusal> {
    if agent.banned {
        return Err(Refusal::AgentBanned {
            agent: agent.spiffe_id.clone(),
        });
    }
    if agent.evicted {
        return Err(Refusal::AgentEvicted {
            agent: agent.spiffe_id.clone(),
        });
    }
    match presented {
        Some(serial) if serial != agent.serial => Err(Refusal::AgentSuperseded {
            agent: agent.spiffe_id.clone(),
            presented: serial.to_owned(),
            current: agent.serial.clone(),
        }),
        _ => Ok(()),
    }
}

/// Whether `alias`, an entry parented to the server, is a live node alias of
/// `agent`: unexpired at `now`, its selectors all among the agent's.
pub fn is_alias_of(alias: &Entry, agent: &AgentRecord, now: i64) -> bool {
    alias.expires_at.is_none_or(|t| t > now) && matches_all(&alias.selectors, &agent.selectors)
}

/// The checks of [`issue_svids`](crate::Datastore::issue_svids) on one item's
/// entry, for a batch whose agent is in good standing; `aliases` are the
/// SPIFFE IDs of the agent's node aliases.
pub fn check_entry(
    batch: &IssueBatch,
    item: &IssueItem,
    entry: Option<&Entry>,
    aliases: &[SpiffeId],
    now: i64,
) -> Result<(), Refusal> {
    let Some(entry) = entry else {
        return Err(Refusal::EntryNotFound {
            entry: item.entry_id,
        });
    };
    if entry.revision != item.entry_revision || entry.spiffe_id != item.spiffe_id {
        return Err(Refusal::EntryChanged {
            entry: entry.id,
            expected: item.entry_revision,
            found: entry.revision,
        });
    }
    if let Some(expired_at) = entry.expires_at.filter(|t| *t <= now) {
        return Err(Refusal::EntryExpired {
            entry: entry.id,
            expired_at,
        });
    }
    let authorized = entry.parent_id == batch.agent_id
        || (entry.parent_id != batch.server_id && aliases.contains(&entry.parent_id));
    if !authorized {
        return Err(Refusal::NotAuthorized {
            entry: entry.id,
            agent: batch.agent_id.clone(),
        });
    }
    Ok(())
}

/// The check of an item whose entry carries task `task_id` (stored as
/// `task`): the task is active and the SVID ends within its window.
pub fn check_task(
    task_id: String,
    task: Option<&TaskRecord>,
    item: &IssueItem,
    now: i64,
) -> Result<Issued, Refusal> {
    match task {
        // A task entry whose task record is gone is served by no one.
        None => Err(Refusal::TaskNotActive {
            task: task_id,
            state: TaskState::Completed,
        }),
        Some(task) if task.state != TaskState::Active => Err(Refusal::TaskNotActive {
            task: task_id,
            state: task.state,
        }),
        Some(task) if now >= task.ends_at || item.not_after > task.ends_at => {
            Err(Refusal::OutsideTaskWindow {
                task: task_id,
                ends_at: task.ends_at,
                not_after: item.not_after,
            })
        }
        Some(_) => Ok(Issued {
            task_id: Some(task_id),
        }),
    }
}

/// Whether an update from `stored` to `updated` changes who the entry's
/// SVIDs were issued to (SPIFFE ID, parent or selector set), so that they
/// must be revoked.
pub fn reissues(stored: &Entry, updated: &Entry) -> bool {
    stored.spiffe_id != updated.spiffe_id
        || stored.parent_id != updated.parent_id
        || !(matches_all(&stored.selectors, &updated.selectors)
            && matches_all(&updated.selectors, &stored.selectors))
}

fn sorted_selectors(entry: &Entry) -> Vec<&Selector> {
    let mut selectors: Vec<&Selector> = entry.selectors.iter().collect();
    selectors.sort();
    selectors.dedup();
    selectors
}

/// The uniqueness key of an entry: its SPIFFE ID, parent ID and selector set
/// (sorted, without duplicates), as canonical JSON. No two entries share one.
pub fn identity_key(entry: &Entry) -> Result<String, StoreError> {
    serde_json::to_string(&(&entry.spiffe_id, &entry.parent_id, sorted_selectors(entry))).map_err(
        |source| StoreError::Encode {
            what: "entry uniqueness key".to_owned(),
            source,
        },
    )
}

/// The unique attributes of an entry, for error messages.
pub fn describe_identity(entry: &Entry) -> String {
    let selectors: Vec<String> = sorted_selectors(entry)
        .iter()
        .map(|s| format!("{}:{}:{}", s.kind, s.key, s.value))
        .collect();
    format!(
        "with spiffe_id {} parent_id {} and selectors [{}]",
        entry.spiffe_id.as_str(),
        entry.parent_id.as_str(),
        selectors.join(", ")
    )
}

/// The key an entry is stored and reported under: its hyphenated UUID.
pub fn entry_key(id: &lanyard_identity::EntryId) -> String {
    id.0.hyphenated().to_string()
}

/// The standing of a batch's agent: known, in good standing, and
/// authenticated with its current SVID.
pub fn check_batch_agent(batch: &IssueBatch, agent: Option<&AgentRecord>) -> Result<(), Refusal> {
    match agent {
        None => Err(Refusal::AgentUnknown {
            agent: batch.agent_id.clone(),
        }),
        Some(a) => check_standing(a, Some(&batch.agent_serial)),
    }
}

/// Claims an accepted item's serial for the group: refused if the store
/// already holds it (`recorded`) or an earlier item of the group took it.
pub fn claim_serial<'a>(
    issued: Issued,
    serial: &'a str,
    taken: &mut HashSet<&'a str>,
    recorded: bool,
) -> Result<Issued, Refusal> {
    if recorded || !taken.insert(serial) {
        return Err(Refusal::SerialTaken {
            serial: serial.to_owned(),
        });
    }
    Ok(issued)
}

/// The record of an accepted item.
pub fn issued_record(
    batch: &IssueBatch,
    item: &IssueItem,
    issued: &Issued,
    now: i64,
) -> SvidRecord {
    SvidRecord {
        serial: item.serial.clone(),
        spiffe_id: item.spiffe_id.clone(),
        entry_id: Some(item.entry_id),
        agent_id: Some(batch.agent_id.clone()),
        task_id: issued.task_id.clone(),
        issued_at: now,
        not_after: item.not_after,
    }
}

/// An entry update as compare-and-swap: `entry` must be based on the
/// stored revision. Returns what to store: the next revision, with the
/// stored `created_at`.
pub fn updated_entry(stored: &Entry, entry: &Entry) -> Result<Entry, StoreError> {
    if stored.revision != entry.revision {
        return Err(StoreError::Conflict {
            kind: "entry",
            key: entry_key(&entry.id),
            expected: entry.revision,
            found: stored.revision,
        });
    }
    let mut updated = entry.clone();
    updated.revision = stored.revision + 1;
    updated.created_at = stored.created_at;
    Ok(updated)
}

/// What an attestation stores over the `previous` record of the agent
/// (an evicted agent comes back): refused if it is banned.
pub fn attested(
    previous: Option<&AgentRecord>,
    agent: &AgentRecord,
) -> Result<AgentRecord, Refusal> {
    if previous.is_some_and(|a| a.banned) {
        return Err(Refusal::AgentBanned {
            agent: agent.spiffe_id.clone(),
        });
    }
    let mut stored = agent.clone();
    stored.revision = previous.map_or(1, |a| a.revision + 1);
    Ok(stored)
}

/// What a renewal stores: the agent, in good standing and presenting its
/// current serial, with `svid` as its current SVID.
pub fn renewed(
    agent: Option<AgentRecord>,
    agent_id: &SpiffeId,
    presented: &str,
    svid: &SvidRecord,
) -> Result<AgentRecord, Refusal> {
    let mut agent = agent.ok_or_else(|| Refusal::AgentUnknown {
        agent: agent_id.clone(),
    })?;
    check_standing(&agent, Some(presented))?;
    agent.serial = svid.serial.clone();
    agent.expires_at = svid.not_after;
    agent.revision += 1;
    Ok(agent)
}

/// The agent evicted or banned, at its next revision;
/// [`StoreError::NotFound`] if there is none.
pub fn with_standing(
    agent: Option<AgentRecord>,
    agent_id: &SpiffeId,
    standing: AgentStanding,
) -> Result<AgentRecord, StoreError> {
    let mut agent = agent.ok_or_else(|| StoreError::NotFound {
        kind: "agent",
        key: agent_id.to_string(),
    })?;
    match standing {
        AgentStanding::Banned => agent.banned = true,
        AgentStanding::Evicted => agent.evicted = true,
    }
    agent.revision += 1;
    Ok(agent)
}

/// The error for an absent entry.
pub fn entry_not_found(id: &lanyard_identity::EntryId) -> StoreError {
    StoreError::NotFound {
        kind: "entry",
        key: entry_key(id),
    }
}
