//! Issuing X.509-SVIDs, in Boulder's order: plan, record, sign, audit.
//!
//! 1. **Plan** each SVID from its entry: check the CSR and fix the serial
//!    and notAfter ([`CertificateAuthority::prepare_svid`]).
//! 2. **Record** every planned serial with its entry, agent and task in one
//!    store transaction that checks their standing
//!    ([`Datastore::issue_svids`]). A revocation that committed first
//!    refuses the item; one that commits later finds the serial and puts it
//!    on the CRL. Nothing is signed that the store did not record.
//! 3. **Sign** the accepted SVIDs on every core.
//! 4. **Audit** them with one fsync, then return them.
//!
//! Batches are group-committed: the committer takes every batch waiting
//! when it is free, so concurrent agents share one transaction and one
//! audit fsync. This module knows nothing of gRPC; the Node API maps
//! [`IssueError`] to statuses.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use lanyard_audit::{Action, Event};
use lanyard_ca::{CaError, CertificateAuthority, IssuedSvid, PreparedSvid, SvidRequest};
use lanyard_identity::{Entry, EntryId, SpiffeId, TaskBinding};
use lanyard_store::{
    AgentRecord, IssueBatch, IssueItem, Issued, Refusal, StoreError, SvidRecord, TaskRecord,
};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::{ServerError, clock::unix, state::ServerState};

/// Most SVIDs one group commit takes; batches waiting beyond it form the
/// next group.
pub(crate) const MAX_GROUP: usize = 4096;

/// Why an SVID was not issued.
#[derive(Debug, thiserror::Error)]
pub(crate) enum IssueError {
    /// The store refused it: the standing of agent, entry or task.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The CA refused the request (a bad CSR, an expired CA, ...).
    #[error(transparent)]
    Ca(#[from] CaError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The audit log could not be written; nothing was handed out.
    #[error("the audit log could not be written: {0}")]
    Audit(String),
    /// The server is shutting down.
    #[error("the server is shutting down")]
    Stopped,
    /// The request itself is wrong (what, and what is accepted).
    #[error("{0}")]
    Invalid(String),
    /// The request asks for more than the entry or task grants.
    #[error("{0}")]
    Forbidden(String),
}

/// One CSR of a batch.
#[derive(Clone, Debug)]
pub(crate) struct BatchItem {
    pub entry_id: EntryId,
    pub csr: Vec<u8>,
}

/// SVIDs one authenticated agent asks for at once.
#[derive(Clone, Debug)]
pub(crate) struct BatchRequest {
    pub agent_id: SpiffeId,
    /// The serial of the agent SVID it authenticated with.
    pub agent_serial: String,
    pub items: Vec<BatchItem>,
}

type BatchResult = Result<Vec<Result<IssuedSvid, IssueError>>, IssueError>;

/// A batch waiting for the committer.
pub(crate) struct Pending {
    request: BatchRequest,
    reply: oneshot::Sender<BatchResult>,
}

/// The handle services submit batches through.
#[derive(Clone)]
pub(crate) struct Issuer {
    tx: mpsc::Sender<Pending>,
}

impl Issuer {
    /// A handle and the queue [`run`] serves.
    pub fn new() -> (Self, mpsc::Receiver<Pending>) {
        let (tx, rx) = mpsc::channel(1024);
        (Self { tx }, rx)
    }

    /// Issues a batch; one result per item, in order.
    pub async fn issue(&self, request: BatchRequest) -> BatchResult {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Pending { request, reply })
            .await
            .map_err(|_| IssueError::Stopped)?;
        answer.await.map_err(|_| IssueError::Stopped)?
    }
}

