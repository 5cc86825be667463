//! SPIFFE mTLS for rustls: verifiers that check a peer's X.509-SVID chains to
//! the trust bundle, carries exactly one SPIFFE ID, is not on the trust
//! domain's CRL, and that the ID is one the caller authorizes.
//!
//! Features: `workload-source` adds [`WorkloadSource`] (a tonic Workload API
//! client); `channel` adds `tls_channel` (a tonic channel over TLS). Without
//! them the crate is the verifier core, free of gRPC.
//!
//! - [`WorkloadSource`] follows the agent's Workload API (`FetchX509SVID`)
//!   and keeps the workload's own SVID, the trust bundle and the CRL current;
//!   its [`server_config`](WorkloadSource::server_config) and
//!   [`client_config`](WorkloadSource::client_config) read them on every
//!   handshake, so rotations, bundle changes and revocations apply to the
//!   next connection without rebuilding anything.
//! - [`TrustMaterial`] holds bundle + CRL, swapped atomically. A CRL is parsed
//!   and its signature checked against the bundle once, when installed; it
//!   is accepted if *any* bundle CA signed it (CAs across a rotation share a
//!   subject name). A CRL past its nextUpdate is still enforced, with a
//!   warning: revocations are never lifted because the feed stalled.
//! - [`SpiffeServerVerifier`] / [`SpiffeClientVerifier`] check chain, CRL
//!   (a revoked peer gets `CertificateError::Revoked`, on the wire a
//!   `certificate_revoked` alert) and the [`Authorizer`].
//! - [`server_config`] / [`client_config`] never resume a TLS session: a
//!   revoked peer cannot come back on a ticket. Connections established
//!   before a revocation are not torn down.
//!
//! ```no_run
//! // With the `workload-source` feature.
//! use lanyard_mtls::{Authorizer, WorkloadSource};
//! # async fn run() -> Result<(), lanyard_mtls::MtlsError> {
//! // Waits for the first SVID, so the listener starts with an identity.
//! let source = WorkloadSource::connect("unix:///run/lanyard/agent/api.sock").await?;
//! let client_id = "spiffe://example.org/billing/api".parse().unwrap();
//! let config = source.server_config(Authorizer::exact([client_id]))?;
//! let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
//! // ... accept connections; on exit:
//! source.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Lower level, with trust material fed by hand:
//!
//! ```no_run
//! use std::sync::Arc;
//! use lanyard_mtls::{Authorizer, SpiffeServerVerifier, TrustMaterial};
//! # fn bundle() -> Vec<rustls_pki_types::CertificateDer<'static>> { vec![] }
//! # fn crl() -> Vec<u8> { vec![] }
//! # fn main() -> Result<(), lanyard_mtls::MtlsError> {
//! let trust = Arc::new(TrustMaterial::new(bundle()));
//! // Refused (and the previous CRL kept) unless a bundle CA signed it.
//! trust.set_crl(Some(crl()))?;
//! let server_id = "spiffe://example.org/lanyard/server".parse().unwrap();
//! let verifier = SpiffeServerVerifier::new(trust.clone(), Authorizer::exact([server_id]));
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod authorizer;
mod config;
#[cfg(feature = "channel")]
mod connector;
mod crl;
mod crl_policy;
mod error;
#[cfg(feature = "workload-source")]
mod source;
#[cfg(feature = "workload-source")]
mod svid;
mod trust;
mod verifier;
#[cfg(feature = "workload-source")]
mod watcher;

pub use self::{
    authorizer::Authorizer,
    config::{
        client_config, client_config_for, disable_server_resumption, server_config,
        server_config_for,
    },
    crl::RevocationList,
    crl_policy::CrlPolicy,
    error::{CrlError, MtlsError},
    trust::TrustMaterial,
    verifier::{
        OwnIdentity, SpiffeClientVerifier, SpiffeServerVerifier, peer_spiffe_id, verify_svid_chain,
    },
};

#[cfg(feature = "channel")]
pub use self::connector::tls_channel;
#[cfg(feature = "workload-source")]
pub use self::{
    source::{DEFAULT_READY_TIMEOUT, ENDPOINT_SOCKET_ENV, SvidResolver, WorkloadSource},
    svid::{CertificateListError, WorkloadSvid, split_certificates},
};
