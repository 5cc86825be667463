//! Workload API responses built from a [`Snapshot`] for one caller: pure
//! functions, so selection, ordering and encoding are tested without I/O.

use std::collections::HashMap;

use lanyard_identity::Selector;
use lanyard_proto::workload::{X509BundlesResponse, X509svid, X509svidResponse};
use rustls_pki_types::CertificateDer;
use tonic::Status;

use crate::cache::{CachedSvid, Readiness, Snapshot, renewing_for, select_for};

/// The message sent to a caller entitled to nothing.
pub const NO_IDENTITY: &str = "no identity issued";

fn concat<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    parts.into_iter().flatten().copied().collect()
}

/// An SVID's chain as the Workload API carries it: leaf first, then its
/// intermediates, then the CRL's issuer if the chain lacks it.
///
/// In upstream mode one of Lanyard's intermediates signs the CRL, and right
/// after a CA rotation it is not yet the one that issued a holder's SVID.
/// The standard Workload API has no field for it, but an `x509_svid` "MAY
/// include intermediates", so it travels there: a client that collects CRL
/// signers from its own chain (lanyard-mtls does, checking each chains to
/// the bundle) accepts the new CRL at once, and one that does not is
/// unaffected. TLS 1.3 peers tolerate the extra certificate in a chain
/// (RFC 8446, 4.4.2), and it is gone once the SVID is renewed by the new
/// intermediate.
fn svid_chain(svid: &CachedSvid, crl_issuer: Option<&CertificateDer<'static>>) -> Vec<u8> {
    let missing = crl_issuer
        .map(|issuer| issuer.as_ref())
        .filter(|issuer| !svid.chain().any(|c| c == *issuer));
    concat(svid.chain().chain(missing))
}

/// Unavailable unless the agent is ready.
pub fn serving(snapshot: &Snapshot) -> Result<(), Status> {
    match &snapshot.readiness {
        Readiness::Ready => Ok(()),
        Readiness::Starting => Err(Status::unavailable(
            "agent is not ready yet: no SVIDs fetched from the server",
        )),
        Readiness::Stopped(why) => {
            Err(Status::unavailable(format!("agent stopped serving: {why}")))
        }
    }
}

/// `FetchX509SVID`: every unexpired SVID the caller's selectors match,
/// default first; PermissionDenied "no identity issued" when there is none.
/// `Ok(None)` when the caller's only SVIDs were just revoked and their
/// replacements are being issued: nothing to send yet, but no reason to end
/// the stream.
pub fn x509_svid_response(
    snapshot: &Snapshot,
    selectors: &[Selector],
    now: i64,
) -> Result<Option<X509svidResponse>, Status> {
    serving(snapshot)?;
    let chosen = select_for(&snapshot.svids, selectors, now);
    if chosen.is_empty() {
        if renewing_for(&snapshot.renewing, selectors, now).is_some() {
            return Ok(None);
        }
        return Err(Status::permission_denied(NO_IDENTITY));
    }
    // One buffer for every SVID's copy of the bundle.
    let bundle = bytes::Bytes::from(concat(snapshot.bundle.iter().map(|c| c.as_ref())));
    let svids = chosen
        .iter()
        .map(|s| X509svid {
            spiffe_id: s.entry.spiffe_id.to_string(),
            x509_svid: svid_chain(s, snapshot.crl_issuer.as_ref()).into(),
            x509_svid_key: s.key_pkcs8().into(),
            bundle: bundle.clone(),
            hint: s.entry.hint.clone(),
        })
        .collect();
    Ok(Some(X509svidResponse {
        svids,
        crl: crl_list(snapshot),
        federated_bundles: HashMap::new(),
    }))
}

