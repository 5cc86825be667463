//! Errors of this crate: one enum per kind of input, each variant naming the
//! rule that was broken and what is accepted instead.

use std::fmt;

/// What kind of identifier an [`IdError`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IdKind {
    /// A SPIFFE ID such as `spiffe://example.org/billing/api`.
    SpiffeId,
    /// A bare trust domain name such as `example.org`.
    TrustDomain,
}

impl fmt::Display for IdKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::SpiffeId => "SPIFFE ID",
            Self::TrustDomain => "trust domain",
        })
    }
}

/// A SPIFFE ID, trust domain, entry ID or registration entry was rejected.
///
/// Nothing is ever normalized: an ID that breaks a rule is refused with the
/// rule, not silently rewritten into a different ID.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The input was the empty string.
    #[error("invalid {what}: it is empty; expected e.g. {}", example(*what))]
    Empty {
        /// What was being parsed.
        what: IdKind,
    },

    /// A SPIFFE ID longer than 2048 bytes (the SPIFFE-ID standard's limit).
    #[error("invalid SPIFFE ID: it is {len} bytes long; at most {max} bytes are accepted")]
    TooLong {
        /// Length of the input in bytes.
        len: usize,
        /// The limit (2048).
        max: usize,
    },

    /// A trust domain name longer than 255 bytes.
    #[error(
        "invalid {what}: the trust domain is {len} bytes long; at most {max} bytes are accepted"
    )]
    TrustDomainTooLong {
        /// What was being parsed.
        what: IdKind,
        /// Length of the trust domain name in bytes.
        len: usize,
        /// The limit (255).
        max: usize,
    },

    /// The input does not start with the lower-case scheme `spiffe://`.
    #[error(
        "invalid SPIFFE ID {input:?}: it must start with the lower-case scheme \"spiffe://\", \
         e.g. spiffe://example.org/service"
    )]
    WrongScheme {
        /// The rejected input.
        input: String,
    },

    /// A trust domain was given with a scheme or a path instead of as a bare name.
    #[error(
        "invalid trust domain {input:?}: give the bare name, e.g. example.org, without \
         \"spiffe://\" or a path"
    )]
    NotABareName {
        /// The rejected input.
        input: String,
    },

    /// `spiffe://` followed directly by `/` or by nothing.
    #[error("invalid SPIFFE ID {input:?}: the trust domain is missing after \"spiffe://\"")]
    MissingTrustDomain {
        /// The rejected input.
        input: String,
    },

    /// The authority carries user information (`user@`).
    #[error("invalid {what} {input:?}: user information (\"user@\") is not allowed")]
    UserInfo {
        /// What was being parsed.
        what: IdKind,
        /// The rejected input.
        input: String,
    },

    /// The authority carries a port (`:8443`).
    #[error("invalid {what} {input:?}: a port (\":<port>\") is not allowed")]
    Port {
        /// What was being parsed.
        what: IdKind,
        /// The rejected input.
        input: String,
    },

    /// The input has a query (`?...`).
    #[error("invalid {what} {input:?}: a query (\"?...\") is not allowed")]
    Query {
        /// What was being parsed.
        what: IdKind,
        /// The rejected input.
        input: String,
    },

    /// The input has a fragment (`#...`).
    #[error("invalid {what} {input:?}: a fragment (\"#...\") is not allowed")]
    Fragment {
        /// What was being parsed.
        what: IdKind,
        /// The rejected input.
        input: String,
    },

    /// The input contains percent-encoding (`%2e`); SPIFFE IDs are never encoded.
    #[error(
        "invalid {what} {input:?}: percent-encoding (\"%..\") is not allowed; only the plain \
         characters [A-Za-z0-9._-] may appear in a path segment"
    )]
    PercentEncoded {
        /// What was being parsed.
        what: IdKind,
        /// The rejected input.
        input: String,
    },

    /// The trust domain contains upper-case letters. It is rejected, never lower-cased.
    #[error(
        "invalid {what} {input:?}: trust domain must be lower-case; only [a-z0-9._-] is \
         accepted and it is never lower-cased for you"
    )]
    TrustDomainUpperCase {
        /// What was being parsed.
        what: IdKind,
        /// The rejected input.
        input: String,
    },

    /// The trust domain contains a character outside `[a-z0-9._-]`.
    #[error(
        "invalid {what} {input:?}: trust domain contains {found:?}; only lower-case letters, \
         digits, '.', '-' and '_' are accepted"
    )]
    TrustDomainChar {
        /// What was being parsed.
        what: IdKind,
        /// The rejected input.
        input: String,
        /// The first character not accepted.
        found: char,
    },

    /// A path given to [`SpiffeId::from_parts`](crate::SpiffeId::from_parts) is
    /// neither empty nor starts with `/`.
    #[error("invalid SPIFFE ID path {path:?}: it must be empty or start with '/', e.g. /service")]
    PathNotAbsolute {
        /// The rejected path.
        path: String,
    },

    /// The path contains an empty segment (`//`).
    #[error("invalid SPIFFE ID {input:?}: the path has an empty segment (\"//\")")]
    EmptySegment {
        /// The rejected input.
        input: String,
    },

    /// The path contains a `.` or `..` segment.
    #[error("invalid SPIFFE ID {input:?}: the path has a \".\" or \"..\" segment")]
    DotSegment {
        /// The rejected input.
        input: String,
    },

    /// The path ends with `/`.
    #[error("invalid SPIFFE ID {input:?}: the path ends with '/'; remove the trailing slash")]
    TrailingSlash {
        /// The rejected input.
        input: String,
    },

    /// A path segment contains a character outside `[A-Za-z0-9._-]`.
    #[error(
        "invalid SPIFFE ID {input:?}: the path contains {found:?}; path segments accept only \
         letters, digits, '.', '-' and '_'"
    )]
    PathChar {
        /// The rejected input.
        input: String,
        /// The first character not accepted.
        found: char,
    },

    /// The `spiffe` crate refused an input that passed this crate's own checks.
    #[error("invalid SPIFFE ID {input:?}: {reason}")]
    Rejected {
        /// The rejected input.
        input: String,
        /// The `spiffe` crate's reason.
        reason: String,
    },

    /// A registration entry ID that is not a hyphenated UUID.
    #[error(
        "invalid entry ID {input:?}: expected a hyphenated UUID, e.g. \
         67e55044-10b1-426f-9247-bb680e5fe0c8"
    )]
    InvalidEntryId {
        /// The rejected input.
        input: String,
    },

    /// A registration entry without selectors (it would match nothing, or everything).
    #[error("invalid entry: it needs at least one selector, e.g. unix:uid:1000")]
    NoSelectors,

    /// A registration entry whose SPIFFE ID is a trust-domain ID (no path).
    #[error(
        "invalid entry: spiffe_id {id:?} is a trust-domain ID; a workload ID needs a path, \
         e.g. {id}/service"
    )]
    TrustDomainIdInEntry {
        /// The rejected SPIFFE ID.
        id: String,
    },

    /// A DNS name of an entry is not a syntactically valid host name.
    #[error(
        "invalid DNS name {name:?}: {reason}; expected dot-separated labels of letters, digits \
         and '-' (1-63 bytes each, 253 in all), optionally starting with \"*.\""
    )]
    InvalidDnsName {
        /// The rejected name.
        name: String,
        /// The rule broken.
        reason: &'static str,
    },

    /// The entry hint is longer than allowed.
    #[error("invalid entry: hint is {len} bytes long; at most {max} bytes are accepted")]
    HintTooLong {
        /// Length of the hint in bytes.
        len: usize,
        /// The limit (1024).
        max: usize,
    },

    /// The entry lists more of something than an SVID or an agent can carry.
    #[error("invalid entry: {count} {what}; at most {max} are accepted")]
    TooMany {
        /// What there are too many of: `dns_names`, `selectors`.
        what: &'static str,
        /// How many the entry has.
        count: usize,
        /// The limit.
        max: usize,
    },

    /// The entry's X.509-SVID TTL is zero.
    #[error("invalid entry: x509_svid_ttl_secs is 0; give a positive number of seconds or none")]
    ZeroTtl,
}

