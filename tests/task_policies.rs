//! End-to-end: task policies as code. Each example in deploy/policies/ runs
//! in a real server with operators as distinct Unix users (uid and primary
//! gid), their groups in the server's `[tasks] groups_file`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use lanyard_test_support as common;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use common::{operators::*, *};

const DAVE: u32 = 4004; // approver
const EVE: u32 = 4006; // approver outside the change board

const CHANGE_BOARD: u32 = 5001;
const ONCALL: u32 = 5002;
const VENDORS: u32 = 5003;

const GROUPS: &str = "change-board:x:5001:\noncall:x:5002:\nvendors:x:5003:\n";

/// An example policy from deploy/policies, in this test's trust domain.
fn example(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/policies")
        .join(name);
    std::fs::read_to_string(&path)
        .unwrap()
        .replace("example.org", "e2e.test")
}

struct PolicyServer {
    server: Server,
    policy: PathBuf,
}

/// A server whose task policy is `policy`; ALICE and CAROL request, BOB,
/// DAVE and EVE approve.
fn policy_server(policy: &str, time_zone: &str) -> PolicyServer {
    let mut policy_path = None;
    let server = operator_server(|dir| {
        let path = dir.join("policy.rego");
        std::fs::write(&path, policy).unwrap();
        let groups = dir.join("group");
        std::fs::write(&groups, GROUPS).unwrap();
        let config = format!(
            "[tasks]\nmax_ttl = \"12h\"\nbreak_glass_max_ttl = \"1h\"\n\
             requesters = [\"uid:{ALICE}\", \"uid:{CAROL}\"]\n\
             approvers = [\"uid:{BOB}\", \"uid:{DAVE}\", \"uid:{EVE}\"]\n\
             policy_file = {path:?}\ngroups_file = {groups:?}\ntime_zone = \"{time_zone}\"\n"
        );
        policy_path = Some(path);
        config
    });
    PolicyServer {
        server,
        policy: policy_path.unwrap(),
    }
}

async fn agent(server: &Server) -> String {
    let agent = attest(server, &server.token()).await.unwrap();
    lanyard_identity::check_x509_svid(&agent.chain[0])
        .unwrap()
        .spiffe_id
        .to_string()
}

fn request_args<'a>(ticket: &'a str, spiffe_id: &'a str, parent: &'a str) -> Vec<&'a str> {
    vec![
        "task",
        "request",
        "--ticket",
        ticket,
        "--purpose",
        "scheduled work",
        "--spiffe-id",
        spiffe_id,
        "--parent-id",
        parent,
        "--selector",
        "unix:uid:1000",
    ]
}

fn with<'a>(mut base: Vec<&'a str>, extra: &[&'a str]) -> Vec<&'a str> {
    base.extend_from_slice(extra);
    base
}

fn sha256_hex(text: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, text.as_bytes()))
}

