//! End to end: the real server and agent binaries, and the `spiffe` crate's
//! Workload API client (unmodified) fetching this test's own SVID.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use lanyard_test_support as common;

use std::{os::unix::process::CommandExt, time::Duration};

use common::{
    Server, TD,
    agent::{Agent, my_uid, register_self},
    exit_code, openssl_verify,
};
use lanyard_proto::workload::{
    JwtsvidRequest, X509svidRequest, spiffe_workload_api_client::SpiffeWorkloadApiClient,
};
use rustls_pki_types::CertificateDer;
use spiffe::{TrustDomain, WorkloadApiClient, X509Source};

/// Polls the agent with the spiffe client until an SVID for `id` is served.
async fn fetch_context(agent: &Agent, id: &str) -> spiffe::X509Context {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let last = match WorkloadApiClient::connect_to(agent.endpoint()).await {
            Ok(client) => match client.fetch_x509_context().await {
                Ok(ctx) if ctx.svids().iter().any(|s| s.spiffe_id().to_string() == id) => {
                    return ctx;
                }
                Ok(ctx) => format!("{} SVIDs, not {id}", ctx.svids().len()),
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "no SVID for {id}: {last}\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn der_chain(svid: &spiffe::X509Svid) -> Vec<CertificateDer<'static>> {
    svid.cert_chain()
        .iter()
        .map(|c| CertificateDer::from(c.as_bytes().to_vec()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn spiffe_client_and_x509_source_fetch_our_svid() {
    let server = Server::start();
    let agent = Agent::start(&server);
    register_self(&server, &agent, "e2e/self");
    let id = format!("spiffe://{TD}/e2e/self");

    let ctx = fetch_context(&agent, &id).await;
    let svid = ctx.default_svid().unwrap();
    assert_eq!(svid.spiffe_id().to_string(), id);
    let chain = der_chain(svid);
    let bundle = server.bundle();
    let td = TrustDomain::new(TD).unwrap();
    let served: Vec<Vec<u8>> = ctx
        .bundle_set()
        .get(&td)
        .expect("bundle for the trust domain")
        .authorities()
        .iter()
        .map(|c| c.as_bytes().to_vec())
        .collect();
    assert_eq!(
        served,
        bundle.iter().map(|c| c.to_vec()).collect::<Vec<_>>()
    );
    let (ok, out) = openssl_verify(agent.dir.path(), &bundle, &chain);
    assert!(ok, "openssl verify: {out}");
    // The served key is the key of the served certificate.
    let key = lanyard_ca::SvidKey::from_pkcs8_der(svid.private_key().as_bytes()).unwrap();
    let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
    assert_eq!(leaf.public_key().raw, key.public_key_der().as_slice());

    // FetchX509Bundles: the trust domain's bundle, keyed by its ID.
    let client = WorkloadApiClient::connect_to(agent.endpoint())
        .await
        .unwrap();
    let bundles = client.fetch_x509_bundles().await.unwrap();
    let authorities: Vec<Vec<u8>> = bundles
        .get(&td)
        .expect("bundle for the trust domain")
        .authorities()
        .iter()
        .map(|c| c.as_bytes().to_vec())
        .collect();
    assert_eq!(authorities, served);

    let source = X509Source::builder()
        .endpoint(agent.endpoint())
        .build()
        .await
        .unwrap();
    let from_source = source.svid().unwrap();
    assert_eq!(from_source.spiffe_id().to_string(), id);
    assert!(source.try_bundle_for_trust_domain(&td).is_some());
    source.shutdown().await;

    // The agent's CLI agrees and writes the files.
    let out_dir = agent.dir.path().join("fetched");
    let out = agent.api(&["fetch", "x509", "--write", out_dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&id), "{text}");
    for f in ["svid.pem", "svid.key", "bundle.pem"] {
        assert!(out_dir.join(f).is_file(), "{f} not written");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(out_dir.join("svid.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

/// A raw generated client over the socket, without the spiffe crate's header.
async fn raw_client(agent: &Agent) -> SpiffeWorkloadApiClient<tonic::transport::Channel> {
    let endpoint: spiffe::transport::Endpoint = agent.endpoint().parse().unwrap();
    SpiffeWorkloadApiClient::new(spiffe::transport::connect(&endpoint).await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_header_or_audience_is_invalid_argument() {
    let server = Server::start();
    let agent = Agent::start(&server);
    register_self(&server, &agent, "e2e/header");

    let mut client = raw_client(&agent).await;
    let err = client.fetch_x509svid(X509svidRequest {}).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let jwt = |audience: Vec<String>| {
        let mut req = tonic::Request::new(JwtsvidRequest {
            audience,
            spiffe_id: String::new(),
        });
        req.metadata_mut()
            .insert("workload.spiffe.io", "true".parse().unwrap());
        req
    };
    let err = client.fetch_jwtsvid(jwt(vec![])).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("audience is required"), "{err:?}");
    let err = client
        .fetch_jwtsvid(jwt(vec![String::new()]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let err = client
        .fetch_jwtsvid(tonic::Request::new(JwtsvidRequest {
            audience: vec!["a".into()],
            spiffe_id: String::new(),
        }))
        .await
        .unwrap_err();
    assert!(err.message().contains("security header"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn caller_without_entry_gets_no_identity_issued() {
    let server = Server::start();
    let agent = Agent::start(&server);
    register_self(&server, &agent, "e2e/mine");
    fetch_context(&agent, &format!("spiffe://{TD}/e2e/mine")).await;

    if my_uid() != 0 {
        eprintln!(
            "not root: cannot run a caller as another uid; checking with the spiffe client only"
        );
        return;
    }
    // The same binary, run as nobody: no entry matches uid 65534.
    let out = agent
        .api_command(&["fetch", "x509"])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert_eq!(
        exit_code(&out),
        1,
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no identity issued"), "{stderr}");
    assert!(stderr.contains("PermissionDenied"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
}

#[test]
fn api_watch_prints_each_update() {
    use std::io::{BufRead, BufReader};
    let server = Server::start();
    let agent = Agent::start(&server);
    register_self(&server, &agent, "e2e/watch-a");
    let a = format!("spiffe://{TD}/e2e/watch-a");
    common::agent::eventually(Duration::from_secs(20), "the first SVID", || {
        let out = agent.api(&["fetch", "x509"]);
        String::from_utf8_lossy(&out.stdout)
            .contains(&a)
            .then_some(())
    });
    let mut child = agent
        .api_command(&["watch"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    let wait_for = |needle: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no line with {needle:?}"));
            if line.contains(needle) {
                return line;
            }
        }
    };
    wait_for("update 1");
    wait_for(&a);
    register_self(&server, &agent, "e2e/watch-b");
    wait_for("update 2");
    wait_for(&format!("spiffe://{TD}/e2e/watch-b"));
    // SIGINT ends it cleanly.
    std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}
