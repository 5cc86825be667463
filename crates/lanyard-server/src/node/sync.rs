//! The Sync stream: an agent's authorized entries, the bundle and the CRL,
//! sent in full at once and again whenever any of them changes: in full to
//! an agent that does not accept deltas, else as a delta (only the entries
//! changed) whenever the change log allows. Every stream reads the one
//! shared [`Registry`](super::registry::Registry) snapshot; it ends when the
//! agent loses its standing or the server stops.

use std::{pin::Pin, sync::Arc, time::Duration};

use futures::Stream;
use lanyard_proto::node::v1::SyncResponse;
use lanyard_store::AgentRecord;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::{
    peer::standing,
    registry::{Next, Sent},
};
use crate::{state::ServerState, status::store_status};

pub(crate) type SyncStream = Pin<Box<dyn Stream<Item = Result<SyncResponse, Status>> + Send>>;

/// The Sync stream of `agent`, opened with the SVID of serial `presented`;
/// deltas after the first message when the agent `accept_deltas`.
pub(crate) fn stream(
    state: Arc<ServerState>,
    agent: AgentRecord,
    presented: String,
    accept_deltas: bool,
) -> SyncStream {
    let (tx, rx) = mpsc::channel(4);
    let mut registry = state.registry.subscribe();
    tokio::spawn(async move {
        let _open = crate::metrics::GaugeGuard::new(&state.metrics.sync_streams);
        let mut sent: Option<Sent> = None;
        loop {
            let snapshot = registry.borrow_and_update().clone();
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
            // The agent's standing, and the SVID this stream was opened with:
            // revoked or superseded, the stream ends (the agent reconnects
            // with its current SVID, or stops if that is revoked).
            let refused = standing(&current)
                .err()
                .or_else(|| {
                    state.crl.load().revoked.contains(&presented).then(|| {
                        Status::permission_denied(format!(
                            "agent SVID {presented} of {} is revoked",
                            current.spiffe_id
                        ))
                    })
                })
                .or_else(|| {
                    (current.serial != presented).then(|| {
                        Status::permission_denied(format!(
                            "agent SVID {presented} of {} has been superseded by {}; reconnect with the current one",
                            current.spiffe_id, current.serial
                        ))
                    })
                });
            if let Some(status) = refused {
                tracing::info!(agent = %agent.spiffe_id, reason = %status.message(), "closing Sync stream");
                let _ = tx.send(Err(status)).await;
                return;
            }
            let now = crate::state::now_unix();
            let (next, now_sent) = snapshot.next(&current, now, sent.as_ref(), accept_deltas);
            let message = match next {
                Next::Nothing => None,
                Next::Full(resp) => Some((resp, "full")),
                Next::Delta(resp) => Some((resp, "delta")),
            };
            if let Some((resp, kind)) = message {
                state.metrics.sync_message(kind);
                tracing::debug!(
                    agent = %agent.spiffe_id,
                    kind,
                    entries = resp.entries.len(),
                    removed = resp.removed_entry_ids.len(),
                    revision = resp.revision,
                    "Sync update"
                );
                if tx.send(Ok(resp)).await.is_err() {
                    return;
                }
            }
            let wake = snapshot
                .next_expiry(&now_sent, now)
                .map(|t| Duration::from_secs((t - now).max(0) as u64 + 1))
                .unwrap_or(Duration::from_secs(3600));
            sent = Some(now_sent);
            tokio::select! {
                () = state.shutdown.cancelled() => return,
                changed = registry.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(wake) => {},
                () = tx.closed() => return,
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}