fn audit(server: &Server, ticket: &str) -> Vec<serde_json::Value> {
    server
        .cli_ok(&["audit", "export", "--ticket", ticket])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn production_needs_two_distinct_change_board_approvers() {
    let text = example("production-two-approvers.rego");
    let PolicyServer { server, .. } = policy_server(&text, "+00:00");
    let parent = agent(&server).await;

    // policy show: the file and its hash.
    let shown = server.cli_json(&["policy", "show"]);
    assert_eq!(shown["sha256"], sha256_hex(&text));
    assert!(shown["source"].as_str().unwrap().contains("change-board"));

    let id = ok_member(
        &server,
        ALICE,
        ALICE,
        &with(
            request_args("CHG-2001", "spiffe://e2e.test/prod/db", &parent),
            &["--ttl", "30m"],
        ),
    )
    .trim()
    .to_owned();

    // An approver outside the change board does not count.
    let err = refused_member(&server, EVE, EVE, &["task", "approve", &id]);
    assert!(err.contains("change-board"), "{err}");
    // One change-board approval: the task stays requested, nothing is active.
    let one = json_member(&server, BOB, CHANGE_BOARD, &["task", "approve", &id]);
    assert_eq!(one["state"], "requested", "{one}");
    assert_eq!(one["approvals"].as_array().unwrap().len(), 1);
    assert_eq!(one["approvals_required"], 2);
    assert!(one["entry_id"].is_null());
    let text_show = ok_member(&server, ALICE, ALICE, &["task", "show", &id]);
    assert!(text_show.contains("1/2 (from change-board)"), "{text_show}");
    // The same approver twice is still one approval; the requester never counts.
    let err = refused_member(&server, BOB, CHANGE_BOARD, &["task", "approve", &id]);
    assert!(err.contains("already approved"), "{err}");
    let err = refused_member(&server, ALICE, CHANGE_BOARD, &["task", "approve", &id]);
    assert!(err.contains("approver"), "{err}");
    // The second distinct change-board approver activates it.
    let two = json_member(
        &server,
        DAVE,
        CHANGE_BOARD,
        &["task", "approve", &id, "--note", "CAB ok"],
    );
    assert_eq!(two["state"], "active", "{two}");
    assert_eq!(two["approvals"].as_array().unwrap().len(), 2);
    let history: Vec<String> = two["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["note"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        history.iter().any(|n| n == "approval 1 of 2"),
        "{history:?}"
    );
    assert!(
        history.iter().any(|n| n == "approval 2 of 2: CAB ok"),
        "{history:?}"
    );

    // A non-production task needs one approver.
    let other = ok_member(
        &server,
        ALICE,
        ALICE,
        &with(
            request_args("CHG-2002", "spiffe://e2e.test/staging/db", &parent),
            &["--ttl", "30m"],
        ),
    )
    .trim()
    .to_owned();
    let approved = json_member(&server, EVE, EVE, &["task", "approve", &other]);
    assert_eq!(approved["state"], "active");

    // Every step of the ticket names the policy's hash and the rule.
    let records = audit(&server, "CHG-2001");
    let steps: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["action"].as_str().unwrap().starts_with("task_"))
        .collect();
    assert!(steps.len() >= 4, "{records:?}");
    for r in &steps {
        assert_eq!(r["details"]["policy_sha256"], sha256_hex(&text), "{r}");
        assert_eq!(
            r["details"]["policy_rule"], "production_change_board",
            "{r}"
        );
    }
    let approvals: Vec<&str> = steps
        .iter()
        .filter(|r| r["action"] == "task_approved")
        .map(|r| r["details"]["approvals"].as_str().unwrap())
        .collect();
    assert_eq!(approvals, ["1/2", "2/2"]);
    // The approval refused outside the change board is on record too.
    for action in ["task_requested", "task_refused", "task_activated"] {
        assert!(steps.iter().any(|r| r["action"] == action), "{action}");
    }
}

/// Unix seconds of the next `weekday` (0 = Monday) at `hour`:`minute` on a
/// clock `offset_hours` from UTC, at least a day from now.
fn next_local(weekday: i64, hour: i64, minute: i64, offset_hours: i64) -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let local_day = (now + offset_hours * 3600).div_euclid(86_400);
    let today = (local_day + 3).rem_euclid(7);
    let day = local_day + 1 + (weekday - today - 1).rem_euclid(7);
    day * 86_400 + hour * 3600 + minute * 60 - offset_hours * 3600
}

