//! rustls configurations for SPIFFE mTLS with resumption turned off.
//!
//! A resumed TLS session skips certificate verification; a peer revoked
//! after its first handshake could come back on its session ticket. Every
//! configuration built here therefore performs a full handshake (and so a
//! fresh chain + CRL check) on every connection.

use std::sync::Arc;

use rustls::{
    ClientConfig, ServerConfig,
    client::{ResolvesClientCert, Resumption},
    server::{NoServerSessionStorage, ResolvesServerCert},
};

use crate::{
    Authorizer, MtlsError, OwnIdentity, SpiffeClientVerifier, SpiffeServerVerifier, TrustMaterial,
};

/// A server configuration that requires a client SVID accepted by
/// `authorizer`, presents the certificate `resolver` returns, and never
/// resumes a session.
///
/// # Errors
///
/// [`MtlsError::Config`] if rustls refuses the protocol versions (not
/// expected with the ring provider).
pub fn server_config(
    trust: Arc<TrustMaterial>,
    authorizer: Authorizer,
    resolver: Arc<dyn ResolvesServerCert>,
) -> Result<ServerConfig, MtlsError> {
    server_config_for(trust, authorizer, resolver, None)
}

/// [`server_config`] for a server that knows its own SPIFFE ID: a client's
/// task SVID is accepted only when that ID is among its audiences (without
/// it, every task SVID with audiences is refused).
///
/// # Errors
///
/// [`MtlsError::Config`] if rustls refuses the protocol versions.
pub fn server_config_for(
    trust: Arc<TrustMaterial>,
    authorizer: Authorizer,
    resolver: Arc<dyn ResolvesServerCert>,
    own: Option<OwnIdentity>,
) -> Result<ServerConfig, MtlsError> {
    let mut verifier = SpiffeClientVerifier::new(trust, authorizer);
    if let Some(own) = own {
        verifier = verifier.with_own_identity(own);
    }
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(MtlsError::Config)?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(resolver);
    disable_server_resumption(&mut config);
    Ok(config)
}

/// A client configuration that accepts a server SVID allowed by
/// `authorizer`, presents the certificate `resolver` returns, and never
/// resumes a session.
///
/// # Errors
///
/// [`MtlsError::Config`] if rustls refuses the protocol versions.
pub fn client_config(
    trust: Arc<TrustMaterial>,
    authorizer: Authorizer,
    resolver: Arc<dyn ResolvesClientCert>,
) -> Result<ClientConfig, MtlsError> {
    client_config_for(trust, authorizer, resolver, None)
}

/// [`client_config`] for a client that knows its own SPIFFE ID, so a server
/// presenting a task SVID is accepted when this client is among its
/// audiences.
///
/// # Errors
///
/// [`MtlsError::Config`] if rustls refuses the protocol versions.
pub fn client_config_for(
    trust: Arc<TrustMaterial>,
    authorizer: Authorizer,
    resolver: Arc<dyn ResolvesClientCert>,
    own: Option<OwnIdentity>,
) -> Result<ClientConfig, MtlsError> {
    let mut verifier = SpiffeServerVerifier::new(trust, authorizer);
    if let Some(own) = own {
        verifier = verifier.with_own_identity(own);
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(MtlsError::Config)?
        .dangerous()
        // SPIFFE authenticates the server by SPIFFE ID, not by DNS name:
        // this verifier is the whole check, not a bypass.
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(resolver);
    config.resumption = Resumption::disabled();
    Ok(config)
}

/// Turns off every form of server-side resumption (session IDs and TLS 1.3
/// tickets; TLS 1.2 tickets are off by default in rustls).
pub fn disable_server_resumption(config: &mut ServerConfig) {
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
