//! `lanyard.node.v1.Node` implementation.

use std::sync::Arc;

use lanyard_audit::{Action, Event};
use lanyard_ca::IssuedSvid;
use lanyard_identity::EntryId;
use lanyard_proto::node::v1::{
    AttestRequest, AttestResponse, BatchNewX509svidRequest, BatchNewX509svidResponse,
    BatchNewX509svidResult, NewJwtsvidRequest, NewJwtsvidResponse, RenewAgentRequest,
    RenewAgentResponse, Status as ProtoStatus, SyncRequest, X509svid, attest_request::Method,
    batch_new_x509svid_result::Result as BatchResult, node_server::Node,
};
use lanyard_store::{AgentRecord, Refusal};
use tonic::{Request, Response, Status};

use super::{attest, peer, refusals::RefusalAudit, sync};
use crate::{
    issuance::{self, AgentSvid, BatchItem, BatchRequest, IssueError},
    jwt_issuance::{JwtRequest, issue_jwt_svid},
    state::{ServerState, now_unix},
    status::store_status,
};

/// Most CSRs one BatchNewX509SVID call may carry.
const MAX_BATCH: usize = 1000;

pub(crate) struct NodeService {
    state: Arc<ServerState>,
    /// Refused attestations, aggregated per peer IP (see `refusals`).
    refusals: Arc<RefusalAudit>,
}

impl NodeService {
    pub fn new(state: Arc<ServerState>) -> Self {
        let refusals = Arc::new(RefusalAudit::new(state.cfg.attestation_refusal_window));
        Self { state, refusals }
    }

    /// The refusal counts, for the server to flush when it stops.
    pub(crate) fn refusal_audit(&self) -> Arc<RefusalAudit> {
        Arc::clone(&self.refusals)
    }

