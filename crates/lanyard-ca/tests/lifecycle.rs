//! The CA life cycle over several rotations, driven with synthetic times:
//! bundle contents at each step, which CA signs, how long old CAs stay
//! published, TTL capping, and restarts from the journal.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use lanyard_ca::{CaError, CaJournal, CaSlotState, CertificateAuthority, IssuedSvid, Rotation};
use rustls_pki_types::CertificateDer;

const T0: u64 = 1_750_000_000;
const CA_TTL: Duration = Duration::from_secs(24 * 3600);

fn states(ca: &CertificateAuthority) -> Vec<CaSlotState> {
    ca.slots().iter().map(|s| s.state).collect()
}

fn active(ca: &CertificateAuthority) -> lanyard_ca::CaSlotInfo {
    ca.slots()
        .into_iter()
        .find(|s| s.state == CaSlotState::Active)
        .unwrap()
}

#[test]
fn first_rotation_cycle_step_by_step() {
    use CaSlotState::*;
    let dir = tempfile::tempdir().unwrap();
    let t0 = at(T0);
    let mut ca =
        CertificateAuthority::load_or_create(self_signed_config(dir.path(), CA_TTL), None, t0)
            .unwrap();
    let a = active(&ca);
    assert_eq!(states(&ca), vec![Active]);
    assert_eq!(ca.trust_bundle(), vec![a.certificate.clone()]);
    let life = a.not_after - a.not_before;
    let prepare_at = a.not_before + life / 2;
    let activate_at = a.not_before + life * 5 / 6;
    assert_eq!(unix(ca.next_rotation_at()), prepare_at);

    // Before half-life nothing happens.
    assert_eq!(ca.rotate(at(T0 + 3600)).unwrap(), Rotation::Unchanged);
    let s_a = sign(&ca, "/svc", HOUR, at(T0 + 3600));

    // Half-life: the next CA is prepared and published at once, but A still signs.
    let t_prep = at(u64::try_from(prepare_at).unwrap());
    assert_eq!(ca.rotate(t_prep).unwrap(), Rotation::Prepared);
    assert_eq!(states(&ca), vec![Active, Prepared]);
    let b = ca.slots()[1].clone();
    assert_eq!(
        ca.trust_bundle(),
        vec![a.certificate.clone(), b.certificate.clone()]
    );
    assert_eq!(b.not_before, prepare_at - 30);
    assert_eq!(b.not_after, prepare_at + 24 * 3600);
    assert_eq!(unix(ca.next_rotation_at()), activate_at);
    assert_eq!(
        ca.rotate(t_prep).unwrap(),
        Rotation::Unchanged,
        "idempotent"
    );
    let s_prep = sign(&ca, "/svc", HOUR, t_prep);
    assert_verifies(
        std::slice::from_ref(&a.certificate),
        &s_prep.cert_chain,
        t_prep,
    );
    assert_rejected(
        std::slice::from_ref(&b.certificate),
        &s_prep.cert_chain,
        t_prep,
    );

    // Just before activation, a long TTL is capped to A's NotAfter.
    let t_late = at(u64::try_from(activate_at - 1).unwrap());
    let s_capped = sign(&ca, "/svc", 10 * HOUR, t_late);
    assert_eq!(s_capped.not_after, a.not_after);
    assert_verifies(&ca.trust_bundle(), &s_capped.cert_chain, t_late);

    // Five sixths: B takes over, A is retired but stays in the bundle.
    let t_act = at(u64::try_from(activate_at).unwrap());
    assert_eq!(ca.rotate(t_act).unwrap(), Rotation::Activated);
    assert_eq!(states(&ca), vec![Retired, Active]);
    assert_eq!(active(&ca).serial, b.serial);
    assert_eq!(
        ca.trust_bundle(),
        vec![a.certificate.clone(), b.certificate.clone()]
    );
    let s_b = sign(&ca, "/svc", 10 * HOUR, t_act);
    assert_eq!(
        s_b.not_after,
        unix(t_act) + 10 * 3600,
        "B has room for the full TTL"
    );
    assert_verifies(std::slice::from_ref(&b.certificate), &s_b.cert_chain, t_act);
    assert_rejected(std::slice::from_ref(&a.certificate), &s_b.cert_chain, t_act);
    // A's SVIDs still verify against the published bundle until they expire.
    assert_verifies(&ca.trust_bundle(), &s_capped.cert_chain, t_act);

    // B's half-life falls just before A's end (both NotBefores are backdated
    // 30 s), so the next CA is prepared while A is still published.
    let b_half = b.not_before + (b.not_after - b.not_before) / 2;
    assert_eq!(b_half, a.not_after - 30);
    assert_eq!(unix(ca.next_rotation_at()), b_half);
    let just_before = at(u64::try_from(a.not_after - 1).unwrap());
    assert_eq!(ca.rotate(just_before).unwrap(), Rotation::Prepared);
    assert_eq!(ca.rotate(just_before).unwrap(), Rotation::Unchanged);
    assert_eq!(states(&ca), vec![Retired, Active, Prepared]);
    let c = ca.slots()[2].clone();
    assert_eq!(
        ca.trust_bundle(),
        vec![
            a.certificate.clone(),
            b.certificate.clone(),
            c.certificate.clone()
        ]
    );
    // A stays published until its NotAfter, which is when its last SVID expires.
    assert_verifies(&ca.trust_bundle(), &s_capped.cert_chain, just_before);
    assert_eq!(unix(ca.next_rotation_at()), a.not_after);
    let t_a_end = at(u64::try_from(a.not_after).unwrap());
    assert_eq!(ca.rotate(t_a_end).unwrap(), Rotation::Pruned);
    assert_eq!(states(&ca), vec![Active, Prepared]);
    assert_eq!(
        ca.trust_bundle(),
        vec![b.certificate.clone(), c.certificate.clone()]
    );
    assert_rejected(&ca.trust_bundle(), &s_capped.cert_chain, t_a_end);
    assert!(s_a.not_after <= a.not_after && s_capped.not_after <= a.not_after);
}

