//! End-to-end: task notifications reach a real local webhook server,
//! HMAC-signed, retried after a failure, and never hold up a decision.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use lanyard_test_support as common;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    sync::{Arc, Mutex},
};

use common::{operators::*, *};

const SECRET: &str = "a-webhook-secret-of-some-length";

/// Every POST received: its signature header and body. The first
/// `fail_first` requests get 503.
#[derive(Default)]
struct Hook {
    received: Vec<(String, Vec<u8>)>,
    fail_first: usize,
    seen: usize,
}

fn webhook(fail_first: usize) -> (u16, Arc<Mutex<Hook>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hook = Arc::new(Mutex::new(Hook {
        fail_first,
        ..Hook::default()
    }));
    let shared = hook.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let (mut length, mut signature) = (0, String::new());
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        length = v.trim().parse().unwrap();
                    } else if k.eq_ignore_ascii_case("x-lanyard-signature") {
                        signature = v.trim().to_owned();
                    }
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let status = {
                let mut h = shared.lock().unwrap();
                h.seen += 1;
                if h.seen <= h.fail_first {
                    "503 Service Unavailable"
                } else {
                    h.received.push((signature, body));
                    "204 No Content"
                }
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    (port, hook)
}

fn notifying_server(port: u16, retries: u32) -> Server {
    operator_server(|dir| {
        let secret = dir.join("webhook.secret");
        std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
        format!(
            "[tasks]\nrequesters = [\"uid:{ALICE}\"]\napprovers = [\"uid:{BOB}\"]\n\
             notify_url = \"http://127.0.0.1:{port}/hook\"\nnotify_secret_file = {secret:?}\nnotify_retries = {retries}\n"
        )
    })
}

fn request_args(parent: &str, id: &str) -> Vec<String> {
    [
        "task",
        "request",
        "--ticket",
        "CHG-4242",
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
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_step_is_posted_signed_and_a_failure_is_retried() {
    // The first post fails: it is retried and arrives.
    let (port, hook) = webhook(1);
    let server = notifying_server(port, 3);
    let agent = attest(&server, &server.token()).await.unwrap();
    let parent = lanyard_identity::check_x509_svid(&agent.chain[0])
        .unwrap()
        .spiffe_id
        .to_string();
    let args = request_args(&parent, "spiffe://e2e.test/n/a");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let id = ok_as(&server, ALICE, &args).trim().to_owned();
    ok_as(&server, BOB, &["task", "approve", &id]);
    ok_as(&server, ALICE, &["task", "complete", &id]);
    let events = || -> Vec<String> {
        hook.lock()
            .unwrap()
            .received
            .iter()
            .map(|(_, body)| {
                let v: serde_json::Value = serde_json::from_slice(body).unwrap();
                v["event"].as_str().unwrap().to_owned()
            })
            .collect()
    };
    wait_until("four notifications", &server, || events().len() == 4);
    assert_eq!(
        events(),
        ["requested", "approved", "activated", "completed"]
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    for (signature, body) in &hook.lock().unwrap().received {
        let hex_sig = signature.strip_prefix("sha256=").unwrap();
        ring::hmac::verify(&key, body, &hex::decode(hex_sig).unwrap()).expect("the HMAC verifies");
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(v["task_id"], id.as_str());
        assert_eq!(v["ticket"], "CHG-4242");
    }
    assert!(server.log().contains("retrying"), "{}", server.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_that_is_down_changes_no_decision_and_is_counted() {
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let server = notifying_server(port, 1);
    let agent = attest(&server, &server.token()).await.unwrap();
    let parent = lanyard_identity::check_x509_svid(&agent.chain[0])
        .unwrap()
        .spiffe_id
        .to_string();
    let args = request_args(&parent, "spiffe://e2e.test/n/b");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let id = ok_as(&server, ALICE, &args).trim().to_owned();
    assert_eq!(
        json_as(&server, BOB, &["task", "approve", &id])["state"],
        "active"
    );
    wait_until("the failures in /metrics", &server, || {
        let (_, body) = http_get(server.http_addr, "/metrics");
        String::from_utf8_lossy(&body)
            .lines()
            .find(|l| l.starts_with("lanyard_server_task_notifications_failed_total"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(|n| n >= 3.0)
    });
    assert!(server.log().contains("task notification failed; giving up"));
}
