//! What the agent serves: the synced entries and the SVIDs cached for them,
//! published as immutable snapshots through `watch` channels.

use std::{fmt, sync::Arc};

use lanyard_identity::{Selector, SpiffeId, TrustDomain, matches_all};
use lanyard_jwt::Jwks;
use rustls_pki_types::CertificateDer;

pub use crate::entries::Entries;
use crate::{revocation::VerifiedCrl, svid_key::SvidKeyDer};

/// One authorized entry, as the Sync stream delivered it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryInfo {
    /// Entry ID (a UUID string), shared with the SVID manager's index.
    pub id: Arc<str>,
    /// The SPIFFE ID issued for it.
    pub spiffe_id: SpiffeId,
    /// All must be among a caller's selectors. Entries with the same
    /// selectors share one set (interned as each Sync message is parsed).
    pub selectors: Arc<[Selector]>,
    /// SVID TTL in seconds; 0 for the server default.
    pub ttl_secs: i64,
    /// DNS SANs of the SVID.
    pub dns_names: Vec<String>,
    /// Workload API `hint`.
    pub hint: String,
    /// Bumped by the server on each update.
    pub revision: u64,
    /// Creation time (seconds since the Unix epoch) when the server sends
    /// it, else 0: orders the default SVID first.
    pub created_at: i64,
}

impl EntryInfo {
    /// Whether an SVID issued for `self` is still right for `other` (same
    /// SPIFFE ID, DNS names and TTL); hint and selectors may change freely.
    pub fn same_svid_shape(&self, other: &EntryInfo) -> bool {
        self.spiffe_id == other.spiffe_id
            && self.dns_names == other.dns_names
            && self.ttl_secs == other.ttl_secs
    }
}

/// The latest Sync message, parsed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncState {
    /// Authorized entries, by ID. Each is one allocation shared by every
    /// holder (the SVID manager's slot, the cached SVID, the next Sync
    /// state when the entry did not change), and successive states share
    /// the buckets of entries that did not change.
    pub entries: Entries,
    /// DER CA certificates of the trust bundle.
    pub bundle: Vec<CertificateDer<'static>>,
    /// The trust domain's CRL in force: the latest one the server sent that
    /// a CA of the bundle signed (`None` before the first).
    pub crl: Option<VerifiedCrl>,
    /// Server change counter.
    pub revision: u64,
    /// The trust domain's JWT-SVID signing keys.
    pub jwt_bundle: Arc<Jwks>,
}

/// An X.509-SVID cached for one entry: only what is its own (leaf, key,
/// serial) is held per SVID; the entry and the intermediates are shared.
#[derive(Clone, PartialEq, Eq)]
pub struct CachedSvid {
    /// The entry it was issued for, shared with the SVID manager's record
    /// of it (one copy per entry, not one per holder).
    pub entry: Arc<EntryInfo>,
    /// DER leaf certificate.
    pub leaf: Box<[u8]>,
    /// DER intermediates after the leaf, one allocation shared by every
    /// SVID issued through the same ones.
    pub intermediates: Arc<[CertificateDer<'static>]>,
    /// The private key, in compact form. Secret: `Debug` redacts it.
    pub key: SvidKeyDer,
    /// Lower-case hex serial of the leaf.
    pub serial: Box<str>,
    /// NotAfter, seconds since the Unix epoch.
    pub not_after: i64,
}

impl CachedSvid {
    /// The DER chain, leaf first.
    pub fn chain(&self) -> impl Iterator<Item = &[u8]> {
        std::iter::once(&*self.leaf).chain(self.intermediates.iter().map(|c| c.as_ref()))
    }

    /// The private key as PKCS#8 DER, as the Workload API sends it.
    pub fn key_pkcs8(&self) -> Vec<u8> {
        self.key.pkcs8(&self.leaf)
    }
}

impl fmt::Debug for CachedSvid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedSvid")
            .field("entry", &self.entry.id)
            .field("spiffe_id", &self.entry.spiffe_id)
            .field("serial", &self.serial)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// Whether the agent can serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// Not attested, or no Sync / first SVID round yet.
    Starting,
    /// Serving.
    Ready,
    /// Banned, evicted or shutting down: nothing is served any more.
    Stopped(String),
}

