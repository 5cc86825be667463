//! TLS for the Node API: the server's own SVID (swapped on renewal without a
//! restart) and client-SVID verification against the live trust bundle.

use std::{sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use lanyard_ca::SvidKey;
use lanyard_mtls::{Authorizer, SpiffeClientVerifier, TrustMaterial};
use rustls::{
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::{ServerError, state::ServerState};

/// The server's SVID (`spiffe://<td>/lanyard/server`) for the Node API.
#[derive(Debug)]
pub(crate) struct ServerSvid {
    current: ArcSwap<CertifiedKey>,
    not_before: ArcSwap<(i64, i64)>,
}

impl ServerSvid {
    pub async fn issue(state: &ServerState) -> Result<Arc<Self>, ServerError> {
        let key = Self::certify(state).await?;
        Ok(Arc::new(Self {
            current: ArcSwap::from_pointee(key.0),
            not_before: ArcSwap::from_pointee(key.1),
        }))
    }

    /// Issues a fresh server SVID and swaps it in.
    pub async fn renew(&self, state: &ServerState) -> Result<(), ServerError> {
        let (key, validity) = Self::certify(state).await?;
        self.current.store(Arc::new(key));
        self.not_before.store(Arc::new(validity));
        Ok(())
    }

    /// When the current SVID should be renewed: at half its life.
    pub fn renew_at(&self) -> i64 {
        let (nb, na) = **self.not_before.load();
        nb + (na - nb) / 2
    }

    async fn certify(state: &ServerState) -> Result<(CertifiedKey, (i64, i64)), ServerError> {
        let key = SvidKey::generate()?;
        let csr = key.csr_der()?;
        let ttl = state
            .cfg
            .default_x509_svid_ttl
            .min(Duration::from_secs(3600));
        let issued = crate::issuance::issue_server_svid(state, &csr, ttl).map_err(|e| {
            ServerError::Task {
                task: "server SVID",
                reason: e.to_string(),
            }
        })?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.pkcs8_der()));
        let signing = rustls::crypto::ring::sign::any_ecdsa_type(&der)?;
        Ok((
            CertifiedKey::new(issued.cert_chain, signing),
            (issued.not_before, issued.not_after),
        ))
    }
}

impl ResolvesServerCert for ServerSvid {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The Node API's rustls configuration: TLS 1.3, h2, our SVID, and optional
/// client SVIDs from this trust domain (Attest is called without one).
pub(crate) fn node_tls_config(
    state: &ServerState,
    svid: Arc<ServerSvid>,
    trust: Arc<TrustMaterial>,
) -> Result<rustls::ServerConfig, ServerError> {
    let verifier = SpiffeClientVerifier::new(
        trust,
        Authorizer::TrustDomain(state.cfg.trust_domain.clone()),
    )
    .optional();
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])?
    .with_client_cert_verifier(Arc::new(verifier))
    .with_cert_resolver(svid);
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    // No resumption: every connection presents and re-verifies its SVID, so a
    // revoked or banned agent cannot ride a cached session.
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    cfg.send_tls13_tickets = 0;
    Ok(cfg)
}