fn example(what: IdKind) -> &'static str {
    match what {
        IdKind::SpiffeId => "spiffe://example.org/service",
        IdKind::TrustDomain => "example.org",
    }
}

/// A selector (`type:key:value`) was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SelectorError {
    /// The input is not of the form `type:key:value`.
    #[error("invalid selector {input:?}: expected type:key:value, e.g. unix:uid:1000")]
    Malformed {
        /// The rejected input.
        input: String,
    },

    /// The selector type is not one Lanyard knows.
    #[error(
        "invalid selector {input:?}: unknown type {kind:?}; accepted types are unix, cgroup, \
         join_token and x509pop"
    )]
    UnknownKind {
        /// The rejected input.
        input: String,
        /// The unknown type.
        kind: String,
    },

    /// The key is not one the selector type has.
    #[error("invalid selector {input:?}: {kind} has no key {key:?}; accepted keys are {accepted}")]
    UnknownKey {
        /// The rejected input.
        input: String,
        /// The selector type.
        kind: String,
        /// The unknown key.
        key: String,
        /// The keys this type accepts.
        accepted: &'static str,
    },

    /// The value does not have the form the type and key require.
    #[error("invalid selector {input:?}: the value must be {expected}")]
    InvalidValue {
        /// The rejected input.
        input: String,
        /// What the value must look like.
        expected: &'static str,
    },
}

