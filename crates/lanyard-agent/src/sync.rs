//! The Sync loop: keeps a Sync stream open to the server and publishes each
//! message (entries, bundle, CRL) through a `watch` channel. Reconnects with
//! backoff and jitter; reconnects at once with the new SVID after renewal.
//!
//! The CRL is installed in the trust material only when a CA of the bundle
//! signed it and its number does not go backwards; otherwise it is logged and
//! the previous one stays in force. A CRL that lists the agent's own SVID
//! ends the loop with [`AgentError::AgentSvidRevoked`].

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use lanyard_identity::Selector;
use lanyard_jwt::Jwks;
use lanyard_proto::node::v1::{Entry, SyncRequest, SyncResponse};
use rustls_pki_types::CertificateDer;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{
    AgentError,
    cache::{EntryInfo, SyncState},
    error::classify,
    identity::AgentIdentity,
    metrics::Metrics,
    node_client::NodeConnector,
    revocation::VerifiedCrl,
    schedule::{backoff, random_unit},
    storage::DataDir,
};

const BACKOFF_BASE: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Why one stream session ended without error.
enum Ended {
    /// The server closed the stream.
    ByServer,
    /// The agent SVID was renewed: reconnect with it.
    IdentityChanged,
}

/// The Sync loop task.
#[derive(Debug)]
pub struct SyncClient {
    connector: Arc<NodeConnector>,
    identity: watch::Receiver<Arc<AgentIdentity>>,
    out: watch::Sender<Option<Arc<SyncState>>>,
    data_dir: DataDir,
    metrics: Arc<Metrics>,
}

impl SyncClient {
    /// A loop publishing into `out`.
    pub fn new(
        connector: Arc<NodeConnector>,
        identity: watch::Receiver<Arc<AgentIdentity>>,
        out: watch::Sender<Option<Arc<SyncState>>>,
        data_dir: DataDir,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            connector,
            identity,
            out,
            data_dir,
            metrics,
        }
    }

    /// Runs until `shutdown`; returns an error only when the server refuses
    /// this agent (banned or evicted).
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), AgentError> {
        let mut attempt = 0u32;
        loop {
            let result = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                r = self.session(&mut attempt) => r,
            };
            match result {
                Ok(Ended::IdentityChanged) => {
                    tracing::info!("agent SVID renewed: reopening the Sync stream with it");
                    continue;
                }
                Ok(Ended::ByServer) => {
                    tracing::info!("server closed the Sync stream; reconnecting")
                }
                Err(e) if e.is_refusal() => return Err(e),
                Err(e) => tracing::warn!(error = %e, attempt, "Sync stream failed; retrying"),
            }
            self.connector.reset();
            let wait = backoff(attempt, BACKOFF_BASE, BACKOFF_MAX, random_unit());
            attempt = attempt.saturating_add(1);
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn session(&mut self, attempt: &mut u32) -> Result<Ended, AgentError> {
        let identity = self.identity.borrow_and_update().clone();
        let mut client = self.connector.client(&identity).await?;
        let mut stream = client
            .sync(SyncRequest::default())
            .await
            .map_err(|s| classify("Sync", &s))?
            .into_inner();
        loop {
            tokio::select! {
                msg = stream.message() => match msg {
                    Ok(Some(resp)) => {
                        *attempt = 0;
                        self.apply(resp)?;
                    }
                    Ok(None) => return Ok(Ended::ByServer),
                    Err(status) => return Err(classify("Sync", &status)),
                },
                changed = self.identity.changed() => {
                    if changed.is_err() {
                        // The rotator is gone: the agent is shutting down.
                        return Ok(Ended::ByServer);
                    }
                    return Ok(Ended::IdentityChanged);
                }
            }
        }
    }

    pub(crate) fn apply(&self, resp: SyncResponse) -> Result<(), AgentError> {
        self.metrics.sync_update();
        let previous = self.out.borrow().clone();
        let (mut state, crl_der, crl_issuers) = parse_sync(resp, previous.as_deref());
        let trust = self.connector.trust();
        let bundle_changed = self
            .out
            .borrow()
            .as_ref()
            .is_none_or(|prev| prev.bundle != state.bundle);
        if bundle_changed && !state.bundle.is_empty() {
            trust.set_bundle(state.bundle.clone());
            if let Err(e) = self.data_dir.save_bundle(&state.bundle) {
                tracing::warn!(error = %e, "could not store the trust bundle");
            }
        }
        // Checked against the bundle just installed (the same bytes again
        // are not parsed again); a refused CRL leaves the previous in force.
        let in_force = trust.crl().is_some_and(|c| c.der() == crl_der.as_slice());
        // Upstream mode: the bundle holds only the upstream root and one of
        // Lanyard's intermediates signs the CRL. The server sends them with
        // the CRL (a freshly activated one is not yet in our own chain);
        // the intermediates of our own chain count too. Each must chain to
        // the bundle to vouch for a CRL.
        let own_chain = self.identity.borrow().chain.clone();
        let mut signers = crl_issuers;
        for own in own_chain.get(1..).unwrap_or_default() {
            if !signers.contains(own) {
                signers.push(own.clone());
            }
        }
        trust.set_crl_signers(signers);
        if !crl_der.is_empty()
            && !in_force
            && let Err(e) = trust.set_crl(Some(crl_der))
        {
            tracing::warn!(error = %e, "ignoring a CRL from the server: the previous one stays in force");
        }
        state.crl = trust.crl().map(VerifiedCrl::new);
        let previous = self.out.borrow().as_ref().and_then(|p| p.crl.clone());
        if let Some(crl) = state.crl.as_ref().filter(|c| previous.as_ref() != Some(*c)) {
            tracing::info!(
                crl_number = crl.number_hex(),
                revoked = crl.revoked_count(),
                "CRL in force"
            );
            self.metrics.set_crl_number(crl.number().unwrap_or(0));
            let identity = self.identity.borrow().clone();
            if crl.is_revoked(&identity.serial) {
                tracing::error!(
                    agent = %identity.spiffe_id,
                    serial = %identity.serial,
                    crl_number = crl.number_hex(),
                    "the CRL lists this agent's own SVID"
                );
                return Err(AgentError::AgentSvidRevoked(format!(
                    "serial {} of {} is on CRL number {}",
                    identity.serial,
                    identity.spiffe_id,
                    crl.number_hex()
                )));
            }
        }
        tracing::debug!(
            entries = state.entries.len(),
            revision = state.revision,
            "Sync update"
        );
        self.out.send_replace(Some(Arc::new(state)));
        Ok(())
    }
}

