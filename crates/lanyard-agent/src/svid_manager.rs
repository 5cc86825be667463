//! The SVID manager: one key and X.509-SVID per authorized entry. Keys are
//! generated here and never leave the agent except to the workload entitled
//! to them; CSRs are signed by the server in batches. Each SVID is renewed
//! at half-life (with jitter), dropped at NotAfter, and every change is
//! published as a new [`Snapshot`].
//!
//! An SVID the CRL lists is dropped and published away at once, before its
//! replacement is requested; callers left with nothing but SVIDs being
//! re-issued wait for them instead of being told they have no identity.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, SystemTime},
};

use lanyard_identity::{TrustDomain, check_x509_svid};
use lanyard_keys::SvidKey;
use lanyard_proto::node::v1::{
    BatchNewX509svidRequest, NewX509svidParams, batch_new_x509svid_result::Result as BatchResult,
};
use rustls_pki_types::{CertificateDer, UnixTime};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{
    AgentError,
    cache::{
        CachedSvid, Entries, EntryInfo, IssuanceHealth, Readiness, Renewing, Snapshot, SyncState,
    },
    error::classify,
    identity::AgentIdentity,
    metrics::{Metrics, RenewalOutcome},
    node_client::NodeConnector,
    revocation::{Cached, VerifiedCrl, plan_eviction},
    schedule::{self, backoff, random_unit, to_unix, until},
    svid_key::SvidKeyDer,
    svid_order::Ordered,
};

/// CSRs per BatchNewX509SVID call (the server accepts up to 1000).
const BATCH_SIZE: usize = 500;
const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// Longest wait after failed calls to the server (unreachable, TLS ...).
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Longest wait after the server answered for an entry with an error, or
/// with an SVID the agent refused: that rarely heals by itself, while an
/// operator's change to the entry is retried at once.
const REFUSED_BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Upper bound of one sleep, so a wall-clock jump is noticed.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// One entry's state.
#[derive(Debug)]
struct Slot {
    entry: Arc<EntryInfo>,
    svid: Option<Issued>,
    /// Not before this time (after a failure).
    retry_at: Option<SystemTime>,
    /// Failed attempts since the last success (boxed: most entries never
    /// fail, and every entry has a slot).
    trouble: Option<Box<Trouble>>,
    /// NotAfter of an SVID the CRL took away, until its replacement arrives.
    revoked_until: Option<i64>,
}

/// An entry's consecutive failed attempts, the wait chosen after the last
/// one, and its error.
#[derive(Debug)]
struct Trouble {
    failures: u32,
    backoff: Duration,
    last_error: String,
}

#[derive(Debug)]
struct Issued {
    svid: Arc<CachedSvid>,
    refresh_at: SystemTime,
}

/// The SVID manager task.
#[derive(Debug)]
pub struct SvidManager {
    connector: Arc<NodeConnector>,
    identity: watch::Receiver<Arc<AgentIdentity>>,
    sync: watch::Receiver<Option<Arc<SyncState>>>,
    out: Arc<watch::Sender<Arc<Snapshot>>>,
    trust_domain: TrustDomain,
    metrics: Arc<Metrics>,
    /// By entry ID (the entry's own `Arc<str>`), in default serving order:
    /// one per entry of `reconciled`.
    slots: Ordered<Slot>,
    /// The entries the slots were last aligned with: the next Sync state
    /// is compared with them, skipping what the two share.
    reconciled: Entries,
    /// The intermediates of the last SVID issued: the next ones, issued
    /// through the same CA, share this allocation.
    intermediates: Arc<[CertificateDer<'static>]>,
    /// The CRL every cached SVID was last checked against: a new SVID is
    /// checked when it arrives, so the whole cache only when this changes.
    crl_checked: Option<VerifiedCrl>,
    ready: bool,
    attempt: u32,
}

impl SvidManager {
    /// A manager fed by `sync`, publishing into `out`.
    pub fn new(
        connector: Arc<NodeConnector>,
        identity: watch::Receiver<Arc<AgentIdentity>>,
        sync: watch::Receiver<Option<Arc<SyncState>>>,
        out: Arc<watch::Sender<Arc<Snapshot>>>,
        trust_domain: TrustDomain,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            connector,
            identity,
            sync,
            out,
            trust_domain,
            metrics,
            slots: Ordered::default(),
            reconciled: Entries::default(),
            intermediates: Arc::from([]),
            crl_checked: None,
            ready: false,
            attempt: 0,
        }
    }

