//! Workload API answers built once per snapshot and selector set, and
//! shared by every call and stream of that set.
//!
//! Every caller with the same selectors receives the same answer from one
//! snapshot (until one of its SVIDs reaches NotAfter). So the answer is
//! built by the first call or stream that needs it after a change, kept
//! with the snapshot it came from and the moment it stops being true, and
//! handed to the others as an `Arc`. A new snapshot costs each selector
//! set one build, whatever the number of its streams; a stream whose
//! set's answer did not change (an unrelated entry changed) gets the very
//! same `Arc` back and sends nothing, without comparing messages.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex, PoisonError, Weak},
};

use lanyard_identity::Selector;
use tonic::Status;

use crate::{cache::Snapshot, workload_response::next_expiry};

/// Selector sets whose answers are kept while nobody uses them.
const MAX_SETS: usize = 1024;

/// What a build returns: the message, nothing to send yet (`Ok(None)`: an
/// SVID being issued again after a revocation), or the error that ends a
/// stream.
pub type Built<T> = Result<Option<T>, Status>;

/// A shared answer, and until when (unix seconds) it holds.
#[derive(Debug)]
pub struct View<T> {
    /// The answer.
    pub answer: Result<Option<Arc<T>>, Status>,
    /// The first moment it may no longer hold (an SVID's NotAfter, the end
    /// of a wait for a re-issued SVID); `None`: only a new snapshot changes
    /// it.
    pub until: Option<i64>,
}

impl<T> Clone for View<T> {
    fn clone(&self) -> Self {
        Self {
            answer: self.answer.clone(),
            until: self.until,
        }
    }
}

impl<T> View<T> {
    /// Whether `self` and `other` carry the same answer: the same shared
    /// message, or both nothing. Errors never count as the same (each one
    /// ends its stream).
    pub fn same_answer(&self, other: &Self) -> bool {
        match (&self.answer, &other.answer) {
            (Ok(Some(a)), Ok(Some(b))) => Arc::ptr_eq(a, b),
            (Ok(None), Ok(None)) => true,
            _ => false,
        }
    }
}

/// One selector set's latest view.
struct Memo<T> {
    /// The snapshot it was built from. Held weakly, so a memo keeps no old
    /// snapshot alive; while it is held, no other snapshot can reuse its
    /// address, so comparing addresses is sound.
    snapshot: Weak<Snapshot>,
    built_at: i64,
    view: View<T>,
}

impl<T> Memo<T> {
    fn holds_for(&self, snapshot: &Arc<Snapshot>, now: i64) -> bool {
        std::ptr::eq(self.snapshot.as_ptr(), Arc::as_ptr(snapshot))
            && now >= self.built_at
            && self.view.until.is_none_or(|until| now < until)
    }
}

/// A selector set's slot: its memo, locked while it is (re)built so that
/// its other streams wait for that build instead of repeating it.
type Slot<T> = Arc<tokio::sync::Mutex<Option<Memo<T>>>>;

/// The views of one kind of answer (X.509-SVIDs, X.509 bundles, JWT
/// bundles), by selector set.
pub struct Views<T> {
    slots: Mutex<Slots<T>>,
}

struct Slots<T> {
    /// The snapshot the slots were last pruned for.
    snapshot: Weak<Snapshot>,
    by_selectors: HashMap<Arc<[Selector]>, Slot<T>>,
}

impl<T> Default for Views<T> {
    fn default() -> Self {
        Self {
            slots: Mutex::new(Slots {
                snapshot: Weak::new(),
                by_selectors: HashMap::new(),
            }),
        }
    }
}

impl<T> fmt::Debug for Views<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sets = self
            .slots
            .lock()
            .map_or(0, |slots| slots.by_selectors.len());
        f.debug_struct("Views")
            .field("selector_sets", &sets)
            .finish()
    }
}

