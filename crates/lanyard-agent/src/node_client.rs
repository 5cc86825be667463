//! TLS channels to the server's Node API: server authenticated by its SPIFFE
//! ID against the live trust bundle, the agent by its own SVID.
//!
//! Several servers sharing one database serve an agent alike, so the
//! connector holds a list of them: it connects to the one that last worked,
//! and when that fails (or after a broken call, see
//! [`NodeConnector::reset`]) tries the others in turn. The agent keeps
//! serving its cached SVIDs meanwhile, and needs no new token: its agent
//! SVID is good on every server.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use lanyard_identity::{SpiffeId, TrustDomain};
use lanyard_mtls::{Authorizer, SpiffeServerVerifier, TrustMaterial};
use lanyard_proto::node::v1::node_client::NodeClient;
use rustls::{
    DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature},
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use tonic::transport::Channel;

use crate::{AgentError, config::ServerAddresses, identity::AgentIdentity, trust_domain::Expected};

/// The server's SPIFFE ID in a trust domain.
pub fn server_id(td: &TrustDomain) -> Result<SpiffeId, AgentError> {
    SpiffeId::from_parts(td, "/lanyard/server")
        .map_err(|e| AgentError::Config(format!("server ID in trust domain {td}: {e}")))
}

/// Opens Node API channels; caches the one built for the current agent SVID.
#[derive(Debug)]
pub struct NodeConnector {
    servers: ServerAddresses,
    /// Which of the resolved addresses to try first.
    preferred: AtomicUsize,
    /// The server of the last channel opened.
    connected: Mutex<Option<SocketAddr>>,
    trust: Arc<TrustMaterial>,
    server_id: SpiffeId,
    cached: Mutex<Option<(String, NodeClient<Channel>)>>,
}

impl NodeConnector {
    /// A connector to `addr` that accepts only `spiffe://<td>/lanyard/server`
    /// with a chain to `trust`.
    pub fn new(
        addr: SocketAddr,
        trust: Arc<TrustMaterial>,
        td: &TrustDomain,
    ) -> Result<Self, AgentError> {
        Self::with_servers(addr.into(), trust, td)
    }

    /// A connector to any of `servers` (failing over between them) that
    /// accepts only `spiffe://<td>/lanyard/server` with a chain to `trust`.
    pub fn with_servers(
        servers: ServerAddresses,
        trust: Arc<TrustMaterial>,
        td: &TrustDomain,
    ) -> Result<Self, AgentError> {
        Ok(Self {
            servers,
            preferred: AtomicUsize::new(0),
            connected: Mutex::new(None),
            trust,
            server_id: server_id(td)?,
            cached: Mutex::new(None),
        })
    }

    /// The trust material (the Sync loop swaps the bundle in it).
    pub fn trust(&self) -> &Arc<TrustMaterial> {
        &self.trust
    }

    /// A client presenting `identity`; re-used while the identity's serial is
    /// unchanged, rebuilt after renewal.
    pub async fn client(
        &self,
        identity: &AgentIdentity,
    ) -> Result<NodeClient<Channel>, AgentError> {
        let cached = self.cached.lock().ok().and_then(|guard| {
            guard
                .as_ref()
                .filter(|(serial, _)| serial == &identity.serial)
                .map(|(_, c)| c.clone())
        });
        if let Some(client) = cached {
            return Ok(client);
        }
        let client = self.connect(Some(identity)).await?;
        if let Ok(mut guard) = self.cached.lock() {
            *guard = Some((identity.serial.clone(), client.clone()));
        }
        Ok(client)
    }

