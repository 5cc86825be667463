//! Renewal of the agent's own SVID at half its life (RenewAgent); the new
//! SVID is stored, then published so the Node API channels are rebuilt.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use lanyard_keys::SvidKey;
use lanyard_proto::node::v1::RenewAgentRequest;
use rustls_pki_types::CertificateDer;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{
    AgentError,
    error::classify,
    identity::AgentIdentity,
    node_client::NodeConnector,
    schedule::{backoff, random_unit, until},
    storage::DataDir,
};

const BACKOFF_BASE: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The agent SVID rotation task.
#[derive(Debug)]
pub struct AgentSvidRotator {
    connector: Arc<NodeConnector>,
    data_dir: DataDir,
    identity: Arc<watch::Sender<Arc<AgentIdentity>>>,
}

impl AgentSvidRotator {
    /// A rotator publishing into `identity`.
    pub fn new(
        connector: Arc<NodeConnector>,
        data_dir: DataDir,
        identity: Arc<watch::Sender<Arc<AgentIdentity>>>,
    ) -> Self {
        Self {
            connector,
            data_dir,
            identity,
        }
    }

    /// Runs until `shutdown`; returns an error only when the server refuses
    /// this agent (banned or evicted).
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), AgentError> {
        let mut attempt = 0u32;
        let mut next = self.identity.borrow().refresh_at(jitter());
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(until(next)) => {}
            }
            match self.renew().await {
                Ok(id) => {
                    attempt = 0;
                    tracing::info!(agent = %id.spiffe_id, serial = %id.serial, not_after = id.not_after, "agent SVID renewed");
                    next = id.refresh_at(jitter());
                    self.identity.send_replace(Arc::new(id));
                }
                Err(e) if e.is_refusal() => return Err(e),
                Err(e) => {
                    let wait = backoff(attempt, BACKOFF_BASE, BACKOFF_MAX, random_unit());
                    attempt = attempt.saturating_add(1);
                    tracing::warn!(error = %e, retry_in = ?wait, "agent SVID renewal failed");
                    self.connector.reset();
                    next = SystemTime::now() + wait;
                }
            }
        }
    }

    async fn renew(&self) -> Result<AgentIdentity, AgentError> {
        let current = self.identity.borrow().clone();
        let key = SvidKey::generate()?;
        let csr = key.csr_der()?;
        let mut client = self.connector.client(&current).await?;
        let resp = client
            .renew_agent(RenewAgentRequest { csr })
            .await
            .map_err(|s| classify("RenewAgent", &s))?
            .into_inner();
        let bad = |problem: String| AgentError::BadResponse {
            call: "RenewAgent",
            problem,
        };
        let svid = resp
            .svid
            .ok_or_else(|| bad("no SVID in the answer".into()))?;
        let chain = svid
            .cert_chain
            .into_iter()
            .map(CertificateDer::from)
            .collect();
        let id = AgentIdentity::new(chain, Arc::new(key), SystemTime::now()).map_err(bad)?;
        if id.spiffe_id != current.spiffe_id {
            return Err(bad(format!(
                "renewed SVID is for {}, not {}",
                id.spiffe_id, current.spiffe_id
            )));
        }
        // Stored before it is used: a crash right after renewal must not
        // leave the superseded SVID as the only one on disk.
        self.data_dir.save_identity(&id)?;
        Ok(id)
    }
}

/// Jitter in `[-1, 1]`.
fn jitter() -> f64 {
    random_unit() * 2.0 - 1.0
}
