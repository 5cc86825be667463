//! The Sync stream: an agent's authorized entries, the bundle (and later the
//! CRL), sent in full at once and again whenever any of them changes.

use std::{pin::Pin, sync::Arc, time::Duration};

use futures::Stream;
use lanyard_proto::node::v1::SyncResponse;
use lanyard_store::AgentRecord;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::{authz::authorized_entries, peer::standing};
use crate::{convert, state::ServerState, status::store_status};

pub(crate) type SyncStream = Pin<Box<dyn Stream<Item = Result<SyncResponse, Status>> + Send>>;

/// The agent's current view and when it next changes by itself (the
/// earliest future entry expiry).
async fn view(
    state: &ServerState,
    agent: &AgentRecord,
) -> Result<(SyncResponse, Option<i64>), Status> {
    let entries = state.db(|s| s.list_entries()).await.map_err(store_status)?;
    let now = crate::state::now_unix();
    let authorized = authorized_entries(
        &entries,
        &agent.spiffe_id,
        &agent.selectors,
        &state.server_id,
        now,
    );
    let next_expiry = entries
        .iter()
        .filter_map(|e| e.expires_at)
        .filter(|t| *t > now)
        .min();
    let resp = SyncResponse {
        entries: authorized.iter().map(convert::node_entry).collect(),
        bundle: state.bundle().into_iter().map(|c| c.to_vec()).collect(),
        crl: state.crl.load().der.clone(),
        revision: 0,
        crl_issuers: super::crl_issuers::crl_issuers(state),
    };
    Ok((resp, next_expiry))
}

pub(crate) fn stream(state: Arc<ServerState>, agent: AgentRecord) -> SyncStream {
    let (tx, rx) = mpsc::channel(4);
    let mut changes = state.subscribe();
    tokio::spawn(async move {
        let _open = crate::metrics::GaugeGuard::new(&state.metrics.sync_streams);
        let mut last: Option<SyncResponse> = None;
        loop {
            let revision = *changes.borrow_and_update();
            let id = agent.spiffe_id.clone();
            let current = match state.db(move |s| s.get_agent(&id)).await {
                Ok(Some(a)) => a,
                Ok(None) => {
                    let _ = tx
                        .send(Err(Status::permission_denied("agent no longer exists")))
                        .await;
                    return;
                }
                Err(e) => {
                    let _ = tx.send(Err(store_status(e))).await;
                    return;
                }
            };
            if let Err(status) = standing(&current) {
                tracing::info!(agent = %agent.spiffe_id, reason = %status.message(), "closing Sync stream");
                let _ = tx.send(Err(status)).await;
                return;
            }
            let (resp, next_expiry) = match view(&state, &current).await {
                Ok(v) => v,
                Err(status) => {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
            };
            if last.as_ref() != Some(&resp) {
                let mut out = resp.clone();
                out.revision = revision;
                tracing::debug!(agent = %agent.spiffe_id, entries = out.entries.len(), revision, "Sync update");
                if tx.send(Ok(out)).await.is_err() {
                    return;
                }
                last = Some(resp);
            }
            let wake = next_expiry
                .map(|t| Duration::from_secs((t - crate::state::now_unix()).max(0) as u64 + 1))
                .unwrap_or(Duration::from_secs(3600));
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(wake) => {},
                () = tx.closed() => return,
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}
