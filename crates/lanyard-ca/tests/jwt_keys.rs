//! JWT signing keys follow the CA's rotation: every token verifies against
//! the JWT bundle until it expires, across rotations and restarts, and a
//! token never outlives the key that signed it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use lanyard_ca::{CaConfig, CaJournal, CertificateAuthority, Rotation};
use lanyard_jwt::{Alg, Claims};

const T0: u64 = 1_750_000_000;
const CA_TTL: Duration = Duration::from_secs(24 * 3600);
const JWT_TTL: i64 = 6 * 3600;

#[test]
fn rotations_keep_every_es256_jwt_valid_until_it_expires() {
    rotations_keep_every_jwt_valid(Alg::Es256);
}

#[test]
fn rotations_keep_every_rs256_jwt_valid_until_it_expires() {
    rotations_keep_every_jwt_valid(Alg::Rs256);
}

fn rotations_keep_every_jwt_valid(alg: Alg) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = CaConfig {
        jwt_algorithm: alg,
        ..self_signed_config(dir.path(), CA_TTL)
    };
    let mut now = at(T0);
    let mut ca = CertificateAuthority::load_or_create(cfg.clone(), None, now).unwrap();
    let mut issued: Vec<(String, i64, String)> = vec![];
    let mut kids_seen = vec![];
    let mut steps = vec![];
    while unix(now) < (T0 + 4 * 24 * 3600) as i64 {
        let claims = Claims::new(
            "spiffe://example.org/w",
            vec!["db".into()],
            unix(now),
            JWT_TTL,
        );
        let (token, exp) = ca.sign_jwt_svid(claims, now).unwrap();
        let kid = kid_of(&token);
        assert!(token.starts_with(&base64_header(alg)), "signed with {alg}");
        if !kids_seen.contains(&kid) {
            kids_seen.push(kid.clone());
        }
        issued.push((token, exp, kid));

        now = ca.next_rotation_at().max(now);
        let step = ca.rotate(now).unwrap();
        steps.push(step);
        if step != Rotation::Unchanged && steps.len() % 2 == 0 {
            let json = serde_json::to_string(&ca.journal()).unwrap();
            let journal: CaJournal = serde_json::from_str(&json).unwrap();
            let restarted =
                CertificateAuthority::load_or_create(cfg.clone(), Some(journal), now).unwrap();
            assert_eq!(
                restarted.jwt_bundle(),
                ca.jwt_bundle(),
                "keys survive a restart"
            );
            ca = restarted;
        }
        let bundle = ca.jwt_bundle();
        assert_eq!(
            bundle.keys.len(),
            ca.slots().len(),
            "one key per CA generation"
        );
        for (token, exp, kid) in &issued {
            if *exp > unix(now) {
                bundle
                    .verify(token, "db", unix(now))
                    .unwrap_or_else(|e| panic!("token of key {kid} at {}: {e}", unix(now)));
            }
        }
    }
    assert!(steps.contains(&Rotation::Activated) && steps.contains(&Rotation::Pruned));
    assert!(
        kids_seen.len() >= 4,
        "tokens were signed by each new key: {kids_seen:?}"
    );
    // Dropped generations take their JWT key files with them.
    ca.remove_unused_key_files().unwrap();
    let jwt_files = std::fs::read_dir(dir.path().join("keys"))
        .or_else(|_| std::fs::read_dir(dir.path()))
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().starts_with("jwt-")
        })
        .count();
    assert_eq!(jwt_files, ca.slots().len());
}

#[test]
fn a_token_never_outlives_the_active_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::load_or_create(
        self_signed_config(dir.path(), Duration::from_secs(3600)),
        None,
        at(T0),
    )
    .unwrap();
    let claims = Claims::new("spiffe://example.org/w", vec!["db".into()], T0 as i64, 7200);
    let (_, exp) = ca.sign_jwt_svid(claims, at(T0)).unwrap();
    assert_eq!(exp, ca.slots()[0].not_after);
}

/// The start of a token's base64url header: `{"alg":"<alg>",`.
fn base64_header(alg: Alg) -> String {
    use base64::Engine;
    let prefix = format!(r#"{{"alg":"{alg}","#);
    let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&prefix);
    // Whole 3-byte groups only: the last partial group depends on what follows.
    encoded[..prefix.len() / 3 * 4].to_owned()
}

fn kid_of(token: &str) -> String {
    use base64::Engine;
    let header = token.split('.').next().unwrap();
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&header).unwrap();
    v["kid"].as_str().unwrap().to_owned()
}
