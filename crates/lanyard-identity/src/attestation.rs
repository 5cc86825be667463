//! What an x509pop node signs to prove possession of its key. The agent
//! signs it and the server checks it; both use this one definition.

/// Domain separation of the x509pop proof.
pub const X509POP_CHALLENGE_CONTEXT: &[u8] = b"lanyard-x509pop-v1";

/// The bytes an x509pop node signs: the context followed by SHA-256 of the
/// CSR it sends, so a captured proof cannot certify any other key.
pub fn x509pop_challenge(csr_der: &[u8]) -> Vec<u8> {
    let mut msg = X509POP_CHALLENGE_CONTEXT.to_vec();
    msg.extend_from_slice(ring::digest::digest(&ring::digest::SHA256, csr_der).as_ref());
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_challenge_binds_the_csr() {
        let a = x509pop_challenge(b"csr-a");
        assert!(a.starts_with(X509POP_CHALLENGE_CONTEXT));
        assert_eq!(a.len(), X509POP_CHALLENGE_CONTEXT.len() + 32);
        assert_ne!(a, x509pop_challenge(b"csr-b"));
    }
}
