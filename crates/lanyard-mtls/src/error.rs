//! Errors of this crate.

use std::time::Duration;

/// Why a peer's SVID was refused, trust material was not installed, or an
/// identity source or channel could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MtlsError {
    /// The certificate chain does not verify against the trust bundle.
    #[error("certificate does not chain to the trust bundle: {0}")]
    Chain(String),
    /// The certificate's NotAfter has passed.
    #[error(
        "certificate expired at {} (unix seconds); it is now {}",
        not_after.as_secs(),
        time.as_secs()
    )]
    Expired {
        /// The time of the check.
        time: rustls_pki_types::UnixTime,
        /// The certificate's NotAfter.
        not_after: rustls_pki_types::UnixTime,
    },
    /// The certificate's NotBefore is still ahead.
    #[error(
        "certificate not valid until {} (unix seconds); it is now {}",
        not_before.as_secs(),
        time.as_secs()
    )]
    NotYetValid {
        /// The time of the check.
        time: rustls_pki_types::UnixTime,
        /// The certificate's NotBefore.
        not_before: rustls_pki_types::UnixTime,
    },
    /// The leaf is not a valid X.509-SVID.
    #[error("not an X.509-SVID: {0}")]
    Profile(#[from] lanyard_identity::ProfileError),
    /// The peer's SPIFFE ID is not one the authorizer accepts.
    #[error("SPIFFE ID {0} is not authorized")]
    Unauthorized(lanyard_identity::SpiffeId),
    /// The peer presented a task SVID whose audiences do not include this
    /// side's own SPIFFE ID (or this side's ID is not known).
    #[error(
        "task SVID of {task_id} is not for this service: its audiences are [{}], this service is {}",
        audiences.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
        own.as_ref().map(ToString::to_string).unwrap_or_else(|| "unknown".into())
    )]
    AudienceMismatch {
        /// The task the SVID belongs to.
        task_id: String,
        /// Whom it may be presented to.
        audiences: Vec<lanyard_identity::SpiffeId>,
        /// This side's own ID, if known.
        own: Option<lanyard_identity::SpiffeId>,
    },
    /// The task binding extension does not decode.
    #[error("malformed task binding: {0}")]
    TaskBinding(String),
    /// The peer's SVID chains to the bundle but its serial is on the trust
    /// domain's CRL. Surfaces in rustls as `CertificateError::Revoked`.
    #[error("X.509-SVID serial {serial} of {spiffe_id} is revoked")]
    Revoked {
        /// The revoked serial (lower-case hex, no leading zeros).
        serial: String,
        /// The SPIFFE ID the revoked SVID carries.
        spiffe_id: lanyard_identity::SpiffeId,
    },
    /// [`CrlPolicy::Strict`](crate::CrlPolicy::Strict): no CRL has arrived
    /// yet, so no peer can be checked for revocation.
    #[error("no CRL yet: the strict CRL policy refuses every peer until one arrives")]
    NoCrl,
    /// [`CrlPolicy::Strict`](crate::CrlPolicy::Strict): the CRL in force is
    /// older than its nextUpdate plus the grace; the revocation feed stopped.
    #[error(
        "the CRL is stale: its nextUpdate was {next_update} (unix seconds) and the grace of {grace_secs} s has passed"
    )]
    StaleCrl {
        /// The CRL's nextUpdate.
        next_update: i64,
        /// The policy's grace, in seconds.
        grace_secs: i64,
    },
    /// The trust bundle is empty: nothing can be verified yet.
    #[error("trust bundle is empty")]
    EmptyBundle,
    /// A CRL was refused when it was installed; the previous one stays in
    /// force.
    #[error("CRL refused, the previous one stays in force: {0}")]
    Crl(#[from] CrlError),
    /// Building the TLS channel failed.
    #[error("TLS channel: {0}")]
    Channel(String),
    /// Building a rustls configuration failed.
    #[error("TLS configuration: {0}")]
    Config(#[source] rustls::Error),
    /// The Workload API endpoint is not a Unix socket path or `unix:` URI.
    #[error(
        "Workload API endpoint {endpoint:?} is not usable ({reason}); \
         expected a socket path or a unix: URI such as unix:///run/lanyard/agent/api.sock"
    )]
    Endpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Neither an endpoint was given nor is `SPIFFE_ENDPOINT_SOCKET` set.
    #[error("no Workload API endpoint: pass a socket path or set SPIFFE_ENDPOINT_SOCKET")]
    NoEndpoint,
    /// The Workload API sent an X.509-SVID message that cannot be used.
    #[error("unusable X.509-SVID from the Workload API: {0}")]
    BadSvid(String),
    /// The Workload API call failed (for example PermissionDenied "no
    /// identity issued", or Unavailable while the agent starts).
    #[cfg(feature = "workload-source")]
    #[error("Workload API: {code:?}: {message}")]
    WorkloadApi {
        /// The gRPC status code.
        code: tonic::Code,
        /// The status message.
        message: String,
    },
    /// No identity arrived from the Workload API within the wait.
    #[error("no X.509-SVID from the Workload API after {waited:?}{}", last_error_suffix(.last_error))]
    NotReady {
        /// How long the source waited.
        waited: Duration,
        /// The last error seen while waiting, if any.
        last_error: Option<String>,
    },
}

