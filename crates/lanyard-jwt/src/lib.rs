//! JWT-SVIDs as the SPIFFE JWT-SVID standard defines them: JWS compact
//! tokens with `sub`, `aud`, `exp` and `iat` claims and a `kid` header,
//! signed with ES256 (ECDSA P-256) or RS256 (RSA PKCS#1 v1.5, SHA-256).
//!
//! - [`SigningKey`] signs tokens ([`SigningKey::sign`]) and publishes its
//!   public half as a [`Jwk`].
//! - [`Jwks`] is a key set (the trust domain's JWT bundle) and verifies
//!   tokens ([`Jwks::verify`]): signature, `alg` (never `none`), `kid`,
//!   `exp`, audience and subject, each refusal a [`JwtError`] naming what
//!   was wrong.
//!
//! Signatures are computed and checked with ring, the project's one crypto
//! provider; this crate only frames them as JWS (RFC 7515) and JWK
//! (RFC 7517).
//!
//! ```
//! use lanyard_jwt::{Alg, Claims, Jwks, SigningKey};
//! # fn main() -> Result<(), lanyard_jwt::JwtError> {
//! let key = SigningKey::generate(Alg::Es256)?;
//! let claims = Claims::new("spiffe://example.org/web", vec!["db".into()], 1_700_000_000, 300);
//! let token = key.sign(&claims)?;
//! let jwks = Jwks { keys: vec![key.public_jwk()] };
//! let verified = jwks.verify(&token, "db", 1_700_000_100)?;
//! assert_eq!(verified.claims.sub, "spiffe://example.org/web");
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

mod claims;
mod error;
mod jwk;
mod jws;
mod key;
mod verify;

pub use self::{
    claims::{Audience, Claims, TaskClaim},
    error::JwtError,
    jwk::{Jwk, Jwks},
    jws::Header,
    key::{Alg, SigningKey, load_any},
    verify::Verified,
};
