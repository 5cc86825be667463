//! Revocation in the agent: the trust domain's CRL from the Sync stream,
//! accepted only when a CA in the bundle signed it (and never older than
//! the one in force), and the pure decision of which cached SVIDs it takes
//! out of service and which of those are issued again.

use std::{fmt, sync::Arc};

use lanyard_mtls::RevocationList;
use rustls_pki_types::CertificateDer;

/// A CRL that verified against the trust bundle. Compared by its DER, so
/// snapshots holding the same CRL are equal.
#[derive(Clone)]
pub struct VerifiedCrl(Arc<RevocationList>);

impl VerifiedCrl {
    /// Wraps a CRL whose signature was checked.
    pub fn new(crl: Arc<RevocationList>) -> Self {
        Self(crl)
    }

    /// The DER bytes, as served in the Workload API `crl` field.
    pub fn der(&self) -> &[u8] {
        self.0.der()
    }

    /// Whether `serial` (lower-case hex without leading zero bytes, as
    /// `lanyard_identity::SvidSummary::serial`) is revoked.
    pub fn is_revoked(&self, serial: &str) -> bool {
        self.0.is_revoked(serial)
    }

    /// The intermediate CA that signed it, when no bundle CA did (upstream
    /// mode).
    pub fn signing_intermediate(&self) -> Option<&CertificateDer<'static>> {
        self.0.signing_intermediate()
    }

    /// The CRL number as an integer, if present and within `i64`.
    pub fn number(&self) -> Option<i64> {
        self.0.number().and_then(parse_number)
    }

    /// The CRL number as hex, for logs.
    pub fn number_hex(&self) -> &str {
        self.0.number().unwrap_or("-")
    }

    /// Its nextUpdate (unix seconds), if it has one.
    pub fn next_update(&self) -> Option<i64> {
        self.0.next_update()
    }

    /// How many serials the CRL lists.
    pub fn revoked_count(&self) -> usize {
        self.0.len()
    }
}

impl PartialEq for VerifiedCrl {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.der() == other.der()
    }
}

impl Eq for VerifiedCrl {}

impl fmt::Debug for VerifiedCrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("VerifiedCrl").field(&self.0).finish()
    }
}

/// A CRL number (hex) as an integer; `None` beyond `i64`.
fn parse_number(hex: &str) -> Option<i64> {
    u64::from_str_radix(hex, 16)
        .ok()
        .and_then(|n| i64::try_from(n).ok())
}

/// One cached SVID, as [`plan_eviction`] sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cached<'a> {
    /// The entry it was issued for.
    pub entry_id: &'a str,
    /// Its serial, normalized.
    pub serial: &'a str,
}

/// What a CRL does to the cache.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Eviction {
    /// `(entry ID, serial)` of every cached SVID the CRL lists: dropped at
    /// once, never served again.
    pub dropped: Vec<(String, String)>,
    /// Entries among `dropped` that still exist: a new key and SVID are
    /// requested for them at once.
    pub renew: Vec<String>,
}

impl Eviction {
    /// Whether the CRL touches nothing in the cache.
    pub fn is_empty(&self) -> bool {
        self.dropped.is_empty()
    }
}

/// Which cached SVIDs a CRL revokes (`is_revoked`), and which of them to
/// issue again: those whose entry still `exists`.
pub fn plan_eviction<'a>(
    cached: impl IntoIterator<Item = Cached<'a>>,
    exists: impl Fn(&str) -> bool,
    is_revoked: impl Fn(&str) -> bool,
) -> Eviction {
    let mut plan = Eviction::default();
    for c in cached {
        if !is_revoked(c.serial) {
            continue;
        }
        plan.dropped
            .push((c.entry_id.to_owned(), c.serial.to_owned()));
        if exists(c.entry_id) {
            plan.renew.push(c.entry_id.to_owned());
        }
    }
    plan.dropped.sort();
    plan.renew.sort();
    plan
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::{
        collections::HashSet,
        time::{Duration, SystemTime},
    };

    use lanyard_ca::{CaConfig, CertificateAuthority, RevocationReason, RevokedSerial};
    use lanyard_identity::TrustDomain;

    use super::*;

    fn cached<'a>(pairs: &'a [(&'a str, &'a str)]) -> Vec<Cached<'a>> {
        pairs
            .iter()
            .map(|(entry_id, serial)| Cached { entry_id, serial })
            .collect()
    }

    #[test]
    fn drops_listed_serials_and_renews_only_existing_entries() {
        let cache = [
            ("a", "0a11"),
            ("b", "0b22"),
            ("c", "0c33"),
            ("gone", "0d44"),
        ];
        let revoked: HashSet<&str> = ["0b22", "0d44", "ffff"].into();
        let entries: HashSet<&str> = ["a", "b", "c"].into();
        let plan = plan_eviction(
            cached(&cache),
            |e| entries.contains(e),
            |s| revoked.contains(s),
        );
        assert_eq!(
            plan.dropped,
            [
                ("b".to_owned(), "0b22".to_owned()),
                ("gone".to_owned(), "0d44".to_owned())
            ]
        );
        assert_eq!(plan.renew, ["b"]);
    }

    #[test]
    fn nothing_revoked_touches_nothing() {
        let cache = [("a", "0a11")];
        let entries: HashSet<&str> = ["a"].into();
        let plan = plan_eviction(cached(&cache), |e| entries.contains(e), |_| false);
        assert!(plan.is_empty());
        assert!(plan.renew.is_empty());
        assert!(plan_eviction(cached(&[]), |e| entries.contains(e), |_| true).is_empty());
    }

    #[test]
    fn crl_numbers_parse_as_hex() {
        assert_eq!(parse_number("02"), Some(2));
        assert_eq!(parse_number("0100"), Some(256));
        assert_eq!(parse_number("ffffffffffffffff"), None);
        assert_eq!(parse_number("zz"), None);
    }

    fn ca(dir: &std::path::Path) -> CertificateAuthority {
        CertificateAuthority::load_or_create(
            CaConfig {
                jwt_algorithm: Default::default(),
                trust_domain: TrustDomain::new("crl.test").unwrap(),
                ca_ttl: Duration::from_secs(3600),
                key_dir: dir.to_path_buf(),
                upstream: None,
            },
            None,
            SystemTime::now(),
        )
        .unwrap()
    }

    #[test]
    fn a_signed_crl_drives_the_eviction_and_a_foreign_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ours = ca(&dir.path().join("ours"));
        let theirs = ca(&dir.path().join("theirs"));
        let revoked = [RevokedSerial {
            serial: "0b22".into(),
            revoked_at: 1_700_000_000,
            reason: RevocationReason::KeyCompromise,
        }];
        let now = SystemTime::now();
        let der = ours
            .sign_crl(&revoked, 2, now, Duration::from_secs(600))
            .unwrap();
        let crl = VerifiedCrl::new(Arc::new(
            RevocationList::verify(der.clone(), &ours.trust_bundle()).unwrap(),
        ));
        assert_eq!(crl.number(), Some(2));
        assert_eq!(crl.revoked_count(), 1);
        assert!(crl.is_revoked("0b22"));
        let cache = [("a", "0a11"), ("b", "0b22")];
        let entries: HashSet<&str> = ["a", "b"].into();
        let plan = plan_eviction(
            cached(&cache),
            |e| entries.contains(e),
            |s| crl.is_revoked(s),
        );
        assert_eq!(plan.renew, ["b"]);
        // Not signed by a CA of the bundle: refused.
        assert!(RevocationList::verify(der, &theirs.trust_bundle()).is_err());
    }
}
