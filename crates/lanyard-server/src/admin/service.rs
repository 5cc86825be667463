//! `lanyard.admin.v1.Admin` implementation.

use std::sync::Arc;

use lanyard_ca::RevocationReason;
use lanyard_identity::{Entry, EntryId};
use lanyard_proto::admin::v1::{self as pb, admin_server::Admin};
use lanyard_store::{AgentRecord, AgentStanding};
use tonic::{Request, Response, Status};

use super::Principal;
use crate::{
    convert,
    policy::Role,
    registry, revocation,
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
        let task = tasks::decide(&self.state, &who, decision, &d.id, d.note)
            .await
            .map_err(task_status)?;
        Ok(Response::new(convert::task_pb(&task)))
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
            jwt_svid_ttl_secs: convert::ttl("jwt_svid_ttl", e.jwt_svid_ttl_seconds)?,
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
    ) -> Result<Response<pb::Agent>, Status> {
        let who = self.authorize(&req, Role::Admin)?;
        let id = convert::spiffe_id("spiffe_id", req.get_ref())?;
        let agent = registry::set_agent_standing(&self.state, &who, id, standing)
            .await
            .map_err(registry_status)?;
        Ok(Response::new(agent_pb(&agent)))
    }
}

/// IDs under `/lanyard/` belong to the server and agents: no entry may
/// claim one, and every entry stays inside our trust domain.
pub(crate) fn check_entry_ids(state: &ServerState, entry: &Entry) -> Result<(), String> {
    let td = &state.cfg.trust_domain;
    for (field, id) in [
        ("spiffe_id", &entry.spiffe_id),
        ("parent_id", &entry.parent_id),
    ] {
        if !id.is_member_of(td) {
            return Err(format!("{field} {id} is not in trust domain {td}"));
        }
    }
    if entry.spiffe_id.path() == "/lanyard" || entry.spiffe_id.path().starts_with("/lanyard/") {
        return Err(format!(
            "spiffe_id {} is reserved: paths under /lanyard/ name the server and agents",
            entry.spiffe_id
        ));
    }
    entry.validate().map_err(|e| e.to_string())
}

/// The gRPC status for a registry error.
fn registry_status(e: registry::RegistryError) -> Status {
    use registry::RegistryError as E;
    match e {
        E::Invalid(m) => Status::invalid_argument(m),
        E::NotFound(m) => Status::not_found(m),
        E::Precondition(m) => Status::failed_precondition(m),
        E::Random => Status::internal("random generator failed"),
        E::Store(s) => store_status(s),
        E::Audit(a) => a.into(),
        E::Revocation(r) => r.into(),
    }
}

