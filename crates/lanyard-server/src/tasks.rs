//! Task-scoped, just-in-time identities.
//!
//! A task grant is requested by one operator, approved by another, and
//! exists as a registration entry only inside its window: the scheduler
//! creates the entry when the window opens (expiring at its end, so agents
//! drop it even if the scheduler were late) and deletes it, revoking every
//! SVID issued for it, when the task completes, is revoked, or its window
//! ends. Task SVIDs carry the task binding extension and never outlive the
//! window.

use std::{sync::Arc, time::Duration};

use lanyard_audit::{Action, Event};
use lanyard_ca::RevocationReason;
use lanyard_identity::{Entry, EntryId, Selector, SpiffeId};
use lanyard_store::{StoreError, TaskRecord, TaskState, TaskTransition};
use ring::rand::SecureRandom;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::{
    ServerError,
    admin::Principal,
    clock::unix,
    revocation::{self, RevocationError},
    state::{AuditFailed, ServerState},
    task_policy::{PolicyError, Verdict},
};

/// Why a task operation was refused or failed. The Admin API maps each
/// variant to a gRPC status.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TaskError {
    /// The request is malformed; the message names the flag and what is accepted.
    #[error("{0}")]
    Invalid(String),
    /// The policy forbids it; the message names the rule.
    #[error("{0}")]
    Policy(String),
    /// The task is not in a state that allows it.
    #[error("{0}")]
    State(String),
    /// No such task.
    #[error("no task {0}")]
    NotFound(String),
    /// Another task or entry already grants it.
    #[error("{0}")]
    Duplicate(String),
    /// The random generator failed.
    #[error("random generator failed")]
    Random,
    /// The store failed or refused.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The audit log could not be written.
    #[error(transparent)]
    Audit(#[from] AuditFailed),
    /// The task's SVIDs are revoked in the store but the CRL is not out.
    #[error(transparent)]
    Revocation(#[from] RevocationError),
    /// The task policy could not decide (nothing was granted).
    #[error(transparent)]
    PolicyFailed(#[from] PolicyError),
}

/// A task request, parsed from the Admin API at the service edge.
#[derive(Clone, Debug)]
pub(crate) struct TaskRequest {
    pub ticket: String,
    pub purpose: String,
    pub spiffe_id: SpiffeId,
    pub parent_id: SpiffeId,
    pub selectors: Vec<Selector>,
    pub dns_names: Vec<String>,
    pub audiences: Vec<SpiffeId>,
    /// Seconds; must be positive.
    pub ttl_seconds: i64,
    /// Unix seconds; 0 for now.
    pub starts_at: i64,
    pub break_glass: bool,
    pub reason: String,
}

/// The principal recorded for what the clock does.
pub(crate) const SCHEDULER: &str = "lanyard-server";

fn new_task_id() -> Result<String, TaskError> {
    let mut bytes = [0u8; 8];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| TaskError::Random)?;
    Ok(format!("task-{}", hex::encode(bytes)))
}

fn transition(
    task: &mut TaskRecord,
    state: TaskState,
    at: i64,
    principal: &str,
    note: Option<String>,
) {
    task.state = state;
    task.history.push(TaskTransition {
        state,
        at,
        principal: principal.to_owned(),
        note,
    });
}

/// A task's audit event. It carries the SHA-256 of the policy that allowed
/// the request and its rule, so each step of the task names them.
fn event(task: &TaskRecord, who: &str, action: Action) -> Event {
    let event = Event::new(who, action, task.id.clone())
        .ticket(task.ticket.clone())
        .detail("spiffe_id", task.spiffe_id.to_string());
    if task.policy_sha256.is_empty() {
        event
    } else {
        event
            .detail("policy_sha256", task.policy_sha256.clone())
            .detail("policy_rule", task.policy_rule.clone())
    }
}

/// Posts a task event to the webhook, if one is configured; never waits
/// and never changes the decision.
fn notify(state: &ServerState, task: &TaskRecord, event: &str, principal: &str) {
    if let Some(notifier) = state.notifier.get() {
        notifier.send(json!({
            "event": event,
            "task_id": task.id,
            "ticket": task.ticket,
            "spiffe_id": task.spiffe_id.to_string(),
            "state": task.state.as_str(),
            "principal": principal,
            "at": unix(state.now()),
            "break_glass": task.break_glass,
            "approvals": task.approvals.len(),
            "approvals_required": task.approvals_needed(),
            "policy_rule": task.policy_rule,
        }));
    }
}

/// What the ticket check answered, when it was asked.
fn ticket_detail(event: Event, response: &str) -> Event {
    if response.is_empty() {
        event
    } else {
        event.detail("ticket_check", response)
    }
}

/// The evidence of one policy decision on an event.
fn with_verdict(event: Event, v: &Verdict) -> Event {
    event
        .detail("policy_sha256", v.policy_sha256.clone())
        .detail("policy_rule", v.decision.rule.clone())
        .detail("policy_reason", v.decision.reason.clone())
}

/// An operator as the policy sees them.
fn principal_input(state: &ServerState, p: &Principal) -> Value {
    json!({
        "principal": p.to_string(),
        "uid": p.uid,
        "gid": p.gid,
        "user": p.user,
        "groups": crate::accounts::groups_of(&state.cfg.groups_file, p.user.as_deref(), p.gid),
    })
}

/// An operator recorded as `uid:N(name)`: uid and user, groups by the
/// groups file's member lists (the primary gid is not recorded).
fn recorded_principal_input(state: &ServerState, recorded: &str) -> Value {
    let uid = recorded
        .strip_prefix("uid:")
        .and_then(|r| r.split('(').next())
        .and_then(|u| u.parse::<u32>().ok());
    let user = uid.and_then(crate::accounts::user_name);
    let groups = match &user {
        Some(u) => crate::accounts::groups_of(&state.cfg.groups_file, Some(u), u32::MAX),
        None => Vec::new(),
    };
    json!({"principal": recorded, "uid": uid, "user": user, "groups": groups})
}

/// The input document of a decision on a task (request or approval).
struct PolicyContext<'a> {
    requester: Value,
    ticket: &'a str,
    purpose: &'a str,
    spiffe_id: &'a SpiffeId,
    parent_id: &'a SpiffeId,
    parent_selectors: &'a [Selector],
    selectors: &'a [Selector],
    audiences: &'a [SpiffeId],
    ttl_seconds: i64,
    starts_at: i64,
    break_glass: bool,
    reason: &'a str,
    active_tasks: usize,
}

