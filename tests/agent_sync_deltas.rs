//! End to end: after the first full message, the Sync stream sends deltas,
//! and whatever the order and pace of entry changes, the agent serves
//! exactly the entries that exist: created ones appear, changed ones
//! change, and a deleted (or moved away) entry's SVID, once gone from a
//! workload's stream, never comes back.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use lanyard_test_support as common;

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use common::{
    NodeIdentity, Server, TD,
    agent::{Agent, http_get, my_uid, open_x509_stream, stream_serving, uri_san},
    attest, node_channel,
};
use lanyard_proto::{
    node::v1::{SyncRequest, SyncResponse},
    types::v1::Entry,
    workload::X509svidResponse,
};

/// What the operator has made of the entries so far: by entry ID, the
/// SPIFFE ID and hint of each that exists under the agent.
#[derive(Default)]
struct Registered {
    live: BTreeMap<String, (String, String)>,
    /// SPIFFE IDs whose entry was deleted or moved away (never reused).
    gone: BTreeSet<String>,
    created: usize,
}

impl Registered {
    /// One operator change, chosen by `rng`, carried out with the CLI.
    fn change(&mut self, server: &Server, parent: &str, selector: &str, rng: &mut fastrand::Rng) {
        let pick = |live: &BTreeMap<String, (String, String)>, rng: &mut fastrand::Rng| {
            let n = live.len();
            (n > 0).then(|| live.keys().nth(rng.usize(..n)).cloned())?
        };
        match rng.usize(..5) {
            0 | 1 => {
                self.created += 1;
                let spiffe_id = format!("spiffe://{TD}/deltas/w{}", self.created);
                let hint = format!("created-{}", self.created);
                let id = server
                    .cli_ok(&[
                        "entry",
                        "create",
                        "--spiffe-id",
                        &spiffe_id,
                        "--parent-id",
                        parent,
                        "--selector",
                        selector,
                        "--hint",
                        &hint,
                    ])
                    .trim()
                    .to_owned();
                self.live.insert(id, (spiffe_id, hint));
            }
            2 => {
                let Some(id) = pick(&self.live, rng) else {
                    return;
                };
                let hint = format!("changed-{}", rng.usize(..1_000_000));
                let dns = format!("w{}.deltas.test", rng.usize(..1_000_000));
                server.cli_ok(&["entry", "update", &id, "--hint", &hint, "--dns-name", &dns]);
                if let Some(entry) = self.live.get_mut(&id) {
                    entry.1 = hint;
                }
            }
            3 => {
                let Some(id) = pick(&self.live, rng) else {
                    return;
                };
                server.cli_ok(&["entry", "delete", &id]);
                let (spiffe_id, _) = self.live.remove(&id).unwrap();
                self.gone.insert(spiffe_id);
            }
            _ => {
                // Moved to another agent: this one must stop serving it.
                let Some(id) = pick(&self.live, rng) else {
                    return;
                };
                let elsewhere = format!("spiffe://{TD}/lanyard/agent/join_token/elsewhere");
                server.cli_ok(&["entry", "update", &id, "--parent-id", &elsewhere]);
                let (spiffe_id, _) = self.live.remove(&id).unwrap();
                self.gone.insert(spiffe_id);
            }
        }
    }

    /// SPIFFE ID -> hint of every entry that exists.
    fn expected(&self) -> BTreeMap<String, String> {
        self.live.values().cloned().collect()
    }
}

