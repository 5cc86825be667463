//! Every long-running loop of the server ends when the shutdown token is
//! cancelled, tested on tokio's paused clock: a loop that did not watch the
//! token would sleep through the (auto-advanced) hour and fail the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{future::Future, time::Duration};

use crate::test_support::{self, entry};

/// The agent the registry tests' entries are parented to.
const AGENT: &str = "spiffe://test.example/lanyard/agent/join_token/a";

/// Cancels `shutdown` after the loop has started and checks the loop ends
/// at once, without the paused clock having to move.
async fn ends_on_shutdown<F>(name: &str, shutdown: tokio_util::sync::CancellationToken, task: F)
where
    F: Future<Output = Result<(), crate::ServerError>> + Send + 'static,
{
    let handle = tokio::spawn(task);
    // Let the loop reach its wait.
    tokio::task::yield_now().await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(!handle.is_finished(), "{name} ended before shutdown");
    let before = tokio::time::Instant::now();
    shutdown.cancel();
    let result = tokio::time::timeout(Duration::from_secs(1), handle)
        .await
        .unwrap_or_else(|_| panic!("{name} did not end within 1 s of shutdown"));
    assert!(matches!(result, Ok(Ok(()))), "{name} ended with {result:?}");
    assert!(
        before.elapsed() < Duration::from_secs(1),
        "{name} waited for its timer"
    );
}

#[tokio::test(start_paused = true)]
async fn crl_refresh_ends_on_shutdown() {
    let t = test_support::state("");
    crate::revocation::publish(&t.state).await.unwrap();
    let task = crate::revocation::run(t.state.clone(), t.shutdown.clone());
    ends_on_shutdown("CRL refresh", t.shutdown.clone(), task).await;
}

#[tokio::test(start_paused = true)]
async fn task_scheduler_ends_on_shutdown() {
    let t = test_support::state("");
    let task = crate::tasks::run(t.state.clone(), t.shutdown.clone());
    ends_on_shutdown("task scheduler", t.shutdown.clone(), task).await;
}

#[tokio::test(start_paused = true)]
async fn registry_ends_on_shutdown() {
    let t = test_support::state("");
    let started = crate::node::registry::start(&t.state).await.unwrap();
    let task = crate::node::registry::run(t.state.clone(), started, t.shutdown.clone());
    ends_on_shutdown("registry", t.shutdown.clone(), task).await;
}

#[tokio::test(start_paused = true)]
async fn issuance_committer_ends_on_shutdown() {
    let mut t = test_support::state("");
    let queue = t.queue.take().unwrap();
    let task = crate::issuance::run(t.state.clone(), queue, t.shutdown.clone());
    ends_on_shutdown("issuance", t.shutdown.clone(), task).await;
}

#[tokio::test(start_paused = true)]
async fn ca_rotation_ends_on_shutdown() {
    let t = test_support::state("");
    let svid = crate::node::ServerSvid::issue(&t.state).await.unwrap();
    let trust = std::sync::Arc::new(lanyard_mtls::TrustMaterial::new(t.state.bundle()));
    let task = crate::rotation::run(t.state.clone(), svid, trust, t.shutdown.clone());
    ends_on_shutdown("CA rotation", t.shutdown.clone(), task).await;
}

#[tokio::test(start_paused = true)]
async fn crl_refresh_republishes_before_the_crl_lapses() {
    let t = test_support::state("");
    crate::revocation::publish(&t.state).await.unwrap();
    let first = t.state.crl.load().number;
    let task = tokio::spawn(crate::revocation::run(t.state.clone(), t.shutdown.clone()));
    // The paused clock jumps to the loop's wake-up at half the validity.
    tokio::time::sleep(crate::CRL_VALIDITY / 2 + Duration::from_secs(5)).await;
    // The republish runs on a blocking thread; give it a moment of real time.
    for _ in 0..200 {
        if t.state.crl.load().number > first {
            break;
        }
        tokio::task::yield_now().await;
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        t.state.crl.load().number > first,
        "the CRL was not republished"
    );
    t.shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_change_between_registry_start_and_run_is_not_missed() {
    let t = test_support::state("");
    let started = crate::node::registry::start(&t.state).await.unwrap();
    // An operator's call lands before the registry task runs.
    let agent = test_support::agent_record(AGENT);
    let entry = entry("spiffe://test.example/late", AGENT, &["unix:uid:1"], None);
    t.state.store.create_entry(&entry).unwrap();
    t.state.entries_changed([entry.id]);
    let task = tokio::spawn(crate::node::registry::run(
        t.state.clone(),
        started,
        t.shutdown.clone(),
    ));
    let mut snapshots = t.state.registry.subscribe();
    let seen = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if !snapshots
                .borrow_and_update()
                .view(&agent, 1)
                .entries
                .is_empty()
            {
                return;
            }
            snapshots.changed().await.unwrap();
        }
    })
    .await;
    assert!(
        seen.is_ok(),
        "the entry created before the registry ran never reached it"
    );
    t.shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn following_other_servers_ends_on_shutdown() {
    let t = test_support::state("");
    let (changes, rx) = tokio::sync::mpsc::channel(8);
    let task = crate::cluster::follow(t.state.clone(), rx, t.shutdown.clone());
    ends_on_shutdown("change follower", t.shutdown.clone(), task).await;
    drop(changes);
}