fn policy_input(state: &ServerState, c: &PolicyContext<'_>) -> Value {
    let strings = |v: &[Selector]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
    let tz = state.cfg.task_time_zone;
    json!({
        "action": "request",
        "requester": c.requester,
        "ticket": c.ticket,
        "purpose": c.purpose,
        "spiffe_id": c.spiffe_id.to_string(),
        "parent": {"spiffe_id": c.parent_id.to_string(), "selectors": strings(c.parent_selectors)},
        "selectors": strings(c.selectors),
        "audiences": c.audiences.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "ttl_seconds": c.ttl_seconds,
        "starts_at": c.starts_at,
        "now": tz.clock(unix(state.now())),
        "start": tz.clock(c.starts_at),
        "break_glass": c.break_glass,
        "reason": c.reason,
        "active_tasks": c.active_tasks,
    })
}

/// Tasks of `requester` that are not over.
fn active_tasks_of(tasks: &[TaskRecord], uid: u32) -> usize {
    let probe = Principal {
        uid,
        gid: 0,
        user: None,
    };
    tasks
        .iter()
        .filter(|t| !t.state.is_final() && same_principal(t.requester(), &probe))
        .count()
}

/// Audits a refusal by the policy and returns the error the caller sees.
async fn refuse(
    state: &ServerState,
    event: Event,
    v: &Verdict,
    origin: &str,
    what: &str,
) -> TaskError {
    let message = format!(
        "task policy {origin} (sha256 {}) rule {:?} refuses {what}: {}",
        &v.policy_sha256[..12.min(v.policy_sha256.len())],
        v.decision.rule,
        v.decision.reason
    );
    tracing::warn!(rule = %v.decision.rule, policy_sha256 = %v.policy_sha256, reason = %v.decision.reason, "task policy refused {what}");
    match state
        .audit(with_verdict(event, v).reason(v.decision.reason.clone()))
        .await
    {
        Ok(()) => TaskError::Policy(message),
        Err(e) => e.into(),
    }
}

