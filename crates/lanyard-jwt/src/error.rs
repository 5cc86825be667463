//! Why a token could not be made or was refused.

/// Why a token could not be signed, or why one was refused. Each refusal
/// names what was wrong in the token and what is accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// Not three base64url segments, or a segment that is not the JSON it
    /// should be.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// `alg: none`: an unsigned token is never accepted.
    #[error("the token is unsigned (alg \"none\"); JWT-SVIDs must be signed with ES256 or RS256")]
    Unsigned,
    /// An algorithm Lanyard does not accept.
    #[error("algorithm {0:?} is not accepted; JWT-SVIDs are signed with ES256 or RS256")]
    UnsupportedAlgorithm(String),
    /// The header has no `kid`.
    #[error("the token header has no \"kid\"; a JWT-SVID names its signing key")]
    MissingKeyId,
    /// The `kid` names no key of the bundle.
    #[error("key ID {0:?} is not in the trust domain's JWT bundle")]
    UnknownKeyId(String),
    /// The key named by `kid` is for another algorithm.
    #[error("key {kid:?} is a {key} key, but the token says {alg}")]
    AlgorithmMismatch {
        /// The key ID.
        kid: String,
        /// The key's algorithm.
        key: &'static str,
        /// The token's `alg`.
        alg: String,
    },
    /// The signature does not verify with the named key.
    #[error("the signature does not verify with key {0:?}")]
    BadSignature(String),
    /// `exp` has passed.
    #[error("the token expired at {exp} (unix seconds); it is now {now}")]
    Expired {
        /// The token's `exp`.
        exp: i64,
        /// The time it was checked at.
        now: i64,
    },
    /// No audience was asked for (or the token has none).
    #[error("an audience is required")]
    MissingAudience,
    /// The token is not for the audience asked for.
    #[error("the token is for {got:?}, not for audience {want:?}")]
    WrongAudience {
        /// The audience the validator asked for.
        want: String,
        /// The token's audiences.
        got: Vec<String>,
    },
    /// A key could not be generated, loaded or used to sign.
    #[error("JWT key: {0}")]
    Key(String),
}
