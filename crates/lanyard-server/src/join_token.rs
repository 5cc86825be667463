//! Join tokens: 256-bit random secrets, shown once. The store keeps only the
//! token ID (a truncated SHA-256 of the secret), which is also what appears in
//! the agent's SPIFFE ID and selectors, so neither leaks the secret.

use ring::{digest, rand::SecureRandom};

/// A new random token (64 lower-case hex characters).
pub(crate) fn generate() -> Result<String, ring::error::Unspecified> {
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut bytes)?;
    Ok(hex::encode(bytes))
}

/// The token's public ID: the first 32 hex characters of SHA-256(token).
pub(crate) fn token_id(token: &str) -> String {
    let mut id = hex::encode(digest::digest(&digest::SHA256, token.as_bytes()));
    id.truncate(32);
    id
}

/// Checks the token's form before anything is looked up.
pub(crate) fn check_format(token: &str) -> Result<(), String> {
    if token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(format!(
            "malformed join token ({} characters): expected the 64 hex characters printed by `lanyard-server token generate`",
            token.len()
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_ids_stable() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(a, b);
        check_format(&a).unwrap();
        assert_eq!(token_id(&a), token_id(&a));
        assert_eq!(token_id(&a).len(), 32);
        assert!(!token_id(&a).contains(&a[..16]));
        assert!(check_format("short").unwrap_err().contains("64 hex"));
    }
}