impl<T: PartialEq> Views<T> {
    /// The answer for `selectors` from `snapshot` at `now` (unix seconds):
    /// the shared one if it still holds, else `build`'s, which is shared
    /// from then on. A rebuilt answer equal to the previous one is given
    /// back as the previous `Arc`.
    pub async fn get(
        &self,
        snapshot: &Arc<Snapshot>,
        selectors: &Arc<[Selector]>,
        now: i64,
        build: impl FnOnce(&Snapshot, &[Selector], i64) -> Built<T>,
    ) -> View<T> {
        let slot = self.slot(snapshot, selectors);
        let mut memo = slot.lock().await;
        if let Some(memo) = memo.as_ref().filter(|m| m.holds_for(snapshot, now)) {
            return memo.view.clone();
        }
        let answer = build(snapshot, selectors, now).map(|message| {
            message.map(|message| {
                // Unchanged for this set: the streams see the same Arc.
                match memo.as_ref().map(|m| &m.view.answer) {
                    Some(Ok(Some(previous))) if **previous == message => Arc::clone(previous),
                    _ => Arc::new(message),
                }
            })
        });
        let view = View {
            answer,
            until: next_expiry(snapshot, selectors, now),
        };
        *memo = Some(Memo {
            snapshot: Arc::downgrade(snapshot),
            built_at: now,
            view: view.clone(),
        });
        view
    }

    /// The slot of `selectors`. Slots outlive snapshots, so that a set
    /// whose answer did not change gets its previous `Arc` back; once there
    /// are more than [`MAX_SETS`], the first call that sees a new snapshot
    /// drops those nobody is using (their answers are stale).
    fn slot(&self, snapshot: &Arc<Snapshot>, selectors: &Arc<[Selector]>) -> Slot<T> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if !std::ptr::eq(slots.snapshot.as_ptr(), Arc::as_ptr(snapshot)) {
            slots.snapshot = Arc::downgrade(snapshot);
            if slots.by_selectors.len() > MAX_SETS {
                slots
                    .by_selectors
                    .retain(|_, slot| Arc::strong_count(slot) > 1);
            }
        }
        Arc::clone(slots.by_selectors.entry(Arc::clone(selectors)).or_default())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::{
        cache::{Readiness, tests::svid},
        workload_response::x509_svid_response,
    };

    fn snapshot(extra: &str) -> Arc<Snapshot> {
        Arc::new(Snapshot {
            readiness: Readiness::Ready,
            trust_domain: Some("td.org".parse().unwrap()),
            svids: vec![
                svid("a", 10, &["unix:uid:1"], 500),
                svid(extra, 20, &["unix:uid:2"], 1000),
            ],
            ..Snapshot::starting()
        })
    }

    fn selectors(s: &str) -> Arc<[Selector]> {
        vec![s.parse::<Selector>().unwrap()].into()
    }

    #[tokio::test]
    async fn one_build_per_snapshot_and_set_and_the_same_arc_when_unchanged() {
        let views = Views::default();
        let builds = AtomicUsize::new(0);
        let build = |s: &Snapshot, sel: &[Selector], now| {
            builds.fetch_add(1, Ordering::SeqCst);
            x509_svid_response(s, sel, now)
        };
        let uid1 = selectors("unix:uid:1");
        let first = snapshot("b");
        let a = views.get(&first, &uid1, 100, build).await;
        let b = views.get(&first, &uid1, 101, build).await;
        assert_eq!(builds.load(Ordering::SeqCst), 1, "shared within a snapshot");
        assert!(a.same_answer(&b));
        assert_eq!(a.until, Some(500));

        // Another set's entry changed: one rebuild, the same answer.
        let second = snapshot("c");
        let c = views.get(&second, &uid1, 102, build).await;
        assert_eq!(builds.load(Ordering::SeqCst), 2);
        assert!(a.same_answer(&c), "unchanged for this set");
        let d = views
            .get(&second, &selectors("unix:uid:2"), 102, build)
            .await;
        assert!(!a.same_answer(&d));

        // Past NotAfter the view no longer holds.
        let e = views.get(&second, &uid1, 500, build).await;
        assert_eq!(e.answer.unwrap_err().code(), tonic::Code::PermissionDenied);
    }
}
