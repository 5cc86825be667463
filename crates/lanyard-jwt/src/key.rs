//! Signing keys and their public JWKs.

use std::{fmt, str::FromStr};

use ring::{
    digest,
    rand::SystemRandom,
    signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair, RsaPublicKeyComponents},
};
use serde::Serialize;

use crate::{
    Jwk, JwtError,
    jws::{Header, b64, signing_input},
};

/// A JWT-SVID signature algorithm.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Alg {
    /// ECDSA P-256 with SHA-256: the default.
    #[default]
    Es256,
    /// RSASSA-PKCS1-v1_5 with SHA-256, for consumers that need RSA.
    Rs256,
}

impl Alg {
    /// The JOSE name: `ES256` or `RS256`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Es256 => "ES256",
            Self::Rs256 => "RS256",
        }
    }

    /// The JWK key type: `EC` or `RSA`.
    pub fn kty(self) -> &'static str {
        match self {
            Self::Es256 => "EC",
            Self::Rs256 => "RSA",
        }
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Alg {
    type Err = JwtError;

    /// `ES256` or `RS256`, in any case.
    fn from_str(s: &str) -> Result<Self, JwtError> {
        match s.to_ascii_uppercase().as_str() {
            "ES256" => Ok(Self::Es256),
            "RS256" => Ok(Self::Rs256),
            "NONE" => Err(JwtError::Unsigned),
            _ => Err(JwtError::UnsupportedAlgorithm(s.to_owned())),
        }
    }
}

/// Size of generated RS256 keys.
const RSA_BITS: usize = 2048;

/// Loads a PKCS#8 key of either algorithm (the one it turns out to be).
pub fn load_any(der: &[u8]) -> Result<SigningKey, JwtError> {
    SigningKey::from_pkcs8(Alg::Es256, der).or_else(|_| SigningKey::from_pkcs8(Alg::Rs256, der))
}

enum Pair {
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

/// A private JWT signing key with its key ID.
///
/// `Debug` shows the algorithm and key ID, never the key.
pub struct SigningKey {
    alg: Alg,
    kid: String,
    pkcs8: Vec<u8>,
    pair: Pair,
}

impl SigningKey {
    /// A fresh key from the system's random source: P-256 for ES256,
    /// 2048-bit RSA for RS256 (ring signs RSA but does not generate it; the
    /// RustCrypto `rsa` crate does, and ring loads its PKCS#8).
    pub fn generate(alg: Alg) -> Result<Self, JwtError> {
        match alg {
            Alg::Es256 => {
                let doc = EcdsaKeyPair::generate_pkcs8(
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    &SystemRandom::new(),
                )
                .map_err(|_| JwtError::Key("the system random source failed".into()))?;
                Self::from_pkcs8(alg, doc.as_ref())
            }
            Alg::Rs256 => {
                use rsa::pkcs8::EncodePrivateKey;
                let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, RSA_BITS)
                    .map_err(|e| JwtError::Key(format!("RSA key generation failed: {e}")))?;
                let der = key
                    .to_pkcs8_der()
                    .map_err(|e| JwtError::Key(format!("RSA key encoding failed: {e}")))?;
                Self::from_pkcs8(alg, der.as_bytes())
            }
        }
    }

    /// Loads a PKCS#8 DER private key for `alg` (a P-256 key for ES256, an
    /// RSA key of 2048 bits or more for RS256).
    pub fn from_pkcs8(alg: Alg, der: &[u8]) -> Result<Self, JwtError> {
        let pair = match alg {
            Alg::Es256 => Pair::Ec(
                EcdsaKeyPair::from_pkcs8(
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    der,
                    &SystemRandom::new(),
                )
                .map_err(|e| JwtError::Key(format!("not a PKCS#8 P-256 key ({e})")))?,
            ),
            Alg::Rs256 => Pair::Rsa(
                RsaKeyPair::from_pkcs8(der)
                    .map_err(|e| JwtError::Key(format!("not a PKCS#8 RSA key ({e})")))?,
            ),
        };
        let public = match &pair {
            Pair::Ec(k) => k.public_key().as_ref().to_vec(),
            Pair::Rsa(k) => k.public_key().as_ref().to_vec(),
        };
        // The key ID is derived from the public key: stable across restarts,
        // different for every key.
        let kid = b64(&digest::digest(&digest::SHA256, &public).as_ref()[..16]);
        Ok(Self {
            alg,
            kid,
            pkcs8: der.to_vec(),
            pair,
        })
    }

    /// The algorithm.
    pub fn alg(&self) -> Alg {
        self.alg
    }

    /// The key ID (`kid`).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The PKCS#8 DER private key, to be stored 0600. Secret.
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The public key as a JWK with `use: jwt-svid`.
    pub fn public_jwk(&self) -> Jwk {
        let mut jwk = Jwk {
            kty: self.alg.kty().into(),
            kid: Some(self.kid.clone()),
            use_: Some("jwt-svid".into()),
            alg: Some(self.alg.as_str().into()),
            crv: None,
            x: None,
            y: None,
            n: None,
            e: None,
        };
        match &self.pair {
            Pair::Ec(k) => {
                // Uncompressed point: 0x04 || X (32 bytes) || Y (32 bytes).
                let point = k.public_key().as_ref();
                jwk.crv = Some("P-256".into());
                jwk.x = Some(b64(&point[1..33]));
                jwk.y = Some(b64(&point[33..65]));
            }
            Pair::Rsa(k) => {
                let parts = RsaPublicKeyComponents::<Vec<u8>>::from(k.public());
                jwk.n = Some(b64(&parts.n));
                jwk.e = Some(b64(&parts.e));
            }
        }
        jwk
    }

    /// Signs `claims` as a compact JWS with header
    /// `{"alg": ..., "kid": ..., "typ": "JWT"}`.
    pub fn sign(&self, claims: &impl Serialize) -> Result<String, JwtError> {
        let header = Header {
            alg: self.alg.as_str().into(),
            kid: Some(self.kid.clone()),
            typ: Some("JWT".into()),
        };
        let input = signing_input(&header, claims)?;
        let rng = SystemRandom::new();
        let signature = match &self.pair {
            Pair::Ec(k) => k
                .sign(&rng, input.as_bytes())
                .map_err(|_| JwtError::Key("ECDSA signing failed".into()))?
                .as_ref()
                .to_vec(),
            Pair::Rsa(k) => {
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &rng,
                    input.as_bytes(),
                    &mut sig,
                )
                .map_err(|_| JwtError::Key("RSA signing failed".into()))?;
                sig
            }
        };
        Ok(format!("{input}.{}", b64(&signature)))
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}
