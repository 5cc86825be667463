//! An SVID outside its validity is refused with the times that decided it,
//! and rustls carries them on (ExpiredContext, NotValidYetContext) so a
//! peer's log says when, not only that.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lanyard_mtls::{MtlsError, verify_svid_chain};
use rustls::{CertificateError, Error};
use rustls_pki_types::UnixTime;
use support::Ca;

fn at(offset_secs: i64) -> UnixTime {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    UnixTime::since_unix_epoch(Duration::from_secs((now + offset_secs) as u64))
}

#[test]
fn expired_and_not_yet_valid_keep_their_times() {
    let ca = Ca::new();
    let svid = ca.svid("spiffe://example.org/web");
    let bundle = [ca.cert.clone()];

    let later = at(10 * 365 * 86_400);
    let err = verify_svid_chain(&svid.chain[0], &[], &bundle, later).unwrap_err();
    let MtlsError::Expired { time, not_after } = err else {
        panic!("expected Expired, got {err}")
    };
    assert_eq!(time, later);
    assert!(not_after.as_secs() < later.as_secs());
    assert!(err_text(time, not_after).contains("expired at"));
    match Error::from(MtlsError::Expired { time, not_after }) {
        Error::InvalidCertificate(CertificateError::ExpiredContext {
            time: t,
            not_after: n,
        }) => {
            assert_eq!((t, n), (time, not_after));
        }
        other => panic!("expected ExpiredContext, got {other:?}"),
    }

    let earlier = at(-10 * 365 * 86_400);
    let err = verify_svid_chain(&svid.chain[0], &[], &bundle, earlier).unwrap_err();
    let MtlsError::NotYetValid { time, not_before } = err else {
        panic!("expected NotYetValid, got {err}")
    };
    assert!(not_before.as_secs() > time.as_secs());
    assert!(matches!(
        Error::from(MtlsError::NotYetValid { time, not_before }),
        Error::InvalidCertificate(CertificateError::NotValidYetContext { .. })
    ));
}

fn err_text(time: UnixTime, not_after: UnixTime) -> String {
    MtlsError::Expired { time, not_after }.to_string()
}