/// The gRPC status for a task error.
fn task_status(e: tasks::TaskError) -> Status {
    use tasks::TaskError as E;
    match e {
        E::Invalid(m) => Status::invalid_argument(m),
        E::Policy(m) => Status::permission_denied(m),
        E::State(m) => Status::failed_precondition(m),
        E::NotFound(id) => Status::not_found(format!("no task {id}")),
        E::Duplicate(m) => Status::already_exists(m),
        E::Random => Status::internal("random generator failed"),
        E::Store(s) => store_status(s),
        E::Audit(a) => a.into(),
        E::Revocation(r) => r.into(),
        E::PolicyFailed(p) => Status::failed_precondition(p.to_string()),
    }
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
        let entry = registry::create_entry(&self.state, &who, entry)
            .await
            .map_err(registry_status)?;
        Ok(Response::new(convert::entry_proto(&entry)))
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
        let parsed = requested
            .into_iter()
            .map(|e| self.entry_from(e).map_err(|s| s.message().to_owned()))
            .collect();
        let results = registry::create_entries(&self.state, &who, parsed)
            .await
            .map_err(registry_status)?
            .into_iter()
            .map(|r| {
                let result = match r {
                    Ok(entry) => {
                        pb::batch_create_entry_result::Result::Entry(convert::entry_proto(&entry))
                    }
                    Err(e) => {
                        let status = registry_status(e);
                        pb::batch_create_entry_result::Result::Error(pb::BatchError {
                            code: status.code() as i32,
                            message: status.message().to_owned(),
                        })
                    }
                };
                pb::BatchCreateEntryResult {
                    result: Some(result),
                }
            })
            .collect();
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
            .map(convert::entry_proto)
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
        Ok(Response::new(convert::entry_proto(&entry)))
    }

    async fn update_entry(
        &self,
        req: Request<pb::UpdateEntryRequest>,
    ) -> Result<Response<pb::Entry>, Status> {
        let who = self.authorize(&req, Role::Admin)?;
        let u = req.into_inner();
        let id = convert::entry_id(&u.id)?;
        let update = registry::EntryUpdate {
            spiffe_id: u
                .spiffe_id
                .as_deref()
                .map(|v| convert::spiffe_id("spiffe_id", v))
                .transpose()?,
            parent_id: u
                .parent_id
                .as_deref()
                .map(|v| convert::spiffe_id("parent_id", v))
                .transpose()?,
            selectors: (!u.selectors.is_empty())
                .then(|| convert::selectors(&u.selectors))
                .transpose()?,
            x509_svid_ttl_secs: u
                .x509_svid_ttl_seconds
                .map(|v| convert::ttl("x509_svid_ttl", v))
                .transpose()?,
            dns_names: u.set_dns_names.then_some(u.dns_names),
            expires_at: u.expires_at.map(convert::expires_at).transpose()?,
            hint: u.hint,
            jwt_svid_ttl_secs: u
                .jwt_svid_ttl_seconds
                .map(|v| convert::ttl("jwt_svid_ttl", v))
                .transpose()?,
        };
        let entry = registry::update_entry(&self.state, &who, id, update)
            .await
            .map_err(registry_status)?;
        Ok(Response::new(convert::entry_proto(&entry)))
    }

    async fn delete_entry(
        &self,
        req: Request<pb::DeleteEntryRequest>,
    ) -> Result<Response<pb::Entry>, Status> {
        let who = self.authorize(&req, Role::Admin)?;
        let id = convert::entry_id(&req.get_ref().id)?;
        let entry = registry::delete_entry(&self.state, &who, id)
            .await
            .map_err(registry_status)?;
        Ok(Response::new(convert::entry_proto(&entry)))
    }

    async fn generate_join_token(
        &self,
        req: Request<pb::GenerateJoinTokenRequest>,
    ) -> Result<Response<pb::JoinToken>, Status> {
        let who = self.authorize(&req, Role::Admin)?;
        let r = req.into_inner();
        let spiffe_id = (!r.spiffe_id.is_empty())
            .then(|| convert::spiffe_id("spiffe_id", &r.spiffe_id))
            .transpose()?;
        let token = registry::generate_join_token(&self.state, &who, r.ttl_seconds, spiffe_id)
            .await
            .map_err(registry_status)?;
        Ok(Response::new(pb::JoinToken {
            token: token.token,
            expires_at: token.expires_at,
            agent_id: token.agent_id.to_string(),
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
            jwt_authorities: self.state.jwt_bundle().to_json(),
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
        let serials = registry::revoke_svid(&self.state, &who, serial, reason)
            .await
            .map_err(registry_status)?;
        Ok(Response::new(pb::RevokeSvidResponse {
            serials,
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
        let request = convert::task_request(req.into_inner())?;
        let task = tasks::request(&self.state, &who, request)
            .await
            .map_err(task_status)?;
        Ok(Response::new(convert::task_pb(&task)))
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
        Ok(Response::new(convert::task_pb(&task)))
    }

    async fn get_task_policy(
        &self,
        req: Request<pb::GetTaskPolicyRequest>,
    ) -> Result<Response<pb::TaskPolicy>, Status> {
        self.authorize(&req, Role::Participant)?;
        let policy = self.state.task_policy.load_full();
        Ok(Response::new(pb::TaskPolicy {
            origin: policy.origin().to_owned(),
            sha256: policy.sha256().to_owned(),
            source: policy.source().to_owned(),
        }))
    }

    async fn test_task_policy(
        &self,
        req: Request<pb::TestTaskPolicyRequest>,
    ) -> Result<Response<pb::TestTaskPolicyResponse>, Status> {
        self.authorize(&req, Role::Participant)?;
        let input: serde_json::Value = serde_json::from_str(&req.get_ref().input_json)
            .map_err(|e| {
                Status::invalid_argument(format!(
                    "input_json is not JSON ({e}); give the input document of a request or an approval"
                ))
            })?;
        let verdict = self
            .state
            .task_policy
            .load_full()
            .decide(&input)
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        let decision_json =
            serde_json::to_string(&verdict).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::TestTaskPolicyResponse { decision_json }))
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
            .map(convert::task_pb)
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
        let records = self
            .state
            .audit_records(filter)
            .await?
            .iter()
            .map(|r| serde_json::to_string(r).map_err(|e| Status::internal(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
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