async fn load(state: &ServerState, id: &str) -> Result<TaskRecord, TaskError> {
    let key = id.to_owned();
    state
        .db(move |s| s.get_task(&key))
        .await?
        .ok_or_else(|| TaskError::NotFound(id.to_owned()))
}

async fn save(state: &ServerState, task: &TaskRecord) -> Result<(), TaskError> {
    let record = task.clone();
    state.db(move |s| s.put_task(&record)).await?;
    state.tasks_changed.notify_one();
    Ok(())
}

/// `task request`: validates against the policy and records the request
/// (active at once for break-glass).
pub(crate) async fn request(
    state: &Arc<ServerState>,
    who: &Principal,
    r: TaskRequest,
) -> Result<TaskRecord, TaskError> {
    let policy = &state.cfg.policy;
    let invalid = TaskError::Invalid;
    if r.ticket.trim().is_empty() {
        return Err(invalid(
            "--ticket is required: the change ticket the task is bound to".into(),
        ));
    }
    if r.purpose.trim().is_empty() && !r.break_glass {
        return Err(invalid("--purpose is required: what the work is".into()));
    }
    if r.break_glass && r.reason.trim().is_empty() {
        return Err(invalid(
            "--break-glass needs --reason: why approval cannot wait".into(),
        ));
    }
    let (cap, cap_name) = if r.break_glass {
        (policy.break_glass_max_ttl, "tasks.break_glass_max_ttl")
    } else {
        (policy.max_task_ttl, "tasks.max_ttl")
    };
    if r.ttl_seconds <= 0 {
        return Err(invalid(
            "--ttl is required and must be positive, e.g. 15m".into(),
        ));
    }
    let ttl = Duration::from_secs(r.ttl_seconds as u64);
    if ttl > cap {
        return Err(TaskError::Policy(
            format!(
                "policy {cap_name}: a {} task may last at most {}, {} was asked",
                if r.break_glass { "break-glass" } else { "" },
                humantime::format_duration(cap),
                humantime::format_duration(ttl)
            )
            .replace("a  task", "a task"),
        ));
    }
    let now = unix(state.now());
    let starts_at = if r.starts_at == 0 || r.break_glass {
        now
    } else {
        r.starts_at
    };
    if starts_at < now - 60 {
        return Err(invalid(format!(
            "--starts-at is in the past ({starts_at}); give a future time or none"
        )));
    }
    let TaskRequest {
        spiffe_id,
        parent_id,
        selectors,
        audiences,
        ..
    } = r.clone();
    // A task's parent is one attested agent: never the server (that would
    // make the grant a node alias) nor an alias or workload ID.
    let parent = parent_id.clone();
    let parent_selectors = match state.db(move |s| s.get_agent(&parent)).await? {
        Some(agent) if !agent.banned && !agent.evicted => agent.selectors,
        Some(agent) => {
            return Err(TaskError::State(format!(
                "--parent-id {parent_id}: the agent is {}; a task is granted only through an agent in good standing",
                if agent.banned { "banned" } else { "evicted" }
            )));
        }
        None => {
            return Err(invalid(format!(
                "--parent-id {parent_id} is not an attested agent: a task's parent must be the \
                 SPIFFE ID of an attested agent (see `agent list`), never the server or a node alias"
            )));
        }
    };
    let probe = Entry {
        id: EntryId::new_random(),
        spiffe_id: spiffe_id.clone(),
        parent_id: parent_id.clone(),
        selectors: selectors.clone(),
        x509_svid_ttl_secs: None,
        jwt_svid_ttl_secs: None,
        dns_names: r.dns_names.clone(),
        expires_at: None,
        hint: String::new(),
        revision: 0,
        created_at: now,
    };
    crate::admin::check_entry_ids(state, &probe).map_err(TaskError::Invalid)?;
    let _guard = lock_tasks(state).await?;
    let (entries, existing) = state
        .db(|s| Ok((s.list_entries()?, s.list_tasks()?)))
        .await?;
    let same = |spiffe_id: &SpiffeId, parent_id: &SpiffeId, selectors: &[Selector]| {
        spiffe_id == &probe.spiffe_id
            && parent_id == &probe.parent_id
            && lanyard_identity::matches_all(selectors, &probe.selectors)
            && lanyard_identity::matches_all(&probe.selectors, selectors)
    };
    if let Some(t) = existing
        .iter()
        .find(|t| !t.state.is_final() && same(&t.spiffe_id, &t.parent_id, &t.selectors))
    {
        return Err(TaskError::Duplicate(format!(
            "task {} ({}, {}) already covers {} for these selectors; complete it first",
            t.id,
            t.ticket,
            t.state.as_str(),
            t.spiffe_id
        )));
    }
    let task_entries: Vec<EntryId> = existing.iter().filter_map(|t| t.entry_id).collect();
    if let Some(e) = entries
        .iter()
        .find(|e| !task_entries.contains(&e.id) && same(&e.spiffe_id, &e.parent_id, &e.selectors))
    {
        return Err(TaskError::State(format!(
            "entry {} already grants {} to these selectors permanently; a task would add nothing",
            e.id, e.spiffe_id
        )));
    }
    // The task policy decides with the whole context of the request.
    let policy = state.task_policy.load_full();
    let input = policy_input(
        state,
        &PolicyContext {
            requester: principal_input(state, who),
            ticket: r.ticket.trim(),
            purpose: r.purpose.trim(),
            spiffe_id: &probe.spiffe_id,
            parent_id: &probe.parent_id,
            parent_selectors: &parent_selectors,
            selectors: &probe.selectors,
            audiences: &audiences,
            ttl_seconds: r.ttl_seconds,
            starts_at,
            break_glass: r.break_glass,
            reason: r.reason.trim(),
            active_tasks: active_tasks_of(&existing, who.uid),
        },
    );
    let mut verdict = policy.decide(&input)?;
    let refused = || {
        Event::new(
            who.to_string(),
            Action::TaskRefused,
            format!("request {}", probe.spiffe_id),
        )
        .ticket(r.ticket.trim())
        .detail("spiffe_id", probe.spiffe_id.to_string())
        .detail("step", "request")
    };
    if verdict.decision.allow
        && let Some(max) = verdict.decision.max_ttl_seconds
        && ttl.as_secs() > max
    {
        verdict.decision.allow = false;
        verdict.decision.reason = format!(
            "{} (the rule caps this task at {}; {} was asked)",
            verdict.decision.reason,
            humantime::format_duration(Duration::from_secs(max)),
            humantime::format_duration(ttl)
        );
    }
    if !verdict.decision.allow {
        return Err(refuse(state, refused(), &verdict, policy.origin(), "the request").await);
    }
    let task_id = new_task_id()?;
    // The ticket system has its say after the policy, before anything is stored.
    let ticket_answer = match &state.cfg.ticket_check {
        Some(check) => {
            let answer = check
                .ask(&json!({
                    "ticket": r.ticket.trim(),
                    "task_id": task_id,
                    "step": "request",
                    "spiffe_id": probe.spiffe_id.to_string(),
                    "requester": who.to_string(),
                }))
                .await;
            if !answer.allow {
                state
                    .audit(
                        with_verdict(refused(), &verdict)
                            .detail("ticket_check", answer.response.clone())
                            .reason(answer.reason.clone()),
                    )
                    .await?;
                return Err(TaskError::Policy(format!(
                    "the ticket check refuses ticket {}: {}",
                    r.ticket.trim(),
                    answer.reason
                )));
            }
            Some(answer)
        }
        None => None,
    };
    let mut task = TaskRecord {
        id: task_id,
        ticket: r.ticket.trim().to_owned(),
        purpose: r.purpose.trim().to_owned(),
        spiffe_id,
        parent_id,
        selectors,
        dns_names: r.dns_names,
        audiences,
        starts_at,
        ends_at: starts_at + ttl.as_secs() as i64,
        state: TaskState::Requested,
        history: Vec::new(),
        entry_id: None,
        break_glass: r.break_glass,
        reviewed: None,
        approvals_required: verdict.decision.approvals_required.max(1),
        approver_groups: verdict.decision.approver_groups.clone(),
        approvals: Vec::new(),
        policy_sha256: verdict.policy_sha256.clone(),
        policy_rule: verdict.decision.rule.clone(),
    };
    let principal = who.to_string();
    transition(
        &mut task,
        TaskState::Requested,
        unix(state.now()),
        &principal,
        (!r.reason.is_empty()).then(|| r.reason.clone()),
    );
    state
        .audit(ticket_detail(
            event(&task, &principal, Action::TaskRequested)
                .detail("purpose", task.purpose.clone())
                .detail("policy_reason", verdict.decision.reason.clone())
                .detail("approvals_required", task.approvals_needed().to_string()),
            &ticket_answer.map(|a| a.response).unwrap_or_default(),
        ))
        .await?;
    if task.break_glass {
        transition(
            &mut task,
            TaskState::Approved,
            unix(state.now()),
            &principal,
            Some(format!("break-glass: {}", r.reason)),
        );
        state
            .audit(event(&task, &principal, Action::BreakGlass).reason(r.reason.clone()))
            .await?;
        tracing::warn!(task = %task.id, ticket = %task.ticket, principal = %principal, "break-glass task granted without approval");
    }
    save(state, &task).await?;
    let what = if task.break_glass {
        "break_glass"
    } else {
        "requested"
    };
    notify(state, &task, what, &principal);
    drop(_guard);
    reconcile(state).await?;
    load(state, &task.id).await
}