fn rfc3339(unix: i64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix as u64)).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn maintenance_only_on_weekday_nights_in_the_configured_time_zone() {
    let PolicyServer { server, policy } =
        policy_server(&example("maintenance-window.rego"), "+02:00");
    let parent = agent(&server).await;
    // Tuesday 23:30 at +02:00 (21:30 UTC): inside; until 06:00 is 6h30m.
    let tuesday_night = rfc3339(next_local(1, 23, 30, 2));
    let id = ok_member(
        &server,
        ALICE,
        ALICE,
        &with(
            request_args("CHG-3001", "spiffe://e2e.test/maint/a", &parent),
            &["--ttl", "2h", "--starts-at", &tuesday_night],
        ),
    )
    .trim()
    .to_owned();
    let task = json_member(&server, ALICE, ALICE, &["task", "show", &id]);
    assert_eq!(task["policy_rule"], "maintenance_window");
    // Past 06:00 is refused, and so is a Wednesday noon and a Saturday night.
    let err = refused_member(
        &server,
        ALICE,
        ALICE,
        &with(
            request_args("CHG-3002", "spiffe://e2e.test/maint/b", &parent),
            &["--ttl", "7h", "--starts-at", &tuesday_night],
        ),
    );
    assert!(err.contains("caps this task at 6h 30m"), "{err}");
    let wednesday_noon = rfc3339(next_local(2, 12, 0, 2));
    let err = refused_member(
        &server,
        ALICE,
        ALICE,
        &with(
            request_args("CHG-3003", "spiffe://e2e.test/maint/c", &parent),
            &["--ttl", "1h", "--starts-at", &wednesday_noon],
        ),
    );
    assert!(
        err.contains("maintenance_window") && err.contains("wednesday at hour 12"),
        "{err}"
    );
    let saturday_night = rfc3339(next_local(5, 23, 0, 2));
    let err = refused_member(
        &server,
        ALICE,
        ALICE,
        &with(
            request_args("CHG-3004", "spiffe://e2e.test/maint/d", &parent),
            &["--ttl", "1h", "--starts-at", &saturday_night],
        ),
    );
    assert!(err.contains("saturday"), "{err}");
    // The refusal is audited with the policy's evidence.
    let refused = audit(&server, "CHG-3003");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["action"], "task_refused");
    assert_eq!(refused[0]["details"]["policy_rule"], "maintenance_window");
    assert_eq!(
        refused[0]["details"]["policy_sha256"]
            .as_str()
            .unwrap()
            .len(),
        64
    );

    // policy test dry-runs an input document, against the server's policy
    // or a file, and records nothing.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("request.json");
    std::fs::write(
        &input,
        r#"{"action": "request", "ttl_seconds": 3600,
            "start": {"hour": 2, "minute": 0, "weekday": "monday", "time_zone": "+02:00"}}"#,
    )
    .unwrap();
    let live = server.cli_json(&["policy", "test", "--input", input.to_str().unwrap()]);
    assert_eq!(live["allow"], true, "{live}");
    assert_eq!(live["max_ttl_seconds"], 4 * 3600);
    let out = Command::new(bin("lanyard-server"))
        .args(["policy", "test", "--input"])
        .arg(&input)
        .arg("--policy")
        .arg(&policy)
        .output()
        .unwrap();
    let offline = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && offline.starts_with("allow")
            && offline.contains("maintenance_window"),
        "{offline}"
    );
    assert_eq!(audit(&server, "CHG-3001").len(), 1, "only the request");
}

#[tokio::test(flavor = "multi_thread")]
async fn vendor_tasks_last_an_hour_towards_their_tickets_audiences() {
    let PolicyServer { server, .. } = policy_server(&example("vendor.rego"), "+00:00");
    let parent = agent(&server).await;
    let base = |id: &'static str| request_args("VND-1001", id, &parent);
    let ok = ok_member(
        &server,
        CAROL,
        VENDORS,
        &with(
            base("spiffe://e2e.test/vendor/a"),
            &["--ttl", "45m", "--audience", "spiffe://e2e.test/billing/db"],
        ),
    );
    assert!(ok.trim().starts_with("task-"));
    let err = refused_member(
        &server,
        CAROL,
        VENDORS,
        &with(
            base("spiffe://e2e.test/vendor/b"),
            &["--ttl", "2h", "--audience", "spiffe://e2e.test/billing/db"],
        ),
    );
    assert!(
        err.contains("vendor_one_hour") && err.contains("1h"),
        "{err}"
    );
    let err = refused_member(
        &server,
        CAROL,
        VENDORS,
        &with(
            base("spiffe://e2e.test/vendor/c"),
            &["--ttl", "30m", "--audience", "spiffe://e2e.test/payroll/db"],
        ),
    );
    assert!(
        err.contains("vendor_audiences") && err.contains("spiffe://e2e.test/payroll/db"),
        "{err}"
    );
    let err = refused_member(
        &server,
        CAROL,
        VENDORS,
        &with(base("spiffe://e2e.test/vendor/d"), &["--ttl", "30m"]),
    );
    assert!(err.contains("must name their audiences"), "{err}");
    // The same request by an operator outside "vendors" is not restricted.
    let own = ok_member(
        &server,
        ALICE,
        ALICE,
        &with(
            base("spiffe://e2e.test/vendor/e"),
            &["--ttl", "2h", "--audience", "spiffe://e2e.test/payroll/db"],
        ),
    );
    assert!(own.trim().starts_with("task-"));
}

