//! JWS compact serialization (RFC 7515 §7.1): `header.payload.signature`,
//! each segment base64url without padding.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};

use crate::JwtError;

/// The longest token read. A JWT-SVID is a few hundred bytes; the bound
/// keeps a hostile caller from making the validator decode megabytes.
pub(crate) const MAX_TOKEN_LEN: usize = 16 * 1024;

/// The protected header of a JWT-SVID.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// The signature algorithm: `ES256` or `RS256`.
    pub alg: String,
    /// The ID of the signing key in the trust domain's JWT bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// `JWT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
}

/// A token split into its parts, nothing checked but its shape.
#[derive(Debug)]
pub(crate) struct Parts<'a> {
    pub header: Header,
    pub payload: Vec<u8>,
    /// `header.payload`, the bytes the signature covers.
    pub signed: &'a str,
    pub signature: Vec<u8>,
}

/// Base64url (no padding) of `bytes`.
pub(crate) fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `header.payload` for `header` and `claims`, ready to be signed.
pub(crate) fn signing_input(header: &Header, claims: &impl Serialize) -> Result<String, JwtError> {
    let header =
        serde_json::to_vec(header).map_err(|e| JwtError::Key(format!("encode header: {e}")))?;
    let claims =
        serde_json::to_vec(claims).map_err(|e| JwtError::Key(format!("encode claims: {e}")))?;
    Ok(format!("{}.{}", b64(&header), b64(&claims)))
}

/// Splits and decodes a compact token.
pub(crate) fn split(token: &str) -> Result<Parts<'_>, JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::Malformed(format!(
            "the token is {} bytes; at most {MAX_TOKEN_LEN} are accepted",
            token.len()
        )));
    }
    let mut segments = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return Err(JwtError::Malformed(
            "expected three base64url segments separated by '.' (JWS compact form)".into(),
        ));
    };
    let decode = |what: &str, seg: &str| {
        URL_SAFE_NO_PAD
            .decode(seg)
            .map_err(|e| JwtError::Malformed(format!("the {what} is not base64url ({e})")))
    };
    let header: Header = serde_json::from_slice(&decode("header", h)?)
        .map_err(|e| JwtError::Malformed(format!("the header is not a JOSE header ({e})")))?;
    Ok(Parts {
        header,
        payload: decode("payload", p)?,
        signed: &token[..h.len() + 1 + p.len()],
        signature: decode("signature", s)?,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn shapes_other_than_three_segments_are_malformed() {
        for bad in ["", "a", "a.b", "a.b.c.d", "!!.e30.sig"] {
            assert!(matches!(split(bad), Err(JwtError::Malformed(_))), "{bad}");
        }
        let huge = "a".repeat(MAX_TOKEN_LEN + 1);
        assert!(split(&huge).unwrap_err().to_string().contains("at most"));
    }

    #[test]
    fn the_signed_part_is_header_dot_payload() {
        let header = b64(br#"{"alg":"ES256"}"#);
        let token = format!("{header}.e30.c2ln");
        let parts = split(&token).unwrap();
        assert_eq!(parts.signed, format!("{header}.e30"));
        assert_eq!(parts.signature, b"sig");
        assert_eq!(parts.header.alg, "ES256");
    }
}