    /// Runs until `shutdown`; returns an error only when the server refuses
    /// this agent (banned or evicted).
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), AgentError> {
        loop {
            let sync = self.sync.borrow_and_update().clone();
            if let Some(sync) = &sync {
                self.reconcile(sync);
                if self.evict_revoked(sync) {
                    // Out of every stream now, not after the renewal below.
                    self.publish(sync);
                }
                self.expire(SystemTime::now());
                let due = self.due(SystemTime::now());
                if !due.is_empty() {
                    tokio::select! {
                        () = shutdown.cancelled() => return Ok(()),
                        r = self.fetch(due) => r?,
                    }
                } else {
                    self.ready = true;
                }
                self.expire(SystemTime::now());
                self.publish(sync);
            }
            let wake = self
                .next_wake()
                .map(until)
                .unwrap_or(MAX_SLEEP)
                .min(MAX_SLEEP);
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                changed = self.sync.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                }
                () = tokio::time::sleep(wake) => {}
            }
        }
    }

    /// Aligns the slots with the synced entries: new ones added, deleted
    /// ones dropped (with their SVIDs), changed ones updated (and re-issued
    /// when the SVID itself would differ). Only the entries that changed
    /// since the last call are looked at.
    fn reconcile(&mut self, sync: &SyncState) {
        // Entries whose creation time changed: their slots move.
        let mut moved = Vec::new();
        for id in sync.entries.changed_since(&self.reconciled) {
            let Some(entry) = sync.entries.get(&id) else {
                if let Some(slot) = self.slots.remove(&id) {
                    tracing::info!(entry = %id, spiffe_id = %slot.entry.spiffe_id, "entry removed: SVID dropped");
                }
                continue;
            };
            match self.slots.get_mut(&id) {
                Some(slot) if Arc::ptr_eq(&slot.entry, entry) => {}
                Some(slot) if slot.entry == *entry => {
                    // Equal but parsed apart: hold the Sync state's copy.
                    slot.share_entry(entry);
                }
                Some(slot) => {
                    if slot.entry.created_at != entry.created_at {
                        moved.push((Arc::clone(&entry.id), entry.created_at));
                    }
                    if !slot.entry.same_svid_shape(entry) {
                        tracing::info!(entry = %entry.id, spiffe_id = %entry.spiffe_id, "entry changed: SVID will be re-issued");
                        slot.svid = None;
                        slot.retry_at = None;
                        slot.trouble = None;
                    }
                    slot.share_entry(entry);
                }
                None => {
                    self.slots
                        .insert(entry.created_at, &entry.id, Slot::new(Arc::clone(entry)));
                }
            }
        }
        for (id, created_at) in moved {
            self.slots.set_created_at(&id, created_at);
        }
        self.reconciled = sync.entries.clone();
    }

    /// Drops every cached SVID the CRL in force lists and makes its entry
    /// due for a new key and SVID at once. Returns whether any was dropped.
    fn evict_revoked(&mut self, sync: &SyncState) -> bool {
        let Some(crl) = &sync.crl else {
            return false;
        };
        if self.crl_checked.as_ref() == Some(crl) {
            return false;
        }
        self.crl_checked = Some(crl.clone());
        let cached = self.slots.iter().filter_map(|(id, slot)| {
            slot.svid.as_ref().map(|i| Cached {
                entry_id: id,
                serial: &i.svid.serial,
            })
        });
        let plan = plan_eviction(
            cached,
            |id| sync.entries.get(id).is_some(),
            |serial| crl.is_revoked(serial),
        );
        if plan.is_empty() {
            return false;
        }
        for (entry_id, serial) in &plan.dropped {
            tracing::warn!(
                entry = %entry_id,
                serial = %serial,
                crl_number = crl.number_hex(),
                "SVID is on the CRL: no longer served"
            );
            match self.slots.get_mut(entry_id.as_str()) {
                Some(slot) if plan.renew.contains(entry_id) => {
                    tracing::info!(entry = %entry_id, spiffe_id = %slot.entry.spiffe_id, "issuing a new SVID to replace the revoked one");
                    // Callers wait for the replacement until the revoked
                    // SVID would have expired anyway.
                    slot.revoked_until = slot.svid.take().map(|i| i.svid.not_after);
                    slot.retry_at = None;
                    slot.trouble = None;
                }
                _ => {
                    self.slots.remove(entry_id.as_str());
                }
            }
        }
        self.metrics.revoked_dropped(plan.dropped.len());
        true
    }

    /// Drops SVIDs whose NotAfter has passed: they are never served.
    fn expire(&mut self, now: SystemTime) {
        let now = to_unix(now);
        for slot in self.slots.values_mut() {
            if slot.svid.as_ref().is_some_and(|i| i.svid.not_after <= now) {
                tracing::warn!(entry = %slot.entry.id, spiffe_id = %slot.entry.spiffe_id, "SVID expired before it could be renewed; dropped");
                slot.svid = None;
            }
        }
    }

    /// Entries that need an SVID now.
    fn due(&self, now: SystemTime) -> Vec<String> {
        self.slots
            .iter()
            .filter(|(_, s)| s.retry_at.is_none_or(|t| t <= now))
            .filter(|(_, s)| s.svid.as_ref().is_none_or(|i| i.refresh_at <= now))
            .map(|(id, _)| id.to_string())
            .collect()
    }

    fn next_wake(&self) -> Option<SystemTime> {
        next_wake(self.slots.values())
    }

    async fn fetch(&mut self, due: Vec<String>) -> Result<(), AgentError> {
        for chunk in due.chunks(BATCH_SIZE) {
            let chunk = chunk.to_vec();
            // Key generation and CSR signing are CPU work: off the reactor.
            let prepared = tokio::task::spawn_blocking(move || {
                chunk
                    .into_iter()
                    .map(|id| {
                        let key = SvidKey::generate()?;
                        let csr = key.csr_der()?;
                        Ok((id, key, csr))
                    })
                    .collect::<Result<Vec<_>, AgentError>>()
            })
            .await
            .map_err(|e| AgentError::Task {
                task: "CSR generation",
                reason: e.to_string(),
            })??;
            let params = prepared
                .iter()
                .map(|(id, _, csr)| NewX509svidParams {
                    entry_id: id.clone(),
                    csr: csr.clone(),
                })
                .collect();
            let mut keys: HashMap<String, SvidKey> =
                prepared.into_iter().map(|(id, key, _)| (id, key)).collect();
            match self.call(params).await {
                Ok(results) => {
                    self.attempt = 0;
                    self.ready = true;
                    for r in results {
                        let Some(key) = keys.remove(&r.entry_id) else {
                            continue;
                        };
                        self.apply(&r.entry_id, key, r.result);
                    }
                    // Entries the server did not answer for are retried later.
                    for id in keys.into_keys() {
                        self.metrics.renewal(RenewalOutcome::Refused);
                        self.failed(&id, "no result in the batch answer");
                    }
                }
                Err(e) if e.is_refusal() => return Err(e),
                Err(e) => {
                    for _ in 0..keys.len() {
                        self.metrics.renewal(RenewalOutcome::Failed);
                    }
                    let wait = backoff(self.attempt, BACKOFF_BASE, BACKOFF_MAX, random_unit());
                    self.attempt = self.attempt.saturating_add(1);
                    tracing::warn!(error = %e, retry_in = ?wait, "BatchNewX509SVID failed; serving cached SVIDs meanwhile");
                    self.connector.reset();
                    let at = SystemTime::now() + wait;
                    let error = e.to_string();
                    for id in keys.keys() {
                        if let Some(slot) = self.slots.get_mut(id.as_str()) {
                            slot.retry_at = Some(at);
                            slot.failed(wait, &error);
                        }
                    }
                    return Ok(());
                }
            }
            // A new Sync state (an entry deleted, a CRL revoking an SVID)
            // is reconciled and published before the next batch, not after
            // the last one: the caller's loop wakes at once for it, and the
            // entries still due are fetched in its next round.
            if self.sync.has_changed().unwrap_or(false) {
                tracing::debug!("Sync state changed during issuance: applying it first");
                return Ok(());
            }
        }
        Ok(())
    }

    async fn call(
        &self,
        params: Vec<NewX509svidParams>,
    ) -> Result<Vec<lanyard_proto::node::v1::BatchNewX509svidResult>, AgentError> {
        let identity = self.identity.borrow().clone();
        let mut client = self.connector.client(&identity).await?;
        let resp = client
            .batch_new_x509svid(BatchNewX509svidRequest { params })
            .await
            .map_err(|s| classify("BatchNewX509SVID", &s))?;
        Ok(resp.into_inner().results)
    }

    fn apply(&mut self, entry_id: &str, key: SvidKey, result: Option<BatchResult>) {
        let Some(slot) = self.slots.get(entry_id) else {
            return;
        };
        let outcome = match result {
            Some(BatchResult::Svid(svid)) => {
                // The leaf is kept in the allocation it was decoded into:
                // a copy would leave a hole of its size per SVID.
                let mut certs = svid.cert_chain.into_iter();
                let leaf = certs.next().unwrap_or_default().into_boxed_slice();
                let rest: Vec<CertificateDer<'static>> = certs.map(CertificateDer::from).collect();
                if *self.intermediates != *rest {
                    self.intermediates = rest.into();
                }
                let intermediates = Arc::clone(&self.intermediates);
                let trust = self.connector.trust();
                check_issued(&slot.entry, &leaf, &intermediates, &trust.bundle())
                    .and_then(|issued| match trust.crl() {
                        Some(crl) if crl.is_revoked(&issued.0) => {
                            Err(format!("the new SVID {} is already revoked", issued.0))
                        }
                        _ => Ok(issued),
                    })
                    .map(|(serial, not_before, not_after)| {
                        let now = SystemTime::now();
                        let valid_from = schedule::from_unix(not_before).max(now);
                        let refresh_at = schedule::refresh_at(
                            valid_from,
                            schedule::from_unix(not_after),
                            random_unit() * 2.0 - 1.0,
                        );
                        let svid = CachedSvid {
                            entry: slot.entry.clone(),
                            key: SvidKeyDer::from_pkcs8(key.pkcs8_der(), &leaf),
                            leaf,
                            intermediates,
                            serial: serial.into_boxed_str(),
                            not_after,
                        };
                        Issued {
                            svid: Arc::new(svid),
                            refresh_at,
                        }
                    })
            }
            Some(BatchResult::Error(status)) => Err(format!(
                "server refused: {} (code {})",
                status.message, status.code
            )),
            None => Err("empty result".into()),
        };
        match outcome {
            Ok(issued) => {
                self.metrics.renewal(RenewalOutcome::Ok);
                tracing::info!(
                    entry = %entry_id,
                    spiffe_id = %issued.svid.entry.spiffe_id,
                    serial = %issued.svid.serial,
                    not_after = issued.svid.not_after,
                    "SVID issued"
                );
                if let Some(slot) = self.slots.get_mut(entry_id) {
                    slot.svid = Some(issued);
                    slot.retry_at = None;
                    slot.trouble = None;
                    slot.revoked_until = None;
                }
            }
            Err(why) => {
                self.metrics.renewal(RenewalOutcome::Refused);
                self.failed(entry_id, &why);
            }
        }
    }

    fn failed(&mut self, entry_id: &str, why: &str) {
        let Some(slot) = self.slots.get_mut(entry_id) else {
            return;
        };
        let wait = backoff(
            slot.failures(),
            BACKOFF_BASE,
            REFUSED_BACKOFF_MAX,
            random_unit(),
        );
        slot.retry_at = Some(SystemTime::now() + wait);
        slot.failed(wait, why);
        tracing::warn!(entry = %entry_id, spiffe_id = %slot.entry.spiffe_id, reason = %why, failures = slot.failures(), retry_in = ?wait, "SVID not issued");
    }

    fn publish(&self, sync: &SyncState) {
        // Already in default order: no sort of every SVID per change.
        let svids: Vec<Arc<CachedSvid>> = self
            .slots
            .values()
            .filter_map(|s| s.svid.as_ref().map(|i| Arc::clone(&i.svid)))
            .collect();
        debug_assert!(svids.is_sorted_by(|a, b| {
            (a.entry.created_at, &a.entry.id) <= (b.entry.created_at, &b.entry.id)
        }));
        let now = to_unix(SystemTime::now());
        let renewing = self
            .slots
            .values()
            .filter(|s| s.svid.is_none())
            .filter_map(|s| {
                s.revoked_until
                    .filter(|until| *until > now)
                    .map(|until| Renewing {
                        entry: s.entry.clone(),
                        until,
                    })
            })
            .collect();
        let issuance = issuance_health(self.slots.values());
        self.metrics.set_failing_entries(issuance.failing_entries);
        self.metrics.set_next_rotation(
            self.slots
                .values()
                .filter_map(|s| s.svid.as_ref().map(|i| i.refresh_at))
                .min(),
        );
        let snapshot = Snapshot {
            readiness: if self.ready {
                Readiness::Ready
            } else {
                Readiness::Starting
            },
            trust_domain: Some(self.trust_domain.clone()),
            svids,
            bundle: sync.bundle.clone(),
            crl: sync
                .crl
                .as_ref()
                .map(|c| c.der().to_vec())
                .unwrap_or_default(),
            crl_issuer: sync
                .crl
                .as_ref()
                .and_then(|c| c.signing_intermediate().cloned()),
            crl_next_update: sync.crl.as_ref().and_then(|c| c.next_update()),
            renewing,
            jwt_bundle: sync.jwt_bundle.clone(),
            issuance,
        };
        self.out.send_if_modified(|current| {
            // A stopped agent stays stopped; an unchanged snapshot wakes nobody.
            if matches!(current.readiness, Readiness::Stopped(_)) || current.same_as(&snapshot) {
                return false;
            }
            *current = Arc::new(snapshot);
            true
        });
    }
}