#[tokio::test(flavor = "multi_thread")]
async fn break_glass_only_for_on_call_and_sighup_reloads_the_policy() {
    let text = example("break-glass.rego");
    let PolicyServer { server, policy } = policy_server(&text, "+00:00");
    let parent = agent(&server).await;
    let bg = |id: &'static str, ttl: &'static str| {
        with(
            request_args("INC-77", id, &parent),
            &["--ttl", ttl, "--break-glass", "--reason", "db down"],
        )
    };
    let id = ok_member(&server, ALICE, ONCALL, &bg("spiffe://e2e.test/bg/a", "20m"))
        .trim()
        .to_owned();
    let task = json_member(&server, ALICE, ONCALL, &["task", "show", &id]);
    assert_eq!(task["state"], "active");
    assert_eq!(task["policy_rule"], "break_glass_on_call");
    let err = refused_member(&server, ALICE, ONCALL, &bg("spiffe://e2e.test/bg/b", "45m"));
    assert!(err.contains("30m"), "{err}");
    let err = refused_member(&server, CAROL, CAROL, &bg("spiffe://e2e.test/bg/c", "10m"));
    assert!(
        err.contains("break_glass_on_call") && err.contains("oncall"),
        "{err}"
    );
    let steps = audit(&server, "INC-77");
    for action in [
        "task_requested",
        "break_glass",
        "task_activated",
        "task_refused",
    ] {
        let r = steps.iter().find(|r| r["action"] == action).unwrap();
        assert_eq!(r["details"]["policy_sha256"], sha256_hex(&text), "{r}");
        assert_eq!(r["details"]["policy_rule"], "break_glass_on_call", "{r}");
    }

    // SIGHUP with a broken file keeps the policy in force and says so.
    let hup = || server.signal("HUP");
    std::fs::write(&policy, "package lanyard.tasks\n\ndecision := {\n").unwrap();
    hup();
    wait_until("the failed reload", &server, || {
        server.log().contains("task policy reload failed")
    });
    assert!(server.log().contains("policy.rego:"), "{}", server.log());
    assert_eq!(
        server.cli_json(&["policy", "show"])["sha256"],
        sha256_hex(&text)
    );
    // A good file is taken.
    let next = example("production-two-approvers.rego");
    std::fs::write(&policy, &next).unwrap();
    hup();
    wait_until("the reload", &server, || {
        server.cli_json(&["policy", "show"])["sha256"] == sha256_hex(&next)
    });
    ok_member(&server, CAROL, CAROL, &bg("spiffe://e2e.test/bg/c", "10m"));
}

#[test]
fn a_bad_policy_stops_the_server_and_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.rego");
    std::fs::write(
        &policy,
        "package lanyard.tasks\n\nimport rego.v1\n\ndecision := {\"allow\": true} if {\n    input.x ==\n}\n",
    )
    .unwrap();
    let config = dir.path().join("server.toml");
    std::fs::write(&config, format!("[tasks]\npolicy_file = {policy:?}\n")).unwrap();
    let out = Command::new(bin("lanyard-server"))
        .args(["run", "--trust-domain", TD, "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--bind-address", &free_port().to_string()])
        .args(["--http-address", &free_port().to_string()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tasks.policy_file") && err.contains("policy.rego:7"),
        "{err}"
    );
    // The wrong package is named too.
    std::fs::write(&policy, "package other\n\nx := 1\n").unwrap();
    let out = Command::new(bin("lanyard-server"))
        .args(["policy", "test", "--input"])
        .arg(&config)
        .arg("--policy")
        .arg(&policy)
        .output()
        .unwrap();
    assert_eq!(exit_code(&out), 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("package lanyard.tasks"));
}
