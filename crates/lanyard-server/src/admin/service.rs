//! `lanyard.admin.v1.Admin` implementation.

use std::sync::Arc;

use lanyard_ca::RevocationReason;
use lanyard_identity::{Entry, EntryId, SpiffeId};
use lanyard_proto::admin::v1::{self as pb, admin_server::Admin};
use lanyard_store::{AgentRecord, AgentStanding, JoinTokenRecord};
use tonic::{Request, Response, Status};

use lanyard_audit::{Action, Event};

use super::Principal;
use crate::{
    convert, join_token,
    policy::Role,
    revocation,
    state::{ServerState, now_unix},
    status::store_status,
    tasks,
};

/// Most entries one BatchCreateEntries call may carry.
const MAX_ENTRY_BATCH: usize = 10_000;

pub(crate) struct AdminService {
    state: Arc<ServerState>,
}

impl AdminService {
    pub fn new(state: Arc<ServerState>) -> Self {
        Self { state }
    }

    async fn decide(
        &self,
        req: Request<pb::TaskDecision>,
        role: Role,
        decision: tasks::Decision,
    ) -> Result<Response<pb::Task>, Status> {
        let who = self.authorize(&req, role)?;
        let d = req.into_inner();
        let task = tasks::decide(&self.state, &who, decision, &d.id, d.note).await?;
        Ok(Response::new(tasks::task_pb(&task)))
    }

    /// The caller, if it holds `role` under the policy.
    fn authorize<T>(&self, req: &Request<T>, role: Role) -> Result<Principal, Status> {
        let who = Principal::of(req)?;
        if self.state.cfg.policy.allows(&who, role) {
            Ok(who)
        } else {
            tracing::warn!(principal = %who, ?role, "admin call refused by policy");
            Err(Status::permission_denied(format!(
                "{who} may not do this: it needs the {} role ({})",
                format!("{role:?}").to_lowercase(),
                self.state.cfg.policy.describe(role)
            )))
        }
    }

    fn entry_from(&self, e: pb::Entry) -> Result<Entry, Status> {
        Ok(Entry {
            id: EntryId::new_random(),
            spiffe_id: convert::spiffe_id("spiffe_id", &e.spiffe_id)?,
            parent_id: convert::spiffe_id("parent_id", &e.parent_id)?,
            selectors: convert::selectors(&e.selectors)?,
            x509_svid_ttl_secs: convert::ttl("x509_svid_ttl", e.x509_svid_ttl_seconds)?,
            dns_names: e.dns_names,
            expires_at: convert::expires_at(e.expires_at)?,
            hint: e.hint,
            revision: 0,
            created_at: now_unix(),
        })
    }

    async fn agent(&self, id: &str) -> Result<AgentRecord, Status> {
        let id = convert::spiffe_id("spiffe_id", id)?;
        let key = id.clone();
        self.state
            .db(move |s| s.get_agent(&key))
            .await
            .map_err(store_status)?
            .ok_or_else(|| Status::not_found(format!("no agent {id}")))
    }

    /// Evicts or bans an agent; the store revokes its SVID and every SVID
    /// issued through it in the same transaction, and the new CRL is
    /// published before this returns.
    async fn set_agent_flag(
        &self,
        req: Request<String>,
        standing: AgentStanding,
        reason: RevocationReason,
    ) -> Result<Response<pb::Agent>, Status> {
        let who = self.authorize(&req, Role::Admin)?;
        let id = convert::spiffe_id("spiffe_id", req.get_ref())?;
        let sweep = revocation::sweep(&self.state, reason);
        let (agent, revoked) = self
            .state
            .db(move |s| s.set_agent_standing(&id, standing, &sweep))
            .await
            .map_err(store_status)?;
        self.state.notify();
        revocation::announce(&self.state, &revoked, &who.to_string(), None).await?;
        let audit_action = match standing {
            AgentStanding::Banned => Action::AgentBanned,
            AgentStanding::Evicted => Action::AgentEvicted,
        };
        self.state
            .audit(
                Event::new(who.to_string(), audit_action, agent.spiffe_id.to_string())
                    .detail("revoked_svids", revoked.len().to_string()),
            )
            .await?;
        tracing::warn!(principal = %who, agent = %agent.spiffe_id, ?standing, revoked = revoked.len(), "agent standing changed");
        Ok(Response::new(agent_pb(&agent)))
    }
}