// === impl Slot ===

impl Slot {
    /// A new entry's slot: no SVID yet, due at once.
    fn new(entry: Arc<EntryInfo>) -> Self {
        Self {
            entry,
            svid: None,
            retry_at: None,
            trouble: None,
            revoked_until: None,
        }
    }

    /// Holds `entry` (the Sync state's) from now on, in the slot and in
    /// its cached SVID, so that no older copy stays alive.
    fn share_entry(&mut self, entry: &Arc<EntryInfo>) {
        self.entry = Arc::clone(entry);
        if let Some(issued) = &mut self.svid {
            let mut svid = (*issued.svid).clone();
            svid.entry = Arc::clone(entry);
            issued.svid = Arc::new(svid);
        }
    }

    /// One more failed attempt, retried after `wait`.
    fn failed(&mut self, wait: Duration, why: &str) {
        let failures = self.failures().saturating_add(1);
        self.trouble = Some(Box::new(Trouble {
            failures,
            backoff: wait,
            last_error: why.to_owned(),
        }));
    }

    /// Consecutive failed attempts.
    fn failures(&self) -> u32 {
        self.trouble.as_ref().map_or(0, |t| t.failures)
    }
}

/// When the manager has something to do next: a renewal, a retry, or an
/// SVID to drop at its NotAfter.
fn next_wake<'a>(slots: impl Iterator<Item = &'a Slot>) -> Option<SystemTime> {
    slots
        .filter_map(|s| match &s.svid {
            Some(issued) => {
                // A renewal that failed waits for its retry, not for the
                // refresh point already past (that would spin).
                let renew = s
                    .retry_at
                    .map_or(issued.refresh_at, |retry| retry.max(issued.refresh_at));
                Some(renew.min(schedule::from_unix(issued.svid.not_after)))
            }
            // An entry without an SVID waits only for its retry time.
            None => s.retry_at,
        })
        .min()
}