/// SPIFFE ID -> hint of every SVID in a Workload API message.
fn served(msg: &X509svidResponse) -> BTreeMap<String, String> {
    msg.svids
        .iter()
        .map(|s| (s.spiffe_id.clone(), s.hint.clone()))
        .collect()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn after_bursts_of_changes_a_workload_is_served_exactly_its_entries() {
    let server = Server::start();
    let agent = Agent::start(&server);
    let parent = agent.spiffe_id();
    let selector = format!("unix:uid:{}", my_uid());
    let mut registered = Registered::default();
    // Seeded, so that a failure repeats.
    let mut rng = fastrand::Rng::with_seed(0x2545_f491_4f6c_dd1d);
    // A first entry, so the workload has a stream to watch.
    while registered.live.is_empty() {
        registered.change(&server, &parent, &selector, &mut rng);
    }
    let mut stream = None;
    for _ in 0..100 {
        if let Ok(mut s) = open_x509_stream(&agent).await
            && let Ok(Some(first)) = s.message().await
            && !first.svids.is_empty()
        {
            stream = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut stream = stream.expect("a FetchX509SVID stream serving the first entry");

    // Once an SVID that was served is gone from the stream after its entry
    // went, it must never be served again. (One issued just before the
    // deletion may still be served until the agent hears of it: an entry
    // deleted before the workload ever saw it is not counted.)
    let mut ever_served: BTreeSet<String> = BTreeSet::new();
    let mut no_longer_served: BTreeSet<String> = BTreeSet::new();
    for round in 0..25 {
        // A burst: the changes race the agent's Sync and issuance. The
        // workload may be left without any entry for a moment.
        let mut emptied = false;
        for _ in 0..=rng.usize(..4) {
            registered.change(&server, &parent, &selector, &mut rng);
            emptied |= registered.live.is_empty();
        }
        while registered.live.is_empty() {
            registered.change(&server, &parent, &selector, &mut rng);
        }
        let expected = registered.expected();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let next = tokio::time::timeout_at(deadline, stream.message())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "round {round}: never served exactly {expected:?}\n{}",
                        agent.log()
                    )
                });
            let msg = match next {
                Ok(Some(msg)) => msg,
                // Left without an entry, the workload is told it has no
                // identity, and that ends its stream (as the Workload API
                // says): it asks again, as a SPIFFE client does.
                Err(status) if emptied && status.code() == tonic::Code::PermissionDenied => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    if let Ok(reopened) = open_x509_stream(&agent).await {
                        stream = reopened;
                    }
                    continue;
                }
                other => panic!("round {round}: the stream ended: {other:?}"),
            };
            let now = served(&msg);
            for id in now.keys() {
                assert!(
                    !no_longer_served.contains(id),
                    "round {round}: {id} is served again after its entry went and its SVID left"
                );
            }
            for id in &registered.gone {
                if ever_served.contains(id) && !now.contains_key(id) {
                    no_longer_served.insert(id.clone());
                }
            }
            ever_served.extend(now.keys().cloned());
            for svid in &msg.svids {
                let san = uri_san(&svid.x509_svid);
                assert_eq!(san, svid.spiffe_id, "the SVID is the one named");
            }
            if now == expected {
                break;
            }
        }
    }

    // The agent itself holds exactly those entries: no slot is left for a
    // deleted one (its SVID went with the CRL, but the agent would keep
    // asking the server for a new one, refused).
    let want = registered.live.len() as f64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = http_get(agent.http_addr, "/metrics");
        let cached = metric(&text, "lanyard_agent_cached_svids ");
        let failing = metric(&text, "lanyard_agent_entries_failing ");
        if cached == want && failing == 0.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{cached} SVIDs cached for {want} entries, {failing} entries failing\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The stream carried deltas, not the agent's whole set every time.
    let agent_metrics = http_get(agent.http_addr, "/metrics");
    let deltas = metric(&agent_metrics, "lanyard_agent_sync_deltas_total");
    let updates = metric(&agent_metrics, "lanyard_agent_sync_updates_total");
    assert!(
        deltas > 0.0 && deltas >= updates - 2.0,
        "{deltas} deltas of {updates} Sync messages"
    );
}