/// `task approve`, `task deny`, `task complete`, `task review`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    Approve,
    Deny,
    Complete,
    Review,
}

pub(crate) async fn decide(
    state: &Arc<ServerState>,
    who: &Principal,
    decision: Decision,
    id: &str,
    note: String,
) -> Result<TaskRecord, TaskError> {
    let principal = who.to_string();
    let note = (!note.trim().is_empty()).then(|| note.trim().to_owned());
    let guard = lock_tasks(state).await?;
    let mut task = load(state, id).await?;
    let requester_uid = task.requester().to_owned();
    let same_person = same_principal(&requester_uid, who);
    let distinct = state.cfg.policy.require_distinct_approver;
    let refuse_state = |what: &str| {
        TaskError::State(format!(
            "task {} is {}; {what}",
            task.id,
            task.state.as_str()
        ))
    };
    match decision {
        Decision::Approve => {
            if task.state != TaskState::Requested {
                return Err(refuse_state("only a requested task can be approved"));
            }
            if distinct && same_person {
                return Err(TaskError::Policy(format!(
                    "policy tasks.require_distinct_approver: {principal} requested task {} and may not approve it",
                    task.id
                )));
            }
            approve(state, who, &mut task, note.clone()).await?;
        }
        Decision::Deny => {
            let reason = note
                .clone()
                .ok_or_else(|| TaskError::Invalid("--reason is required to deny a task".into()))?;
            let next = match task.state {
                TaskState::Requested => TaskState::Denied,
                TaskState::Approved | TaskState::Active => TaskState::Revoked,
                _ => return Err(refuse_state("it has already ended")),
            };
            transition(
                &mut task,
                next,
                unix(state.now()),
                &principal,
                Some(reason.clone()),
            );
            state
                .audit(event(&task, &principal, Action::TaskDenied).reason(reason))
                .await?;
            if next == TaskState::Revoked {
                end(state, &mut task, &principal).await?;
                state
                    .audit(event(&task, &principal, Action::TaskRevoked))
                    .await?;
            }
        }
        Decision::Complete => {
            if !matches!(task.state, TaskState::Approved | TaskState::Active) {
                return Err(refuse_state(
                    "only an approved or active task can be completed",
                ));
            }
            let allowed =
                same_person || state.cfg.policy.allows(who, crate::policy::Role::Approver);
            if !allowed {
                return Err(TaskError::Policy(format!(
                    "only the requester or an approver may complete task {}",
                    task.id
                )));
            }
            transition(
                &mut task,
                TaskState::Completed,
                unix(state.now()),
                &principal,
                note.clone(),
            );
            end(state, &mut task, &principal).await?;
            state
                .audit(event(&task, &principal, Action::TaskCompleted))
                .await?;
        }
        Decision::Review => {
            if !task.break_glass {
                return Err(refuse_state("only break-glass tasks are reviewed"));
            }
            if task.reviewed.is_some() {
                return Err(refuse_state("it has already been reviewed"));
            }
            if distinct && same_person {
                return Err(TaskError::Policy(format!(
                    "policy tasks.require_distinct_approver: {principal} opened break-glass task {} and may not review it",
                    task.id
                )));
            }
            task.reviewed = Some(TaskTransition {
                state: task.state,
                at: unix(state.now()),
                principal: principal.clone(),
                note: note.clone(),
            });
            state
                .audit(
                    event(&task, &principal, Action::TaskReviewed).reason(note.unwrap_or_default()),
                )
                .await?;
        }
    }
    save(state, &task).await?;
    let what = match (decision, task.state) {
        (Decision::Approve, _) => "approved",
        (Decision::Deny, TaskState::Denied) => "denied",
        (Decision::Deny, _) => "revoked",
        (Decision::Complete, _) => "completed",
        (Decision::Review, _) => "reviewed",
    };
    notify(state, &task, what, &principal);
    drop(guard);
    reconcile(state).await?;
    load(state, &task.id).await
}

