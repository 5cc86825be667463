//! End to end: an unmodified gRPC C-core client (Python grpcio) on the
//! agent's Workload API socket and on the server's admin socket. It sends
//! the percent-encoded socket path as HTTP/2 `:authority`, which h2 alone
//! refuses (issue #10); grpc-java and grpc-swift send the raw path, which
//! grpcio sends when told to with `grpc.default_authority`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use lanyard_test_support as common;

use std::time::{Duration, Instant};

use common::{
    Server, TD,
    agent::{Agent, register_self},
    python::{grpcio_admin_entries, grpcio_call, grpcio_first_bytes},
};

const FETCH_X509: &str = "/SpiffeWorkloadAPI/FetchX509SVID";
const HEADER: &str = "workload.spiffe.io=true";

fn code(answer: &serde_json::Value) -> &str {
    answer["code"].as_str().unwrap()
}

fn served(answer: &serde_json::Value, needle: &str) -> bool {
    code(answer) == "OK"
        && answer["responses"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.as_str().unwrap().contains(needle))
}

/// What the C core puts in `:authority` for a `unix:/abs/path` target, seen
/// on the wire: the path without its leading `/`, percent-encoded, as a
/// plain literal (`tmp%2F.tmpAbC%2Fapi.sock`).
fn percent_encoded(path: &std::path::Path) -> String {
    let path = path.display().to_string();
    path.trim_start_matches('/').replace('/', "%2F")
}

#[test]
fn grpcio_sends_the_percent_encoded_socket_path_as_authority() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("capture.sock");
    let sent = grpcio_first_bytes(&socket, &format!("unix:{}", socket.display()), FETCH_X509);
    let needle = percent_encoded(&socket);
    assert!(
        sent.windows(needle.len()).any(|w| w == needle.as_bytes()),
        "grpcio did not send {needle}: {}",
        sent.escape_ascii()
    );
}

#[test]
fn grpcio_fetches_its_svid_with_the_socket_path_as_authority() {
    let server = Server::start();
    let agent = Agent::start(&server);
    register_self(&server, &agent, "e2e/grpcio");
    let id = format!("spiffe://{TD}/e2e/grpcio");
    let target = agent.endpoint();

    // grpcio's own authority: the percent-encoded socket path. Polled: the
    // entry reaches the agent shortly after it is created.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = grpcio_call(&target, FETCH_X509, "stream", &["--header", HEADER]);
        if served(&answer, &id) {
            eprintln!("grpcio {} served {id}", answer["grpc_version"]);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no SVID for grpcio: {answer}\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The raw path, as grpc-java and grpc-swift send it.
    let raw = agent.socket.display().to_string();
    let answer = grpcio_call(
        &target,
        FETCH_X509,
        "stream",
        &["--header", HEADER, "--authority", &raw],
    );
    assert!(
        served(&answer, &id),
        "raw socket path as authority: {answer}"
    );

    // The security header is still required.
    let answer = grpcio_call(&target, FETCH_X509, "stream", &[]);
    assert_eq!(code(&answer), "INVALID_ARGUMENT", "{answer}");
    assert!(
        answer["responses"].as_array().unwrap().is_empty(),
        "{answer}"
    );

    // An invalid authority that is not a socket path is still refused
    // (h2's RST_STREAM PROTOCOL_ERROR).
    let answer = grpcio_call(
        &target,
        FETCH_X509,
        "stream",
        &["--header", HEADER, "--authority", "no such host"],
    );
    assert_eq!(code(&answer), "INTERNAL", "{answer}");

    // Oversized metadata is refused exactly as with a valid authority: h2
    // answers 431 (its header list limit is 16 KiB).
    let padded = |authority: Option<&str>| {
        let mut args = vec!["--header", HEADER, "--pad-metadata", "40000"];
        if let Some(a) = authority {
            args.extend(["--authority", a]);
        }
        let answer = grpcio_call(&target, FETCH_X509, "stream", &args);
        assert!(!served(&answer, &id), "oversized metadata served: {answer}");
        (code(&answer).to_owned(), answer["details"].to_string())
    };
    let with_localhost = padded(Some("localhost"));
    assert!(with_localhost.1.contains("431"), "{with_localhost:?}");
    assert_eq!(padded(None), with_localhost);
    assert_eq!(padded(Some(&raw)), with_localhost);
}

#[test]
fn grpcio_calls_the_admin_socket_with_the_socket_path_as_authority() {
    let server = Server::start();
    let target = format!("unix:{}", server.socket.display());
    let answer = grpcio_call(&target, "/lanyard.admin.v1.Admin/Health", "unary", &[]);
    assert!(
        served(&answer, TD),
        "Admin/Health: {answer}\n{}",
        server.log()
    );

    let raw = server.socket.display().to_string();
    let answer = grpcio_call(
        &target,
        "/lanyard.admin.v1.Admin/Health",
        "unary",
        &["--authority", &raw],
    );
    assert!(served(&answer, TD), "Admin/Health, raw path: {answer}");
}

/// A client that generated its code from admin.proto (and the shared
/// lanyard/types/v1/entry.proto it imports) reads entries as the server
/// wrote them: grpcio, with message classes built from the descriptors
/// `lanyard_proto::FILE_DESCRIPTOR_SET` publishes.
#[test]
fn grpcio_lists_entries_with_classes_from_the_published_descriptors() {
    let server = Server::start();
    let id = format!("spiffe://{TD}/e2e/python-listed");
    let parent = format!("spiffe://{TD}/lanyard/agent/join_token/py");
    server.cli_ok(&[
        "entry",
        "create",
        "--spiffe-id",
        &id,
        "--parent-id",
        &parent,
        "--selector",
        "unix:uid:1000",
        "--selector",
        "unix:path:/usr/bin/python3",
        "--dns-name",
        "py.internal",
        "--hint",
        "scripts",
        "--x509-svid-ttl",
        "15m",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let descriptors = dir.path().join("lanyard.pb");
    std::fs::write(&descriptors, lanyard_proto::FILE_DESCRIPTOR_SET).unwrap();

    let answer = grpcio_admin_entries(&format!("unix:{}", server.socket.display()), &descriptors);
    assert_eq!(code(&answer), "OK", "{answer}\n{}", server.log());
    assert_eq!(answer["entry_type"], "lanyard.types.v1.Entry");
    let entries = answer["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{answer}");
    let entry = &entries[0];
    assert_eq!(entry["spiffe_id"], id.as_str());
    assert_eq!(entry["parent_id"], parent.as_str());
    assert_eq!(
        entry["selectors"],
        serde_json::json!(["unix:uid:1000", "unix:path:/usr/bin/python3"])
    );
    assert_eq!(entry["dns_names"], serde_json::json!(["py.internal"]));
    assert_eq!(entry["hint"], "scripts");
    assert_eq!(entry["x509_svid_ttl_seconds"], 900);
}
