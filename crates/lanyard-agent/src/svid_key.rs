//! A cached SVID's private key in compact form.
//!
//! The PKCS#8 document of a P-256 key is 138 bytes, of which only the 32
//! of the private scalar are its own: the rest is a fixed header and the
//! public key, which the SVID's leaf certificate carries anyway. So the
//! agent keeps the scalar and rebuilds the document when it answers a
//! workload. A key is kept compact only when the rebuilt document is
//! byte for byte the one it was given; any other form is kept whole.

use std::fmt;

/// PKCS#8 v1 `PrivateKeyInfo` for an ECDSA P-256 key, up to the scalar:
/// version 0, algorithm id-ecPublicKey with prime256v1, then the
/// `ECPrivateKey` (version 1, the 32-byte scalar).
const PKCS8_HEAD: [u8; 36] = [
    0x30, 0x81, 0x87, 0x02, 0x01, 0x00, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02,
    0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x04, 0x6d, 0x30, 0x6b, 0x02,
    0x01, 0x01, 0x04, 0x20,
];
/// Between the scalar and the public key: `[1]` holding the BIT STRING of
/// the uncompressed point.
const PKCS8_MID: [u8; 5] = [0xa1, 0x44, 0x03, 0x42, 0x00];
const SCALAR_LEN: usize = 32;
const POINT_LEN: usize = 65;
const PKCS8_LEN: usize = PKCS8_HEAD.len() + SCALAR_LEN + PKCS8_MID.len() + POINT_LEN;

/// A private key as the agent caches it. Secret: `Debug` redacts it.
#[derive(Clone, PartialEq, Eq)]
pub enum SvidKeyDer {
    /// A P-256 key's scalar; the public key is the leaf's.
    P256([u8; SCALAR_LEN]),
    /// Any other key, as the PKCS#8 document it came in.
    Pkcs8(Box<[u8]>),
}

impl SvidKeyDer {
    /// The compact form of `pkcs8`, the key of the certificate `leaf`
    /// (DER): the scalar alone when the document can be rebuilt from it
    /// and `leaf` exactly, else the document.
    pub fn from_pkcs8(pkcs8: Vec<u8>, leaf: &[u8]) -> Self {
        let scalar = pkcs8
            .get(PKCS8_HEAD.len()..PKCS8_HEAD.len() + SCALAR_LEN)
            .and_then(|s| <[u8; SCALAR_LEN]>::try_from(s).ok());
        match scalar {
            Some(scalar) if rebuild(&scalar, leaf).as_deref() == Some(pkcs8.as_slice()) => {
                Self::P256(scalar)
            }
            _ => Self::Pkcs8(pkcs8.into_boxed_slice()),
        }
    }

    /// The PKCS#8 document, given the leaf this key was compacted with.
    pub fn pkcs8(&self, leaf: &[u8]) -> Vec<u8> {
        match self {
            // Cannot fail: the same leaf rebuilt it when it was compacted.
            Self::P256(scalar) => rebuild(scalar, leaf).unwrap_or_default(),
            Self::Pkcs8(der) => der.to_vec(),
        }
    }
}

impl fmt::Debug for SvidKeyDer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::P256(_) => "SvidKeyDer::P256(<redacted>)",
            Self::Pkcs8(_) => "SvidKeyDer::Pkcs8(<redacted>)",
        })
    }
}

/// The PKCS#8 document of the P-256 key `scalar` whose public key is the
/// one of the certificate `leaf`; `None` when `leaf` does not parse or has
/// no P-256 public key.
fn rebuild(scalar: &[u8; SCALAR_LEN], leaf: &[u8]) -> Option<Vec<u8>> {
    use x509_parser::{oid_registry::OID_EC_P256, prelude::FromDer};
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(leaf).ok()?;
    let spki = cert.public_key();
    let curve = spki.algorithm.parameters.as_ref()?.as_oid().ok()?;
    if curve != OID_EC_P256 {
        return None;
    }
    let point = spki.subject_public_key.data.as_ref();
    if point.len() != POINT_LEN {
        return None;
    }
    let mut der = Vec::with_capacity(PKCS8_LEN);
    der.extend_from_slice(&PKCS8_HEAD);
    der.extend_from_slice(scalar);
    der.extend_from_slice(&PKCS8_MID);
    der.extend_from_slice(point);
    Some(der)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use lanyard_keys::SvidKey;

    use super::*;

    /// A certificate for the key of `pkcs8` (self-signed: only its public
    /// key matters here).
    fn leaf_of(pkcs8: &[u8]) -> Vec<u8> {
        let key = rcgen::KeyPair::try_from(pkcs8).unwrap();
        rcgen::CertificateParams::new(vec!["leaf.test".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap()
            .der()
            .to_vec()
    }

    #[test]
    fn a_p256_key_is_kept_as_its_scalar_and_rebuilt_exactly() {
        let pkcs8 = SvidKey::generate().unwrap().pkcs8_der();
        assert_eq!(pkcs8.len(), PKCS8_LEN);
        let leaf = leaf_of(&pkcs8);
        let key = SvidKeyDer::from_pkcs8(pkcs8.clone(), &leaf);
        assert!(matches!(key, SvidKeyDer::P256(_)));
        assert_eq!(key.pkcs8(&leaf), pkcs8);
        assert!(!format!("{key:?}").contains(&format!("{:?}", &pkcs8[36..40])));
    }

    #[test]
    fn a_key_that_does_not_match_its_leaf_is_kept_whole() {
        let pkcs8 = SvidKey::generate().unwrap().pkcs8_der();
        let other = leaf_of(&SvidKey::generate().unwrap().pkcs8_der());
        let key = SvidKeyDer::from_pkcs8(pkcs8.clone(), &other);
        assert!(matches!(key, SvidKeyDer::Pkcs8(_)));
        assert_eq!(key.pkcs8(&other), pkcs8);
        let odd = SvidKeyDer::from_pkcs8(b"not a key".to_vec(), &[]);
        assert_eq!(odd.pkcs8(&[]), b"not a key");
        // A leaf whose bytes merely contain a P-256 key header is not a
        // certificate: nothing is rebuilt from it.
        let scalar = [7u8; SCALAR_LEN];
        assert_eq!(rebuild(&scalar, &pkcs8), None);
    }
}
