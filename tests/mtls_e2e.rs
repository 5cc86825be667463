//! End-to-end through every layer: workloads get SVIDs from the real agent
//! (as distinct Unix users, via `lanyard-agent api fetch x509`), a service
//! in this test process serves mTLS with lanyard-mtls fed live by the
//! Workload API, and revocation and task grants take effect at the next
//! handshake. Times are printed, never asserted.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use lanyard_test_support as common;

use std::{
    net::SocketAddr,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use common::{
    agent::{self, Agent, register, register_self},
    mtls::{echo, serve, until_refused},
    operators::*,
    *,
};
use lanyard_mtls::{Authorizer, OwnIdentity, TrustMaterial, WorkloadSource};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

const CLIENT_UID: u32 = 4020;
const MAINT_UID: u32 = 4021;

/// `lanyard-agent api fetch x509 --write DIR` run as `uid`: the workload's
/// own view of the Workload API. Returns the directory, or the error text.
fn fetch_as(agent: &Agent, uid: u32, dir: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).unwrap();
    std::os::unix::fs::chown(dir, Some(uid), Some(uid)).unwrap();
    let out = agent
        .api_command(&["fetch", "x509", "--write", dir.to_str().unwrap()])
        .uid(uid)
        .gid(uid)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(dir.to_path_buf())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).to_string())
    }
}

/// The SVID a workload fetched, presented as is (even after revocation).
fn pinned(dir: &Path, server_id: &str) -> (Arc<rustls::ClientConfig>, String) {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("svid.pem"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("svid.key")).unwrap();
    let bundle: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(dir.join("bundle.pem"))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
    let serial = lanyard_identity::check_x509_svid(&chain[0]).unwrap().serial;
    let verifier = lanyard_mtls::SpiffeServerVerifier::new(
        Arc::new(TrustMaterial::new(bundle)),
        Authorizer::exact([server_id.parse().unwrap()]),
    );
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(verifier))
    .with_client_auth_cert(chain, key)
    .unwrap();
    config.resumption = rustls::client::Resumption::disabled();
    (Arc::new(config), serial)
}

