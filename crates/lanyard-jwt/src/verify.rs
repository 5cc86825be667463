//! Verifying a token against a key set.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};

use crate::{
    Alg, Claims, Jwk, Jwks, JwtError,
    jws::{Header, split},
};

/// A token that verified: its header, its claims, and every claim as sent.
#[derive(Clone, Debug, PartialEq)]
pub struct Verified {
    /// The protected header.
    pub header: Header,
    /// The claims Lanyard knows.
    pub claims: Claims,
    /// Every claim as sent, for callers that return them verbatim
    /// (ValidateJWTSVID).
    pub raw: serde_json::Map<String, serde_json::Value>,
}

impl Jwks {
    /// Verifies `token` for `audience` at `now` (unix seconds): a
    /// supported `alg` (never `none`), a `kid` in this set whose key type
    /// matches, a valid signature, `exp` in the future, and `audience`
    /// among the token's audiences.
    pub fn verify(&self, token: &str, audience: &str, now: i64) -> Result<Verified, JwtError> {
        if audience.is_empty() {
            return Err(JwtError::MissingAudience);
        }
        let parts = split(token)?;
        let alg: Alg = parts.header.alg.parse()?;
        let kid = parts.header.kid.clone().ok_or(JwtError::MissingKeyId)?;
        let jwk = self
            .find(&kid)
            .ok_or_else(|| JwtError::UnknownKeyId(kid.clone()))?;
        if jwk.kty != alg.kty() || jwk.alg.as_deref().is_some_and(|a| a != alg.as_str()) {
            return Err(JwtError::AlgorithmMismatch {
                kid,
                key: if jwk.kty == "RSA" { "RSA" } else { "EC" },
                alg: alg.as_str().into(),
            });
        }
        check_signature(jwk, alg, parts.signed.as_bytes(), &parts.signature)
            .map_err(|()| JwtError::BadSignature(kid))?;

        let raw: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&parts.payload).map_err(|e| {
                JwtError::Malformed(format!("the payload is not a JSON object ({e})"))
            })?;
        let claims: Claims = serde_json::from_value(serde_json::Value::Object(raw.clone()))
            .map_err(|e| {
                JwtError::Malformed(format!(
                    "the claims are not those of a JWT-SVID (sub, aud, exp, iat): {e}"
                ))
            })?;
        if now >= claims.exp {
            return Err(JwtError::Expired {
                exp: claims.exp,
                now,
            });
        }
        if !claims.aud.contains(audience) {
            return Err(JwtError::WrongAudience {
                want: audience.into(),
                got: claims.aud.0.clone(),
            });
        }
        Ok(Verified {
            header: parts.header,
            claims,
            raw,
        })
    }
}