#[tokio::test(start_paused = true)]
async fn a_followed_entry_change_reaches_the_registry() {
    let t = test_support::state("");
    let (changes, rx) = tokio::sync::mpsc::channel(8);
    let mut agents = t.state.subscribe();
    let follower = tokio::spawn(crate::cluster::follow(
        t.state.clone(),
        rx,
        t.shutdown.clone(),
    ));
    let id = lanyard_identity::EntryId::new_random();
    changes
        .send(lanyard_store_postgres::Change::Entry(id))
        .await
        .unwrap();
    agents.changed().await.unwrap();
    assert_eq!(t.state.take_changed_entries(), vec![id]);
    // A follower whose listener is gone stops the server with an error.
    drop(changes);
    assert!(follower.await.unwrap().is_err());
}

/// Races as races: the registry reloads every entry (a resync, as after a
/// lost PostgreSQL listener) while one entry is changed and announced.
/// Whatever the interleaving, the registry ends up with the store's copy:
/// an announcement that lands while the reload reads the store is still
/// read afterwards, never dropped with the reload's older copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_changed_during_a_resync_is_never_lost() {
    const ROUNDS: usize = 25;
    let t = test_support::state("");
    let agent = test_support::agent_record(AGENT);
    let entry = |path: String| {
        entry(
            &format!("spiffe://test.example/{path}"),
            AGENT,
            &["unix:uid:1"],
            None,
        )
    };
    // Enough entries that reading them all takes a while.
    let bulk: Vec<_> = (0..20_000).map(|i| entry(format!("bulk/{i}"))).collect();
    for created in t.state.store.create_entries(&bulk).unwrap() {
        created.unwrap();
    }
    // The lowest ID, so that a reload reads it first and a change landing
    // anywhere during the reload comes after that read.
    let watched = lanyard_identity::Entry {
        id: lanyard_identity::EntryId(uuid::Uuid::nil()),
        ..entry("watched".into())
    };
    t.state.store.create_entry(&watched).unwrap();
    let started = crate::node::registry::start(&t.state).await.unwrap();
    let task = tokio::spawn(crate::node::registry::run(
        t.state.clone(),
        started,
        t.shutdown.clone(),
    ));
    let mut snapshots = t.state.registry.subscribe();
    let sweep = lanyard_store::Sweep {
        revoked_at: 1,
        reason: "superseded".into(),
    };
    for round in 0..ROUNDS {
        t.state
            .resync_entries
            .store(true, std::sync::atomic::Ordering::Release);
        t.state.notify();
        // Land the change early in the reload, or before it.
        tokio::time::sleep(Duration::from_millis((round as u64 * 7) % 40)).await;
        let mut next = t.state.store.get_entry(&watched.id).unwrap().unwrap();
        next.hint = format!("round {round}");
        t.state.store.update_entry(&next, &sweep).unwrap();
        t.state.entries_changed([watched.id]);

        let hint = format!("round {round}");
        let seen = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let shows = snapshots
                    .borrow_and_update()
                    .view(&agent, 1)
                    .entries
                    .iter()
                    .any(|e| e.id == watched.id.to_string() && e.hint == hint);
                if shows {
                    return;
                }
                snapshots.changed().await.unwrap();
            }
        })
        .await;
        assert!(
            seen.is_ok(),
            "round {round}: the change made during the resync never reached the registry"
        );
    }
    t.shutdown.cancel();
    task.await.unwrap().unwrap();
}