/// An entry that expires by itself, with no change to it, leaves the
/// workload's stream through a delta: the server sends its agent no full
/// message for an expiry.
#[tokio::test(flavor = "multi_thread")]
async fn an_entry_that_expires_leaves_through_a_delta() {
    let server = Server::start();
    let agent = Agent::start(&server);
    let parent = agent.spiffe_id();
    let selector = format!("unix:uid:{}", my_uid());
    let expires_at =
        humantime::format_rfc3339_seconds(std::time::SystemTime::now() + Duration::from_secs(8))
            .to_string();
    let create = |name: &str, extra: &[&str]| {
        let spiffe_id = format!("spiffe://{TD}/expiry/{name}");
        let mut args = vec![
            "entry",
            "create",
            "--spiffe-id",
            &spiffe_id,
            "--parent-id",
            &parent,
            "--selector",
            &selector,
        ];
        args.extend_from_slice(extra);
        server.cli_ok(&args);
        spiffe_id
    };
    let stays = create("stays", &[]);
    let expiring = create("expiring", &["--expires-at", &expires_at]);
    let after_expiry: BTreeSet<String> = [stays].into();

    // Served, then (at the expiry) no longer, on one stream.
    let serving = |msg: &X509svidResponse| served(msg).into_keys().collect::<BTreeSet<_>>();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let (mut stream, _) = stream_serving(&agent, &expiring).await;
    let sync_messages = |kind: &str| {
        let text = http_get(server.http_addr, "/metrics");
        metric(
            &text,
            &format!("lanyard_server_sync_messages_total{{kind=\"{kind}\"}}"),
        )
    };
    let (fulls, deltas) = (sync_messages("full"), sync_messages("delta"));
    assert!(fulls >= 1.0, "the stream's first message was full");
    loop {
        let msg = tokio::time::timeout_at(deadline, stream.message())
            .await
            .expect("the expired entry left the stream")
            .expect("the stream stays open")
            .expect("a message");
        let now = serving(&msg);
        if now == after_expiry {
            break;
        }
        assert!(now.contains(&expiring), "{expiring} left before it expired");
    }

    // The server told the agent: by a delta, not by everything again.
    while sync_messages("delta") == deltas {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no delta after the expiry; full messages {fulls} -> {}\n{}",
            sync_messages("full"),
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        sync_messages("full"),
        fulls,
        "no full message for an expiry"
    );
}

/// Applies a Sync message to what the receiver holds (entry ID -> entry).
fn apply(held: &mut BTreeMap<String, Entry>, msg: SyncResponse) {
    if !msg.delta {
        held.clear();
    }
    for id in &msg.removed_entry_ids {
        held.remove(id);
    }
    for e in msg.entries {
        assert!(
            !msg.removed_entry_ids.contains(&e.id),
            "{} changed and removed",
            e.id
        );
        held.insert(e.id.clone(), e);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn deltas_add_up_to_the_full_message_of_a_stream_without_them() {
    let server = Server::start();
    let node: NodeIdentity = attest(&server, &server.token()).await.unwrap();
    let parent = uri_san(&node.chain[0]);
    let mut client = node_channel(&server, Some(&node)).await.unwrap();
    let mut with = client
        .sync(SyncRequest {
            accept_deltas: true,
        })
        .await
        .unwrap()
        .into_inner();
    let mut without = client
        .sync(SyncRequest::default())
        .await
        .unwrap()
        .into_inner();
    let (mut held, mut full) = (BTreeMap::new(), BTreeMap::new());
    let first = with.message().await.unwrap().unwrap();
    assert!(!first.delta, "the first message is full");
    apply(&mut held, first);
    apply(&mut full, without.message().await.unwrap().unwrap());

    let mut registered = Registered::default();
    // Seeded, so that a failure repeats.
    let mut rng = fastrand::Rng::with_seed(0x9e37_79b9_7f4a_7c15);
    let (mut deltas, mut fulls_without) = (0, 0);
    for round in 0..40 {
        for _ in 0..=rng.usize(..4) {
            registered.change(&server, &parent, "unix:uid:4242", &mut rng);
        }
        let expected = registered.expected();
        let holds = |held: &BTreeMap<String, Entry>| {
            held.values()
                .map(|e| (e.spiffe_id.clone(), e.hint.clone()))
                .collect::<BTreeMap<_, _>>()
                == expected
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !holds(&held) {
            let msg = tokio::time::timeout_at(deadline, with.message())
                .await
                .unwrap_or_else(|_| panic!("round {round}: the delta stream never got there"))
                .unwrap()
                .unwrap();
            deltas += usize::from(msg.delta);
            apply(&mut held, msg);
        }
        while !holds(&full) {
            let msg = tokio::time::timeout_at(deadline, without.message())
                .await
                .unwrap_or_else(|_| panic!("round {round}: the full stream never got there"))
                .unwrap()
                .unwrap();
            assert!(!msg.delta, "deltas only for an agent that asks");
            fulls_without += 1;
            apply(&mut full, msg);
        }
        assert_eq!(held, full, "round {round}");
    }
    assert!(
        deltas > 0 && fulls_without > 0,
        "{deltas} deltas, {fulls_without} full"
    );
}