fn check_signature(jwk: &Jwk, alg: Alg, signed: &[u8], sig: &[u8]) -> Result<(), ()> {
    let field = |v: &Option<String>| {
        v.as_deref()
            .and_then(|s| URL_SAFE_NO_PAD.decode(s).ok())
            .ok_or(())
    };
    match alg {
        Alg::Es256 => {
            if jwk.crv.as_deref() != Some("P-256") {
                return Err(());
            }
            let (x, y) = (field(&jwk.x)?, field(&jwk.y)?);
            if x.len() != 32 || y.len() != 32 {
                return Err(());
            }
            let mut point = Vec::with_capacity(65);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                .verify(signed, sig)
                .map_err(|_| ())
        }
        Alg::Rs256 => RsaPublicKeyComponents {
            n: field(&jwk.n)?,
            e: field(&jwk.e)?,
        }
        .verify(&signature::RSA_PKCS1_2048_8192_SHA256, signed, sig)
        .map_err(|_| ()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::{SigningKey, TaskClaim, jws::b64};

    const NOW: i64 = 1_700_000_000;

    fn signed(claims: &Claims) -> (SigningKey, Jwks, String) {
        let key = SigningKey::generate(Alg::Es256).unwrap();
        let token = key.sign(claims).unwrap();
        let jwks = Jwks {
            keys: vec![key.public_jwk()],
        };
        (key, jwks, token)
    }

    fn claims() -> Claims {
        Claims::new(
            "spiffe://td/web",
            vec!["db".into(), "cache".into()],
            NOW,
            300,
        )
    }

    #[test]
    fn a_signed_token_verifies_for_each_of_its_audiences() {
        let mut c = claims();
        c.lanyard_task = Some(TaskClaim {
            id: "t1".into(),
            ticket: "CHG-1".into(),
        });
        let (key, jwks, token) = signed(&c);
        for aud in ["db", "cache"] {
            let v = jwks.verify(&token, aud, NOW + 1).unwrap();
            assert_eq!(v.claims, c);
            assert_eq!(v.header.kid.as_deref(), Some(key.kid()));
            assert_eq!(v.raw["lanyard_task"]["ticket"], "CHG-1");
        }
    }

    #[test]
    fn refusals_name_what_was_wrong() {
        let (_, jwks, token) = signed(&claims());
        assert!(matches!(
            jwks.verify(&token, "", NOW),
            Err(JwtError::MissingAudience)
        ));
        assert!(matches!(
            jwks.verify(&token, "web", NOW),
            Err(JwtError::WrongAudience { .. })
        ));
        assert!(matches!(
            jwks.verify(&token, "db", NOW + 300),
            Err(JwtError::Expired { .. })
        ));
        let other = Jwks {
            keys: vec![SigningKey::generate(Alg::Es256).unwrap().public_jwk()],
        };
        assert!(matches!(
            other.verify(&token, "db", NOW),
            Err(JwtError::UnknownKeyId(_))
        ));
    }

    #[test]
    fn a_changed_payload_or_signature_does_not_verify() {
        let (_, jwks, token) = signed(&claims());
        let parts: Vec<&str> = token.split('.').collect();
        let mut forged = claims();
        forged.sub = "spiffe://td/admin".into();
        let payload = b64(&serde_json::to_vec(&forged).unwrap());
        let swapped = format!("{}.{payload}.{}", parts[0], parts[2]);
        assert!(matches!(
            jwks.verify(&swapped, "db", NOW),
            Err(JwtError::BadSignature(_))
        ));
        let short = format!("{}.{}.{}", parts[0], parts[1], b64(b"xx"));
        assert!(matches!(
            jwks.verify(&short, "db", NOW),
            Err(JwtError::BadSignature(_))
        ));
    }

    #[test]
    fn alg_none_and_foreign_algorithms_are_refused() {
        let (key, jwks, _) = signed(&claims());
        let payload = b64(&serde_json::to_vec(&claims()).unwrap());
        for (alg, unsigned) in [("none", true), ("NONE", true), ("HS256", false)] {
            let header = b64(format!(r#"{{"alg":"{alg}","kid":"{}"}}"#, key.kid()).as_bytes());
            let token = format!("{header}.{payload}.");
            let err = jwks.verify(&token, "db", NOW).unwrap_err();
            match (unsigned, err) {
                (true, JwtError::Unsigned) | (false, JwtError::UnsupportedAlgorithm(_)) => {}
                (_, other) => panic!("{alg}: {other}"),
            }
        }
        let header = b64(br#"{"alg":"ES256"}"#);
        assert!(matches!(
            jwks.verify(&format!("{header}.{payload}.c2ln"), "db", NOW),
            Err(JwtError::MissingKeyId)
        ));
        let header = b64(format!(r#"{{"alg":"RS256","kid":"{}"}}"#, key.kid()).as_bytes());
        assert!(matches!(
            jwks.verify(&format!("{header}.{payload}.c2ln"), "db", NOW),
            Err(JwtError::AlgorithmMismatch { .. })
        ));
    }

    #[test]
    fn rs256_keys_sign_and_verify() {
        let key = SigningKey::generate(Alg::Rs256).unwrap();
        let jwk = key.public_jwk();
        assert_eq!(
            (jwk.kty.as_str(), jwk.alg.as_deref()),
            ("RSA", Some("RS256"))
        );
        let token = key.sign(&claims()).unwrap();
        let jwks = Jwks { keys: vec![jwk] };
        assert_eq!(jwks.verify(&token, "db", NOW).unwrap().claims, claims());
        let again = crate::load_any(key.pkcs8_der()).unwrap();
        assert_eq!((again.alg(), again.kid()), (Alg::Rs256, key.kid()));
        // An ES256 header on an RSA key is refused.
        let header = b64(format!(r#"{{"alg":"ES256","kid":"{}"}}"#, key.kid()).as_bytes());
        let payload = token.split('.').nth(1).unwrap();
        assert!(matches!(
            jwks.verify(&format!("{header}.{payload}.c2ln"), "db", NOW),
            Err(JwtError::AlgorithmMismatch { .. })
        ));
    }

    #[test]
    fn the_public_jwk_round_trips_as_json() {
        let key = SigningKey::generate(Alg::Es256).unwrap();
        let jwks = Jwks {
            keys: vec![key.public_jwk()],
        };
        let json = String::from_utf8(jwks.to_json()).unwrap();
        assert!(json.contains(r#""use":"jwt-svid""#) && json.contains(r#""crv":"P-256""#));
        assert_eq!(Jwks::from_json(json.as_bytes()).unwrap(), jwks);
        let again = SigningKey::from_pkcs8(Alg::Es256, key.pkcs8_der()).unwrap();
        assert_eq!(again.kid(), key.kid());
        assert!(!format!("{key:?}").contains(&format!("{:?}", key.pkcs8_der())));
    }
}