/// The committer: serves the queue one group at a time until `shutdown`.
pub(crate) async fn run(
    state: Arc<ServerState>,
    mut queue: mpsc::Receiver<Pending>,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    loop {
        let first = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            next = queue.recv() => match next {
                Some(p) => p,
                None => return Ok(()),
            },
        };
        let mut size = first.request.items.len();
        let mut group = vec![first];
        while size < MAX_GROUP {
            match queue.try_recv() {
                Ok(p) => {
                    size += p.request.items.len();
                    group.push(p);
                }
                Err(_) => break,
            }
        }
        let (requests, replies): (Vec<_>, Vec<_>) =
            group.into_iter().map(|p| (p.request, p.reply)).unzip();
        let worker = state.clone();
        let results = tokio::task::spawn_blocking(move || commit_group(&worker, requests))
            .await
            .map_err(|e| ServerError::Task {
                task: "issuance",
                reason: e.to_string(),
            })?;
        for (reply, result) in replies.into_iter().zip(results) {
            let _ = reply.send(result);
        }
    }
}

/// What step 1 made of one item.
struct Planned {
    entry: Entry,
    prepared: PreparedSvid,
}

/// Steps 1 to 4 for a group of batches (blocking: runs off the runtime).
fn commit_group(state: &ServerState, requests: Vec<BatchRequest>) -> Vec<BatchResult> {
    let started = Instant::now();
    let now = state.now();
    let ca = match state.ca.read() {
        Ok(ca) => ca,
        Err(poisoned) => poisoned.into_inner(),
    };
    let default_ttl = state.cfg.default_x509_svid_ttl;

    // 1. Plan, on every core (CSR verification is as costly as signing).
    let items: Vec<(usize, &BatchItem)> = requests
        .iter()
        .enumerate()
        .flat_map(|(b, r)| r.items.iter().map(move |i| (b, i)))
        .collect();
    let planned = par_map(&items, |(_, item)| plan(state, &ca, item, default_ttl, now));

    // 2. Record what was planned, checking standing, in one transaction.
    let mut batches: Vec<IssueBatch> = requests
        .iter()
        .map(|r| IssueBatch {
            agent_id: r.agent_id.clone(),
            agent_serial: r.agent_serial.clone(),
            server_id: state.server_id.clone(),
            items: Vec::new(),
        })
        .collect();
    for ((b, _), p) in items.iter().zip(&planned) {
        if let Ok(p) = p {
            batches[*b].items.push(IssueItem {
                entry_id: p.entry.id,
                entry_revision: p.entry.revision,
                serial: p.prepared.serial().to_owned(),
                spiffe_id: p.entry.spiffe_id.clone(),
                not_after: p.prepared.not_after(),
            });
        }
    }
    let recorded = match state.store.issue_svids(&batches, unix(now)) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "recording an issuance group failed");
            return requests
                .iter()
                .map(|_| Err(IssueError::Store(StoreError::Backend(e.to_string().into()))))
                .collect();
        }
    };

    // Each planned item's verdict, and the binding of accepted task SVIDs.
    let mut verdicts: Vec<std::vec::IntoIter<Result<Issued, Refusal>>> =
        recorded.into_iter().map(Vec::into_iter).collect();
    let mut tasks: HashMap<String, Option<TaskBinding>> = HashMap::new();
    let decided: Vec<Result<(Planned, Option<TaskBinding>), IssueError>> = items
        .iter()
        .zip(planned)
        .map(|((b, _), p)| {
            let p = p?;
            let verdict = verdicts[*b].next().ok_or_else(|| {
                IssueError::Store(StoreError::Backend(
                    "the store returned fewer results than items".into(),
                ))
            })?;
            let issued = verdict?;
            let Some(task_id) = issued.task_id else {
                return Ok((p, None));
            };
            let binding = tasks
                .entry(task_id.clone())
                .or_insert_with(|| {
                    state
                        .store
                        .get_task(&task_id)
                        .ok()
                        .flatten()
                        .map(|t| binding_of(&t))
                })
                .clone()
                .ok_or(Refusal::TaskNotActive {
                    task: task_id,
                    state: lanyard_store::TaskState::Completed,
                })?;
            Ok((p, Some(binding)))
        })
        .collect();

    // 3. Sign, on every core.
    let to_sign: Vec<Option<&(Planned, Option<TaskBinding>)>> =
        decided.iter().map(|d| d.as_ref().ok()).collect();
    let signed: Vec<Option<Result<IssuedSvid, CaError>>> = par_map(&to_sign, |d| {
        d.map(|(p, binding)| ca.sign_prepared(&p.prepared, binding.as_ref(), now))
    });
    drop(ca);

    // 4. Audit every SVID handed out, with one fsync.
    let events: Vec<Event> = items
        .iter()
        .zip(&decided)
        .zip(&signed)
        .filter_map(|(((b, _), d), s)| match (d, s) {
            (Ok((p, binding)), Some(Ok(svid))) => Some(issued_event(
                &requests[*b].agent_id,
                &p.entry,
                binding.as_ref(),
                svid,
            )),
            _ => None,
        })
        .collect();
    let count = events.len();
    if let Err(e) = state.audit_blocking(events) {
        return requests
            .iter()
            .map(|_| Err(IssueError::Audit(e.clone())))
            .collect();
    }
    state.metrics.issued_group(count as u64, started.elapsed());
    tracing::debug!(
        batches = requests.len(),
        svids = count,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "issuance group committed"
    );

    let mut out: Vec<Vec<Result<IssuedSvid, IssueError>>> = requests
        .iter()
        .map(|r| Vec::with_capacity(r.items.len()))
        .collect();
    for (((b, _), d), s) in items.iter().zip(decided).zip(signed) {
        let result = match (d, s) {
            (Err(e), _) => Err(e),
            (Ok(_), Some(s)) => s.map_err(IssueError::Ca),
            (Ok(_), None) => Err(IssueError::Stopped),
        };
        out[*b].push(result);
    }
    out.into_iter().map(Ok).collect()
}