/// Why a CRL was refused at install time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CrlError {
    /// The bytes are not a DER X.509 CRL.
    #[error("not a DER X.509 CRL: {reason}")]
    Malformed {
        /// The parser's complaint.
        reason: String,
    },
    /// The CRL is not an RFC 5280 version 2 CRL.
    #[error("CRL version is not v2")]
    NotV2,
    /// No CA certificate in the current trust bundle verifies the CRL's
    /// signature (a foreign CA, or a bundle that does not yet carry the
    /// signing CA).
    #[error(
        "CRL issued by \"{issuer}\" is not signed by any of the {bundle_len} CA certificate(s) in the trust bundle"
    )]
    UntrustedSigner {
        /// The CRL's issuer name.
        issuer: String,
        /// How many certificates the bundle holds.
        bundle_len: usize,
    },
    /// The CRL carries a critical extension this crate does not implement
    /// (for example a delta-CRL indicator or an indirect-CRL entry).
    #[error("CRL has an unsupported critical extension {oid}")]
    UnsupportedCriticalExtension {
        /// The extension's OID.
        oid: String,
    },
    /// The CRL number is lower than the one in force: an older CRL replayed.
    #[error("CRL number {offered} is lower than the number in force {current} (rollback)")]
    Rollback {
        /// The CRL number in force (hex).
        current: String,
        /// The CRL number offered (hex).
        offered: String,
    },
}

impl From<MtlsError> for rustls::Error {
    fn from(e: MtlsError) -> Self {
        use rustls::{CertificateError, Error};
        match e {
            MtlsError::Unauthorized(_) => {
                Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
            }
            MtlsError::Revoked { .. } => Error::InvalidCertificate(CertificateError::Revoked),
            // The times travel on, so a peer's log says when, not only that.
            MtlsError::Expired { time, not_after } => {
                Error::InvalidCertificate(CertificateError::ExpiredContext { time, not_after })
            }
            MtlsError::NotYetValid { time, not_before } => {
                Error::InvalidCertificate(CertificateError::NotValidYetContext { time, not_before })
            }
            MtlsError::EmptyBundle => Error::InvalidCertificate(CertificateError::UnknownIssuer),
            other => Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(
                std::sync::Arc::new(other),
            ))),
        }
    }
}

fn last_error_suffix(last: &Option<String>) -> String {
    last.as_deref()
        .map(|e| format!(" (last error: {e})"))
        .unwrap_or_default()
}

/// The causes under an error, outermost first, joined with `: ` (tonic's
/// transport errors say little in their own message).
#[cfg(any(feature = "channel", feature = "workload-source"))]
pub(crate) fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push(s.to_string());
        cur = s.source();
    }
    out.join(": ")
}
