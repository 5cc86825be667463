//! `lanyard.node.v1.Node` implementation.

use std::{sync::Arc, time::Duration};

use lanyard_audit::{Action, Event};
use lanyard_ca::IssuedSvid;
use lanyard_identity::EntryId;
use lanyard_proto::node::v1::{
    AttestRequest, AttestResponse, BatchNewX509svidRequest, BatchNewX509svidResponse,
    BatchNewX509svidResult, RenewAgentRequest, RenewAgentResponse, Status as ProtoStatus,
    SyncRequest, X509svid, attest_request::Method,
    batch_new_x509svid_result::Result as BatchResult, node_server::Node,
};
use lanyard_store::AgentRecord;
use tonic::{Request, Response, Status};

use super::{attest, authz::authorized_entries, peer, sync};
use crate::{
    state::{Issue, ServerState, now_unix},
    status::store_status,
};

/// Most CSRs one BatchNewX509SVID call may carry.
const MAX_BATCH: usize = 1000;

pub(crate) struct NodeService {
    state: Arc<ServerState>,
}

impl NodeService {
    pub fn new(state: Arc<ServerState>) -> Self {
        Self { state }
    }

    async fn issue_agent_svid(
        &self,
        agent: &lanyard_identity::SpiffeId,
        csr: &[u8],
    ) -> Result<IssuedSvid, Status> {
        self.state
            .issue(Issue {
                csr_der: csr,
                spiffe_id: agent,
                dns_names: &[],
                ttl: self.state.cfg.agent_svid_ttl,
                entry_id: None,
                agent_id: Some(agent),
                task: None,
            })
            .await
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
                    self.state
                        .audit(
                            Event::new("anonymous node", Action::AttestationRefused, method)
                                .reason(status.message()),
                        )
                        .await?;
                }
                return Err(status);
            }
        };
        let id = node.agent_id.clone();
        let existing = self
            .state
            .db(move |s| s.get_agent(&id))
            .await
            .map_err(store_status)?;
        if let Some(existing) = existing.filter(|a| a.banned) {
            tracing::warn!(agent = %existing.spiffe_id, "banned agent tried to attest");
            return Err(Status::permission_denied(format!(
                "attestation refused: agent {} is banned",
                existing.spiffe_id
            )));
        }
        let issued = self.issue_agent_svid(&node.agent_id, &req.csr).await?;
        let record = AgentRecord {
            spiffe_id: node.agent_id.clone(),
            attestation_type: node.attestation_type.to_owned(),
            selectors: node.selectors,
            serial: issued.serial.clone(),
            expires_at: issued.not_after,
            attested_at: now_unix(),
            banned: false,
            evicted: false,
        };
        self.state
            .db(move |s| s.put_agent(&record))
            .await
            .map_err(store_status)?;
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
        let mut agent = peer::authenticate(&self.state, &req).await?;
        let issued = self
            .issue_agent_svid(&agent.spiffe_id, &req.get_ref().csr)
            .await?;
        agent.serial = issued.serial.clone();
        agent.expires_at = issued.not_after;
        let record = agent.clone();
        self.state
            .db(move |s| s.put_agent(&record))
            .await
            .map_err(store_status)?;
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
        tracing::info!(agent = %agent.spiffe_id, serial = %agent.serial, "agent SVID renewed");
        Ok(Response::new(RenewAgentResponse {
            svid: Some(proto_svid(&issued)),
        }))
    }

    async fn batch_new_x509svid(
        &self,
        req: Request<BatchNewX509svidRequest>,
    ) -> Result<Response<BatchNewX509svidResponse>, Status> {
        let agent = peer::authenticate(&self.state, &req).await?;
        let params = req.into_inner().params;
        if params.len() > MAX_BATCH {
            return Err(Status::invalid_argument(format!(
                "{} CSRs in one batch; at most {MAX_BATCH} are accepted",
                params.len()
            )));
        }
        let entries = self
            .state
            .db(|s| s.list_entries())
            .await
            .map_err(store_status)?;
        let authorized = authorized_entries(
            &entries,
            &agent.spiffe_id,
            &agent.selectors,
            &self.state.server_id,
            now_unix(),
        );
        let tasks = self
            .state
            .db(|s| s.list_tasks())
            .await
            .map_err(store_status)?;
        let mut results = Vec::with_capacity(params.len());
        for p in params {
            let refuse = |code: tonic::Code, message: String| {
                Some(BatchResult::Error(ProtoStatus {
                    code: code as i32,
                    message,
                }))
            };
            let result = match p.entry_id.parse::<EntryId>() {
                Err(e) => refuse(
                    tonic::Code::InvalidArgument,
                    format!("entry_id {:?}: {e}", p.entry_id),
                ),
                Ok(id) => match authorized.iter().find(|e| e.id == id) {
                    None => {
                        tracing::warn!(agent = %agent.spiffe_id, entry = %id, "SVID refused: entry not authorized for agent");
                        refuse(
                            tonic::Code::PermissionDenied,
                            format!("entry {id} is not authorized for agent {}", agent.spiffe_id),
                        )
                    }
                    Some(entry) => {
                        let mut ttl = entry
                            .x509_svid_ttl_secs
                            .map(Duration::from_secs)
                            .unwrap_or(self.state.cfg.default_x509_svid_ttl);
                        // No SVID outlives its entry (a task entry expires
                        // with the task's window).
                        if let Some(expires_at) = entry.expires_at {
                            let left = (expires_at - now_unix()).max(0) as u64;
                            ttl = ttl.min(Duration::from_secs(left));
                        }
                        let task = crate::tasks::binding(&tasks, &entry.id);
                        if ttl.is_zero() {
                            results.push(BatchNewX509svidResult {
                                entry_id: p.entry_id,
                                result: refuse(
                                    tonic::Code::FailedPrecondition,
                                    format!("entry {id} has expired"),
                                ),
                            });
                            continue;
                        }
                        match self
                            .state
                            .issue(Issue {
                                csr_der: &p.csr,
                                spiffe_id: &entry.spiffe_id,
                                dns_names: &entry.dns_names,
                                ttl,
                                entry_id: Some(entry.id),
                                agent_id: Some(&agent.spiffe_id),
                                task: task.as_ref().map(|(b, _)| b),
                            })
                            .await
                        {
                            Ok(issued) => Some(BatchResult::Svid(proto_svid(&issued))),
                            Err(s) => refuse(s.code(), s.message().to_owned()),
                        }
                    }
                },
            };
            results.push(BatchNewX509svidResult {
                entry_id: p.entry_id,
                result,
            });
        }
        Ok(Response::new(BatchNewX509svidResponse { results }))
    }

    type SyncStream = sync::SyncStream;

    async fn sync(&self, req: Request<SyncRequest>) -> Result<Response<Self::SyncStream>, Status> {
        let agent = peer::authenticate(&self.state, &req).await?;
        tracing::info!(agent = %agent.spiffe_id, "Sync stream opened");
        Ok(Response::new(sync::stream(self.state.clone(), agent)))
    }
}
