//! `WorkloadSource` against a real tonic Workload API server on a temporary
//! Unix socket, implemented here with real certificates: identities,
//! rotations, bundle and CRL changes are pushed over the stream the way the
//! agent pushes them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    path::PathBuf,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use lanyard_mtls::{
    Authorizer, MtlsError, TrustMaterial, WorkloadSource, client_config, server_config,
};
use lanyard_proto::workload::{
    JwtBundlesRequest, JwtBundlesResponse, JwtsvidRequest, JwtsvidResponse, ValidateJwtsvidRequest,
    ValidateJwtsvidResponse, X509BundlesRequest, X509BundlesResponse, X509svid, X509svidRequest,
    X509svidResponse,
    spiffe_workload_api_server::{SpiffeWorkloadApi, SpiffeWorkloadApiServer},
};
use rustls::CertificateError;
use rustls_pki_types::CertificateDer;
use support::{Ca, Svid, handshake};
use tokio::sync::{broadcast, oneshot, watch};
use tokio_stream::{Stream, StreamExt, wrappers::BroadcastStream};
use tonic::{Request, Response, Status};

const WORKLOAD_ID: &str = "spiffe://example.org/echo/server";
const PEER_ID: &str = "spiffe://example.org/echo/client";
const WAIT: Duration = Duration::from_secs(10);

// === the Workload API server ===

/// What the agent currently says to its caller.
#[derive(Clone)]
enum Push {
    Identity(X509svidResponse),
    Denied,
}

