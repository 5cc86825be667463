//! The rotation task: steps the CA through prepare / activate / prune and
//! renews the server's own SVID, sleeping until the next point each needs.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use lanyard_ca::Rotation;
use lanyard_mtls::TrustMaterial;
use lanyard_time::unix;
use tokio_util::sync::CancellationToken;

use crate::{ServerError, node::ServerSvid, state::ServerState};

/// Never sleep less than this between steps (a failing step retries then).
const MIN_SLEEP: Duration = Duration::from_secs(1);
/// Wake at least this often to re-check.
const MAX_SLEEP: Duration = Duration::from_secs(3600);

/// Sleep until `at` (unix seconds), clamped to [MIN_SLEEP, MAX_SLEEP].
pub(crate) fn sleep_for(at: i64, now: i64) -> Duration {
    Duration::from_secs(at.saturating_sub(now).max(0) as u64).clamp(MIN_SLEEP, MAX_SLEEP)
}

pub(crate) async fn run(
    state: Arc<ServerState>,
    svid: Arc<ServerSvid>,
    trust: Arc<TrustMaterial>,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    loop {
        let now = SystemTime::now();
        let step = {
            let mut ca = state.ca.write().map_err(|_| ServerError::Task {
                task: "rotation",
                reason: "CA lock poisoned".into(),
            })?;
            ca.rotate(now)
                .map(|r| (r, ca.journal(), ca.next_rotation_at()))
        };
        let next_ca = match step {
            Ok((rotation, journal, next)) => {
                if rotation != Rotation::Unchanged {
                    let bytes = serde_json::to_vec(&journal).map_err(|e| ServerError::Task {
                        task: "rotation",
                        reason: e.to_string(),
                    })?;
                    state.db(move |s| s.put_ca_journal(&bytes)).await?;
                    // Only now that the journal no longer names them.
                    let removed = match state.ca.read() {
                        Ok(ca) => ca.remove_unused_key_files(),
                        Err(_) => Ok(0),
                    };
                    if let Err(e) = removed {
                        tracing::warn!(error = %e, "cannot remove retired CA key files");
                    }
                    trust.set_bundle(state.bundle());
                    state.notify();
                    tracing::info!(?rotation, "CA rotation step");
                    if rotation == Rotation::Activated {
                        // The server's SVID and the CRL come from the active CA.
                        svid.renew(&state).await?;
                        crate::revocation::publish(&state).await?;
                    }
                }
                unix(next)
            }
            Err(e) => {
                tracing::error!(error = %e, "CA rotation step failed; retrying");
                unix(now) + 5
            }
        };
        let now_s = unix(SystemTime::now());
        if now_s >= svid.renew_at() {
            match svid.renew(&state).await {
                Ok(()) => tracing::info!("server SVID renewed"),
                Err(e) => {
                    tracing::error!(error = %e, "server SVID renewal failed; keeping the current one")
                }
            }
        }
        let wake = sleep_for(next_ca.min(svid.renew_at()), unix(SystemTime::now()));
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(wake) => {},
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleep_is_clamped() {
        assert_eq!(sleep_for(100, 100), MIN_SLEEP);
        assert_eq!(sleep_for(50, 100), MIN_SLEEP);
        assert_eq!(sleep_for(130, 100), Duration::from_secs(30));
        assert_eq!(sleep_for(100_000, 0), MAX_SLEEP);
    }
}