/// Step 1 for one item: the entry as stored now, the TTL it allows, and the
/// CA's plan.
fn plan(
    state: &ServerState,
    ca: &CertificateAuthority,
    item: &BatchItem,
    default_ttl: Duration,
    now: SystemTime,
) -> Result<Planned, IssueError> {
    let entry = state
        .store
        .get_entry(&item.entry_id)?
        .ok_or(Refusal::EntryNotFound {
            entry: item.entry_id,
        })?;
    let ttl = within_entry(
        &entry,
        entry.x509_svid_ttl_secs.map(Duration::from_secs),
        default_ttl,
        now,
    )?;
    let prepared = ca.prepare_svid(
        &SvidRequest {
            csr_der: &item.csr,
            spiffe_id: &entry.spiffe_id,
            dns_names: &entry.dns_names,
            ttl,
        },
        now,
    )?;
    Ok(Planned { entry, prepared })
}

/// The lifetime of an SVID (X.509 or JWT) for `entry` issued at `now`: the
/// entry's own TTL or the default, cut so that no SVID outlives its entry
/// (a task entry expires with its window). An expired entry is refused.
pub(crate) fn within_entry(
    entry: &Entry,
    entry_ttl: Option<Duration>,
    default_ttl: Duration,
    now: SystemTime,
) -> Result<Duration, Refusal> {
    let ttl = entry_ttl.unwrap_or(default_ttl);
    let Some(expires_at) = entry.expires_at else {
        return Ok(ttl);
    };
    let left = expires_at - unix(now);
    if left <= 0 {
        return Err(Refusal::EntryExpired {
            entry: entry.id,
            expired_at: expires_at,
        });
    }
    Ok(ttl.min(Duration::from_secs(left as u64)))
}

fn binding_of(task: &TaskRecord) -> TaskBinding {
    TaskBinding {
        task_id: task.id.clone(),
        ticket: task.ticket.clone(),
        audiences: task.audiences.clone(),
    }
}

fn issued_event(
    agent: &SpiffeId,
    entry: &Entry,
    task: Option<&TaskBinding>,
    svid: &IssuedSvid,
) -> Event {
    let mut event = Event::new(
        agent.to_string(),
        Action::SvidIssued,
        svid.spiffe_id.to_string(),
    )
    .detail("serial", svid.serial.clone())
    .detail("not_after", svid.not_after.to_string())
    .detail("entry_id", entry.id.to_string());
    if let Some(task) = task {
        event = event
            .ticket(task.ticket.clone())
            .detail("task_id", task.task_id.clone());
    }
    event
}