/// Everything the Workload API serves, at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Readiness.
    pub readiness: Readiness,
    /// The trust domain, once known.
    pub trust_domain: Option<TrustDomain>,
    /// Cached SVIDs in default order (oldest entry first).
    pub svids: Vec<Arc<CachedSvid>>,
    /// DER CA certificates of the trust bundle.
    pub bundle: Vec<CertificateDer<'static>>,
    /// DER CRL (may be empty).
    pub crl: Vec<u8>,
    /// The CA certificate that signed the CRL when it is not in the bundle
    /// (upstream mode: one of Lanyard's intermediates). The standard
    /// Workload API has no field for it, so it rides at the end of each
    /// SVID chain that lacks it, where a client finds the CRL's issuer.
    pub crl_issuer: Option<CertificateDer<'static>>,
    /// The CRL's nextUpdate (unix seconds): past it, the agent's revocation
    /// data is stale and `/health/ready` says so.
    pub crl_next_update: Option<i64>,
    /// Entries whose SVID was revoked and is being issued again: a caller
    /// they match is kept waiting for the new SVID (until `until`) instead
    /// of being told it has no identity.
    pub renewing: Vec<Renewing>,
    /// The trust domain's JWT-SVID signing keys (FetchJWTBundles,
    /// ValidateJWTSVID).
    pub jwt_bundle: Arc<Jwks>,
    /// Entries whose SVID could not be issued and which wait for a retry.
    pub issuance: IssuanceHealth,
}

/// Entries whose last SVID issuance failed, as `/health/ready` reports
/// them: each waits for its retry, backing off exponentially.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IssuanceHealth {
    /// Entries whose last issuance attempt failed.
    pub failing_entries: usize,
    /// The most consecutive failures of one entry.
    pub consecutive_failures: u32,
    /// The wait chosen after that entry's last failure, in milliseconds.
    pub backoff_ms: u64,
    /// The earliest retry of a failing entry (unix seconds).
    pub next_retry_at: Option<i64>,
    /// That entry's last error.
    pub last_error: Option<String>,
}

/// An entry whose cached SVID the CRL took away, while its replacement is
/// being issued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Renewing {
    /// The entry.
    pub entry: Arc<EntryInfo>,
    /// NotAfter of the revoked SVID (unix seconds): past it the caller would
    /// have had no SVID anyway, so waiting ends.
    pub until: i64,
}

impl Snapshot {
    /// The first moment after `now` (unix seconds) at which an answer built
    /// from this snapshot may stop holding: the earliest NotAfter of its
    /// SVIDs, or end of a wait for re-issued ones, still ahead.
    pub fn next_expiry_after(&self, now: i64) -> Option<i64> {
        self.svids
            .iter()
            .map(|s| s.not_after)
            .chain(self.renewing.iter().map(|r| r.until))
            .filter(|&t| t > now)
            .min()
    }

    /// Before anything is known.
    pub fn starting() -> Self {
        Self {
            readiness: Readiness::Starting,
            trust_domain: None,
            svids: Vec::new(),
            bundle: Vec::new(),
            crl: Vec::new(),
            crl_issuer: None,
            crl_next_update: None,
            renewing: Vec::new(),
            jwt_bundle: Arc::default(),
            issuance: IssuanceHealth::default(),
        }
    }

