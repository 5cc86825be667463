//! Node attestation requests: a join token, or x509pop (proof of possession
//! of a pre-provisioned node certificate's key).

use std::path::Path;

use lanyard_proto::node::v1::{
    AttestRequest, JoinTokenAttestation, X509PopAttestation, attest_request::Method,
};
use ring::{
    rand::SystemRandom,
    signature::{self, EcdsaKeyPair, Ed25519KeyPair, RsaKeyPair},
};
use rustls_pki_types::{PrivateKeyDer, pem::PemObject};

use crate::{AgentError, config::NodeAttestation, storage::read_certs};

use lanyard_identity::x509pop_challenge;

/// Builds the Attest request for `method` with the agent key's CSR.
pub fn attest_request(
    method: &NodeAttestation,
    csr_der: Vec<u8>,
) -> Result<AttestRequest, AgentError> {
    let method = match method {
        NodeAttestation::JoinToken(token) => Method::JoinToken(JoinTokenAttestation {
            token: token.clone(),
        }),
        NodeAttestation::X509Pop { cert, key } => {
            let chain = read_certs(cert)?;
            let signature = sign_with_file(key, &x509pop_challenge(&csr_der))?;
            Method::X509pop(X509PopAttestation {
                cert_chain: chain.iter().map(|c| c.to_vec()).collect(),
                signature,
            })
        }
    };
    Ok(AttestRequest {
        method: Some(method),
        csr: csr_der,
    })
}

/// Signs `msg` with the PEM private key at `path`: ECDSA P-256/P-384
/// (PKCS#8), Ed25519 (PKCS#8) or RSA (PKCS#8 or PKCS#1, PKCS#1 v1.5 SHA-256).
fn sign_with_file(path: &Path, msg: &[u8]) -> Result<Vec<u8>, AgentError> {
    let pem = std::fs::read(path).map_err(|e| AgentError::io(path, e))?;
    let key = PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| AgentError::bad_file(path, format!("not a PEM private key: {e}")))?;
    sign(&key, msg).map_err(|problem| AgentError::bad_file(path, problem))
}

fn sign(key: &PrivateKeyDer<'_>, msg: &[u8]) -> Result<Vec<u8>, String> {
    let rng = SystemRandom::new();
    match key {
        PrivateKeyDer::Pkcs8(der) => {
            let der = der.secret_pkcs8_der();
            for alg in [
                &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
                &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
            ] {
                if let Ok(kp) = EcdsaKeyPair::from_pkcs8(alg, der, &rng) {
                    return kp
                        .sign(&rng, msg)
                        .map(|s| s.as_ref().to_vec())
                        .map_err(|e| e.to_string());
                }
            }
            if let Ok(kp) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
                return Ok(kp.sign(msg).as_ref().to_vec());
            }
            let kp = RsaKeyPair::from_pkcs8(der).map_err(|_| {
                "unsupported key: expected ECDSA P-256/P-384, Ed25519 or RSA".to_owned()
            })?;
            rsa_sign(&kp, msg)
        }
        PrivateKeyDer::Pkcs1(der) => {
            let kp = RsaKeyPair::from_der(der.secret_pkcs1_der())
                .map_err(|e| format!("RSA key: {e}"))?;
            rsa_sign(&kp, msg)
        }
        _ => Err("unsupported key encoding: use PKCS#8 (BEGIN PRIVATE KEY) or PKCS#1 RSA".into()),
    }
}

fn rsa_sign(kp: &RsaKeyPair, msg: &[u8]) -> Result<Vec<u8>, String> {
    let mut sig = vec![0u8; kp.public().modulus_len()];
    kp.sign(
        &signature::RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        msg,
        &mut sig,
    )
    .map_err(|e| format!("RSA signing: {e}"))?;
    Ok(sig)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use lanyard_identity::X509POP_CHALLENGE_CONTEXT;

    use super::*;
    use x509_parser::prelude::FromDer;

    #[test]
    fn challenge_is_context_then_csr_hash() {
        let c = x509pop_challenge(b"csr");
        assert!(c.starts_with(b"lanyard-x509pop-v1"));
        assert_eq!(c.len(), X509POP_CHALLENGE_CONTEXT.len() + 32);
        assert_ne!(x509pop_challenge(b"csr"), x509pop_challenge(b"other"));
    }

    #[test]
    fn ecdsa_signature_verifies() {
        let key = lanyard_ca::SvidKey::generate().unwrap();
        let der = PrivateKeyDer::Pkcs8(key.pkcs8_der().into());
        let msg = x509pop_challenge(b"csr");
        let sig = sign(&der, &msg).unwrap();
        let spki = key.public_key_der();
        let (_, info) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&spki).unwrap();
        let public = signature::UnparsedPublicKey::new(
            &signature::ECDSA_P256_SHA256_ASN1,
            info.subject_public_key.data.to_vec(),
        );
        public.verify(&msg, &sig).unwrap();
    }

    #[test]
    fn join_token_request() {
        let req = attest_request(&NodeAttestation::JoinToken("tok".into()), vec![1, 2]).unwrap();
        assert_eq!(req.csr, vec![1, 2]);
        assert!(matches!(req.method, Some(Method::JoinToken(ref j)) if j.token == "tok"));
    }
}
