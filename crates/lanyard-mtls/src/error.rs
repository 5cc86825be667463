//! Errors of this crate.

/// Why a peer's SVID was refused, or a channel could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MtlsError {
    /// The certificate chain does not verify against the trust bundle.
    #[error("certificate does not chain to the trust bundle: {0}")]
    Chain(String),
    /// The leaf is not a valid X.509-SVID.
    #[error("not an X.509-SVID: {0}")]
    Profile(#[from] lanyard_identity::ProfileError),
    /// The peer's SPIFFE ID is not one the authorizer accepts.
    #[error("SPIFFE ID {0} is not authorized")]
    Unauthorized(lanyard_identity::SpiffeId),
    /// The trust bundle is empty: nothing can be verified yet.
    #[error("trust bundle is empty")]
    EmptyBundle,
    /// Building the TLS channel failed.
    #[error("TLS channel: {0}")]
    Channel(String),
}

impl From<MtlsError> for rustls::Error {
    fn from(e: MtlsError) -> Self {
        use rustls::{CertificateError, Error};
        match e {
            MtlsError::Unauthorized(_) => {
                Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
            }
            MtlsError::EmptyBundle => Error::InvalidCertificate(CertificateError::UnknownIssuer),
            other => Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(
                std::sync::Arc::new(other),
            ))),
        }
    }
}
