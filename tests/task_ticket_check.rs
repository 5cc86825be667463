//! End-to-end: the ticket check. A real HTTP server started by the test
//! plays the change system; a real lanyard-server asks it about each task's
//! ticket at request and again at activation, and fails closed.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use lanyard_test_support as common;

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    sync::{Arc, Mutex},
    time::Duration,
};

use common::{operators::*, *};

/// What the change system says about each ticket, and what it was asked.
#[derive(Default)]
struct Tickets {
    state: HashMap<String, &'static str>,
    asked: Vec<serde_json::Value>,
}

/// A one-request-per-connection HTTP/1.1 server answering POST /check.
fn ticket_server() -> (u16, Arc<Mutex<Tickets>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let tickets = Arc::new(Mutex::new(Tickets::default()));
    let shared = tickets.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let tickets = shared.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let line = line.trim_end();
                    if line.is_empty() {
                        break;
                    }
                    if let Some((k, v)) = line.split_once(':')
                        && k.eq_ignore_ascii_case("content-length")
                    {
                        length = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let asked: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let ticket = asked["ticket"].as_str().unwrap().to_owned();
                let state = {
                    let mut t = tickets.lock().unwrap();
                    t.asked.push(asked);
                    t.state.get(&ticket).copied().unwrap_or("unknown")
                };
                let (status, reply) = match state {
                    "open" => (
                        "200 OK",
                        r#"{"allow": true, "reason": "open and approved"}"#,
                    ),
                    "closed" => ("200 OK", r#"{"allow": false, "reason": "closed"}"#),
                    "slow" => {
                        std::thread::sleep(Duration::from_secs(3));
                        ("200 OK", r#"{"allow": true, "reason": "too late"}"#)
                    }
                    _ => ("404 Not Found", r#"{"error": "no such ticket"}"#),
                };
                let mut conn = conn;
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                    reply.len()
                );
            });
        }
    });
    (port, tickets)
}

fn checked_server(port: u16) -> Server {
    operator_server(|_| {
        format!(
            "[tasks]\nrequesters = [\"uid:{ALICE}\"]\napprovers = [\"uid:{BOB}\"]\n\
             ticket_check_url = \"http://127.0.0.1:{port}/check\"\nticket_check_timeout = \"1s\"\n"
        )
    })
}

fn request(server: &Server, ticket: &str, id: &str, parent: &str) -> std::process::Output {
    as_user(
        server,
        ALICE,
        &[
            "task",
            "request",
            "--ticket",
            ticket,
            "--purpose",
            "work",
            "--spiffe-id",
            id,
            "--parent-id",
            parent,
            "--selector",
            "unix:uid:1000",
            "--ttl",
            "10m",
        ],
    )
}

fn audit(server: &Server, ticket: &str) -> Vec<serde_json::Value> {
    server
        .cli_ok(&["audit", "export", "--ticket", ticket])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ticket_is_asked_at_request_and_activation_and_refusals_fail_closed() {
    let (port, tickets) = ticket_server();
    {
        let mut t = tickets.lock().unwrap();
        t.state.insert("CHG-OPEN".into(), "open");
        t.state.insert("CHG-CLOSED".into(), "closed");
        t.state.insert("CHG-SLOW".into(), "slow");
        t.state.insert("CHG-LATER".into(), "open");
    }
    let server = checked_server(port);
    let agent = attest(&server, &server.token()).await.unwrap();
    let parent = lanyard_identity::check_x509_svid(&agent.chain[0])
        .unwrap()
        .spiffe_id
        .to_string();

    // Open: asked at request and at activation; both answers on record.
    let out = request(&server, "CHG-OPEN", "spiffe://e2e.test/t/open", &parent);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(
        json_as(&server, BOB, &["task", "approve", &id])["state"],
        "active"
    );
    let steps: Vec<String> = tickets
        .lock()
        .unwrap()
        .asked
        .iter()
        .filter(|a| a["ticket"] == "CHG-OPEN")
        .map(|a| {
            assert_eq!(a["task_id"], id.as_str());
            a["step"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(steps, ["request", "activation"]);
    let records = audit(&server, "CHG-OPEN");
    for action in ["task_requested", "task_activated"] {
        let r = records.iter().find(|r| r["action"] == action).unwrap();
        let answer = r["details"]["ticket_check"].as_str().unwrap();
        assert!(
            answer.starts_with("HTTP 200") && answer.contains("open and approved"),
            "{r}"
        );
    }

    // Closed, unknown (404) and too slow are refused, each on record.
    for (ticket, expect) in [
        ("CHG-CLOSED", "closed"),
        ("CHG-NONE", "HTTP 404"),
        ("CHG-SLOW", "no answer within 1s"),
    ] {
        let out = request(&server, ticket, "spiffe://e2e.test/t/refused", &parent);
        assert_eq!(exit_code(&out), 1, "{ticket} must be refused");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect) && err.contains(ticket), "{err}");
        let records = audit(&server, ticket);
        assert_eq!(records.len(), 1, "{records:?}");
        assert_eq!(records[0]["action"], "task_refused");
        assert!(
            records[0]["details"]["ticket_check"]
                .as_str()
                .unwrap()
                .contains(expect),
            "{}",
            records[0]
        );
    }

    // Open at request, closed by activation: revoked before anything is issued.
    let out = request(&server, "CHG-LATER", "spiffe://e2e.test/t/later", &parent);
    assert!(out.status.success());
    let later = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    tickets
        .lock()
        .unwrap()
        .state
        .insert("CHG-LATER".into(), "closed");
    let approved = json_as(&server, BOB, &["task", "approve", &later]);
    assert_eq!(approved["state"], "revoked", "{approved}");
    assert!(approved["entry_id"].is_null());
    let note = approved["history"].as_array().unwrap().last().unwrap()["note"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        note.contains("ticket check at activation") && note.contains("closed"),
        "{note}"
    );
    let revoked = audit(&server, "CHG-LATER");
    let r = revoked
        .iter()
        .find(|r| r["action"] == "task_revoked")
        .unwrap();
    assert!(
        r["details"]["ticket_check"]
            .as_str()
            .unwrap()
            .contains("closed")
    );
}