/// One approval: each from a distinct principal (never the requester when
/// `require_distinct_approver`), from the groups the policy named, allowed
/// by the policy. The task is approved when the required number is in.
async fn approve(
    state: &Arc<ServerState>,
    who: &Principal,
    task: &mut TaskRecord,
    note: Option<String>,
) -> Result<(), TaskError> {
    let principal = who.to_string();
    if task
        .approvals
        .iter()
        .any(|a| same_principal(&a.principal, who))
    {
        return Err(TaskError::Policy(format!(
            "{principal} has already approved task {}; it needs {} distinct approvers, {} so far",
            task.id,
            task.approvals_needed(),
            task.approvals.len()
        )));
    }
    let approver = principal_input(state, who);
    if !task.approver_groups.is_empty() {
        let groups: Vec<&str> = approver["groups"]
            .as_array()
            .map(|g| g.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if !task
            .approver_groups
            .iter()
            .any(|g| groups.contains(&g.as_str()))
        {
            let message = format!(
                "task policy rule {:?}: approvals of task {} must come from a member of {}; {principal} is in {}",
                task.policy_rule,
                task.id,
                task.approver_groups.join(", "),
                if groups.is_empty() {
                    "no group".to_owned()
                } else {
                    groups.join(", ")
                }
            );
            state
                .audit(
                    event(task, &principal, Action::TaskRefused)
                        .detail("step", "approve")
                        .reason(message.clone()),
                )
                .await?;
            return Err(TaskError::Policy(message));
        }
    }
    // The policy sees the approval in the context of the whole request.
    let (parent, all) = {
        let parent = task.parent_id.clone();
        state
            .db(move |s| Ok((s.get_agent(&parent)?, s.list_tasks()?)))
            .await?
    };
    let requester_uid = task
        .requester()
        .strip_prefix("uid:")
        .and_then(|r| r.split('(').next())
        .and_then(|u| u.parse().ok())
        .unwrap_or(u32::MAX);
    let parent_selectors = parent.map(|a| a.selectors).unwrap_or_default();
    let mut input = policy_input(
        state,
        &PolicyContext {
            requester: recorded_principal_input(state, task.requester()),
            ticket: &task.ticket,
            purpose: &task.purpose,
            spiffe_id: &task.spiffe_id,
            parent_id: &task.parent_id,
            parent_selectors: &parent_selectors,
            selectors: &task.selectors,
            audiences: &task.audiences,
            ttl_seconds: task.ends_at - task.starts_at,
            starts_at: task.starts_at,
            break_glass: task.break_glass,
            reason: "",
            active_tasks: active_tasks_of(&all, requester_uid),
        },
    );
    input["action"] = json!("approve");
    input["task_id"] = json!(task.id);
    input["approver"] = approver;
    input["approvals"] = json!(
        task.approvals
            .iter()
            .map(|a| json!({"principal": a.principal, "at": a.at, "note": a.note}))
            .collect::<Vec<_>>()
    );
    input["approvals_required"] = json!(task.approvals_needed());
    let policy = state.task_policy.load_full();
    let verdict = policy.decide(&input)?;
    if !verdict.decision.allow {
        let refused = event(task, &principal, Action::TaskRefused).detail("step", "approve");
        return Err(refuse(state, refused, &verdict, policy.origin(), "the approval").await);
    }
    let now = unix(state.now());
    let approval = TaskTransition {
        state: TaskState::Approved,
        at: now,
        principal: principal.clone(),
        note: note.clone(),
    };
    task.approvals.push(approval);
    let (got, needed) = (task.approvals.len(), task.approvals_needed() as usize);
    let count = format!("approval {got} of {needed}");
    let history_note = Some(match &note {
        Some(n) => format!("{count}: {n}"),
        None => count.clone(),
    });
    let next = if got >= needed {
        TaskState::Approved
    } else {
        TaskState::Requested
    };
    transition(task, next, now, &principal, history_note);
    state
        .audit(
            with_verdict(event(task, &principal, Action::TaskApproved), &verdict)
                .detail("approvals", format!("{got}/{needed}"))
                .reason(note.unwrap_or_default()),
        )
        .await?;
    tracing::info!(task = %task.id, approvals = got, required = needed, principal = %principal, "task approval recorded");
    Ok(())
}

/// Whether the recorded principal (`uid:N(name)` or `uid:N`) is `who`.
fn same_principal(recorded: &str, who: &Principal) -> bool {
    let uid = recorded
        .strip_prefix("uid:")
        .map(|r| r.split('(').next().unwrap_or(r));
    uid.and_then(|u| u.parse::<u32>().ok()) == Some(who.uid)
}

/// Stores the ended task, removes its entry and revokes every SVID issued
/// for it, in one store transaction; the new CRL is published before this
/// returns.
async fn end(
    state: &Arc<ServerState>,
    task: &mut TaskRecord,
    principal: &str,
) -> Result<(), TaskError> {
    let sweep = revocation::sweep(state, RevocationReason::CessationOfOperation);
    let record = task.clone();
    let revoked = state.db(move |s| s.end_task(&record, &sweep)).await?;
    state.entries_changed(task.entry_id);
    revocation::announce(state, &revoked, principal, Some(&task.ticket)).await?;
    tracing::info!(task = %task.id, revoked = revoked.len(), "task ended; its SVIDs are revoked");
    Ok(())
}

/// Task changes, held: this server's lock and, on a shared database, the
/// cluster's, so that task changes (and the scheduler's openings and
/// expiries, which re-read the tasks under it) happen one at a time across
/// every server, and each once.
pub(crate) struct TasksGuard<'a> {
    _local: tokio::sync::MutexGuard<'a, ()>,
    _cluster: crate::cluster::Guard,
}