/// A Workload API server that streams every pushed message, in order, to
/// each open `FetchX509SVID` stream, starting with the latest one.
#[derive(Clone)]
struct Agent {
    latest: Arc<Mutex<Push>>,
    pushes: broadcast::Sender<Push>,
    open_streams: watch::Sender<usize>,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Decrements the open-stream count when the server drops a stream.
struct StreamGuard(watch::Sender<usize>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

impl Agent {
    fn new(first: Push) -> Self {
        Self {
            latest: Arc::new(Mutex::new(first)),
            pushes: broadcast::channel(16).0,
            open_streams: watch::Sender::new(0),
        }
    }

    fn push(&self, push: Push) {
        let mut latest = self.latest.lock().unwrap();
        *latest = push.clone();
        let _ = self.pushes.send(push);
    }

    async fn wait_open_streams(&self, want: usize) {
        let mut rx = self.open_streams.subscribe();
        tokio::time::timeout(WAIT, rx.wait_for(|n| *n == want))
            .await
            .expect("open stream count")
            .unwrap();
    }
}

fn to_item(push: Push) -> Result<X509svidResponse, Status> {
    match push {
        Push::Identity(msg) => Ok(msg),
        Push::Denied => Err(Status::permission_denied("no identity issued")),
    }
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for Agent {
    type FetchX509SVIDStream = BoxStream<X509svidResponse>;
    type FetchX509BundlesStream = BoxStream<X509BundlesResponse>;
    type FetchJWTBundlesStream = BoxStream<JwtBundlesResponse>;

    async fn fetch_x509svid(
        &self,
        request: Request<X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        if request
            .metadata()
            .get("workload.spiffe.io")
            .and_then(|v| v.to_str().ok())
            != Some("true")
        {
            return Err(Status::invalid_argument(
                "security header missing from request",
            ));
        }
        // Subscribe before reading `latest` so no push falls in between.
        let later = BroadcastStream::new(self.pushes.subscribe()).filter_map(|p| p.ok());
        let first = self.latest.lock().unwrap().clone();
        self.open_streams.send_modify(|n| *n += 1);
        let guard = StreamGuard(self.open_streams.clone());
        let stream = tokio_stream::once(first).chain(later).map(move |p| {
            let _held = &guard;
            to_item(p)
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn fetch_x509_bundles(
        &self,
        _request: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        Err(Status::unimplemented("not needed by lanyard-mtls"))
    }

    async fn fetch_jwtsvid(
        &self,
        _request: Request<JwtsvidRequest>,
    ) -> Result<Response<JwtsvidResponse>, Status> {
        Err(Status::unimplemented("not needed by lanyard-mtls"))
    }

    async fn fetch_jwt_bundles(
        &self,
        _request: Request<JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        Err(Status::unimplemented("not needed by lanyard-mtls"))
    }

    async fn validate_jwtsvid(
        &self,
        _request: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        Err(Status::unimplemented("not needed by lanyard-mtls"))
    }
}

/// A running server; dropping it stops the server and removes the socket.
struct Running {
    agent: Agent,
    socket: PathBuf,
    _stop: oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

impl Running {
    fn uri(&self) -> String {
        format!("unix://{}", self.socket.display())
    }
}

async fn serve(first: Push) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("api.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let agent = Agent::new(first);
    let (stop, stopped) = oneshot::channel::<()>();
    let service = SpiffeWorkloadApiServer::new(agent.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::UnixListenerStream::new(listener),
                async {
                    let _ = stopped.await;
                },
            )
            .await
            .unwrap();
    });
    Running {
        agent,
        socket,
        _stop: stop,
        _dir: dir,
    }
}

fn concat(certs: impl IntoIterator<Item = CertificateDer<'static>>) -> Vec<u8> {
    certs.into_iter().flat_map(|c| c.to_vec()).collect()
}

fn identity(svid: &Svid, bundle: &[&Ca], crl: Option<Vec<u8>>) -> Push {
    Push::Identity(X509svidResponse {
        svids: vec![X509svid {
            spiffe_id: svid.id.clone(),
            x509_svid: concat(svid.chain.clone()).into(),
            x509_svid_key: svid.key_pkcs8.clone().into(),
            bundle: concat(bundle.iter().map(|ca| ca.cert.clone())).into(),
            hint: String::new(),
        }],
        crl: crl.into_iter().collect(),
        federated_bundles: Default::default(),
    })
}

// === helpers ===

fn exact(id: &str) -> Authorizer {
    Authorizer::exact([id.parse().unwrap()])
}

/// Waits until `done` holds for the source, re-checking on every update.
async fn wait_until(source: &WorkloadSource, done: impl Fn(&WorkloadSource) -> bool) {
    let mut updates = source.updates();
    tokio::time::timeout(WAIT, async {
        while !done(source) {
            updates.changed().await.unwrap();
        }
    })
    .await
    .expect("the source never reached the expected state");
}

fn serial_is(source: &WorkloadSource, serial: &str) -> bool {
    source.svid().is_some_and(|s| s.serial() == serial)
}

fn crl_number_is(source: &WorkloadSource, number: &str) -> bool {
    source
        .trust()
        .crl()
        .is_some_and(|c| c.number() == Some(number))
}

/// A client outside the source: its own static SVID and trust.
fn static_client(ca: &Ca, svid: &Svid, server_id: &str) -> Arc<rustls::ClientConfig> {
    let trust = Arc::new(TrustMaterial::new(vec![ca.cert.clone()]));
    Arc::new(client_config(trust, exact(server_id), svid.resolver()).unwrap())
}

// === tests ===

#[tokio::test]
async fn source_serves_the_pushed_svid_and_follows_rotation_and_crl_updates() {
    let ca = Ca::new();
    let first = ca.svid(WORKLOAD_ID);
    let peer = ca.svid(PEER_ID);
    let agent = serve(identity(&first, &[&ca], Some(ca.crl(1, &[])))).await;

    let source = WorkloadSource::connect(&agent.uri()).await.unwrap();
    assert_eq!(source.svid().unwrap().serial(), first.serial);
    assert_eq!(source.spiffe_id().unwrap().to_string(), WORKLOAD_ID);
    assert_eq!(source.trust().bundle().len(), 1);
    assert!(crl_number_is(&source, "01"));

    // Configs are built once; everything below reaches them live.
    let server = Arc::new(source.server_config(exact(PEER_ID)).unwrap());
    let client = static_client(&ca, &peer, WORKLOAD_ID);
    let out = handshake(server.clone(), client.clone()).await;
    assert!(out.ok(), "{out:?}");
    assert_eq!(out.server_leaf.as_ref(), Some(&first.chain[0]));
    assert_eq!(out.client_leaf.as_ref(), Some(&peer.chain[0]));

    // Rotation.
    let second = ca.svid(WORKLOAD_ID);
    agent
        .agent
        .push(identity(&second, &[&ca], Some(ca.crl(1, &[]))));
    wait_until(&source, |s| serial_is(s, &second.serial)).await;
    let out = handshake(server.clone(), client.clone()).await;
    assert!(out.ok(), "{out:?}");
    assert_eq!(out.server_leaf.as_ref(), Some(&second.chain[0]));

    // The peer is revoked: the CRL arrives on the stream.
    agent
        .agent
        .push(identity(&second, &[&ca], Some(ca.crl(2, &[&peer]))));
    wait_until(&source, |s| crl_number_is(s, "02")).await;
    let out = handshake(server, client).await;
    assert!(matches!(
        out.server_tls_error(),
        Some(rustls::Error::InvalidCertificate(CertificateError::Revoked))
    ));
    source.shutdown().await;
}

#[tokio::test]
async fn source_client_config_refuses_a_server_revoked_over_the_stream() {
    let ca = Ca::new();
    let mine = ca.svid(PEER_ID);
    let server_svid = ca.svid(WORKLOAD_ID);
    let agent = serve(identity(&mine, &[&ca], None)).await;
    let source = WorkloadSource::connect(&agent.uri()).await.unwrap();
    assert!(source.trust().crl().is_none());

    let client = Arc::new(source.client_config(exact(WORKLOAD_ID)).unwrap());
    let server_trust = Arc::new(TrustMaterial::new(vec![ca.cert.clone()]));
    let server =
        Arc::new(server_config(server_trust, exact(PEER_ID), server_svid.resolver()).unwrap());
    let out = handshake(server.clone(), client.clone()).await;
    assert!(out.ok(), "{out:?}");
    assert_eq!(out.client_leaf.as_ref(), Some(&mine.chain[0]));

    agent
        .agent
        .push(identity(&mine, &[&ca], Some(ca.crl(1, &[&server_svid]))));
    wait_until(&source, |s| crl_number_is(s, "01")).await;
    let out = handshake(server, client).await;
    assert!(matches!(
        out.client_tls_error(),
        Some(rustls::Error::InvalidCertificate(CertificateError::Revoked))
    ));
    source.shutdown().await;
}

#[tokio::test]
async fn a_ca_rotation_reaches_the_next_handshake() {
    let old_ca = Ca::new();
    let new_ca = Ca::new();
    let first = old_ca.svid(WORKLOAD_ID);
    let peer = new_ca.svid(PEER_ID);
    let agent = serve(identity(&first, &[&old_ca], None)).await;
    let source = WorkloadSource::connect(&agent.uri()).await.unwrap();
    let server = Arc::new(source.server_config(exact(PEER_ID)).unwrap());
    let peer_trust = Arc::new(TrustMaterial::new(vec![
        old_ca.cert.clone(),
        new_ca.cert.clone(),
    ]));
    let client = Arc::new(client_config(peer_trust, exact(WORKLOAD_ID), peer.resolver()).unwrap());

    // The new CA's peer does not chain to the old bundle yet.
    assert!(!handshake(server.clone(), client.clone()).await.ok());

    // The agent rotates: new SVID from the new CA, bundle with both CAs,
    // CRL signed by the new key.
    let second = new_ca.svid(WORKLOAD_ID);
    agent.agent.push(identity(
        &second,
        &[&old_ca, &new_ca],
        Some(new_ca.crl(1, &[])),
    ));
    wait_until(&source, |s| serial_is(s, &second.serial)).await;
    assert_eq!(source.trust().bundle().len(), 2);
    let out = handshake(server, client).await;
    assert!(out.ok(), "{out:?}");
    source.shutdown().await;
}

#[tokio::test]
async fn permission_denied_drops_the_svid_keeps_the_bundle_and_recovers() {
    let ca = Ca::new();
    let mine = ca.svid(WORKLOAD_ID);
    let peer = ca.svid(PEER_ID);
    let agent = serve(identity(&mine, &[&ca], Some(ca.crl(1, &[])))).await;
    let source = WorkloadSource::connect(&agent.uri()).await.unwrap();
    let server = Arc::new(source.server_config(exact(PEER_ID)).unwrap());
    let client = static_client(&ca, &peer, WORKLOAD_ID);

    agent.agent.push(Push::Denied);
    wait_until(&source, |s| s.svid().is_none()).await;
    assert_eq!(source.trust().bundle().len(), 1);
    assert!(crl_number_is(&source, "01"));
    let out = handshake(server.clone(), client.clone()).await;
    assert!(!out.ok(), "no certificate to present: {out:?}");

    // The entry comes back: the source reconnects and serves again.
    let again = ca.svid(WORKLOAD_ID);
    agent
        .agent
        .push(identity(&again, &[&ca], Some(ca.crl(1, &[]))));
    wait_until(&source, |s| serial_is(s, &again.serial)).await;
    let out = handshake(server, client).await;
    assert!(out.ok(), "{out:?}");
    source.shutdown().await;
}

#[tokio::test]
async fn connect_reports_why_no_identity_arrived() {
    let agent = serve(Push::Denied).await;
    let err = WorkloadSource::connect_with_timeout(&agent.uri(), Duration::from_millis(500))
        .await
        .unwrap_err();
    match &err {
        MtlsError::NotReady {
            last_error: Some(last),
            ..
        } => assert!(last.contains("no identity issued"), "{err}"),
        other => panic!("unexpected {other:?}"),
    }
    // The failed connect stopped its own stream.
    agent.agent.wait_open_streams(0).await;
}

#[tokio::test]
async fn connect_to_a_missing_socket_times_out_with_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.sock");
    let err =
        WorkloadSource::connect_with_timeout(path.to_str().unwrap(), Duration::from_millis(300))
            .await
            .unwrap_err();
    assert!(
        matches!(
            &err,
            MtlsError::NotReady {
                last_error: Some(_),
                ..
            }
        ),
        "{err:?}"
    );
    let err = WorkloadSource::connect("tcp://127.0.0.1:1")
        .await
        .unwrap_err();
    assert!(matches!(err, MtlsError::Endpoint { .. }), "{err:?}");
}

#[tokio::test]
async fn an_unusable_message_keeps_the_current_identity() {
    let ca = Ca::new();
    let foreign = Ca::named("Foreign CA");
    let mine = ca.svid(WORKLOAD_ID);
    let agent = serve(identity(&mine, &[&ca], Some(ca.crl(1, &[])))).await;
    let source = WorkloadSource::connect(&agent.uri()).await.unwrap();
    let before = *source.updates().borrow();

    // An SVID that does not chain to the bundle sent with it is ignored ...
    let stray = foreign.svid(WORKLOAD_ID);
    agent
        .agent
        .push(identity(&stray, &[&ca], Some(ca.crl(5, &[]))));
    // ... and the next good message (ordered after it) applies.
    agent
        .agent
        .push(identity(&mine, &[&ca], Some(ca.crl(2, &[]))));
    wait_until(&source, |s| crl_number_is(s, "02")).await;
    assert_eq!(*source.updates().borrow(), before + 1);
    assert!(serial_is(&source, &mine.serial));
    source.shutdown().await;
}

#[tokio::test]
async fn a_message_without_a_crl_does_not_lift_revocations() {
    let ca = Ca::new();
    let mine = ca.svid(WORKLOAD_ID);
    let peer = ca.svid(PEER_ID);
    let agent = serve(identity(&mine, &[&ca], Some(ca.crl(1, &[&peer])))).await;
    let source = WorkloadSource::connect(&agent.uri()).await.unwrap();
    let rotated = ca.svid(WORKLOAD_ID);
    agent.agent.push(identity(&rotated, &[&ca], None));
    wait_until(&source, |s| serial_is(s, &rotated.serial)).await;
    assert!(source.trust().crl().unwrap().is_revoked(&peer.serial));
    source.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_the_stream_and_is_idempotent() {
    let ca = Ca::new();
    let mine = ca.svid(WORKLOAD_ID);
    let agent = serve(identity(&mine, &[&ca], None)).await;
    let source = WorkloadSource::connect(&agent.socket.to_string_lossy())
        .await
        .unwrap();
    agent.agent.wait_open_streams(1).await;

    tokio::time::timeout(WAIT, source.shutdown()).await.unwrap();
    agent.agent.wait_open_streams(0).await;
    tokio::time::timeout(WAIT, source.shutdown()).await.unwrap();
    // The last identity stays readable after shutdown.
    assert!(serial_is(&source, &mine.serial));

    // Dropping a source without shutdown also ends its stream.
    let dropped = WorkloadSource::connect(&agent.uri()).await.unwrap();
    agent.agent.wait_open_streams(1).await;
    drop(dropped);
    agent.agent.wait_open_streams(0).await;
}

/// A Workload API message whose SVID chain is `chain` (leaf first).
fn identity_with_chain(
    svid: &Svid,
    chain: &[&CertificateDer<'static>],
    root: &Ca,
    crl: Vec<u8>,
) -> Push {
    Push::Identity(X509svidResponse {
        svids: vec![X509svid {
            spiffe_id: svid.id.clone(),
            x509_svid: concat(chain.iter().map(|c| (*c).clone())).into(),
            x509_svid_key: svid.key_pkcs8.clone().into(),
            bundle: concat([root.cert.clone()]).into(),
            hint: String::new(),
        }],
        crl: vec![crl],
        federated_bundles: Default::default(),
    })
}

/// Upstream mode right after an intermediate rotation: our SVID was issued
/// by the previous intermediate, the CRL by the new one, which the agent
/// appends to our chain. The source takes it as a CRL signer (if it chains
/// to the bundle) and presents only the issuing path in handshakes.
#[tokio::test]
async fn the_crls_issuer_appended_to_the_chain_signs_crls_and_is_not_presented() {
    let root = Ca::named("Corp Root CA");
    let previous = root.intermediate(support::CA_NAME);
    let current = root.intermediate(support::CA_NAME);
    let mine = previous.svid(WORKLOAD_ID);
    let peer = current.svid(PEER_ID);
    let (leaf, old, new) = (&mine.chain[0], &previous.cert, &current.cert);
    let agent = serve(identity_with_chain(
        &mine,
        &[leaf, old, new],
        &root,
        current.crl(2, &[]),
    ))
    .await;
    let source = WorkloadSource::connect(&agent.uri()).await.unwrap();
    assert!(
        crl_number_is(&source, "02"),
        "the new intermediate's CRL is in force"
    );
    assert_eq!(source.svid().unwrap().chain(), [leaf.clone(), old.clone()]);

    let server = Arc::new(source.server_config(exact(PEER_ID)).unwrap());
    let mut peer_chain = peer.chain.clone();
    peer_chain.push(new.clone());
    let peer_key = rustls_pki_types::PrivateKeyDer::Pkcs8(peer.key_pkcs8.clone().into());
    let trust = Arc::new(TrustMaterial::new(vec![root.cert.clone()]));
    let client = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(lanyard_mtls::SpiffeServerVerifier::new(
            trust,
            exact(WORKLOAD_ID),
        )))
        .with_client_auth_cert(peer_chain, peer_key)
        .unwrap(),
    );
    let out = handshake(server.clone(), client.clone()).await;
    assert!(out.ok(), "{out:?}");

    // Revoked on the new intermediate's CRL: refused at the next handshake.
    agent.agent.push(identity_with_chain(
        &mine,
        &[leaf, old, new],
        &root,
        current.crl(3, &[&peer]),
    ));
    wait_until(&source, |s| crl_number_is(s, "03")).await;
    let out = handshake(server, client).await;
    assert!(matches!(
        out.server_tls_error(),
        Some(rustls::Error::InvalidCertificate(CertificateError::Revoked))
    ));

    // An intermediate of another root, appended the same way, signs nothing
    // here: its CRL is refused and the previous one stays in force.
    let rogue = Ca::named("Elsewhere Root CA").intermediate(support::CA_NAME);
    agent.agent.push(identity_with_chain(
        &mine,
        &[leaf, old, &rogue.cert],
        &root,
        rogue.crl(4, &[]),
    ));
    let rotated = previous.svid(WORKLOAD_ID);
    agent.agent.push(identity_with_chain(
        &rotated,
        &[&rotated.chain[0], old],
        &root,
        current.crl(3, &[&peer]),
    ));
    wait_until(&source, |s| serial_is(s, &rotated.serial)).await;
    assert!(crl_number_is(&source, "03"));
    source.shutdown().await;
}