/// The service in this process: the agent's SVID for our own uid, live.
async fn service(agent: &Agent) -> (WorkloadSource, SocketAddr) {
    let source = WorkloadSource::connect(agent.socket.to_str().unwrap())
        .await
        .unwrap();
    let config = source
        .server_config(Authorizer::TrustDomain(TD.parse().unwrap()))
        .unwrap();
    let addr = serve(config).await;
    (source, addr)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_client_is_refused_at_the_next_handshake() {
    let server = Server::start();
    let agent = Agent::start(&server);
    register_self(&server, &agent, "db");
    register(
        &server,
        &agent,
        "client",
        &format!("unix:uid:{CLIENT_UID}"),
        &[],
    );
    let (source, db) = service(&agent).await;
    assert_eq!(
        source.spiffe_id().unwrap().to_string(),
        format!("spiffe://{TD}/db")
    );

    let dir = agent.dir.path().join("client");
    let fetched = agent::eventually(Duration::from_secs(20), "the client's SVID", || {
        fetch_as(&agent, CLIENT_UID, &dir).ok()
    });
    let (config, serial) = pinned(&fetched, &format!("spiffe://{TD}/db"));
    assert_eq!(echo(config.clone(), db).await.unwrap(), "echo: hi\n");

    server.cli_ok(&["svid", "revoke", "--serial", &serial]);
    let revoked_at = Instant::now();
    let took = until_refused(&config, db, &["certificate revoked"], revoked_at).await;
    println!(
        "revocation: `svid revoke` returned → handshake refused with \"certificate revoked\" in {took:?}"
    );

    // The agent re-issues the client's SVID; the new one is welcome.
    let fresh_dir = agent.dir.path().join("client-2");
    let (fresh, fresh_serial) = agent::eventually(Duration::from_secs(20), "a fresh SVID", || {
        let d = fetch_as(&agent, CLIENT_UID, &fresh_dir).ok()?;
        let (c, s) = pinned(&d, &format!("spiffe://{TD}/db"));
        (s != serial).then_some((c, s))
    });
    assert_ne!(fresh_serial, serial);
    assert_eq!(echo(fresh, db).await.unwrap(), "echo: hi\n");
    source.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_svid_lives_in_its_window_for_its_audience_only() {
    let server = task_server();
    let agent = Agent::start(&server);
    register_self(&server, &agent, "db");
    let (source, db) = service(&agent).await;
    let db_id = format!("spiffe://{TD}/db");

    // A second service, "web", that is not in the task's audience.
    let web_id = format!("spiffe://{TD}/web");
    let web_svid_dir = agent.dir.path().join("web");
    register(&server, &agent, "web", "unix:uid:4022", &[]);
    let web_dir = agent::eventually(Duration::from_secs(20), "web's SVID", || {
        fetch_as(&agent, 4022, &web_svid_dir).ok()
    });
    let web_chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(web_dir.join("svid.pem"))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
    let web_key = PrivateKeyDer::from_pem_file(web_dir.join("svid.key")).unwrap();
    let signing = rustls::crypto::ring::sign::any_ecdsa_type(&web_key).unwrap();
    let web_resolver = Arc::new(rustls::sign::SingleCertAndKey::from(
        rustls::sign::CertifiedKey::new(web_chain, signing),
    ));
    let web = serve(
        lanyard_mtls::server_config_for(
            source.trust(),
            Authorizer::Any,
            web_resolver,
            Some(OwnIdentity::fixed(web_id.parse().unwrap())),
        )
        .unwrap(),
    )
    .await;

    let task = ok_as(
        &server,
        ALICE,
        &[
            "task",
            "request",
            "--ticket",
            "CHG-77",
            "--purpose",
            "rotate db credentials",
            "--spiffe-id",
            &format!("spiffe://{TD}/maint"),
            "--parent-id",
            &agent.spiffe_id(),
            "--selector",
            &format!("unix:uid:{MAINT_UID}"),
            "--audience",
            &db_id,
            "--ttl",
            "10m",
        ],
    )
    .trim()
    .to_owned();
    let maint_dir = agent.dir.path().join("maint");
    // Before approval the workload gets nothing.
    let err = fetch_as(&agent, MAINT_UID, &maint_dir).unwrap_err();
    assert!(err.contains("no identity issued"), "{err}");
    refused_as(&server, ALICE, &["task", "approve", &task]);
    ok_as(&server, BOB, &["task", "approve", &task]);

    let fetched = agent::eventually(Duration::from_secs(20), "the task SVID", || {
        fetch_as(&agent, MAINT_UID, &maint_dir).ok()
    });
    let (config, _) = pinned(&fetched, &db_id);
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(fetched.join("svid.pem"))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
    let binding = lanyard_identity::TaskBinding::from_certificate(&chain[0])
        .unwrap()
        .unwrap();
    assert_eq!(binding.task_id, task);
    assert_eq!(
        echo(config.clone(), db).await.unwrap(),
        "echo: hi\n",
        "db is in the audience"
    );
    // web accepts a plain SVID of the trust domain, so a refusal of the
    // task SVID below can only be its audience.
    let (plain_to_web, _) = pinned(&web_dir, &web_id);
    assert_eq!(echo(plain_to_web, web).await.unwrap(), "echo: hi\n");
    let (to_web, _) = pinned(&fetched, &web_id);
    let refused = echo(to_web, web).await.unwrap_err();
    println!("task SVID presented to web (not an audience): refused ({refused})");

    ok_as(&server, ALICE, &["task", "complete", &task]);
    let completed = Instant::now();
    let took = until_refused(&config, db, &["certificate revoked"], completed).await;
    println!("task complete → task SVID refused in {took:?}");
    let err = fetch_as(&agent, MAINT_UID, &maint_dir).unwrap_err();
    assert!(
        err.contains("no identity issued"),
        "the agent no longer serves it: {err}"
    );

    // A short task expires with nobody acting.
    let short = ok_as(
        &server,
        ALICE,
        &[
            "task",
            "request",
            "--ticket",
            "CHG-78",
            "--purpose",
            "quick look",
            "--spiffe-id",
            &format!("spiffe://{TD}/maint"),
            "--parent-id",
            &agent.spiffe_id(),
            "--selector",
            &format!("unix:uid:{MAINT_UID}"),
            "--audience",
            &db_id,
            "--ttl",
            "6s",
        ],
    )
    .trim()
    .to_owned();
    ok_as(&server, BOB, &["task", "approve", &short]);
    let short_dir = agent.dir.path().join("maint-short");
    let fetched = agent::eventually(Duration::from_secs(20), "the short task's SVID", || {
        fetch_as(&agent, MAINT_UID, &short_dir).ok()
    });
    let (config, _) = pinned(&fetched, &db_id);
    assert_eq!(echo(config.clone(), db).await.unwrap(), "echo: hi\n");
    let since = Instant::now();
    let took = until_refused(
        &config,
        db,
        &["certificate revoked", "expired", "Expired"],
        since,
    )
    .await;
    println!("task window ended → refused {took:?} after the last accepted handshake");
    // The certificate's own notAfter ends it in every handshake; the
    // scheduler records the expiry (and revokes) as that second begins.
    agent::eventually(Duration::from_secs(10), "the task to be expired", || {
        (json_as(&server, ALICE, &["task", "show", &short])["state"] == "expired").then_some(())
    });
    source.shutdown().await;
}