    /// Whether `self` and `other` serve the same: equal fields, and the
    /// very same SVIDs (a cached SVID is never changed in place, only
    /// replaced, so comparing pointers is enough and costs no byte
    /// comparison of every certificate and entry).
    pub fn same_as(&self, other: &Snapshot) -> bool {
        self.svids.len() == other.svids.len()
            && self
                .svids
                .iter()
                .zip(&other.svids)
                .all(|(a, b)| Arc::ptr_eq(a, b))
            && self.readiness == other.readiness
            && self.trust_domain == other.trust_domain
            && self.bundle == other.bundle
            && self.crl == other.crl
            && self.crl_issuer == other.crl_issuer
            && self.crl_next_update == other.crl_next_update
            && self.renewing == other.renewing
            && self.jwt_bundle == other.jwt_bundle
            && self.issuance == other.issuance
    }

    /// Nothing served any more, for `reason`.
    pub fn stopped(reason: impl Into<String>) -> Self {
        Self {
            readiness: Readiness::Stopped(reason.into()),
            ..Self::starting()
        }
    }
}

/// Orders SVIDs for serving: the oldest entry first (by creation time, then
/// entry ID) so the default SVID is stable across rotations.
pub fn sort_default_first(svids: &mut [Arc<CachedSvid>]) {
    svids.sort_by(|a, b| (a.entry.created_at, &a.entry.id).cmp(&(b.entry.created_at, &b.entry.id)));
}

/// The SVIDs a caller with `selectors` may receive at `now` (unix seconds):
/// those whose entry's selectors are all among the caller's and which have
/// not expired, in default order.
pub fn select_for(
    svids: &[Arc<CachedSvid>],
    selectors: &[Selector],
    now: i64,
) -> Vec<Arc<CachedSvid>> {
    let mut out: Vec<_> = svids
        .iter()
        .filter(|s| s.not_after > now && matches_all(&s.entry.selectors, selectors))
        .cloned()
        .collect();
    sort_default_first(&mut out);
    out
}

/// When a caller with `selectors` stops waiting for SVIDs that replace
/// revoked ones (the earliest `until` among the [`Renewing`] entries it
/// matches at `now`, unix seconds); `None` when it waits for none.
pub fn renewing_for(renewing: &[Renewing], selectors: &[Selector], now: i64) -> Option<i64> {
    renewing
        .iter()
        .filter(|r| r.until > now && matches_all(&r.entry.selectors, selectors))
        .map(|r| r.until)
        .min()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn svid(
        id: &str,
        created_at: i64,
        selectors: &[&str],
        not_after: i64,
    ) -> Arc<CachedSvid> {
        Arc::new(CachedSvid {
            entry: Arc::new(EntryInfo {
                id: id.into(),
                spiffe_id: format!("spiffe://td.org/{id}").parse().unwrap(),
                selectors: selectors.iter().map(|s| s.parse().unwrap()).collect(),
                ttl_secs: 0,
                dns_names: vec![],
                hint: format!("hint-{id}"),
                revision: 1,
                created_at,
            }),
            leaf: id.as_bytes().into(),
            intermediates: Arc::from([]),
            key: SvidKeyDer::from_pkcs8(b"secret-key".to_vec(), &[]),
            serial: "01".into(),
            not_after,
        })
    }

    fn sel(s: &[&str]) -> Vec<Selector> {
        s.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn selects_only_matching_unexpired_oldest_first() {
        let svids = vec![
            svid("c", 30, &["unix:uid:1"], 1000),
            svid("a", 10, &["unix:uid:1", "unix:gid:2"], 1000),
            svid("b", 10, &["unix:uid:1"], 1000),
            svid("d", 5, &["unix:uid:9"], 1000),
            svid("e", 1, &["unix:uid:1"], 100),
        ];
        let got = select_for(
            &svids,
            &sel(&["unix:uid:1", "unix:gid:2", "unix:user:x"]),
            100,
        );
        let ids: Vec<_> = got.iter().map(|s| &*s.entry.id).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert!(select_for(&svids, &sel(&["unix:uid:7"]), 100).is_empty());
        assert!(select_for(&svids, &[], 100).is_empty());
    }

    #[test]
    fn debug_redacts_the_key() {
        let s = svid("a", 1, &["unix:uid:1"], 10);
        assert!(!format!("{s:?}").contains("secret"));
    }
}