/// Parses a Sync message into the state (its CRL not yet verified, so
/// `crl` is `None`), the CRL's DER bytes and the CA certificates that may
/// have signed it besides the bundle's. Entries with a bad SPIFFE ID or
/// selector are skipped (and logged) rather than failing the whole update.
///
/// Every message carries all entries; those unchanged since `previous`
/// are taken from it (the same `Arc`), so a change costs allocations only
/// for what changed, and every holder keeps sharing one copy of each entry.
/// Selector sets are interned: entries with the same selectors share one.
pub fn parse_sync(
    resp: SyncResponse,
    previous: Option<&SyncState>,
) -> (SyncState, Vec<u8>, Vec<CertificateDer<'static>>) {
    let known: HashMap<&str, &Arc<EntryInfo>> = previous
        .map(|p| p.entries.iter().map(|e| (&*e.id, e)).collect())
        .unwrap_or_default();
    let mut sets: HashSet<Arc<[Selector]>> = HashSet::new();
    let mut entries = Vec::with_capacity(resp.entries.len());
    for e in &resp.entries {
        if let Some(same) = known.get(e.id.as_str()).filter(|k| unchanged(k, e)) {
            entries.push(Arc::clone(same));
            continue;
        }
        if sets.is_empty() {
            // Seeded once, on the first new entry: it joins an existing set.
            sets.extend(known.values().map(|k| Arc::clone(&k.selectors)));
        }
        match parse_entry(e, &mut sets) {
            Ok(info) => entries.push(Arc::new(info)),
            Err(why) => {
                tracing::warn!(entry = %e.id, reason = %why, "ignoring unusable entry from Sync");
            }
        }
    }
    let state = SyncState {
        entries,
        bundle: resp.bundle.into_iter().map(CertificateDer::from).collect(),
        crl: None,
        revision: resp.revision,
        jwt_bundle: Arc::new(jwt_bundle(&resp.jwt_bundle)),
    };
    let crl_issuers = resp
        .crl_issuers
        .into_iter()
        .map(CertificateDer::from)
        .collect();
    (state, resp.crl, crl_issuers)
}

/// Whether `known` is `e` as parsed, compared field by field without
/// parsing `e` again. A selector written differently from its parsed form
/// counts as changed (and is parsed), never the other way round.
fn unchanged(known: &EntryInfo, e: &Entry) -> bool {
    known.revision == e.revision
        && known.created_at == e.created_at
        && known.ttl_secs == e.x509_svid_ttl_seconds
        && known.spiffe_id.as_str() == e.spiffe_id
        && known.hint == e.hint
        && known.dns_names == e.dns_names
        && known.selectors.len() == e.selectors.len()
        && known
            .selectors
            .iter()
            .zip(&e.selectors)
            .all(|(s, text)| written_as(s, text))
}

/// Whether `text` is `selector` written `kind:key:value`.
fn written_as(selector: &Selector, text: &str) -> bool {
    let mut parts = text.splitn(3, ':');
    parts.next() == Some(selector.kind.as_str())
        && parts.next() == Some(selector.key.as_str())
        && parts.next() == Some(selector.value.as_str())
}

