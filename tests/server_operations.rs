//! End-to-end: the operator CLI, durability across SIGKILL, graceful
//! shutdown, health endpoints, and refusing bad config or a damaged store.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use lanyard_test_support as common;

use std::{
    io::{Read, Write},
    os::unix::fs::PermissionsExt,
    process::Command,
};

use common::*;
use lanyard_ca::SvidKey;
use lanyard_proto::node::v1::{
    BatchNewX509svidRequest, NewX509svidParams, batch_new_x509svid_result::Result as R,
};

fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn entry_crud_with_json_output_and_clear_errors() {
    let server = Server::start();
    let parent = format!("spiffe://{TD}/lanyard/agent/join_token/x");
    let id = server
        .cli_ok(&[
            "entry",
            "create",
            "--spiffe-id",
            &format!("spiffe://{TD}/api"),
            "--parent-id",
            &parent,
            "--selector",
            "unix:uid:1000",
            "--selector",
            "unix:path:/usr/bin/api",
            "--hint",
            "api",
            "--dns-name",
            "api.internal",
            "--x509-svid-ttl",
            "15m",
        ])
        .trim()
        .to_owned();
    assert_eq!(id.len(), 36, "prints the entry ID (a UUID): {id}");

    let shown = server.cli_json(&["entry", "show", &id]);
    assert_eq!(shown["id"], id.as_str());
    assert_eq!(shown["spiffe_id"], format!("spiffe://{TD}/api").as_str());
    assert_eq!(shown["parent_id"], parent.as_str());
    assert_eq!(
        shown["selectors"],
        serde_json::json!(["unix:uid:1000", "unix:path:/usr/bin/api"])
    );
    assert_eq!(shown["x509_svid_ttl"], 900);
    assert_eq!(shown["dns_names"][0], "api.internal");

    let updated = server.cli_json(&[
        "entry",
        "update",
        &id,
        "--hint",
        "changed",
        "--selector",
        "unix:uid:1001",
    ]);
    assert_eq!(updated["hint"], "changed");
    assert_eq!(updated["selectors"], serde_json::json!(["unix:uid:1001"]));
    assert_eq!(updated["revision"], 1);

    let listed = server.cli_json(&["entry", "list", "--selector", "unix:uid:1001"]);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(
        server.cli_json(&["entry", "list", "--selector", "unix:uid:1000"]),
        serde_json::json!([])
    );
    let table = server.cli_ok(&["entry", "list"]);
    assert!(table.starts_with("ID") && table.contains(&id), "{table}");

    // The same registration twice is refused.
    let dup = server.cli(&[
        "entry",
        "create",
        "--spiffe-id",
        &format!("spiffe://{TD}/api"),
        "--parent-id",
        &parent,
        "--selector",
        "unix:uid:1001",
    ]);
    assert_eq!(exit_code(&dup), 1);

    server.cli_ok(&["entry", "delete", &id]);
    let gone = server.cli(&["entry", "show", &id]);
    assert_eq!(exit_code(&gone), 1);
    assert!(String::from_utf8_lossy(&gone.stderr).contains("no entry"));

    // Bad input: one line on stderr naming the problem, exit 1.
    for (args, needle) in [
        (
            vec![
                "entry",
                "create",
                "--spiffe-id",
                "spiffe://Bad.Domain/x",
                "--parent-id",
                &parent,
                "--selector",
                "unix:uid:1",
            ],
            "lower-case",
        ),
        (
            vec![
                "entry",
                "create",
                "--spiffe-id",
                "spiffe://e2e.test/a/../b",
                "--parent-id",
                &parent,
                "--selector",
                "unix:uid:1",
            ],
            "\"..\" segment",
        ),
        (
            vec![
                "entry",
                "create",
                "--spiffe-id",
                "spiffe://e2e.test/x",
                "--parent-id",
                &parent,
                "--selector",
                "unix:uid:abc",
            ],
            "unix:uid",
        ),
        (
            vec![
                "entry",
                "create",
                "--spiffe-id",
                "spiffe://other.org/x",
                "--parent-id",
                &parent,
                "--selector",
                "unix:uid:1",
            ],
            "trust domain",
        ),
        (
            vec!["entry", "show", "not-a-uuid"],
            "expected a hyphenated uuid",
        ),
    ] {
        let out = server.cli(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(exit_code(&out), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("error: ") && err.to_lowercase().contains(needle),
            "{args:?}: {err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    }
    // Usage errors exit 2.
    assert_eq!(
        exit_code(&server.cli(&["entry", "create", "--spiffe-id", "spiffe://e2e.test/x"])),
        2
    );
    assert_eq!(
        exit_code(&server.cli(&[
            "entry",
            "create",
            "--spiffe-id",
            "x",
            "--parent-id",
            "y",
            "--selector",
            "unix:uid:1",
            "--x509-svid-ttl",
            "soon"
        ])),
        2
    );
}

#[test]
fn bundle_token_and_health() {
    let server = Server::start();
    let pem = server.cli_ok(&["bundle", "show"]);
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    let jwks = server.cli_json(&["bundle", "show", "--format", "spiffe"]);
    assert_eq!(jwks["keys"][0]["use"], "x509-svid");
    assert_eq!(jwks["keys"][0]["kty"], "EC");
    assert_eq!(jwks["keys"][0]["crv"], "P-256");
    let jwt = &jwks["keys"][1];
    assert_eq!(jwt["use"], "jwt-svid");
    assert_eq!(jwt["alg"], "ES256");
    assert!(jwt["kid"].as_str().is_some_and(|k| !k.is_empty()), "{jwt}");

    let t = server.cli_json(&[
        "token",
        "generate",
        "--ttl",
        "5m",
        "--spiffe-id",
        &format!("spiffe://{TD}/lanyard/agent/join_token/node-a"),
    ]);
    assert_eq!(t["token"].as_str().unwrap().len(), 64);
    assert_eq!(
        t["agent_id"],
        format!("spiffe://{TD}/lanyard/agent/join_token/node-a").as_str()
    );

    assert!(http_get(server.http_addr, "/health/live").starts_with("HTTP/1.1 200"));
    assert!(http_get(server.http_addr, "/health/ready").starts_with("HTTP/1.1 200"));
    assert_eq!(server.cli_json(&["healthcheck"])["ready"], true);

    let mode = std::fs::metadata(&server.socket)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "admin socket must be 0600");
    let data_mode = std::fs::metadata(server.data_dir())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(data_mode, 0o700);
    for key in std::fs::read_dir(server.data_dir().join("ca")).unwrap() {
        let path = key.unwrap().path();
        if path.extension().is_some_and(|e| e == "key") {
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", path.display());
        }
    }
    // No key material in the log.
    assert!(!server.log().contains("PRIVATE KEY"));

    // Unreachable server: clear error, exit 1.
    let out = Command::new(bin("lanyard-server"))
        .args(["--socket", "/nonexistent/admin.sock", "healthcheck"])
        .output()
        .unwrap();
    assert_eq!(exit_code(&out), 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach lanyard-server"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_svid_returned_before_sigkill_is_on_record_after_restart() {
    let mut server = Server::start();
    let agent = attest(&server, &server.token()).await.unwrap();
    let agent_id = lanyard_identity::check_x509_svid(&agent.chain[0])
        .unwrap()
        .spiffe_id
        .to_string();
    let entry = server
        .cli_ok(&[
            "entry",
            "create",
            "--spiffe-id",
            &format!("spiffe://{TD}/durable"),
            "--parent-id",
            &agent_id,
            "--selector",
            "unix:uid:7",
        ])
        .trim()
        .to_owned();
    let mut client = node_channel(&server, Some(&agent)).await.unwrap();
    let resp = client
        .batch_new_x509svid(BatchNewX509svidRequest {
            params: vec![NewX509svidParams {
                entry_id: entry,
                csr: SvidKey::generate().unwrap().csr_der().unwrap(),
            }],
        })
        .await
        .unwrap()
        .into_inner();
    let Some(R::Svid(svid)) = &resp.results[0].result else {
        panic!()
    };
    let bundle_before = server.bundle();
    server.restart(); // SIGKILL, then start on the same data dir
    let serials: Vec<String> = server
        .cli_json(&["svid", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["serial"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        serials.contains(&svid.serial),
        "{} missing from {serials:?}",
        svid.serial
    );
    // Same CA after restart: the bundle did not change.
    assert_eq!(server.bundle(), bundle_before);
    // The agent's standing survived too.
    assert_eq!(
        server
            .cli_json(&["agent", "list"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn sigterm_shuts_down_cleanly() {
    let mut server = Server::start();
    let status = server.terminate();
    assert!(status.success(), "exit status {status}");
    assert!(!server.socket.exists(), "admin socket removed on shutdown");
    assert!(server.log().contains("lanyard-server stopped"));
}

#[test]
fn bad_config_is_refused_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("server.toml");
    std::fs::write(
        &config,
        "trust_domain = \"a.org\"\nbind_adress = \"127.0.0.1:1\"\n",
    )
    .unwrap();
    let out = Command::new(bin("lanyard-server"))
        .args(["run", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(exit_code(&out), 1);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bind_adress"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = Command::new(bin("lanyard-server"))
        .args([
            "run",
            "--trust-domain",
            "a.org",
            "--ca-ttl",
            "1h",
            "--default-x509-svid-ttl",
            "2h",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(exit_code(&out), 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("default_x509_svid_ttl"));

    // A bad x509pop bundle is a start-up error naming the key, not a
    // surprise for the first node that attests.
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let config = dir.path().join("x509pop.toml");
    std::fs::write(&config, format!("[x509pop]\nca_bundle_path = {empty:?}\n")).unwrap();
    let out = Command::new(bin("lanyard-server"))
        .args(["run", "--trust-domain", "a.org", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("x"))
        .output()
        .unwrap();
    assert_eq!(exit_code(&out), 1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("x509pop.ca_bundle_path") && err.contains("no certificate"),
        "{err}"
    );
    assert!(
        !dir.path().join("x").join("store").exists(),
        "nothing created on a config error"
    );
}

#[test]
fn a_damaged_store_is_refused_not_replaced() {
    let mut server = Server::start();
    server.cli_ok(&["token", "generate"]);
    server.kill();
    // Damage the store: wipe every file sled keeps, leaving the directory.
    let store = server.data_dir().join("store");
    for f in std::fs::read_dir(&store).unwrap() {
        let path = f.unwrap().path();
        if path.is_file() {
            std::fs::write(&path, b"garbage").unwrap();
        }
    }
    let out = server.run_command().output().unwrap();
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("datastore") || err.contains("store"), "{err}");
}

/// `datastore export`, then `import` into a fresh data dir: a server started
/// there serves the same entries, bundle and CRL.
#[tokio::test(flavor = "multi_thread")]
async fn export_then_import_restores_entries_bundle_and_crl() {
    let server = Server::start();
    let agent = attest(&server, &server.token()).await.unwrap();
    let agent_id = lanyard_identity::check_x509_svid(&agent.chain[0])
        .unwrap()
        .spiffe_id
        .to_string();
    let entry = server
        .cli_ok(&[
            "entry",
            "create",
            "--spiffe-id",
            &format!("spiffe://{TD}/kept"),
            "--parent-id",
            &agent_id,
            "--selector",
            "unix:uid:7",
        ])
        .trim()
        .to_owned();
    let mut client = node_channel(&server, Some(&agent)).await.unwrap();
    let resp = client
        .batch_new_x509svid(BatchNewX509svidRequest {
            params: vec![NewX509svidParams {
                entry_id: entry.clone(),
                csr: SvidKey::generate().unwrap().csr_der().unwrap(),
            }],
        })
        .await
        .unwrap()
        .into_inner();
    let Some(R::Svid(svid)) = &resp.results[0].result else {
        panic!()
    };
    server.cli_ok(&["svid", "revoke", "--serial", &svid.serial]);

    let backup = server.dir.path().join("backup.json");
    server.cli_ok(&["datastore", "export", "--file", backup.to_str().unwrap()]);
    let mode = std::fs::metadata(&backup).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the backup holds CA keys");

    let restored = Server::start_with(&[]);
    // Use the restored server's data dir before it holds anything: stop it,
    // wipe it, import, and start again on the same dir and trust domain.
    let mut restored = restored;
    restored.kill();
    std::fs::remove_dir_all(restored.data_dir()).unwrap();
    let out = import_backup(&backup, &restored.data_dir());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("restored 1 entries"));
    // Importing over an existing store is refused.
    let again = import_backup(&backup, &restored.data_dir());
    assert_eq!(exit_code(&again), 1);
    assert!(String::from_utf8_lossy(&again.stderr).contains("fresh data dir"));
    restored.spawn();

    assert_eq!(restored.bundle(), server.bundle(), "same CA");
    let entries = restored.cli_json(&["entry", "list"]);
    assert_eq!(entries[0]["id"], entry.as_str());
    let crl = restored.cli_ok(&["crl", "show"]);
    assert!(crl.contains(&svid.serial), "{crl}");
    let old_number = server.cli_json(&["crl", "show"])["crl_number"]
        .as_u64()
        .unwrap();
    let new_number = restored.cli_json(&["crl", "show"])["crl_number"]
        .as_u64()
        .unwrap();
    assert!(
        new_number > old_number,
        "the CRL number goes on from the backup"
    );
    assert!(
        restored
            .cli_ok(&["audit", "verify"])
            .starts_with("audit log OK")
    );
}