pub(crate) async fn lock_tasks(state: &Arc<ServerState>) -> Result<TasksGuard<'_>, TaskError> {
    let local = state.tasks_lock.lock().await;
    let cluster = {
        let state = state.clone();
        tokio::task::spawn_blocking(move || {
            state
                .cluster
                .lock(lanyard_store_postgres::ClusterJob::Tasks)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("task lock: {e}").into()))??
    };
    Ok(TasksGuard {
        _local: local,
        _cluster: cluster,
    })
}

/// Moves every task whose time has come: approved tasks whose window has
/// opened become active (their entry is created), tasks whose window has
/// closed expire. Returns when the next such moment is.
pub(crate) async fn reconcile(state: &Arc<ServerState>) -> Result<Option<i64>, TaskError> {
    let _guard = lock_tasks(state).await?;
    let now = unix(state.now());
    let tasks = state.db(|s| s.list_tasks()).await?;
    let mut next: Option<i64> = None;
    let mut active = 0;
    for mut task in tasks {
        let due = match task.state {
            TaskState::Approved | TaskState::Active if now >= task.ends_at => {
                transition(&mut task, TaskState::Expired, now, SCHEDULER, None);
                end(state, &mut task, SCHEDULER).await?;
                state
                    .audit(event(&task, SCHEDULER, Action::TaskExpired))
                    .await?;
                true
            }
            TaskState::Approved if now >= task.starts_at => {
                activate(state, &mut task).await?;
                true
            }
            _ => false,
        };
        if due {
            let record = task.clone();
            state.db(move |s| s.put_task(&record)).await?;
            let what = match task.state {
                TaskState::Active => "activated",
                TaskState::Expired => "expired",
                _ => "revoked",
            };
            notify(state, &task, what, SCHEDULER);
        }
        let upcoming = match task.state {
            TaskState::Approved => Some(task.starts_at.min(task.ends_at)),
            TaskState::Active => Some(task.ends_at),
            _ => None,
        };
        if task.state == TaskState::Active {
            active += 1;
        }
        next = match (next, upcoming) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    state.metrics.tasks_active.set(active);
    Ok(next)
}

async fn activate(state: &Arc<ServerState>, task: &mut TaskRecord) -> Result<(), TaskError> {
    // The ticket is asked again as the window opens (a break-glass task
    // was asked a moment ago, at its request): a ticket closed since the
    // approval revokes the task before anything is issued.
    let mut ticket_check = String::new();
    if let Some(check) = &state.cfg.ticket_check
        && !task.break_glass
    {
        let answer = check
            .ask(&json!({
                "ticket": task.ticket,
                "task_id": task.id,
                "step": "activation",
                "spiffe_id": task.spiffe_id.to_string(),
                "requester": task.requester(),
            }))
            .await;
        if !answer.allow {
            transition(
                task,
                TaskState::Revoked,
                unix(state.now()),
                SCHEDULER,
                Some(format!("ticket check at activation: {}", answer.reason)),
            );
            end(state, task, SCHEDULER).await?;
            state
                .audit(
                    event(task, SCHEDULER, Action::TaskRevoked)
                        .detail("ticket_check", answer.response)
                        .reason(answer.reason),
                )
                .await?;
            tracing::warn!(task = %task.id, ticket = %task.ticket, "ticket check refused the task at activation; revoked");
            return Ok(());
        }
        ticket_check = answer.response;
    }
    let entry = Entry {
        id: EntryId::new_random(),
        spiffe_id: task.spiffe_id.clone(),
        parent_id: task.parent_id.clone(),
        selectors: task.selectors.clone(),
        x509_svid_ttl_secs: None,
        jwt_svid_ttl_secs: None,
        dns_names: task.dns_names.clone(),
        // The entry itself ends with the window, whatever the scheduler does.
        expires_at: Some(task.ends_at),
        hint: format!("task {} ({})", task.id, task.ticket),
        revision: 0,
        created_at: unix(state.now()),
    };
    task.entry_id = Some(entry.id);
    transition(task, TaskState::Active, unix(state.now()), SCHEDULER, None);
    let (record, grant) = (task.clone(), entry.clone());
    state.db(move |s| s.activate_task(&record, &grant)).await?;
    state
        .audit(ticket_detail(
            event(task, SCHEDULER, Action::TaskActivated).detail("entry_id", entry.id.to_string()),
            &ticket_check,
        ))
        .await?;
    state.entries_changed([entry.id]);
    tracing::info!(task = %task.id, ticket = %task.ticket, entry = %entry.id, ends_at = task.ends_at, "task active");
    Ok(())
}

/// The scheduler: reconciles at every task's next moment and whenever a
/// task changes, until `shutdown`.
pub(crate) async fn run(
    state: Arc<ServerState>,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    loop {
        let next = match reconcile(&state).await {
            Ok(next) => next,
            Err(e) => {
                tracing::error!(error = %e, "task scheduler step failed; retrying");
                Some(unix(state.now()) + 1)
            }
        };
        let wait = next
            .map(|t| until(t, state.now()))
            .unwrap_or(Duration::from_secs(3600));
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(wait) => {}
            () = state.tasks_changed.notified() => {}
        }
    }
}

/// How long from `now` until the whole second `at` (unix seconds) has
/// begun, plus a few milliseconds, so the scheduler wakes when a window
/// opens or closes rather than up to a second after.
fn until(at: i64, now: std::time::SystemTime) -> Duration {
    let at = std::time::UNIX_EPOCH + Duration::from_secs(at.max(0) as u64);
    at.duration_since(now).unwrap_or_default() + Duration::from_millis(5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheduler_wakes_as_the_second_begins() {
        let base = std::time::UNIX_EPOCH + Duration::from_secs(1_000);
        let late_in_second = base + Duration::from_millis(900);
        assert_eq!(until(1_001, late_in_second), Duration::from_millis(105));
        assert_eq!(until(1_001, base), Duration::from_millis(1_005));
        assert_eq!(until(999, base), Duration::from_millis(5));
    }

    #[test]
    fn principals_compare_by_uid() {
        let p = Principal {
            uid: 1001,
            gid: 1001,
            user: Some("bob".into()),
        };
        assert!(same_principal("uid:1001(bob)", &p));
        assert!(same_principal("uid:1001", &p));
        assert!(!same_principal("uid:1002(eve)", &p));
        assert!(!same_principal("lanyard-server", &p));
    }
}
