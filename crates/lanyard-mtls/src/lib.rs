//! SPIFFE mTLS for rustls: verifiers that check a peer's X.509-SVID chains to
//! the trust bundle, carries exactly one SPIFFE ID, and that the ID is one the
//! caller authorizes.
//!
//! The trust material lives in a [`TrustMaterial`] that can be swapped at any
//! time (bundle rotation); the next handshake uses the new material without
//! rebuilding the rustls configuration.
//!
//! ```no_run
//! use std::sync::Arc;
//! use lanyard_mtls::{Authorizer, SpiffeServerVerifier, TrustMaterial};
//! # fn bundle() -> Vec<rustls_pki_types::CertificateDer<'static>> { vec![] }
//! let trust = Arc::new(TrustMaterial::new(bundle()));
//! let server_id = "spiffe://example.org/lanyard/server".parse().unwrap();
//! let verifier = SpiffeServerVerifier::new(trust.clone(), Authorizer::exact([server_id]));
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod authorizer;
mod connector;
mod error;
mod trust;
mod verifier;

pub use self::{
    authorizer::Authorizer,
    connector::tls_channel,
    error::MtlsError,
    trust::TrustMaterial,
    verifier::{SpiffeClientVerifier, SpiffeServerVerifier, peer_spiffe_id, verify_svid_chain},
};