/// `FetchX509Bundles`: the trust domain's bundle (keyed by its SPIFFE ID)
/// and CRL, for a caller entitled to at least one SVID (one being issued
/// again after a revocation counts).
pub fn x509_bundles_response(
    snapshot: &Snapshot,
    selectors: &[Selector],
    now: i64,
) -> Result<X509BundlesResponse, Status> {
    serving(snapshot)?;
    if select_for(&snapshot.svids, selectors, now).is_empty()
        && renewing_for(&snapshot.renewing, selectors, now).is_none()
    {
        return Err(Status::permission_denied(NO_IDENTITY));
    }
    let td = snapshot
        .trust_domain
        .as_ref()
        .ok_or_else(|| Status::unavailable("agent is not ready yet: trust domain unknown"))?;
    let mut bundles = HashMap::new();
    bundles.insert(
        td.id().to_string(),
        concat(snapshot.bundle.iter().map(|c| c.as_ref())),
    );
    Ok(X509BundlesResponse {
        crl: crl_list(snapshot),
        bundles,
    })
}

fn crl_list(snapshot: &Snapshot) -> Vec<Vec<u8>> {
    if snapshot.crl.is_empty() {
        Vec::new()
    } else {
        vec![snapshot.crl.clone()]
    }
}

/// The earliest NotAfter among the SVIDs a caller receives (or the end of
/// its wait for a re-issued one): the moment its stream must be
/// re-evaluated even if nothing else changes.
pub fn next_expiry(snapshot: &Snapshot, selectors: &[Selector], now: i64) -> Option<i64> {
    select_for(&snapshot.svids, selectors, now)
        .iter()
        .map(|s| s.not_after)
        .chain(renewing_for(&snapshot.renewing, selectors, now))
        .min()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::cache::tests::svid;

    fn snapshot() -> Snapshot {
        Snapshot {
            readiness: Readiness::Ready,
            trust_domain: Some("td.org".parse().unwrap()),
            svids: vec![
                svid("b", 20, &["unix:uid:1"], 1000),
                svid("a", 10, &["unix:uid:1"], 500),
                svid("z", 1, &["unix:uid:2"], 1000),
            ],
            bundle: vec![
                CertificateDer::from(vec![1u8, 2]),
                CertificateDer::from(vec![3u8]),
            ],
            crl: vec![],
            crl_issuer: None,
            crl_next_update: None,
            renewing: vec![],
            jwt_bundle: Default::default(),
            issuance: Default::default(),
        }
    }

    fn sel(s: &str) -> Vec<Selector> {
        vec![s.parse().unwrap()]
    }

    #[test]
    fn svid_response_default_first_with_hint_key_bundle() {
        let r = x509_svid_response(&snapshot(), &sel("unix:uid:1"), 100)
            .unwrap()
            .unwrap();
        let ids: Vec<_> = r.svids.iter().map(|s| s.spiffe_id.as_str()).collect();
        assert_eq!(ids, ["spiffe://td.org/a", "spiffe://td.org/b"]);
        assert_eq!(r.svids[0].hint, "hint-a");
        assert_eq!(r.svids[0].x509_svid, b"a".to_vec());
        assert_eq!(r.svids[0].x509_svid_key, b"secret-key".to_vec());
        assert_eq!(r.svids[0].bundle, vec![1, 2, 3]);
        assert!(r.crl.is_empty());
    }

    #[test]
    fn expired_svids_are_never_sent() {
        let r = x509_svid_response(&snapshot(), &sel("unix:uid:1"), 500)
            .unwrap()
            .unwrap();
        assert_eq!(r.svids.len(), 1);
        assert_eq!(r.svids[0].spiffe_id, "spiffe://td.org/b");
        assert_eq!(next_expiry(&snapshot(), &sel("unix:uid:1"), 100), Some(500));
        let e = x509_svid_response(&snapshot(), &sel("unix:uid:1"), 1000).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
    }

    #[test]
    fn no_match_is_permission_denied_with_the_standard_message() {
        let e = x509_svid_response(&snapshot(), &sel("unix:uid:3"), 100).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert_eq!(e.message(), "no identity issued");
        let e = x509_bundles_response(&snapshot(), &sel("unix:uid:3"), 100).unwrap_err();
        assert_eq!(e.message(), "no identity issued");
    }

    #[test]
    fn not_ready_or_stopped_is_unavailable() {
        let mut s = snapshot();
        s.readiness = Readiness::Starting;
        assert_eq!(
            x509_svid_response(&s, &sel("unix:uid:1"), 100)
                .unwrap_err()
                .code(),
            tonic::Code::Unavailable
        );
        s.readiness = Readiness::Stopped("banned".into());
        let e = x509_bundles_response(&s, &sel("unix:uid:1"), 100).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unavailable);
        assert!(e.message().contains("banned"));
    }

    #[test]
    fn bundles_keyed_by_trust_domain_id_with_crl() {
        let mut s = snapshot();
        s.crl = vec![7, 7];
        let r = x509_bundles_response(&s, &sel("unix:uid:2"), 100).unwrap();
        assert_eq!(r.bundles.get("spiffe://td.org"), Some(&vec![1, 2, 3]));
        assert_eq!(r.crl, vec![vec![7, 7]]);
        let r = x509_svid_response(&s, &sel("unix:uid:2"), 100)
            .unwrap()
            .unwrap();
        assert_eq!(r.crl, vec![vec![7, 7]]);
    }

    #[test]
    fn the_crls_issuer_rides_at_the_end_of_each_chain_that_lacks_it() {
        let mut s = snapshot();
        s.crl = vec![7];
        s.crl_issuer = Some(CertificateDer::from(b"I".to_vec()));
        let r = x509_svid_response(&s, &sel("unix:uid:1"), 100)
            .unwrap()
            .unwrap();
        assert_eq!(r.svids[0].x509_svid, b"aI".to_vec());
        assert_eq!(r.svids[1].x509_svid, b"bI".to_vec());
        // A chain that already carries it (renewed by that CA) is unchanged.
        let mut renewed = (*s.svids[1]).clone();
        renewed.intermediates = vec![CertificateDer::from(b"I".to_vec())].into();
        s.svids[1] = std::sync::Arc::new(renewed);
        let r = x509_svid_response(&s, &sel("unix:uid:1"), 100)
            .unwrap()
            .unwrap();
        assert_eq!(r.svids[0].x509_svid, b"aI".to_vec());
        // Bundles stay trust anchors only.
        let b = x509_bundles_response(&s, &sel("unix:uid:1"), 100).unwrap();
        assert_eq!(b.bundles.get("spiffe://td.org"), Some(&vec![1, 2, 3]));
    }

    #[test]
    fn a_caller_whose_svid_is_being_reissued_waits_instead_of_being_refused() {
        let mut s = snapshot();
        let revoked = svid("r", 1, &["unix:uid:3"], 900);
        s.renewing = vec![crate::cache::Renewing {
            entry: revoked.entry.clone(),
            until: 900,
        }];
        s.crl = vec![5];
        // No SVID to send, but no "no identity" either: the stream waits.
        assert_eq!(
            x509_svid_response(&s, &sel("unix:uid:3"), 100).unwrap(),
            None
        );
        // Bundles (with the new CRL) still flow to it.
        let b = x509_bundles_response(&s, &sel("unix:uid:3"), 100).unwrap();
        assert_eq!(b.crl, vec![vec![5]]);
        // The wait ends when the revoked SVID would have expired anyway.
        assert_eq!(next_expiry(&s, &sel("unix:uid:3"), 100), Some(900));
        let e = x509_svid_response(&s, &sel("unix:uid:3"), 900).unwrap_err();
        assert_eq!(e.message(), NO_IDENTITY);
        // Callers with other SVIDs get them, without the revoked one.
        let r = x509_svid_response(&s, &sel("unix:uid:1"), 100)
            .unwrap()
            .unwrap();
        assert_eq!(r.svids.len(), 2);
    }
}
