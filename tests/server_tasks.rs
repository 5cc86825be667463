//! End-to-end: task-scoped identities with real operators (distinct Unix
//! users on the admin socket) and the tamper-evident audit log.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use lanyard_test_support as common;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use common::{operators::*, *};
use lanyard_ca::SvidKey;
use lanyard_proto::node::v1::{
    BatchNewX509svidRequest, NewX509svidParams, SyncRequest, batch_new_x509svid_result::Result as R,
};

fn request(server: &Server, uid: u32, agent: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "task",
        "request",
        "--ticket",
        "CHG-1234",
        "--purpose",
        "replace disk on db-3",
        "--spiffe-id",
        "spiffe://e2e.test/maint/disk",
        "--parent-id",
        agent,
        "--selector",
        "unix:uid:1000",
        "--audience",
        "spiffe://e2e.test/db",
    ];
    args.extend_from_slice(extra);
    ok_as(server, uid, &args).trim().to_owned()
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn agent_id(agent: &NodeIdentity) -> String {
    lanyard_identity::check_x509_svid(&agent.chain[0])
        .unwrap()
        .spiffe_id
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_from_request_to_completion() {
    let server = task_server();
    let agent = attest(&server, &server.token()).await.unwrap();
    let parent = agent_id(&agent);
    let id = request(&server, ALICE, &parent, &["--ttl", "15m"]);
    assert!(id.starts_with("task-"), "{id}");

    // Nothing is issued before approval.
    let mut client = node_channel(&server, Some(&agent)).await.unwrap();
    let mut sync = client
        .sync(SyncRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(sync.message().await.unwrap().unwrap().entries.is_empty());

    // The requester may not approve their own task; a non-approver may not either.
    let err = refused_as(&server, ALICE, &["task", "approve", &id]);
    assert!(
        err.contains("approver") || err.contains("require_distinct_approver"),
        "{err}"
    );
    let err = refused_as(&server, CAROL, &["task", "approve", &id]);
    assert!(err.contains("approver"), "{err}");
    let err = refused_as(&server, MALLORY, &["task", "list"]);
    assert!(err.contains("may not"), "{err}");
    // Operators who are not admins cannot touch entries.
    refused_as(&server, ALICE, &["entry", "list"]);

    let approved = json_as(
        &server,
        BOB,
        &["task", "approve", &id, "--note", "looks fine"],
    );
    assert_eq!(approved["state"], "active");
    // An approver who is not a requester can still read the tasks.
    assert_eq!(
        json_as(&server, BOB, &["task", "show", &id])["state"],
        "active"
    );
    let listed = json_as(&server, BOB, &["task", "list", "--state", "active"]);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let entry_id = approved["entry_id"].as_str().unwrap().to_owned();

    // The agent hears of the task's entry at once and gets a bound SVID.
    let update = tokio::time::timeout(Duration::from_secs(2), sync.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(update.entries.len(), 1);
    assert_eq!(update.entries[0].id, entry_id);
    let resp = client
        .batch_new_x509svid(BatchNewX509svidRequest {
            params: vec![NewX509svidParams {
                entry_id: entry_id.clone(),
                csr: SvidKey::generate().unwrap().csr_der().unwrap(),
            }],
        })
        .await
        .unwrap()
        .into_inner();
    let Some(R::Svid(svid)) = &resp.results[0].result else {
        panic!("{:?}", resp.results[0])
    };
    let chain = chain_of(svid);
    let binding = lanyard_identity::TaskBinding::from_certificate(&chain[0])
        .unwrap()
        .unwrap();
    assert_eq!(binding.task_id, id);
    assert_eq!(binding.ticket, "CHG-1234");
    assert_eq!(binding.audiences[0].to_string(), "spiffe://e2e.test/db");
    assert!(svid.expires_at <= approved_ends_at(&approved));
    let (ok, text) = openssl_verify(server.dir.path(), &server.bundle(), &chain);
    assert!(ok, "plain X.509 tools accept a task SVID: {text}");

    // Complete: the SVID is revoked and the entry is gone.
    let done = json_as(&server, ALICE, &["task", "complete", &id]);
    assert_eq!(done["state"], "completed");
    assert!(server.cli_ok(&["crl", "show"]).contains(&svid.serial));
    let update = tokio::time::timeout(Duration::from_secs(2), sync.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(update.entries.is_empty());

    // The audit trail for the ticket tells the whole story.
    let export = server.cli_ok(&["audit", "export", "--ticket", "CHG-1234"]);
    let records: Vec<serde_json::Value> = export
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let actions: Vec<&str> = records
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    for needed in [
        "task_requested",
        "task_approved",
        "task_activated",
        "svid_issued",
        "task_completed",
        "svid_revoked",
    ] {
        assert!(
            actions.contains(&needed),
            "{needed} missing from {actions:?}"
        );
    }
    let by = |action: &str| {
        records.iter().find(|r| r["action"] == action).unwrap()["principal"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(by("task_requested").starts_with(&format!("uid:{ALICE}")));
    // Without a policy file the TOML rules decide, with the same evidence.
    let policy = server.cli_json(&["policy", "show"]);
    assert_eq!(policy["origin"], "server config [tasks]");
    for r in records
        .iter()
        .filter(|r| r["action"].as_str().unwrap().starts_with("task_"))
    {
        assert_eq!(r["details"]["policy_sha256"], policy["sha256"], "{r}");
    }
    let requested = records
        .iter()
        .find(|r| r["action"] == "task_requested")
        .unwrap();
    assert_eq!(requested["details"]["policy_rule"], "tasks.max_ttl");
    assert!(by("task_approved").starts_with(&format!("uid:{BOB}")));
    assert!(
        records
            .iter()
            .all(|r| r["time"].as_str().unwrap().ends_with('Z'))
    );
    let show = ok_as(&server, ALICE, &["task", "show", &id]);
    assert!(
        show.contains("requested") && show.contains("approved") && show.contains("completed"),
        "{show}"
    );
}

fn approved_ends_at(task: &serde_json::Value) -> i64 {
    let t = humantime::parse_rfc3339(task["ends_at"].as_str().unwrap()).unwrap();
    t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_lives_only_inside_its_window() {
    let server = task_server();
    let agent = attest(&server, &server.token()).await.unwrap();
    let parent = agent_id(&agent);
    let starts =
        humantime::format_rfc3339_seconds(std::time::SystemTime::now() + Duration::from_secs(3))
            .to_string();
    let id = request(
        &server,
        ALICE,
        &parent,
        &["--ttl", "4s", "--starts-at", &starts],
    );
    let approved = json_as(&server, BOB, &["task", "approve", &id]);
    assert_eq!(
        approved["state"], "approved",
        "the window has not opened yet"
    );
    wait_for("activation", || {
        json_as(&server, ALICE, &["task", "show", &id])["state"] == "active"
    });
    let entry_id = json_as(&server, ALICE, &["task", "show", &id])["entry_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut client = node_channel(&server, Some(&agent)).await.unwrap();
    let resp = client
        .batch_new_x509svid(BatchNewX509svidRequest {
            params: vec![NewX509svidParams {
                entry_id,
                csr: SvidKey::generate().unwrap().csr_der().unwrap(),
            }],
        })
        .await
        .unwrap()
        .into_inner();
    let Some(R::Svid(svid)) = &resp.results[0].result else {
        panic!("{:?}", resp.results[0])
    };
    assert!(
        svid.expires_at <= approved_ends_at(&approved),
        "NotAfter never passes the window's end"
    );
    // Nobody acts: the window closes, the task expires, its SVID is revoked.
    wait_for("expiry", || {
        json_as(&server, ALICE, &["task", "show", &id])["state"] == "expired"
    });
    let shown = json_as(&server, ALICE, &["task", "show", &id]);
    assert_eq!(
        shown["history"].as_array().unwrap().last().unwrap()["principal"],
        "lanyard-server"
    );
    let audit = server.cli_ok(&["audit", "export", "--ticket", "CHG-1234"]);
    assert!(audit.contains("task_expired"));
}

#[tokio::test(flavor = "multi_thread")]
async fn policy_limits_and_break_glass() {
    let server = task_server();
    let agent = attest(&server, &server.token()).await.unwrap();
    let parent = agent_id(&agent);
    let base = [
        "task",
        "request",
        "--ticket",
        "INC-9",
        "--purpose",
        "outage",
        "--spiffe-id",
        "spiffe://e2e.test/maint/bg",
        "--parent-id",
        &parent,
        "--selector",
        "unix:uid:1000",
    ];

    let mut too_long = base.to_vec();
    too_long.extend(["--ttl", "2h"]);
    let err = refused_as(&server, ALICE, &too_long);
    assert!(err.contains("tasks.max_ttl"), "{err}");
    let mut bg_too_long = base.to_vec();
    bg_too_long.extend(["--ttl", "10m", "--break-glass", "--reason", "db down"]);
    let err = refused_as(&server, ALICE, &bg_too_long);
    assert!(err.contains("tasks.break_glass_max_ttl"), "{err}");
    let mut not_requester = base.to_vec();
    not_requester.extend(["--ttl", "5m"]);
    assert!(refused_as(&server, MALLORY, &not_requester).contains("requester"));

    let mut bg = base.to_vec();
    bg.extend(["--ttl", "5m", "--break-glass", "--reason", "db down"]);
    let id = ok_as(&server, ALICE, &bg).trim().to_owned();
    let task = json_as(&server, ALICE, &["task", "show", &id]);
    assert_eq!(
        task["state"], "active",
        "break-glass is active without approval"
    );
    assert_eq!(task["awaiting_review"], true);
    assert!(ok_as(&server, ALICE, &["task", "list"]).contains("BREAK-GLASS (awaiting review)"));
    assert!(
        server
            .cli_ok(&["audit", "export", "--ticket", "INC-9"])
            .contains("break_glass")
    );
    // Alice holds no approver role; root (an admin, so every role) opened
    // its own break-glass task below and may not review it either.
    let err = refused_as(&server, ALICE, &["task", "review", &id]);
    assert!(err.contains("approver role"), "{err}");
    // A second live task for the same identity is refused, naming the first.
    let mut overlap = base.to_vec();
    overlap.extend(["--ttl", "1m"]);
    assert!(refused_as(&server, CAROL, &overlap).contains(&id));
    let own: Vec<&str> = base
        .iter()
        .map(|a| {
            if *a == "spiffe://e2e.test/maint/bg" {
                "spiffe://e2e.test/maint/own"
            } else {
                a
            }
        })
        .chain(["--ttl", "1m", "--break-glass", "--reason", "self"])
        .collect();
    let own_id = server.cli_ok(&own).trim().to_owned();
    let out = server.cli(&["task", "review", &own_id]);
    assert_eq!(exit_code(&out), 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("require_distinct_approver"));
    let reviewed = json_as(
        &server,
        BOB,
        &["task", "review", &id, "--note", "justified"],
    );
    assert_eq!(reviewed["awaiting_review"], false);
    assert_eq!(
        reviewed["reviewed"]["principal"]
            .as_str()
            .unwrap()
            .split('(')
            .next(),
        Some(&*format!("uid:{BOB}"))
    );

    assert_eq!(
        json_as(&server, ALICE, &["task", "complete", &id])["state"],
        "completed"
    );

    // Deny with a reason; an approved-then-denied task is revoked.
    let mut plain = base.to_vec();
    plain.extend(["--ttl", "5m"]);
    let id2 = ok_as(&server, CAROL, &plain).trim().to_owned();
    assert!(refused_as(&server, BOB, &["task", "deny", &id2, "--reason", ""]).contains("reason"));
    let denied = json_as(
        &server,
        BOB,
        &["task", "deny", &id2, "--reason", "no change window"],
    );
    assert_eq!(denied["state"], "denied");
    let listed = json_as(&server, ALICE, &["task", "list", "--state", "denied"]);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert!(
        refused_as(&server, ALICE, &["task", "list", "--state", "sleeping"]).contains("accepted")
    );
}

#[test]
fn audit_verify_names_the_first_bad_record_in_a_tampered_copy() {
    let server = Server::start();
    for _ in 0..4 {
        server.cli_ok(&["token", "generate"]);
    }
    let live = server.cli_ok(&["audit", "verify"]);
    assert!(live.starts_with("audit log OK"), "{live}");
    let log = std::fs::read_to_string(server.data_dir().join("audit.log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() >= 4);
    let dir = tempfile::tempdir().unwrap();
    let check = |name: &str, content: String| -> String {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        let out = Command::new(bin("lanyard-server"))
            .args(["audit", "verify", "--file"])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(exit_code(&out), 1, "{name} must fail verification");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let join = |v: Vec<&str>| v.join("\n") + "\n";

    let mut edited = lines.clone();
    let changed = edited[1].replace("token_created", "token_used");
    edited[1] = &changed;
    let err = check("edited", join(edited));
    assert!(err.contains("line 2") && err.contains("edited"), "{err}");

    let mut dropped = lines.clone();
    dropped.remove(1);
    let err = check("dropped", join(dropped));
    assert!(err.contains("line 2") && err.contains("missing"), "{err}");

    let mut swapped = lines.clone();
    swapped.swap(1, 2);
    let err = check("swapped", join(swapped));
    assert!(err.contains("line 2") && err.contains("order"), "{err}");

    let mut inserted = lines.clone();
    inserted.insert(2, lines[1]);
    let err = check("inserted", join(inserted));
    assert!(err.contains("line 3"), "{err}");

    // The untouched copy verifies; with the head it must end at, a cut tail is caught.
    let copy = dir.path().join("copy");
    std::fs::write(&copy, &log).unwrap();
    let ok = Command::new(bin("lanyard-server"))
        .args(["--output", "json", "audit", "verify", "--file"])
        .arg(&copy)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    let head = format!(
        "{}:{}",
        report["records"],
        report["head_hash"].as_str().unwrap()
    );
    let truncated = dir.path().join("truncated");
    std::fs::write(&truncated, join(lines[..lines.len() - 1].to_vec())).unwrap();
    let out = Command::new(bin("lanyard-server"))
        .args(["audit", "verify", "--expect-head", &head, "--file"])
        .arg(&truncated)
        .output()
        .unwrap();
    assert_eq!(exit_code(&out), 1);
}