/// Runs the CA through several full rotations, stepping to each
/// `next_rotation_at`, signing an SVID at every step and checking the
/// invariants the server relies on.
#[test]
fn several_rotations_keep_every_svid_verifiable_until_it_expires() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = self_signed_config(dir.path(), CA_TTL);
    let mut now = at(T0);
    let mut ca = CertificateAuthority::load_or_create(cfg.clone(), None, now).unwrap();
    let mut issued: Vec<IssuedSvid> = vec![sign(&ca, "/w", 6 * HOUR, now)];
    let mut actives_seen = vec![active(&ca).serial];
    let mut history = vec![];
    let end = T0 + 4 * 24 * 3600;

    while unix(now) < i64::try_from(end).unwrap() {
        now = ca.next_rotation_at().max(now);
        let bundle_before = ca.trust_bundle();
        let step = ca.rotate(now).unwrap();
        history.push(step);
        let bundle = ca.trust_bundle();
        match step {
            Rotation::Prepared => {
                assert_eq!(bundle.len(), bundle_before.len() + 1);
                assert_eq!(&bundle[..bundle_before.len()], bundle_before.as_slice());
            }
            Rotation::Activated => {
                assert_eq!(bundle, bundle_before);
                let a = active(&ca).serial;
                assert!(!actives_seen.contains(&a));
                actives_seen.push(a);
            }
            Rotation::Pruned => assert!(bundle.len() < bundle_before.len()),
            Rotation::Unchanged => {}
        }
        // Journal every change and restart from it now and then.
        if step != Rotation::Unchanged && history.len() % 3 == 0 {
            let json = serde_json::to_string(&ca.journal()).unwrap();
            let journal: CaJournal = serde_json::from_str(&json).unwrap();
            let restarted =
                CertificateAuthority::load_or_create(cfg.clone(), Some(journal), now).unwrap();
            assert_eq!(restarted.trust_bundle(), ca.trust_bundle());
            assert_eq!(restarted.slots(), ca.slots());
            assert_eq!(restarted.next_rotation_at(), ca.next_rotation_at());
            ca = restarted;
        }
        // Never more than retired + active + prepared.
        assert!(ca.slots().len() <= 3, "{:?}", states(&ca));
        issued.push(sign(&ca, "/w", 6 * HOUR, now));
        // Every SVID that has not expired still verifies against the bundle;
        // every CA in the bundle is unexpired.
        for svid in &issued {
            if svid.not_after > unix(now) {
                webpki_verify(&bundle_of(&ca), &svid.cert_chain, now)
                    .unwrap_or_else(|e| panic!("{} at {}: {e:?}", svid.serial, unix(now)));
            }
        }
        assert!(ca.slots().iter().all(|s| s.not_after > unix(now)));
    }
    let activations = history
        .iter()
        .filter(|s| **s == Rotation::Activated)
        .count();
    assert!(activations >= 4, "{history:?}");
    assert!(history.contains(&Rotation::Pruned));
    // One more check with openssl on the final state.
    let last = issued.last().unwrap();
    assert_verifies(&ca.trust_bundle(), &last.cert_chain, now);
}

fn bundle_of(ca: &CertificateAuthority) -> Vec<CertificateDer<'static>> {
    ca.trust_bundle()
}

#[test]
fn restart_after_a_long_outage_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = self_signed_config(dir.path(), CA_TTL);
    let ca = CertificateAuthority::load_or_create(cfg.clone(), None, at(T0)).unwrap();
    let old = active(&ca);
    let journal = ca.journal();
    // Down for three days: every CA in the journal has expired.
    let later = at(T0 + 3 * 24 * 3600);
    let ca = CertificateAuthority::load_or_create(cfg, Some(journal), later).unwrap();
    let now_active = active(&ca);
    assert_ne!(now_active.serial, old.serial);
    assert_eq!(ca.slots().len(), 1, "the expired CA was dropped");
    assert!(now_active.not_after > unix(later));
    let svid = sign(&ca, "/back", HOUR, later);
    assert_verifies(&ca.trust_bundle(), &svid.cert_chain, later);
}