/// What `/health/ready` says of the entries whose last issuance failed.
fn issuance_health<'a>(slots: impl Iterator<Item = &'a Slot>) -> IssuanceHealth {
    let failing: Vec<(&Slot, &Trouble)> = slots
        .filter_map(|s| s.trouble.as_deref().map(|t| (s, t)))
        .filter(|(_, t)| t.failures > 0)
        .collect();
    let worst = failing
        .iter()
        .map(|(_, t)| t)
        .max_by_key(|t| (t.failures, t.backoff));
    IssuanceHealth {
        failing_entries: failing.len(),
        consecutive_failures: worst.map_or(0, |t| t.failures),
        backoff_ms: worst.map_or(0, |t| {
            u64::try_from(t.backoff.as_millis()).unwrap_or(u64::MAX)
        }),
        next_retry_at: failing
            .iter()
            .filter_map(|(s, _)| s.retry_at)
            .min()
            .map(to_unix),
        last_error: worst.map(|t| t.last_error.clone()),
    }
}

/// Checks an SVID the server returned for `entry`: profile, SPIFFE ID, and
/// chain to the bundle. Returns serial, NotBefore and NotAfter.
fn check_issued(
    entry: &EntryInfo,
    leaf: &[u8],
    intermediates: &[CertificateDer<'static>],
    bundle: &[CertificateDer<'static>],
) -> Result<(String, i64, i64), String> {
    if leaf.is_empty() {
        return Err("empty certificate chain".into());
    }
    let leaf = CertificateDer::from(leaf);
    let summary = check_x509_svid(&leaf).map_err(|e| format!("not an X.509-SVID: {e}"))?;
    if summary.spiffe_id != entry.spiffe_id {
        return Err(format!(
            "SVID is for {}, entry is {}",
            summary.spiffe_id, entry.spiffe_id
        ));
    }
    lanyard_mtls::verify_svid_chain(&leaf, intermediates, bundle, UnixTime::now())
        .map_err(|e| format!("SVID does not verify: {e}"))?;
    Ok((summary.serial, summary.not_before, summary.not_after))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn slot(id: &str) -> Slot {
        Slot::new(
            crate::cache::tests::svid(id, 1, &["unix:uid:1"], 100)
                .entry
                .clone(),
        )
    }

    #[test]
    fn a_failed_renewal_sleeps_until_its_retry() {
        let now = SystemTime::now();
        let mut renewing = slot("renewing");
        let cached = crate::cache::tests::svid("renewing", 1, &["unix:uid:1"], 0);
        let mut svid = (*cached).clone();
        svid.not_after = to_unix(now + Duration::from_secs(600));
        renewing.svid = Some(Issued {
            svid: Arc::new(svid),
            refresh_at: now - Duration::from_secs(5),
        });
        // Due now, before any failure.
        assert_eq!(
            next_wake([&renewing].into_iter()),
            Some(now - Duration::from_secs(5))
        );
        // After a failure: the retry time, not the refresh point long past.
        renewing.retry_at = Some(now + Duration::from_secs(8));
        assert_eq!(
            next_wake([&renewing].into_iter()),
            Some(now + Duration::from_secs(8))
        );
        // Never past the NotAfter, where the SVID is dropped.
        renewing.retry_at = Some(now + Duration::from_secs(6000));
        let wake = next_wake([&renewing].into_iter()).unwrap();
        assert!(wake <= now + Duration::from_secs(600), "{wake:?}");
        let mut waiting = slot("new");
        waiting.retry_at = Some(now + Duration::from_secs(3));
        assert_eq!(
            next_wake([&renewing, &waiting].into_iter()),
            Some(now + Duration::from_secs(3))
        );
    }

    #[test]
    fn issuance_health_names_the_worst_failing_entry() {
        let (mut a, mut b, ok) = (slot("a"), slot("b"), slot("ok"));
        assert_eq!(
            issuance_health([&a, &b, &ok].into_iter()),
            IssuanceHealth::default()
        );
        let now = SystemTime::now();
        a.failed(Duration::from_secs(1), "first");
        a.retry_at = Some(now + Duration::from_secs(1));
        for wait in [1, 2, 4] {
            b.failed(Duration::from_secs(wait), &format!("after {wait}s"));
        }
        b.retry_at = Some(now + Duration::from_secs(4));
        let health = issuance_health([&a, &b, &ok].into_iter());
        assert_eq!(health.failing_entries, 2);
        assert_eq!(health.consecutive_failures, 3);
        assert_eq!(health.backoff_ms, 4_000);
        assert_eq!(health.last_error.as_deref(), Some("after 4s"));
        assert_eq!(
            health.next_retry_at,
            Some(to_unix(now + Duration::from_secs(1)))
        );
    }
}