/// IDs under `/lanyard/` belong to the server and agents: no entry may
/// claim one, and every entry stays inside our trust domain.
pub(crate) fn check_entry_ids(state: &ServerState, entry: &Entry) -> Result<(), Status> {
    let td = &state.cfg.trust_domain;
    for (field, id) in [
        ("spiffe_id", &entry.spiffe_id),
        ("parent_id", &entry.parent_id),
    ] {
        if !id.is_member_of(td) {
            return Err(Status::invalid_argument(format!(
                "{field} {id} is not in trust domain {td}"
            )));
        }
    }
    if entry.spiffe_id.path() == "/lanyard" || entry.spiffe_id.path().starts_with("/lanyard/") {
        return Err(Status::invalid_argument(format!(
            "spiffe_id {} is reserved: paths under /lanyard/ name the server and agents",
            entry.spiffe_id
        )));
    }
    entry
        .validate()
        .map_err(|e| Status::invalid_argument(e.to_string()))
}

fn agent_pb(a: &AgentRecord) -> pb::Agent {
    pb::Agent {
        spiffe_id: a.spiffe_id.to_string(),
        attestation_type: a.attestation_type.clone(),
        selectors: a.selectors.iter().map(ToString::to_string).collect(),
        serial: a.serial.clone(),
        expires_at: a.expires_at,
        attested_at: a.attested_at,
        banned: a.banned,
        evicted: a.evicted,
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn create_entry(
        &self,
        req: Request<pb::CreateEntryRequest>,
    ) -> Result<Response<pb::Entry>, Status> {
        let who = self.authorize(&req, Role::Admin)?;
        let entry = req
            .into_inner()
            .entry
            .ok_or_else(|| Status::invalid_argument("entry is required"))?;
        let entry = self.entry_from(entry)?;
        check_entry_ids(&self.state, &entry)?;
        let record = entry.clone();
        self.state
            .db(move |s| s.create_entry(&record))
            .await
            .map_err(store_status)?;
        self.state.notify();
        self.state
            .audit(entry_event(&who, Action::EntryCreated, &entry))
            .await?;
        tracing::info!(principal = %who, entry = %entry.id, spiffe_id = %entry.spiffe_id, "entry created");
        Ok(Response::new(convert::admin_entry(&entry)))
    }

    async fn batch_create_entries(
        &self,
        req: Request<pb::BatchCreateEntriesRequest>,
    ) -> Result<Response<pb::BatchCreateEntriesResponse>, Status> {
        let who = self.authorize(&req, Role::Admin)?;
        let requested = req.into_inner().entries;
        if requested.len() > MAX_ENTRY_BATCH {
            return Err(Status::invalid_argument(format!(
                "{} entries in one batch; at most {MAX_ENTRY_BATCH} are accepted",
                requested.len()
            )));
        }
        // Invalid entries are answered here; the rest go to the store.
        let checked: Vec<Result<Entry, Status>> = requested
            .into_iter()
            .map(|e| {
                let entry = self.entry_from(e)?;
                check_entry_ids(&self.state, &entry)?;
                Ok(entry)
            })
            .collect();
        let valid: Vec<Entry> = checked
            .iter()
            .filter_map(|c| c.as_ref().ok().cloned())
            .collect();
        let stored = {
            let valid = valid.clone();
            self.state
                .db(move |s| s.create_entries(&valid))
                .await
                .map_err(store_status)?
        };
        let mut stored = valid.into_iter().zip(stored);
        let mut events = Vec::new();
        let results = checked
            .into_iter()
            .map(|c| {
                let outcome = c.and_then(|_| match stored.next() {
                    Some((entry, Ok(()))) => Ok(entry),
                    Some((_, Err(e))) => Err(store_status(e)),
                    None => Err(Status::internal("no result for this entry")),
                });
                let result = match outcome {
                    Ok(entry) => {
                        events.push(entry_event(&who, Action::EntryCreated, &entry));
                        pb::batch_create_entry_result::Result::Entry(convert::admin_entry(&entry))
                    }
                    Err(status) => pb::batch_create_entry_result::Result::Error(pb::BatchError {
                        code: status.code() as i32,
                        message: status.message().to_owned(),
                    }),
                };
                pb::BatchCreateEntryResult {
                    result: Some(result),
                }
            })
            .collect();
        let created = events.len();
        if created > 0 {
            self.state.notify();
            self.state.audit_all(events).await?;
        }
        tracing::info!(principal = %who, created, "entries created in one batch");
        Ok(Response::new(pb::BatchCreateEntriesResponse { results }))
    }

    async fn list_entries(
        &self,
        req: Request<pb::ListEntriesRequest>,
    ) -> Result<Response<pb::ListEntriesResponse>, Status> {
        self.authorize(&req, Role::Admin)?;
        let f = req.into_inner();
        let spiffe_id = (!f.spiffe_id.is_empty())
            .then(|| convert::spiffe_id("spiffe_id", &f.spiffe_id))
            .transpose()?;
        let parent_id = (!f.parent_id.is_empty())
            .then(|| convert::spiffe_id("parent_id", &f.parent_id))
            .transpose()?;
        let selector = (!f.selector.is_empty())
            .then(|| convert::selectors(std::slice::from_ref(&f.selector)))
            .transpose()?
            .and_then(|mut v| v.pop());
        let entries = self
            .state
            .db(|s| s.list_entries())
            .await
            .map_err(store_status)?;
        let entries = entries
            .iter()
            .filter(|e| spiffe_id.as_ref().is_none_or(|id| &e.spiffe_id == id))
            .filter(|e| parent_id.as_ref().is_none_or(|id| &e.parent_id == id))
            .filter(|e| selector.as_ref().is_none_or(|s| e.selectors.contains(s)))
            .map(convert::admin_entry)
            .collect();
        Ok(Response::new(pb::ListEntriesResponse { entries }))
    }

    async fn get_entry(
        &self,
        req: Request<pb::GetEntryRequest>,
    ) -> Result<Response<pb::Entry>, Status> {
        self.authorize(&req, Role::Admin)?;
        let id = convert::entry_id(&req.get_ref().id)?;
        let entry = self
            .state
            .db(move |s| s.get_entry(&id))
            .await
            .map_err(store_status)?
            .ok_or_else(|| Status::not_found(format!("no entry {id}")))?;
        Ok(Response::new(convert::admin_entry(&entry)))
    }

    async fn update_entry(
        &self,
        req: Request<pb::UpdateEntryRequest>,
    ) -> Result<Response<pb::Entry>, Status> {
        let who = self.authorize(&req, Role::Admin)?;
        let u = req.into_inner();
        let id = convert::entry_id(&u.id)?;
        let mut entry = self
            .state
            .db(move |s| s.get_entry(&id))
            .await
            .map_err(store_status)?
            .ok_or_else(|| Status::not_found(format!("no entry {id}")))?;
        if let Some(v) = &u.spiffe_id {
            entry.spiffe_id = convert::spiffe_id("spiffe_id", v)?;
        }
        if let Some(v) = &u.parent_id {
            entry.parent_id = convert::spiffe_id("parent_id", v)?;
        }
        if !u.selectors.is_empty() {
            entry.selectors = convert::selectors(&u.selectors)?;
        }
        if let Some(v) = u.x509_svid_ttl_seconds {
            entry.x509_svid_ttl_secs = convert::ttl("x509_svid_ttl", v)?;
        }
        if u.set_dns_names {
            entry.dns_names = u.dns_names;
        }
        if let Some(v) = u.expires_at {
            entry.expires_at = convert::expires_at(v)?;
        }
        if let Some(v) = u.hint {
            entry.hint = v;
        }
        check_entry_ids(&self.state, &entry)?;
        let sweep = revocation::sweep(&self.state, RevocationReason::Superseded);
        let (entry, revoked) = self
            .state
            .db(move |s| s.update_entry(&entry, &sweep))
            .await
            .map_err(store_status)?;
        self.state.notify();
        revocation::announce(&self.state, &revoked, &who.to_string(), None).await?;
        self.state
            .audit(entry_event(&who, Action::EntryUpdated, &entry))
            .await?;
        tracing::info!(principal = %who, entry = %entry.id, revision = entry.revision, revoked = revoked.len(), "entry updated");
        Ok(Response::new(convert::admin_entry(&entry)))
    }

    async fn delete_entry(
        &self,
        req: Request<pb::DeleteEntryRequest>,
    ) -> Result<Response<pb::Entry>, Status> {
        let who = self.authorize(&req, Role::Admin)?;
        let id = convert::entry_id(&req.get_ref().id)?;
        let sweep = revocation::sweep(&self.state, RevocationReason::CessationOfOperation);
        let (entry, revoked) = self
            .state
            .db(move |s| s.delete_entry(&id, &sweep))
            .await
            .map_err(store_status)?;
        self.state.notify();
        revocation::announce(&self.state, &revoked, &who.to_string(), None).await?;
        self.state
            .audit(entry_event(&who, Action::EntryDeleted, &entry))
            .await?;
        tracing::info!(principal = %who, entry = %entry.id, spiffe_id = %entry.spiffe_id, revoked = revoked.len(), "entry deleted");
        Ok(Response::new(convert::admin_entry(&entry)))
    }

    async fn generate_join_token(
        &self,
        req: Request<pb::GenerateJoinTokenRequest>,
    ) -> Result<Response<pb::JoinToken>, Status> {
        let who = self.authorize(&req, Role::Admin)?;
        let r = req.into_inner();
        let ttl = match r.ttl_seconds {
            0 => self.state.cfg.join_token_ttl.as_secs() as i64,
            s if s > 0 => s,
            s => {
                return Err(Status::invalid_argument(format!(
                    "ttl must be positive, got {s}s"
                )));
            }
        };
        let td = &self.state.cfg.trust_domain;
        let spiffe_id = if r.spiffe_id.is_empty() {
            None
        } else {
            let id = convert::spiffe_id("spiffe_id", &r.spiffe_id)?;
            if !id.is_member_of(td) || id.path().is_empty() || id == self.state.server_id {
                return Err(Status::invalid_argument(format!(
                    "spiffe_id {id} cannot be an agent ID: it must be a non-root ID in {td} other than the server's"
                )));
            }
            Some(id)
        };
        let token =
            join_token::generate().map_err(|_| Status::internal("random generator failed"))?;
        let token_id = join_token::token_id(&token);
        let now = now_unix();
        let agent_id = match &spiffe_id {
            Some(id) => id.clone(),
            None => SpiffeId::from_parts(td, &format!("/lanyard/agent/join_token/{token_id}"))
                .map_err(|e| Status::internal(e.to_string()))?,
        };
        let record = JoinTokenRecord {
            token_id: token_id.clone(),
            expires_at: now + ttl,
            created_at: now,
            spiffe_id,
        };
        self.state
            .db(move |s| s.create_join_token(&record))
            .await
            .map_err(store_status)?;
        self.state
            .audit(
                Event::new(who.to_string(), Action::TokenCreated, token_id.clone())
                    .detail("agent_id", agent_id.to_string())
                    .detail("expires_at", (now + ttl).to_string()),
            )
            .await?;
        tracing::info!(principal = %who, token_id = %token_id, ttl_seconds = ttl, "join token created");
        Ok(Response::new(pb::JoinToken {
            token,
            expires_at: now + ttl,
            agent_id: agent_id.to_string(),
        }))
    }

    async fn list_agents(
        &self,
        req: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        self.authorize(&req, Role::Admin)?;
        let agents = self
            .state
            .db(|s| s.list_agents())
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::ListAgentsResponse {
            agents: agents.iter().map(agent_pb).collect(),
        }))
    }

    async fn get_agent(
        &self,
        req: Request<pb::GetAgentRequest>,
    ) -> Result<Response<pb::Agent>, Status> {
        self.authorize(&req, Role::Admin)?;
        Ok(Response::new(agent_pb(
            &self.agent(&req.get_ref().spiffe_id).await?,
        )))
    }

    async fn evict_agent(
        &self,
        req: Request<pb::EvictAgentRequest>,
    ) -> Result<Response<pb::Agent>, Status> {
        let (meta, ext, inner) = req.into_parts();
        self.set_agent_flag(
            Request::from_parts(meta, ext, inner.spiffe_id),
            AgentStanding::Evicted,
            RevocationReason::CessationOfOperation,
        )
        .await
    }

    async fn ban_agent(
        &self,
        req: Request<pb::BanAgentRequest>,
    ) -> Result<Response<pb::Agent>, Status> {
        let (meta, ext, inner) = req.into_parts();
        self.set_agent_flag(
            Request::from_parts(meta, ext, inner.spiffe_id),
            AgentStanding::Banned,
            RevocationReason::KeyCompromise,
        )
        .await
    }

    async fn get_bundle(
        &self,
        _req: Request<pb::GetBundleRequest>,
    ) -> Result<Response<pb::Bundle>, Status> {
        Ok(Response::new(pb::Bundle {
            trust_domain: self.state.cfg.trust_domain.to_string(),
            x509_authorities: self
                .state
                .bundle()
                .into_iter()
                .map(|c| c.to_vec())
                .collect(),
            sequence_number: 0,
        }))
    }

    async fn list_svids(
        &self,
        req: Request<pb::ListSvidsRequest>,
    ) -> Result<Response<pb::ListSvidsResponse>, Status> {
        self.authorize(&req, Role::Admin)?;
        let f = req.into_inner();
        let spiffe_id = (!f.spiffe_id.is_empty())
            .then(|| convert::spiffe_id("spiffe_id", &f.spiffe_id))
            .transpose()?;
        let mut svids = self
            .state
            .db(|s| s.list_svids())
            .await
            .map_err(store_status)?;
        let crl = self.state.crl.load_full();
        svids.sort_by(|a, b| (a.issued_at, &a.serial).cmp(&(b.issued_at, &b.serial)));
        let svids = svids
            .into_iter()
            .filter(|s| spiffe_id.as_ref().is_none_or(|id| &s.spiffe_id == id))
            .map(|s| pb::Svid {
                revoked: crl.revoked.contains(&s.serial),
                serial: s.serial,
                spiffe_id: s.spiffe_id.to_string(),
                entry_id: s.entry_id.map(|e| e.to_string()).unwrap_or_default(),
                agent_id: s.agent_id.map(|a| a.to_string()).unwrap_or_default(),
                not_after: s.not_after,
                issued_at: s.issued_at,
            })
            .collect();
        Ok(Response::new(pb::ListSvidsResponse { svids }))
    }

    async fn revoke_svid(
        &self,
        req: Request<pb::RevokeSvidRequest>,
    ) -> Result<Response<pb::RevokeSvidResponse>, Status> {
        let who = self.authorize(&req, Role::Admin)?;
        let r = req.into_inner();
        let serial = revocation::normalize_serial(&r.serial)?;
        let reason: RevocationReason = if r.reason.is_empty() {
            RevocationReason::Unspecified
        } else {
            r.reason
                .parse()
                .map_err(|e: lanyard_ca::CaError| Status::invalid_argument(e.to_string()))?
        };
        let lookup = serial.clone();
        let sweep = revocation::sweep(&self.state, reason);
        let revoked = self
            .state
            .db(move |s| s.revoke_svid(&lookup, &sweep))
            .await
            .map_err(|e| match e {
                lanyard_store::StoreError::NotFound { .. } => Status::not_found(format!(
                    "no SVID with serial {serial} was issued by this server"
                )),
                e => store_status(e),
            })?;
        let revoked: Vec<_> = revoked.into_iter().collect();
        revocation::announce(&self.state, &revoked, &who.to_string(), None).await?;
        Ok(Response::new(pb::RevokeSvidResponse {
            serials: revoked.into_iter().map(|r| r.serial).collect(),
            crl_number: self.state.crl.load().number,
        }))
    }

    async fn get_crl(&self, _req: Request<pb::GetCrlRequest>) -> Result<Response<pb::Crl>, Status> {
        let crl = self.state.crl.load_full();
        Ok(Response::new(pb::Crl {
            der: crl.der.clone(),
            crl_number: crl.number,
            next_update: crl.next_update,
            revoked: crl.revoked.len() as u64,
        }))
    }

    async fn request_task(
        &self,
        req: Request<pb::RequestTaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let who = self.authorize(&req, Role::Requester)?;
        let task = tasks::request(&self.state, &who, req.into_inner()).await?;
        Ok(Response::new(tasks::task_pb(&task)))
    }

    async fn approve_task(
        &self,
        req: Request<pb::TaskDecision>,
    ) -> Result<Response<pb::Task>, Status> {
        self.decide(req, Role::Approver, tasks::Decision::Approve)
            .await
    }

    async fn deny_task(
        &self,
        req: Request<pb::TaskDecision>,
    ) -> Result<Response<pb::Task>, Status> {
        self.decide(req, Role::Approver, tasks::Decision::Deny)
            .await
    }

    async fn complete_task(
        &self,
        req: Request<pb::TaskDecision>,
    ) -> Result<Response<pb::Task>, Status> {
        self.decide(req, Role::Participant, tasks::Decision::Complete)
            .await
    }

    async fn review_task(
        &self,
        req: Request<pb::TaskDecision>,
    ) -> Result<Response<pb::Task>, Status> {
        self.decide(req, Role::Approver, tasks::Decision::Review)
            .await
    }

    async fn get_task(
        &self,
        req: Request<pb::GetTaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        self.authorize(&req, Role::Participant)?;
        let id = req.into_inner().id;
        let key = id.clone();
        let task = self
            .state
            .db(move |s| s.get_task(&key))
            .await
            .map_err(store_status)?
            .ok_or_else(|| Status::not_found(format!("no task {id}")))?;
        Ok(Response::new(tasks::task_pb(&task)))
    }

    async fn list_tasks(
        &self,
        req: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        self.authorize(&req, Role::Participant)?;
        let f = req.into_inner();
        const STATES: [&str; 7] = [
            "requested",
            "approved",
            "active",
            "completed",
            "expired",
            "denied",
            "revoked",
        ];
        if !f.state.is_empty() && !STATES.contains(&f.state.as_str()) {
            return Err(Status::invalid_argument(format!(
                "unknown task state {:?}; accepted: {}",
                f.state,
                STATES.join(", ")
            )));
        }
        let all = self
            .state
            .db(|s| s.list_tasks())
            .await
            .map_err(store_status)?;
        let tasks = all
            .iter()
            .filter(|t| f.state.is_empty() || t.state.as_str() == f.state)
            .filter(|t| f.ticket.is_empty() || t.ticket == f.ticket)
            .map(tasks::task_pb)
            .collect();
        Ok(Response::new(pb::ListTasksResponse { tasks }))
    }

    async fn export_audit(
        &self,
        req: Request<pb::ExportAuditRequest>,
    ) -> Result<Response<pb::ExportAuditResponse>, Status> {
        self.authorize(&req, Role::Admin)?;
        let f = req.into_inner();
        let filter = lanyard_audit::Filter {
            since: (f.since > 0)
                .then(|| std::time::UNIX_EPOCH + std::time::Duration::from_secs(f.since as u64)),
            ticket: (!f.ticket.is_empty()).then_some(f.ticket),
        };
        let path = self.state.audit_path();
        let records = tokio::task::spawn_blocking(move || -> Result<Vec<String>, String> {
            let file =
                std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let records = lanyard_audit::read(std::io::BufReader::new(file), &filter)
                .map_err(|e| e.to_string())?;
            records
                .iter()
                .map(|r| serde_json::to_string(r).map_err(|e| e.to_string()))
                .collect()
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(Status::data_loss)?;
        Ok(Response::new(pb::ExportAuditResponse { records }))
    }

    async fn verify_audit(
        &self,
        req: Request<pb::VerifyAuditRequest>,
    ) -> Result<Response<pb::VerifyAuditResponse>, Status> {
        self.authorize(&req, Role::Admin)?;
        let report = self.state.verify_audit().await?;
        Ok(Response::new(pb::VerifyAuditResponse {
            records: report.records,
            head_hash: report.head_hash,
        }))
    }

    async fn export_datastore(
        &self,
        req: Request<pb::ExportDatastoreRequest>,
    ) -> Result<Response<pb::DatastoreBackup>, Status> {
        let who = self.authorize(&req, Role::Admin)?;
        let (audit_log, audit_head) = self.state.audit_snapshot().await?;
        let state = self.state.clone();
        let backup = tokio::task::spawn_blocking(move || {
            crate::Backup::collect(
                state.store.as_ref(),
                state.cfg.trust_domain.to_string(),
                state.crl.load().number,
                &state.cfg.data_dir.join("ca"),
                audit_log,
                audit_head,
                now_unix(),
            )
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::internal(e.to_string()))?;
        let json =
            serde_json::to_vec_pretty(&backup).map_err(|e| Status::internal(e.to_string()))?;
        tracing::warn!(principal = %who, bytes = json.len(), "datastore exported (includes CA keys)");
        Ok(Response::new(pb::DatastoreBackup { json }))
    }

    async fn health(
        &self,
        _req: Request<pb::HealthRequest>,
    ) -> Result<Response<pb::HealthResponse>, Status> {
        Ok(Response::new(pb::HealthResponse {
            ready: true,
            trust_domain: self.state.cfg.trust_domain.to_string(),
        }))
    }
}

fn entry_event(who: &Principal, action: Action, entry: &Entry) -> Event {
    Event::new(who.to_string(), action, entry.id.to_string())
        .detail("spiffe_id", entry.spiffe_id.to_string())
        .detail("parent_id", entry.parent_id.to_string())
        .detail(
            "selectors",
            entry
                .selectors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
        )
}
