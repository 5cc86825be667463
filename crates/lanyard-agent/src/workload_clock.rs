//! The one timer behind every Workload API stream.
//!
//! A stream's answer changes with the snapshot, and also without it: when
//! one of its SVIDs reaches NotAfter, or a wait for SVIDs re-issued after a
//! revocation ends. Each stream used to keep a timer for that moment, which
//! cost every `FetchX509SVID` call a timer registered and removed (a lock
//! on the runtime's timer wheel each way) although almost every call is
//! cancelled by its caller long before. Instead this task publishes the
//! current snapshot again at the first such moment of the whole snapshot,
//! and at least every [`MAX_IDLE`] (against wall-clock jumps): a stream
//! waits on its snapshot channel alone, takes its shared answer again
//! ([`Views`](crate::workload_views::Views) rebuilds it once per selector
//! set when its moment has passed) and sends only if it changed.

use std::{sync::Arc, time::Duration};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{
    cache::Snapshot,
    schedule::{from_unix, to_unix, until},
};

/// Longest wait between two re-evaluations of the open streams.
const MAX_IDLE: Duration = Duration::from_secs(300);

/// Runs until `shutdown`, publishing the current snapshot of `snapshots`
/// again whenever an answer built from it may stop holding.
///
/// A moment is looked for after the last re-evaluation, not after the time
/// the task looks: a snapshot may reach streams before this task sees it,
/// and a moment that passes in between (a short NotAfter, published the
/// second before, while this task waits for a CPU) is then re-evaluated at
/// once instead of missed until the next change.
pub(crate) async fn run(snapshots: Arc<watch::Sender<Arc<Snapshot>>>, shutdown: CancellationToken) {
    let mut current = snapshots.subscribe();
    // Every moment up to here has been re-evaluated (none, at the start).
    let mut evaluated = i64::MIN;
    let republish = |evaluated: &mut i64, moment: Option<i64>| {
        tracing::trace!(?moment, "re-evaluating the Workload API streams");
        // Same snapshot, new version: every stream looks again.
        snapshots.send_modify(|_| {});
        *evaluated = to_unix(std::time::SystemTime::now());
    };
    loop {
        let next = current.borrow_and_update().next_expiry_after(evaluated);
        let now = to_unix(std::time::SystemTime::now());
        if next.is_some_and(|t| t <= now) {
            republish(&mut evaluated, next);
            continue;
        }
        let wait = next
            .map(|t| until(from_unix(t)))
            .unwrap_or(MAX_IDLE)
            .min(MAX_IDLE);
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = current.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(wait) => {
                // The wall clock may lag the monotonic one the sleep used:
                // then it is not that moment yet, and the loop sleeps again.
                if next.is_none() {
                    republish(&mut evaluated, next);
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::time::{Instant, SystemTime};

    use super::*;
    use crate::cache::{Readiness, tests::svid};

    fn snapshot_expiring_at(not_after: i64) -> Snapshot {
        let mut snapshot = Snapshot::starting();
        snapshot.readiness = Readiness::Ready;
        snapshot.svids = vec![svid("a", 1, &["unix:uid:1"], not_after)];
        snapshot
    }

    /// The snapshot is published again once its SVID reaches NotAfter, not
    /// before, and the task stops on shutdown.
    #[tokio::test]
    async fn republishes_at_not_after_and_stops_on_shutdown() {
        let not_after = to_unix(SystemTime::now()) + 2;
        let (tx, mut rx) = watch::channel(Arc::new(snapshot_expiring_at(not_after)));
        let tx = Arc::new(tx);
        rx.borrow_and_update();
        let shutdown = CancellationToken::new();
        let clock = tokio::spawn(run(Arc::clone(&tx), shutdown.clone()));

        let started = Instant::now();
        tokio::time::timeout(Duration::from_secs(10), rx.changed())
            .await
            .expect("published again")
            .unwrap();
        assert!(
            to_unix(SystemTime::now()) >= not_after,
            "published {:?} after the start, before NotAfter",
            started.elapsed()
        );
        // Nothing left to expire: no further publication.
        rx.borrow_and_update();
        assert!(
            tokio::time::timeout(Duration::from_millis(1500), rx.changed())
                .await
                .is_err()
        );

        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), clock)
            .await
            .expect("stopped on shutdown")
            .unwrap();
    }

    /// A snapshot whose NotAfter passes before the task gets to look at it
    /// (streams answered from it the second before) is still published
    /// again, at once.
    #[tokio::test]
    async fn a_moment_that_passed_before_the_task_looked_is_not_missed() {
        let far = to_unix(SystemTime::now()) + 3600;
        let (tx, mut rx) = watch::channel(Arc::new(snapshot_expiring_at(far)));
        let tx = Arc::new(tx);
        let shutdown = CancellationToken::new();
        let clock = tokio::spawn(run(Arc::clone(&tx), shutdown.clone()));
        // The task is waiting for the far NotAfter.
        tokio::time::sleep(Duration::from_millis(50)).await;
        rx.borrow_and_update();

        let not_after = to_unix(SystemTime::now()) + 1;
        tx.send_replace(Arc::new(snapshot_expiring_at(not_after)));
        // A stream answers from it now, before NotAfter.
        rx.borrow_and_update();
        // The runtime (one thread) is busy past NotAfter: the task sees the
        // new snapshot only after its moment.
        std::thread::sleep(until(from_unix(not_after)) + Duration::from_millis(100));
        tokio::time::timeout(Duration::from_secs(3), rx.changed())
            .await
            .expect("published again for the moment that passed")
            .unwrap();

        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), clock)
            .await
            .expect("stopped on shutdown")
            .unwrap();
    }
}