#[test]
fn journal_round_trip_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = self_signed_config(dir.path(), CA_TTL);
    let mut ca = CertificateAuthority::load_or_create(cfg.clone(), None, at(T0)).unwrap();
    let t = ca.next_rotation_at();
    assert_eq!(ca.rotate(t).unwrap(), Rotation::Prepared);
    let json = serde_json::to_string_pretty(&ca.journal()).unwrap();
    assert!(!json.contains("PRIVATE KEY"));
    drop(ca);

    let journal: CaJournal = serde_json::from_str(&json).unwrap();
    let mut ca = CertificateAuthority::load_or_create(cfg, Some(journal.clone()), t).unwrap();
    assert_eq!(ca.journal(), journal, "nothing changed on restore");
    let t2 = ca.next_rotation_at();
    assert_eq!(ca.rotate(t2).unwrap(), Rotation::Activated);
    let svid = sign(&ca, "/after-restart", HOUR, t2);
    assert_verifies(&[active(&ca).certificate], &svid.cert_chain, t2);
}

#[test]
fn a_missing_or_foreign_key_file_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = self_signed_config(dir.path(), CA_TTL);
    let ca = CertificateAuthority::load_or_create(cfg.clone(), None, at(T0)).unwrap();
    let journal = ca.journal();
    let key_file = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| is_ca_key(p))
        .unwrap();
    let saved = std::fs::read(&key_file).unwrap();

    // Replaced by another CA's key: refused.
    let other_dir = tempfile::tempdir().unwrap();
    CertificateAuthority::load_or_create(
        self_signed_config(other_dir.path(), CA_TTL),
        None,
        at(T0),
    )
    .unwrap();
    let other_key = std::fs::read_dir(other_dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| is_ca_key(p))
        .unwrap();
    std::fs::copy(&other_key, &key_file).unwrap();
    let err = CertificateAuthority::load_or_create(cfg.clone(), Some(journal.clone()), at(T0))
        .unwrap_err();
    assert!(matches!(err, CaError::BadKeyFile { .. }), "{err}");

    // Garbage: refused.
    std::fs::write(&key_file, "not a key").unwrap();
    let err = CertificateAuthority::load_or_create(cfg.clone(), Some(journal.clone()), at(T0))
        .unwrap_err();
    assert!(matches!(err, CaError::BadKeyFile { .. }), "{err}");

    // Missing: refused, naming the file; no new CA is minted in its place.
    std::fs::remove_file(&key_file).unwrap();
    let err = CertificateAuthority::load_or_create(cfg.clone(), Some(journal.clone()), at(T0))
        .unwrap_err();
    match &err {
        CaError::MissingKeyFile { path } => assert_eq!(path, &key_file),
        other => panic!("expected MissingKeyFile, got {other}"),
    }
    assert!(err.to_string().contains(&key_file.display().to_string()));
    let ca_keys = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| is_ca_key(&e.as_ref().unwrap().path()))
        .count();
    assert_eq!(ca_keys, 0);

    // Restored from backup: fine again.
    std::fs::write(&key_file, saved).unwrap();
    CertificateAuthority::load_or_create(cfg, Some(journal), at(T0)).unwrap();
}

/// A CA key file (`ca-*.key`), not a generation's JWT key.
fn is_ca_key(path: &std::path::Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("ca-"))
}

#[test]
fn journal_for_another_trust_domain_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca =
        CertificateAuthority::load_or_create(self_signed_config(dir.path(), CA_TTL), None, at(T0))
            .unwrap();
    let mut cfg = self_signed_config(dir.path(), CA_TTL);
    cfg.trust_domain = lanyard_identity::TrustDomain::new("other.org").unwrap();
    let err = CertificateAuthority::load_or_create(cfg, Some(ca.journal()), at(T0)).unwrap_err();
    assert!(matches!(err, CaError::Journal { .. }), "{err}");
    assert!(err.to_string().contains("other.org"), "{err}");
}

#[test]
fn key_files_are_0600_and_unused_ones_can_be_removed() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let mut ca =
        CertificateAuthority::load_or_create(self_signed_config(&keys, CA_TTL), None, at(T0))
            .unwrap();
    assert_eq!(
        std::fs::metadata(&keys).unwrap().permissions().mode() & 0o777,
        0o700
    );
    // Prepare, activate, prepare again, prune: three generations written
    // (a CA key and a JWT key each), one no longer used.
    for expected in [
        Rotation::Prepared,
        Rotation::Activated,
        Rotation::Prepared,
        Rotation::Pruned,
    ] {
        let t = ca.next_rotation_at();
        assert_eq!(ca.rotate(t).unwrap(), expected);
    }
    let files: Vec<_> = std::fs::read_dir(&keys)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 6);
    for f in &files {
        assert_eq!(
            std::fs::metadata(f).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    assert_eq!(ca.remove_unused_key_files().unwrap(), 2);
    assert_eq!(std::fs::read_dir(&keys).unwrap().count(), 4);
    assert_eq!(ca.remove_unused_key_files().unwrap(), 0);
}