    /// Issues an agent SVID off the runtime (it records and signs).
    async fn agent_svid(
        &self,
        agent: lanyard_identity::SpiffeId,
        csr: Vec<u8>,
        how: AgentHow,
    ) -> Result<(IssuedSvid, AgentRecord), Status> {
        let state = self.state.clone();
        let started = std::time::Instant::now();
        let issued = tokio::task::spawn_blocking(move || {
            let how = match &how {
                AgentHow::Attest(record) => AgentSvid::Attest(record.clone()),
                AgentHow::Renew(presented) => AgentSvid::Renew { presented },
            };
            issuance::issue_agent_svid(&state, &agent, &csr, how)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(issue_status)?;
        self.state.metrics.issued("agent", started.elapsed());
        Ok(issued)
    }
}

/// [`AgentSvid`], owned so it can cross into a blocking task.
enum AgentHow {
    Attest(AgentRecord),
    Renew(String),
}

/// The gRPC status for an issuance error.
pub(crate) fn issue_status(e: IssueError) -> Status {
    match e {
        IssueError::Refused(r) => match r {
            Refusal::EntryChanged { .. } | Refusal::SerialTaken { .. } => {
                Status::aborted(r.to_string())
            }
            Refusal::EntryExpired { .. } | Refusal::OutsideTaskWindow { .. } => {
                Status::failed_precondition(r.to_string())
            }
            Refusal::EntryNotFound { .. } => Status::not_found(r.to_string()),
            _ => Status::permission_denied(r.to_string()),
        },
        IssueError::Ca(c) => Status::invalid_argument(c.to_string()),
        IssueError::Store(s) => store_status(s),
        IssueError::Audit(_) => {
            Status::internal("the audit log could not be written; the action was not taken")
        }
        IssueError::Stopped => Status::unavailable("the server is shutting down"),
        IssueError::Invalid(why) => Status::invalid_argument(why),
        IssueError::Forbidden(why) => Status::permission_denied(why),
    }
}

pub(crate) fn proto_svid(issued: &IssuedSvid) -> X509svid {
    X509svid {
        spiffe_id: issued.spiffe_id.to_string(),
        cert_chain: issued.cert_chain.iter().map(|c| c.to_vec()).collect(),
        expires_at: issued.not_after,
        serial: issued.serial.clone(),
    }
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn attest(
        &self,
        req: Request<AttestRequest>,
    ) -> Result<Response<AttestResponse>, Status> {
        let source = req
            .remote_addr()
            .map_or_else(|| "unknown".to_owned(), |a| a.ip().to_string());
        let req = req.into_inner();
        if req.csr.is_empty() {
            return Err(Status::invalid_argument(
                "csr is required: a PKCS#10 CSR (DER) for the agent key",
            ));
        }
        let attested = match &req.method {
            Some(Method::JoinToken(att)) => attest::join_token(&self.state, att).await,
            Some(Method::X509pop(att)) => attest::x509pop(&self.state, att, &req.csr),
            None => {
                return Err(Status::invalid_argument(
                    "attestation method is required: join_token or x509pop",
                ));
            }
        };
        let method = if matches!(req.method, Some(Method::JoinToken(_))) {
            "join_token"
        } else {
            "x509pop"
        };
        self.state.metrics.attested(method, attested.is_ok());
        let node = match attested {
            Ok(node) => node,
            Err(status) => {
                if status.code() == tonic::Code::PermissionDenied {
                    let method = if matches!(req.method, Some(Method::JoinToken(_))) {
                        "join_token"
                    } else {
                        "x509pop"
                    };
                    tracing::warn!(source = %source, method, reason = %status.message(), "attestation refused");
                    let now = crate::clock::unix(self.state.now());
                    let events = self
                        .refusals
                        .refused(&source, method, status.message(), now);
                    if !events.is_empty() {
                        self.state.audit_all(events).await?;
                    }
                }
                return Err(status);
            }
        };
        let record = AgentRecord {
            spiffe_id: node.agent_id.clone(),
            attestation_type: node.attestation_type.to_owned(),
            selectors: node.selectors,
            serial: String::new(),
            expires_at: 0,
            attested_at: now_unix(),
            banned: false,
            evicted: false,
            revision: 0,
        };
        let (issued, _) = self
            .agent_svid(node.agent_id.clone(), req.csr, AgentHow::Attest(record))
            .await
            .inspect_err(|status| {
                if status.code() == tonic::Code::PermissionDenied {
                    tracing::warn!(agent = %node.agent_id, reason = %status.message(), "attestation refused");
                }
            })
            .map_err(|status| match status.code() {
                tonic::Code::PermissionDenied => Status::permission_denied(format!(
                    "attestation refused: {}",
                    status.message()
                )),
                _ => status,
            })?;
        self.state.notify();
        let mut event = Event::new(
            node.agent_id.to_string(),
            Action::AgentAttested,
            node.agent_id.to_string(),
        )
        .detail("method", node.attestation_type)
        .detail("serial", issued.serial.clone());
        if let Some(token_id) = &node.token_id {
            self.state
                .audit(Event::new(
                    node.agent_id.to_string(),
                    Action::TokenUsed,
                    token_id.clone(),
                ))
                .await?;
            event = event.detail("token_id", token_id.clone());
        }
        self.state.audit(event).await?;
        tracing::info!(agent = %node.agent_id, method = node.attestation_type, "agent attested");
        Ok(Response::new(AttestResponse {
            svid: Some(proto_svid(&issued)),
            bundle: self
                .state
                .bundle()
                .into_iter()
                .map(|c| c.to_vec())
                .collect(),
            trust_domain: self.state.cfg.trust_domain.to_string(),
        }))
    }

    async fn renew_agent(
        &self,
        req: Request<RenewAgentRequest>,
    ) -> Result<Response<RenewAgentResponse>, Status> {
        let (agent, presented) = peer::authenticate(&self.state, &req).await?;
        let csr = req.into_inner().csr;
        let (issued, agent) = self
            .agent_svid(agent.spiffe_id, csr, AgentHow::Renew(presented))
            .await?;
        self.state
            .audit(
                Event::new(
                    agent.spiffe_id.to_string(),
                    Action::AgentRenewed,
                    agent.spiffe_id.to_string(),
                )
                .detail("serial", agent.serial.clone()),
            )
            .await?;
        // Streams opened with the superseded SVID re-check and end.
        self.state.notify();
        tracing::info!(agent = %agent.spiffe_id, serial = %agent.serial, "agent SVID renewed");
        Ok(Response::new(RenewAgentResponse {
            svid: Some(proto_svid(&issued)),
        }))
    }

    async fn batch_new_x509svid(
        &self,
        req: Request<BatchNewX509svidRequest>,
    ) -> Result<Response<BatchNewX509svidResponse>, Status> {
        let (agent, presented) = peer::authenticate(&self.state, &req).await?;
        let params = req.into_inner().params;
        if params.len() > MAX_BATCH {
            return Err(Status::invalid_argument(format!(
                "{} CSRs in one batch; at most {MAX_BATCH} are accepted",
                params.len()
            )));
        }
        // Malformed entry IDs are answered here; the rest go to the issuer.
        let mut results: Vec<Option<BatchNewX509svidResult>> = Vec::with_capacity(params.len());
        let mut items = Vec::with_capacity(params.len());
        for p in &params {
            match p.entry_id.parse::<EntryId>() {
                Ok(entry_id) => {
                    items.push(BatchItem {
                        entry_id,
                        csr: p.csr.clone(),
                    });
                    results.push(None);
                }
                Err(e) => results.push(Some(BatchNewX509svidResult {
                    entry_id: p.entry_id.clone(),
                    result: Some(BatchResult::Error(ProtoStatus {
                        code: tonic::Code::InvalidArgument as i32,
                        message: format!("entry_id {:?}: {e}", p.entry_id),
                    })),
                })),
            }
        }
        let issued = self
            .state
            .issuer
            .issue(BatchRequest {
                agent_id: agent.spiffe_id.clone(),
                agent_serial: presented,
                items,
            })
            .await
            .map_err(issue_status)?;
        let mut issued = issued.into_iter();
        let results = results
            .into_iter()
            .zip(&params)
            .map(|(done, p)| {
                done.unwrap_or_else(|| {
                    let result = match issued.next() {
                        Some(Ok(svid)) => BatchResult::Svid(proto_svid(&svid)),
                        Some(Err(e)) => {
                            let status = issue_status(e);
                            if status.code() == tonic::Code::PermissionDenied {
                                tracing::warn!(agent = %agent.spiffe_id, entry = %p.entry_id, reason = %status.message(), "SVID refused");
                            }
                            BatchResult::Error(ProtoStatus {
                                code: status.code() as i32,
                                message: status.message().to_owned(),
                            })
                        }
                        None => BatchResult::Error(ProtoStatus {
                            code: tonic::Code::Internal as i32,
                            message: "no result for this CSR".to_owned(),
                        }),
                    };
                    BatchNewX509svidResult {
                        entry_id: p.entry_id.clone(),
                        result: Some(result),
                    }
                })
            })
            .collect();
        Ok(Response::new(BatchNewX509svidResponse { results }))
    }

    async fn new_jwtsvid(
        &self,
        req: Request<NewJwtsvidRequest>,
    ) -> Result<Response<NewJwtsvidResponse>, Status> {
        let (agent, presented) = peer::authenticate(&self.state, &req).await?;
        let req = req.into_inner();
        let entry_id = req
            .entry_id
            .parse::<EntryId>()
            .map_err(|e| Status::invalid_argument(format!("entry_id {:?}: {e}", req.entry_id)))?;
        let request = JwtRequest {
            agent_id: agent.spiffe_id.clone(),
            agent_serial: presented,
            entry_id,
            audiences: req.audience,
        };
        let state = self.state.clone();
        let issued = tokio::task::spawn_blocking(move || issue_jwt_svid(&state, &request))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| {
                let status = issue_status(e);
                if status.code() == tonic::Code::PermissionDenied {
                    tracing::warn!(agent = %agent.spiffe_id, entry = %entry_id, reason = %status.message(), "JWT-SVID refused");
                }
                status
            })?;
        Ok(Response::new(NewJwtsvidResponse {
            token: issued.token,
            spiffe_id: issued.spiffe_id.to_string(),
            issued_at: issued.issued_at,
            expires_at: issued.expires_at,
            id: issued.id,
        }))
    }

    type SyncStream = sync::SyncStream;

    async fn sync(&self, req: Request<SyncRequest>) -> Result<Response<Self::SyncStream>, Status> {
        let (agent, presented) = peer::authenticate(&self.state, &req).await?;
        let accept_deltas = req.get_ref().accept_deltas;
        tracing::info!(agent = %agent.spiffe_id, accept_deltas, "Sync stream opened");
        Ok(Response::new(sync::stream(
            self.state.clone(),
            agent,
            presented,
            accept_deltas,
        )))
    }
}
