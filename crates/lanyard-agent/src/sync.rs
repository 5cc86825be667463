//! The Sync loop: keeps a Sync stream open to the server and publishes each
//! message (entries, bundle, CRL) through a `watch` channel. It asks for
//! deltas: after the first (full) message on a stream, the server may send
//! only the entries that changed, applied to the previous state (see
//! [`sync_message`](crate::sync_message)). Reconnects with backoff and
//! jitter; reconnects at once with the new SVID after renewal; a message
//! that cannot be applied ends the stream, and the next one starts full.
//!
//! The CRL is installed in the trust material only when a CA of the bundle
//! signed it and its number does not go backwards; otherwise it is logged and
//! the previous one stays in force. A CRL that lists the agent's own SVID
//! ends the loop with [`AgentError::AgentSvidRevoked`].

use std::{sync::Arc, time::Duration};

use lanyard_proto::node::v1::{SyncRequest, SyncResponse};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{
    AgentError,
    cache::SyncState,
    error::classify,
    identity::AgentIdentity,
    metrics::Metrics,
    node_client::NodeConnector,
    revocation::VerifiedCrl,
    schedule::{backoff, random_unit},
    storage::DataDir,
    sync_message::{MessageParser, Parsed},
};

const BACKOFF_BASE: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Why one stream session ended without error.
enum Ended {
    /// The server closed the stream.
    ByServer,
    /// The agent SVID was renewed: reconnect with it.
    IdentityChanged,
}

/// The Sync loop task.
#[derive(Debug)]
pub struct SyncClient {
    connector: Arc<NodeConnector>,
    identity: watch::Receiver<Arc<AgentIdentity>>,
    out: watch::Sender<Option<Arc<SyncState>>>,
    data_dir: DataDir,
    metrics: Arc<Metrics>,
    parser: MessageParser,
    /// Whether the current stream sent a full message: deltas apply only
    /// after one.
    synced: bool,
}

impl SyncClient {
    /// A loop publishing into `out`.
    pub fn new(
        connector: Arc<NodeConnector>,
        identity: watch::Receiver<Arc<AgentIdentity>>,
        out: watch::Sender<Option<Arc<SyncState>>>,
        data_dir: DataDir,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            connector,
            identity,
            out,
            data_dir,
            metrics,
            parser: MessageParser::default(),
            synced: false,
        }
    }

    /// Runs until `shutdown`; returns an error only when the server refuses
    /// this agent (banned or evicted).
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), AgentError> {
        let mut attempt = 0u32;
        loop {
            let result = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                r = self.session(&mut attempt) => r,
            };
            match result {
                Ok(Ended::IdentityChanged) => {
                    tracing::info!("agent SVID renewed: reopening the Sync stream with it");
                    continue;
                }
                Ok(Ended::ByServer) => {
                    tracing::info!("server closed the Sync stream; reconnecting")
                }
                Err(e) if e.is_refusal() => return Err(e),
                Err(e) => tracing::warn!(error = %e, attempt, "Sync stream failed; retrying"),
            }
            self.connector.reset();
            let wait = backoff(attempt, BACKOFF_BASE, BACKOFF_MAX, random_unit());
            attempt = attempt.saturating_add(1);
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn session(&mut self, attempt: &mut u32) -> Result<Ended, AgentError> {
        let identity = self.identity.borrow_and_update().clone();
        let mut client = self.connector.client(&identity).await?;
        self.synced = false;
        let mut stream = client
            .sync(SyncRequest {
                accept_deltas: true,
            })
            .await
            .map_err(|s| classify("Sync", &s))?
            .into_inner();
        loop {
            tokio::select! {
                msg = stream.message() => match msg {
                    Ok(Some(resp)) => {
                        *attempt = 0;
                        self.apply(resp)?;
                    }
                    Ok(None) => return Ok(Ended::ByServer),
                    Err(status) => return Err(classify("Sync", &status)),
                },
                changed = self.identity.changed() => {
                    if changed.is_err() {
                        // The rotator is gone: the agent is shutting down.
                        return Ok(Ended::ByServer);
                    }
                    return Ok(Ended::IdentityChanged);
                }
            }
        }
    }

    /// Applies one message of the current stream and publishes the state.
    pub(crate) fn apply(&mut self, resp: SyncResponse) -> Result<(), AgentError> {
        let previous = self.out.borrow().clone();
        // A delta applies only to the state of this stream's messages; a
        // full message shares what it can with any earlier state.
        let base = previous.as_deref().filter(|_| self.synced || !resp.delta);
        let Parsed {
            mut state,
            crl: crl_der,
            crl_issuers,
            delta,
        } = self.parser.parse(resp, base)?;
        self.synced = true;
        self.metrics.sync_update(delta);
        let trust = self.connector.trust();
        let bundle_changed = self
            .out
            .borrow()
            .as_ref()
            .is_none_or(|prev| prev.bundle != state.bundle);
        if bundle_changed && !state.bundle.is_empty() {
            trust.set_bundle(state.bundle.clone());
            if let Err(e) = self.data_dir.save_bundle(&state.bundle) {
                tracing::warn!(error = %e, "could not store the trust bundle");
            }
        }
        // Checked against the bundle just installed (the same bytes again
        // are not parsed again); a refused CRL leaves the previous in force.
        let in_force = trust.crl().is_some_and(|c| c.der() == crl_der.as_slice());
        // Upstream mode: the bundle holds only the upstream root and one of
        // Lanyard's intermediates signs the CRL. The server sends them with
        // the CRL (a freshly activated one is not yet in our own chain);
        // the intermediates of our own chain count too. Each must chain to
        // the bundle to vouch for a CRL.
        let own_chain = self.identity.borrow().chain.clone();
        let mut signers = crl_issuers;
        for own in own_chain.get(1..).unwrap_or_default() {
            if !signers.contains(own) {
                signers.push(own.clone());
            }
        }
        trust.set_crl_signers(signers);
        if !crl_der.is_empty()
            && !in_force
            && let Err(e) = trust.set_crl(Some(crl_der))
        {
            tracing::warn!(error = %e, "ignoring a CRL from the server: the previous one stays in force");
        }
        state.crl = trust.crl().map(VerifiedCrl::new);
        let previous = self.out.borrow().as_ref().and_then(|p| p.crl.clone());
        if let Some(crl) = state.crl.as_ref().filter(|c| previous.as_ref() != Some(*c)) {
            tracing::info!(
                crl_number = crl.number_hex(),
                revoked = crl.revoked_count(),
                "CRL in force"
            );
            self.metrics.set_crl_number(crl.number().unwrap_or(0));
            let identity = self.identity.borrow().clone();
            if crl.is_revoked(&identity.serial) {
                tracing::error!(
                    agent = %identity.spiffe_id,
                    serial = %identity.serial,
                    crl_number = crl.number_hex(),
                    "the CRL lists this agent's own SVID"
                );
                return Err(AgentError::AgentSvidRevoked(format!(
                    "serial {} of {} is on CRL number {}",
                    identity.serial,
                    identity.spiffe_id,
                    crl.number_hex()
                )));
            }
        }
        tracing::debug!(
            entries = state.entries.len(),
            revision = state.revision,
            delta,
            "Sync update"
        );
        self.out.send_replace(Some(Arc::new(state)));
        Ok(())
    }
}
