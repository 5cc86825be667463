//! Attestation work on blocking threads, under a deadline.
//!
//! Pinning and attesting a caller read `/proc` and its binary. On a slow
//! filesystem (a stalled NFS or FUSE mount) those reads can block for as
//! long as the filesystem likes, so they run on Tokio's blocking threads,
//! never on the accept loop or a request task, and the caller gets an error
//! once the deadline passes. The read itself cannot be cancelled: its
//! thread stays busy until the filesystem answers.

use std::{sync::Arc, time::Duration};

use lanyard_identity::Selector;

use super::{error::AttestError, hash_cache::HashCache, peer::PeerProcess};

/// How long pinning a caller, and then attesting it for a request, may take
/// by default (`attestation_timeout`).
pub const DEFAULT_ATTESTATION_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `work` on a blocking thread; [`AttestError::TimedOut`] if it has not
/// finished within `timeout`.
pub(super) async fn within<T: Send + 'static>(
    pid: i32,
    timeout: Duration,
    work: impl FnOnce() -> Result<T, AttestError> + Send + 'static,
) -> Result<T, AttestError> {
    match tokio::time::timeout(timeout, tokio::task::spawn_blocking(work)).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(AttestError::Aborted {
            pid,
            reason: join.to_string(),
        }),
        Err(_) => Err(AttestError::TimedOut { pid, timeout }),
    }
}

impl PeerProcess {
    /// [`attest_cached`](Self::attest_cached) on a blocking thread, within
    /// the deadline the connection was accepted with.
    ///
    /// # Errors
    ///
    /// As for [`attest`](Self::attest), and [`AttestError::TimedOut`] past
    /// the deadline.
    pub async fn attest_within(
        self: &Arc<Self>,
        cache: &Arc<HashCache>,
    ) -> Result<Vec<Selector>, AttestError> {
        let (peer, cache) = (Arc::clone(self), Arc::clone(cache));
        within(self.pid, self.timeout(), move || peer.attest_cached(&cache)).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_past_the_deadline_is_an_error() {
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let stalled = within(7, Duration::from_millis(50), move || {
            let _ = wait.recv();
            Ok(())
        })
        .await;
        assert!(
            matches!(stalled, Err(AttestError::TimedOut { pid: 7, .. })),
            "{stalled:?}"
        );
        drop(release);
        let done = within(7, Duration::from_secs(60), || Ok(1)).await;
        assert_eq!(done.unwrap(), 1);
    }
}
