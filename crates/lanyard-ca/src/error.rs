//! The crate's one error type.

use std::path::PathBuf;
use std::time::Duration;

use lanyard_identity::{ProfileError, SpiffeId, TrustDomain};

/// Everything that can go wrong in the certificate authority.
///
/// Each variant carries the values its message needs: the file and the
/// operation for I/O, the offending value for bad input, the times involved
/// for expiry. No variant ever carries key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// A file system operation on a key, certificate or temporary file failed.
    #[error("cannot {op} {path}: {source}")]
    Io {
        /// What was being done ("read", "create", "rename", ...).
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// The journal names a CA key file that does not exist: the CA refuses to
    /// start rather than silently minting a new, unpublished CA.
    #[error(
        "CA key file {path} named by the CA journal is missing; restore it from backup \
         or remove the journal to start a new CA (fail closed)"
    )]
    MissingKeyFile {
        /// The expected key file.
        path: PathBuf,
    },

    /// A key file exists but does not hold a usable private key.
    #[error("bad key file {path}: {problem}")]
    BadKeyFile {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it, and what is accepted.
        problem: String,
    },

    /// The upstream CA certificate or key configured with `upstream` is unusable.
    #[error("bad upstream CA file {path}: {problem}")]
    Upstream {
        /// The certificate or key file.
        path: PathBuf,
        /// What is wrong with it, and what is accepted.
        problem: String,
    },

    /// Generating a key pair with the system random source failed.
    #[error("cannot generate a {algorithm} key pair: {reason}")]
    KeyGeneration {
        /// The key type asked for.
        algorithm: &'static str,
        /// The crypto library's reason.
        reason: String,
    },

    /// A CA key sealed for the shared store does not open (another
    /// key-encryption key, another name, or altered), or names no plain
    /// key file.
    #[error("sealed CA key {name}: {problem}")]
    SealedKey {
        /// The key file's name.
        name: String,
        /// What is wrong.
        problem: String,
    },

    /// Building or signing a certificate or CSR failed inside the X.509 encoder.
    #[error("cannot build {what}: {reason}")]
    Encoding {
        /// What was being built ("CA certificate", "X.509-SVID", "CSR").
        what: &'static str,
        /// The encoder's reason.
        reason: String,
    },

    /// The CSR is not a well-formed PKCS#10 request.
    #[error("malformed CSR: {reason}; expected a DER-encoded PKCS#10 certification request")]
    MalformedCsr {
        /// What the parser reported.
        reason: String,
    },

    /// The CSR's self-signature does not verify with the public key it carries.
    #[error("CSR signature does not verify: the request was altered or signed with another key")]
    CsrSignature,

    /// The CSR's public key is of a type Lanyard does not certify.
    #[error("unsupported CSR public key {algorithm}; only ECDSA P-256 or P-384 keys are accepted")]
    UnsupportedKey {
        /// The key algorithm found (OID or name).
        algorithm: String,
    },

    /// The requested SPIFFE ID is not in this CA's trust domain.
    #[error("SPIFFE ID {spiffe_id} is not in trust domain {trust_domain}")]
    ForeignTrustDomain {
        /// The requested ID.
        spiffe_id: SpiffeId,
        /// The CA's trust domain.
        trust_domain: TrustDomain,
    },

    /// The request asks for an SVID for the trust domain ID itself.
    #[error(
        "SPIFFE ID {spiffe_id} has no path; an X.509-SVID names a workload, not the trust domain"
    )]
    TrustDomainIdAsSvid {
        /// The requested ID.
        spiffe_id: SpiffeId,
    },

    /// A requested DNS SAN is not a valid DNS name.
    #[error("invalid DNS name {name:?}: {problem}")]
    InvalidDnsName {
        /// The rejected name.
        name: String,
        /// Which rule it breaks.
        problem: &'static str,
    },

    /// The requested TTL is zero.
    #[error("invalid SVID TTL {ttl:?}: it must be at least one second")]
    InvalidTtl {
        /// The requested TTL.
        ttl: Duration,
    },

    /// The configured CA lifetime is too short for rotation to work.
    #[error("CA TTL {ttl:?} is too short; it must be at least {min:?}")]
    InvalidCaTtl {
        /// The configured CA TTL.
        ttl: Duration,
        /// The shortest accepted.
        min: Duration,
    },

    /// The active CA has expired (or expires within the second), so nothing can be signed.
    #[error("the active CA expired at {not_after} (unix seconds); it is now {now}")]
    CaExpired {
        /// The active CA's NotAfter, seconds since the Unix epoch.
        not_after: i64,
        /// The time of the request, seconds since the Unix epoch.
        now: i64,
    },

    /// A time could not be represented (before 1970 or beyond the certificate range).
    #[error("time out of range: {what}")]
    TimeOutOfRange {
        /// Which time.
        what: &'static str,
    },

    /// A certificate this CA produced fails the X.509-SVID profile; it is
    /// discarded, never returned.
    #[error("issued X.509-SVID for {spiffe_id} fails the X.509-SVID profile: {source}")]
    NonConformingSvid {
        /// The requested ID.
        spiffe_id: SpiffeId,
        /// The profile rule broken.
        #[source]
        source: ProfileError,
    },

    /// A CA certificate this CA produced fails the signing-certificate profile.
    #[error(
        "CA certificate for trust domain {trust_domain} fails the signing-certificate profile: {source}"
    )]
    NonConformingCa {
        /// The CA's trust domain.
        trust_domain: TrustDomain,
        /// The profile rule broken.
        #[source]
        source: ProfileError,
    },

    /// The issued certificate names a different SPIFFE ID than was requested.
    #[error("issued X.509-SVID names {issued}, but {requested} was requested")]
    IdentityMismatch {
        /// The requested ID.
        requested: SpiffeId,
        /// The ID found in the certificate.
        issued: SpiffeId,
    },

    /// An issued certificate does not chain to the CA that signed it.
    #[error("issued {what} does not chain to its issuer: {problem}")]
    BrokenChain {
        /// Which certificate ("X.509-SVID", "intermediate CA").
        what: &'static str,
        /// The mismatch found.
        problem: String,
    },

    /// The CA journal is corrupt or does not match the configuration.
    #[error("CA journal rejected: {problem}")]
    Journal {
        /// What is wrong, and what would be accepted.
        problem: String,
    },

    /// A revocation reason that is not one of the accepted names.
    #[error("unknown revocation reason {given:?}; accepted: {accepted}")]
    InvalidRevocationReason {
        /// What was given.
        given: String,
        /// The accepted names.
        accepted: String,
    },

    /// `removeFromCRL`: valid in RFC 5280 only in delta CRLs. Lanyard
    /// publishes full CRLs, where OpenSSL would read the entry as "not
    /// revoked", so the reason is refused.
    #[error(
        "revocation reason {given:?} (removeFromCRL) belongs only in delta CRLs and would \
         un-revoke the serial for OpenSSL; Lanyard publishes full CRLs, so use one of: {accepted}"
    )]
    RevocationReasonDeltaOnly {
        /// What was given.
        given: String,
        /// The accepted names.
        accepted: String,
    },

    /// An SVID key or a key file write failed (see [`lanyard_keys::KeyError`]).
    #[error(transparent)]
    Key(#[from] lanyard_keys::KeyError),

    /// A revoked serial that is not a serial (see [`lanyard_identity::Serial`]).
    #[error(transparent)]
    InvalidSerial(#[from] lanyard_identity::SerialError),
}

impl CaError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CaError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn encoding(what: &'static str, err: rcgen::Error) -> Self {
        CaError::Encoding {
            what,
            reason: err.to_string(),
        }
    }

    pub(crate) fn encoding_reason(what: &'static str, reason: String) -> Self {
        CaError::Encoding { what, reason }
    }

    pub(crate) fn journal(problem: impl Into<String>) -> Self {
        CaError::Journal {
            problem: problem.into(),
        }
    }
}