    /// Forgets the cached channel (after a transport error), and prefers
    /// the next server for the next connection: the one that failed may be
    /// gone, and any other serves this agent alike.
    pub fn reset(&self) {
        // Several loops may report the same broken channel: move on once.
        let dropped = match self.cached.lock() {
            Ok(mut guard) => guard.take().is_some(),
            Err(_) => false,
        };
        if dropped {
            self.preferred.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Opens a channel to the first server that answers, starting with the
    /// preferred one.
    async fn open_any(&self, cfg: rustls::ClientConfig) -> Result<NodeClient<Channel>, AgentError> {
        let addrs = self.servers.resolve().await;
        if addrs.is_empty() {
            return Err(AgentError::Server {
                call: "connect",
                reason: format!("no address for {}", self.servers),
            });
        }
        let first = self.preferred.load(Ordering::Relaxed) % addrs.len();
        let mut failed = None;
        for i in 0..addrs.len() {
            let at = (first + i) % addrs.len();
            let addr = addrs[at];
            match open(addr, cfg.clone()).await {
                Ok(client) => {
                    self.preferred.store(at, Ordering::Relaxed);
                    if let Ok(mut last) = self.connected.lock() {
                        match last.replace(addr) {
                            Some(previous) if previous != addr => tracing::info!(
                                server = %addr,
                                previous = %previous,
                                "failed over to another server"
                            ),
                            Some(_) => {}
                            None => tracing::info!(server = %addr, "connected to the server"),
                        }
                    }
                    return Ok(client);
                }
                Err(e) => {
                    if addrs.len() > 1 {
                        tracing::warn!(server = %addr, error = %e, "server unreachable; trying the next");
                    }
                    failed = Some(e);
                }
            }
        }
        Err(failed.unwrap_or_else(|| AgentError::Server {
            call: "connect",
            reason: format!("no server of {} answered", self.servers),
        }))
    }

    /// A fresh client, with the agent SVID when given (Attest goes without).
    pub async fn connect(
        &self,
        identity: Option<&AgentIdentity>,
    ) -> Result<NodeClient<Channel>, AgentError> {
        let verifier = SpiffeServerVerifier::new(
            self.trust.clone(),
            Authorizer::exact([self.server_id.clone()]),
        );
        let cfg = client_config(Arc::new(verifier), identity)?;
        self.open_any(cfg).await
    }

    /// A client for the first Attest (no client certificate). A server whose
    /// SVID chains to the bundle but belongs to another trust domain (two
    /// Lanyard servers under one upstream root) is refused in the handshake,
    /// before the join token is sent, with
    /// [`AgentError::TrustDomainMismatch`] naming both trust domains.
    pub(crate) async fn connect_to_attest(
        &self,
        expected: &Expected,
    ) -> Result<NodeClient<Channel>, AgentError> {
        let presented: Arc<Mutex<Option<SpiffeId>>> = Arc::default();
        let record = presented.clone();
        let want = self.server_id.clone();
        let authorizer = Authorizer::custom(move |id| {
            if let Ok(mut seen) = record.lock() {
                *seen = Some(id.clone());
            }
            *id == want
        });
        let verifier = SpiffeServerVerifier::new(self.trust.clone(), authorizer);
        let cfg = client_config(Arc::new(verifier), None)?;
        let failed = match self.open_any(cfg).await {
            Ok(client) => return Ok(client),
            Err(e) => e,
        };
        let presented = presented.lock().ok().and_then(|seen| seen.clone());
        match presented.filter(|id| !id.is_member_of(&expected.td)) {
            Some(id) => Err(AgentError::TrustDomainMismatch {
                expected: expected.td.clone(),
                expected_from: expected.named_by.clone(),
                found: id.trust_domain(),
                found_in: format!("the server at {} (its SVID is {id})", self.servers),
            }),
            None => Err(failed),
        }
    }
}

/// A client that does not verify the server at all: only for the first
/// Attest with `--insecure-bootstrap` (to the first of `servers` that
/// answers).
pub async fn insecure_client(servers: &ServerAddresses) -> Result<NodeClient<Channel>, AgentError> {
    let cfg = client_config(Arc::new(InsecureBootstrap(algorithms())), None)?;
    let mut failed = None;
    for addr in servers.resolve().await {
        match open(addr, cfg.clone()).await {
            Ok(client) => return Ok(client),
            Err(e) => failed = Some(e),
        }
    }
    Err(failed.unwrap_or_else(|| AgentError::Server {
        call: "connect",
        reason: format!("no address for {servers}"),
    }))
}

async fn open(
    addr: SocketAddr,
    cfg: rustls::ClientConfig,
) -> Result<NodeClient<Channel>, AgentError> {
    let channel = lanyard_mtls::tls_channel(addr, Arc::new(cfg))
        .await
        .map_err(|e| AgentError::Server {
            call: "connect",
            reason: format!("{addr}: {e}"),
        })?;
    Ok(NodeClient::new(channel).max_decoding_message_size(MAX_NODE_MESSAGE))
}

/// The largest Node API answer the agent reads: a Sync message carries all
/// of the agent's entries and the whole CRL (about 48 bytes per revoked
/// serial, so a million revocations are about 48 MiB). tonic's 4 MiB default
/// would cut an agent off from every revocation past about 90,000 serials.
pub const MAX_NODE_MESSAGE: usize = 256 * 1024 * 1024;

/// TLS 1.3 only, ALPN h2, the given server verifier, the agent SVID as
/// client certificate when given.
pub fn client_config(
    verifier: Arc<dyn ServerCertVerifier>,
    identity: Option<&AgentIdentity>,
) -> Result<rustls::ClientConfig, AgentError> {
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])?
    .dangerous()
    .with_custom_certificate_verifier(verifier);
    let mut cfg = match identity {
        Some(id) => builder.with_client_auth_cert(
            id.chain.clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key.pkcs8_der())),
        )?,
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

fn algorithms() -> WebPkiSupportedAlgorithms {
    rustls::crypto::ring::default_provider().signature_verification_algorithms
}

/// Accepts any server certificate (still checking the handshake signature,
/// so the connection is at least bound to the presented key).
#[derive(Debug)]
struct InsecureBootstrap(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for InsecureBootstrap {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
