//! SPIFFE mTLS for rustls: verifiers that check a peer's X.509-SVID chains to
//! the trust bundle, carries exactly one SPIFFE ID, is not on the trust
//! domain's CRL, and that the ID is one the caller authorizes.
//!
//! The trust material lives in a [`TrustMaterial`] (bundle + CRL) that can
//! be swapped at any time (bundle rotation, new CRL); the next handshake uses
//! the new material without rebuilding the rustls configuration. The CRL is
//! parsed and its signature checked against the bundle when it is installed;
//! a revoked peer is refused with `CertificateError::Revoked` (the peer sees
//! a `certificate_revoked` alert). Configurations from [`server_config`] and
//! [`client_config`] never resume a TLS session, so every connection is
//! checked against the current CRL.
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
mod connector;
mod crl;
mod error;
mod trust;
mod verifier;

pub use self::{
    authorizer::Authorizer,
    config::{client_config, disable_server_resumption, server_config},
    connector::tls_channel,
    crl::RevocationList,
    error::{CrlError, MtlsError},
    trust::TrustMaterial,
    verifier::{SpiffeClientVerifier, SpiffeServerVerifier, peer_spiffe_id, verify_svid_chain},
};