/// A certificate does not follow the X.509-SVID profile (or the signing
/// certificate profile).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileError {
    /// The bytes are not a DER X.509 certificate.
    #[error("not a DER X.509 certificate: {reason}")]
    Parse {
        /// The parser's reason.
        reason: String,
    },

    /// Bytes follow the certificate.
    #[error("{len} bytes follow the DER certificate; exactly one certificate is accepted")]
    TrailingData {
        /// Number of trailing bytes.
        len: usize,
    },

    /// The certificate is not X.509 version 3.
    #[error("certificate is X.509 version {version}; only version 3 is accepted")]
    NotV3 {
        /// The version found (1-based, as people write it).
        version: u32,
    },

    /// The inner and outer signature algorithm identifiers differ (RFC 5280 4.1.1.2).
    #[error("the tbsCertificate signature algorithm differs from the certificate's")]
    SignatureAlgorithmMismatch,

    /// An extension appears more than once (RFC 5280 4.2).
    #[error("extension {oid} appears more than once; each extension is accepted once")]
    DuplicateExtension {
        /// The extension's OID.
        oid: String,
    },

    /// An extension could not be decoded.
    #[error("extension {oid} is malformed: {reason}")]
    InvalidExtension {
        /// The extension's OID.
        oid: String,
        /// The parser's reason.
        reason: String,
    },

    /// A critical extension that relying parties are not expected to process.
    #[error("unknown critical extension {oid}; unknown extensions must be non-critical")]
    UnknownCriticalExtension {
        /// The extension's OID.
        oid: String,
    },

    /// The subject is empty but subjectAltName is not critical (RFC 5280 4.2.1.6).
    #[error("the subject is empty, so subjectAltName must be critical")]
    SanNotCriticalWithEmptySubject,

    /// The number of URI SANs is wrong (a leaf needs exactly one, a signing
    /// certificate at most one).
    #[error(
        "found {found} URI SANs; exactly one (the SPIFFE ID) is accepted on a leaf, at most one on a signing certificate"
    )]
    UriSanCount {
        /// The number of URI SANs found.
        found: usize,
    },

    /// The URI SAN is not a valid SPIFFE ID.
    #[error("the URI SAN is not a valid SPIFFE ID: {reason}")]
    InvalidUriSan {
        /// The URI SAN.
        uri: String,
        /// Why it is not a SPIFFE ID.
        reason: IdError,
    },

    /// A leaf's SPIFFE ID has no path (it is a trust-domain ID).
    #[error("leaf SPIFFE ID {id:?} is a trust-domain ID; a workload ID with a path is required")]
    LeafIdWithoutPath {
        /// The SPIFFE ID found.
        id: String,
    },

    /// A signing certificate's SPIFFE ID has a path.
    #[error(
        "signing certificate SPIFFE ID {id:?} has a path; only the trust-domain ID \
         (spiffe://<trust-domain>) is accepted"
    )]
    SigningIdWithPath {
        /// The SPIFFE ID found.
        id: String,
    },

    /// basicConstraints is absent.
    #[error("basicConstraints is missing; it is required")]
    MissingBasicConstraints,

    /// A signing certificate's basicConstraints is not critical.
    #[error("basicConstraints is not critical; a signing certificate must mark it critical")]
    BasicConstraintsNotCritical,

    /// A leaf has CA=true.
    #[error("basicConstraints has CA=true; a leaf SVID must have CA=false")]
    LeafIsCa,

    /// A signing certificate has CA=false.
    #[error("basicConstraints has CA=false; a signing certificate must have CA=true")]
    NotCa,

    /// keyUsage is absent.
    #[error("keyUsage is missing; it is required")]
    MissingKeyUsage,

    /// keyUsage is not critical.
    #[error("keyUsage is not critical; it must be marked critical")]
    KeyUsageNotCritical,

    /// A leaf's keyUsage lacks digitalSignature.
    #[error("keyUsage lacks digitalSignature; a leaf SVID must set it")]
    MissingDigitalSignature,

    /// A leaf's keyUsage sets a bit other than digitalSignature.
    #[error(
        "keyUsage sets {usage}; a leaf SVID accepts digitalSignature only (no keyCertSign or \
         cRLSign, and no keyEncipherment or keyAgreement on EC keys, RFC 5480)"
    )]
    ForbiddenKeyUsage {
        /// The forbidden usage, as RFC 5280 names it.
        usage: &'static str,
    },

    /// A signing certificate's keyUsage lacks keyCertSign.
    #[error("keyUsage lacks keyCertSign; a signing certificate must set it")]
    MissingKeyCertSign,

    /// A leaf has no extendedKeyUsage.
    #[error("extendedKeyUsage is missing; a leaf SVID needs serverAuth and clientAuth")]
    MissingExtendedKeyUsage,

    /// A leaf's extendedKeyUsage lacks a purpose Lanyard requires.
    #[error("extendedKeyUsage lacks {usage}; a leaf SVID needs serverAuth and clientAuth")]
    MissingExtendedKeyUsagePurpose {
        /// The missing purpose (`serverAuth` or `clientAuth`).
        usage: &'static str,
    },

    /// A signing certificate's extendedKeyUsage would stop its SVIDs from
    /// validating for one of the TLS roles.
    #[error(
        "extendedKeyUsage of the signing certificate lacks {usage}, which would break path \
         validation of its SVIDs; omit the extension or include serverAuth and clientAuth"
    )]
    SigningEkuRestricts {
        /// The missing purpose (`serverAuth` or `clientAuth`).
        usage: &'static str,
    },

    /// The serial number is negative (RFC 5280 4.1.2.2).
    #[error("the serial number is negative; it must be a positive integer")]
    SerialNegative,

    /// The serial number is zero.
    #[error("the serial number is zero; it must be a positive integer")]
    SerialZero,

    /// The serial number has too little entropy.
    #[error(
        "the serial number is {bytes} significant bytes long; at least {min} (64 random bits) \
         are required"
    )]
    SerialTooShort {
        /// Significant bytes found (leading zero bytes not counted).
        bytes: usize,
        /// The minimum (8).
        min: usize,
    },

    /// The serial number is longer than RFC 5280 allows.
    #[error("the serial number is {bytes} bytes long; at most {max} bytes are accepted")]
    SerialTooLong {
        /// Encoded length in bytes.
        bytes: usize,
        /// The limit (20).
        max: usize,
    },

    /// NotBefore is not before NotAfter.
    #[error("the validity is empty: NotBefore ({not_before}) is not before NotAfter ({not_after})")]
    ValidityInverted {
        /// NotBefore, seconds since the Unix epoch.
        not_before: i64,
        /// NotAfter, seconds since the Unix epoch.
        not_after: i64,
    },
}

/// A task binding extension that does not decode.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TaskBindingError {
    /// The value is not the strict DER of a `LanyardTaskBinding` (or the
    /// certificate carrying it does not parse).
    #[error("malformed task binding: {0}")]
    Malformed(String),
    /// An audience is not a valid SPIFFE ID.
    #[error("task binding audience {audience:?} is not a SPIFFE ID: {source}")]
    Audience {
        /// The audience as found.
        audience: String,
        /// Why it is not a SPIFFE ID.
        source: IdError,
    },
}