fn parse_entry(e: &Entry, sets: &mut HashSet<Arc<[Selector]>>) -> Result<EntryInfo, String> {
    let spiffe_id = e
        .spiffe_id
        .parse()
        .map_err(|err| format!("spiffe_id {:?}: {err}", e.spiffe_id))?;
    let selectors = e
        .selectors
        .iter()
        .map(|s| s.parse().map_err(|err| format!("selector {s:?}: {err}")))
        .collect::<Result<Vec<Selector>, String>>()?;
    if selectors.is_empty() {
        return Err("no selectors".into());
    }
    let selectors = match sets.get(selectors.as_slice()) {
        Some(set) => Arc::clone(set),
        None => {
            let set: Arc<[Selector]> = selectors.into();
            sets.insert(Arc::clone(&set));
            set
        }
    };
    Ok(EntryInfo {
        id: e.id.as_str().into(),
        spiffe_id,
        selectors,
        ttl_secs: e.x509_svid_ttl_seconds,
        dns_names: e.dns_names.clone(),
        hint: e.hint.clone(),
        revision: e.revision,
        created_at: e.created_at,
    })
}

/// The JWT bundle a Sync message carries (empty from a server that sends
/// none; a malformed one is logged and treated as empty, so tokens fail
/// validation rather than pass it).
fn jwt_bundle(json: &[u8]) -> Jwks {
    if json.is_empty() {
        return Jwks::default();
    }
    Jwks::from_json(json).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "ignoring a malformed JWT bundle from Sync");
        Jwks::default()
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_entries_and_skips_bad_ones() {
        let good = Entry {
            id: "e1".into(),
            spiffe_id: "spiffe://td.org/web".into(),
            parent_id: "spiffe://td.org/lanyard/agent/x".into(),
            selectors: vec!["unix:uid:1000".into()],
            x509_svid_ttl_seconds: 20,
            dns_names: vec!["web.local".into()],
            expires_at: 0,
            hint: "internal".into(),
            revision: 3,
            created_at: 1_700_000_000,
            jwt_svid_ttl_seconds: 0,
        };
        let bad_id = Entry {
            id: "e2".into(),
            spiffe_id: "http://nope".into(),
            ..good.clone()
        };
        let bad_sel = Entry {
            id: "e3".into(),
            selectors: vec!["nocolon".into()],
            ..good.clone()
        };
        let (state, crl, issuers) = parse_sync(
            SyncResponse {
                entries: vec![good.clone(), bad_id, bad_sel],
                bundle: vec![vec![1, 2, 3]],
                crl: vec![9],
                revision: 7,
                crl_issuers: vec![vec![4, 5]],
                jwt_bundle: br#"{"keys":[{"kty":"EC","kid":"k1"}]}"#.to_vec(),
                ..SyncResponse::default()
            },
            None,
        );
        assert_eq!(state.jwt_bundle.keys[0].kid.as_deref(), Some("k1"));
        assert_eq!(issuers, [CertificateDer::from(vec![4u8, 5])]);
        assert_eq!(state.entries.len(), 1);
        let e = &state.entries[0];
        assert_eq!(e.spiffe_id.to_string(), "spiffe://td.org/web");
        assert_eq!(e.hint, "internal");
        assert_eq!(e.ttl_secs, 20);
        assert_eq!(e.created_at, 1_700_000_000, "orders the default SVID");
        assert_eq!(state.bundle.len(), 1);
        assert_eq!(crl, vec![9]);
        assert!(state.crl.is_none(), "not verified yet");
        assert_eq!(state.revision, 7);

        // The next message: the unchanged entry is the same allocation, a
        // changed one is parsed again, a new one with the same selectors
        // shares their set.
        let next = |entries: Vec<Entry>| SyncResponse {
            entries,
            revision: 8,
            ..SyncResponse::default()
        };
        let other = Entry {
            id: "e4".into(),
            spiffe_id: "spiffe://td.org/other".into(),
            ..good.clone()
        };
        let (again, _, _) = parse_sync(next(vec![good.clone(), other]), Some(&state));
        assert!(Arc::ptr_eq(&again.entries[0], &state.entries[0]));
        assert!(Arc::ptr_eq(
            &again.entries[1].selectors,
            &state.entries[0].selectors
        ));
        let changed = Entry {
            hint: "external".into(),
            revision: 4,
            ..good.clone()
        };
        let (after, _, _) = parse_sync(next(vec![changed]), Some(&again));
        assert!(!Arc::ptr_eq(&after.entries[0], &again.entries[0]));
        assert_eq!(after.entries[0].hint, "external");
        // Rewritten selectors are never taken for the old ones.
        let moved = Entry {
            selectors: vec!["unix:uid:1001".into()],
            ..good
        };
        let (moved, _, _) = parse_sync(next(vec![moved]), Some(&again));
        assert_eq!(moved.entries[0].selectors[0].value, "1001");
    }
}
