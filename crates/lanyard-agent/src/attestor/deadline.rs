//! Attestation work on blocking threads, under a deadline.
//!
//! Pinning and attesting a caller read `/proc` and its binary. On a slow
//! filesystem (a stalled NFS or FUSE mount) those reads can block for as
//! long as the filesystem likes, so they run on Tokio's blocking threads,
//! never on the accept loop or a request task, and the caller gets an error
//! once the deadline passes. The read itself cannot be cancelled: its
//! thread stays busy until the filesystem answers. So that the callers of
//! one uid cannot tie up every blocking thread that way, each uid has at
//! most [`MAX_IN_FLIGHT_PER_UID`] attestations running; more wait for one of
//! them to end, within the same deadline.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::Semaphore;

use super::{error::AttestError, hash_cache::HashCache, peer::PeerProcess, reuse::Attestation};

/// How long pinning a caller, and then attesting it for a request, may take
/// by default (`attestation_timeout`).
pub const DEFAULT_ATTESTATION_TIMEOUT: Duration = Duration::from_secs(10);

/// Attestations of one uid's callers running at once, at most.
pub const MAX_IN_FLIGHT_PER_UID: usize = 32;

/// The deadline of each pin and attestation, and the per-uid budget of
/// blocking threads they share.
#[derive(Clone, Debug)]
pub(super) struct Deadline {
    timeout: Duration,
    per_uid: Arc<Mutex<HashMap<u32, Arc<Semaphore>>>>,
}

impl Deadline {
    pub(super) fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            per_uid: Arc::default(),
        }
    }

    /// Runs `work` for a caller `pid` of `uid` on a blocking thread, once
    /// `uid` has a free slot; [`AttestError::TimedOut`] if both have not
    /// happened within the deadline. The slot is held until `work` really
    /// ends, past the deadline if it hangs.
    pub(super) async fn run<T: Send + 'static>(
        &self,
        pid: i32,
        uid: u32,
        work: impl FnOnce() -> Result<T, AttestError> + Send + 'static,
    ) -> Result<T, AttestError> {
        let slots = self.slots(uid);
        let attempt = async move {
            let slot = slots.acquire_owned().await;
            tokio::task::spawn_blocking(move || {
                let _slot = slot;
                work()
            })
            .await
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(AttestError::Aborted {
                pid,
                reason: join.to_string(),
            }),
            Err(_) => Err(AttestError::TimedOut {
                pid,
                timeout: self.timeout,
            }),
        }
    }

    /// The slots of `uid`; forgets those of uids with none in use.
    fn slots(&self, uid: u32) -> Arc<Semaphore> {
        let mut per_uid = self.per_uid.lock().unwrap_or_else(|p| p.into_inner());
        per_uid.retain(|_, s| s.available_permits() < MAX_IN_FLIGHT_PER_UID);
        Arc::clone(
            per_uid
                .entry(uid)
                .or_insert_with(|| Arc::new(Semaphore::new(MAX_IN_FLIGHT_PER_UID))),
        )
    }
}

impl PeerProcess {
    /// The connection's last attestation, checked on this thread when its
    /// binary and account files are on local filesystems and found still
    /// true; else [`attest_reusing`](Self::attest_reusing) on a blocking
    /// thread, within the deadline the connection was accepted with.
    ///
    /// # Errors
    ///
    /// As for [`attest`](Self::attest), and [`AttestError::TimedOut`] past
    /// the deadline.
    pub async fn attest_within(
        self: &Arc<Self>,
        cache: &Arc<HashCache>,
    ) -> Result<Attestation, AttestError> {
        if let Some(selectors) = self.reuse_inline() {
            return Ok(Attestation {
                selectors,
                reused: true,
            });
        }
        let (peer, cache) = (Arc::clone(self), Arc::clone(cache));
        self.deadline()
            .run(self.pid, self.uid, move || peer.attest_reusing(&cache))
            .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_past_the_deadline_is_an_error() {
        let deadline = Deadline::new(Duration::from_millis(50));
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let stalled = deadline
            .run(7, 1000, move || {
                let _ = wait.recv();
                Ok(())
            })
            .await;
        assert!(
            matches!(stalled, Err(AttestError::TimedOut { pid: 7, .. })),
            "{stalled:?}"
        );
        drop(release);
        let deadline = Deadline::new(Duration::from_secs(60));
        assert_eq!(deadline.run(7, 1000, || Ok(1)).await.unwrap(), 1);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn one_uids_stalled_callers_hold_only_its_own_slots() {
        let deadline = Deadline::new(Duration::from_millis(200));
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let wait = Arc::new(Mutex::new(wait));
        // Every slot of uid 1000 hangs past the deadline.
        let stalled = (0..MAX_IN_FLIGHT_PER_UID).map(|pid| {
            let (deadline, wait) = (deadline.clone(), Arc::clone(&wait));
            let pid = i32::try_from(pid).unwrap();
            async move {
                deadline
                    .run(pid, 1000, move || {
                        let _ = wait.lock().unwrap().recv();
                        Ok(())
                    })
                    .await
            }
        });
        for result in futures::future::join_all(stalled).await {
            assert!(
                matches!(result, Err(AttestError::TimedOut { .. })),
                "{result:?}"
            );
        }
        // A further caller of that uid waits for a slot and times out
        // without running ...
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&ran);
        let queued = deadline
            .run(99, 1000, move || {
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
                Ok(())
            })
            .await;
        assert!(
            matches!(queued, Err(AttestError::TimedOut { .. })),
            "{queued:?}"
        );
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
        // ... while another uid's caller is served.
        assert_eq!(deadline.run(100, 1001, || Ok(2)).await.unwrap(), 2);
        drop(release);
    }
}