/// Applies `f` to every item on all cores (inline for a handful).
fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    if items.len() < 8 || threads == 1 {
        return items.iter().map(f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let f = &f;
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(f).collect::<Vec<R>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| match h.join() {
                Ok(v) => v,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    })
}

// === agent and server SVIDs ===

/// How an agent SVID is recorded.
pub(crate) enum AgentSvid<'a> {
    /// A (re-)attestation: the agent record to store with it.
    Attest(AgentRecord),
    /// A renewal by an agent that authenticated with `presented`.
    Renew { presented: &'a str },
}

/// Plans a node-level SVID (no entry): the CA's read guard, the prepared
/// certificate, and the record to store for it.
fn plan_node_svid<'a>(
    state: &'a ServerState,
    spiffe_id: &SpiffeId,
    agent_id: Option<&SpiffeId>,
    csr: &[u8],
    ttl: Duration,
    now: SystemTime,
) -> Result<
    (
        std::sync::RwLockReadGuard<'a, CertificateAuthority>,
        PreparedSvid,
        SvidRecord,
    ),
    IssueError,
> {
    let ca = match state.ca.read() {
        Ok(ca) => ca,
        Err(poisoned) => poisoned.into_inner(),
    };
    let prepared = ca.prepare_svid(
        &SvidRequest {
            csr_der: csr,
            spiffe_id,
            dns_names: &[],
            ttl,
        },
        now,
    )?;
    let record = SvidRecord {
        serial: prepared.serial().to_owned(),
        spiffe_id: spiffe_id.clone(),
        entry_id: None,
        agent_id: agent_id.cloned(),
        task_id: None,
        issued_at: unix(now),
        not_after: prepared.not_after(),
    };
    Ok((ca, prepared, record))
}

/// Issues an agent SVID: plan, record with the agent's standing checked
/// (a banned agent cannot attest, a banned or superseded one cannot
/// renew), sign. Returns the SVID and the stored agent record.
pub(crate) fn issue_agent_svid(
    state: &ServerState,
    agent_id: &SpiffeId,
    csr: &[u8],
    how: AgentSvid<'_>,
) -> Result<(IssuedSvid, AgentRecord), IssueError> {
    let now = state.now();
    let (ca, prepared, record) = plan_node_svid(
        state,
        agent_id,
        Some(agent_id),
        csr,
        state.cfg.agent_svid_ttl,
        now,
    )?;
    let agent = match how {
        AgentSvid::Attest(mut agent) => {
            agent.serial = record.serial.clone();
            agent.expires_at = record.not_after;
            state.store.attest_agent(&agent, &record)?
        }
        AgentSvid::Renew { presented } => state.store.renew_agent(agent_id, presented, &record)?,
    };
    let svid = ca.sign_prepared(&prepared, None, now)?;
    Ok((svid, agent))
}

/// Issues one of the server's own SVIDs: plan, record, sign, audit.
pub(crate) fn issue_server_svid(
    state: &ServerState,
    csr: &[u8],
    ttl: Duration,
) -> Result<IssuedSvid, IssueError> {
    let started = Instant::now();
    let now = state.now();
    let (ca, prepared, record) = plan_node_svid(state, &state.server_id, None, csr, ttl, now)?;
    state.store.record_svid(&record)?;
    let svid = ca.sign_prepared(&prepared, None, now)?;
    drop(ca);
    state
        .audit_blocking(vec![
            Event::new(
                "lanyard-server",
                Action::SvidIssued,
                svid.spiffe_id.to_string(),
            )
            .detail("serial", svid.serial.clone())
            .detail("not_after", svid.not_after.to_string()),
        ])
        .map_err(IssueError::Audit)?;
    state.metrics.issued("server", started.elapsed());
    Ok(svid)
}
