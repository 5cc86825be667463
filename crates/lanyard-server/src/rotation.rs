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
            let state = state.clone();
            tokio::task::spawn_blocking(move || crate::cluster::ca_step(&state, now))
                .await
                .map_err(|e| ServerError::Task {
                    task: "rotation",
                    reason: e.to_string(),
                })?
        };
        let next_ca = match step {
            Ok(step) => {
                if step.changed {
                    trust.set_bundle(state.bundle());
                    state.notify();
                    tracing::info!(rotation = ?step.rotation, activated = step.activated, "CA changed");
                    if step.activated {
                        // The server's SVID comes from the active CA; the
                        // server that activated it signs the CRL with it
                        // (the others publish that CRL when notified).
                        svid.renew(&state).await?;
                        if step.rotation == Rotation::Activated {
                            crate::revocation::publish(&state).await?;
                        }
                    }
                }
                unix(step.next_at)
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
            () = state.ca_changed.notified() => {},
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
