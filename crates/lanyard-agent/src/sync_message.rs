//! One Sync message turned into the agent's [`SyncState`]: a full message
//! gives every entry, a delta is applied to the state built from the
//! previous message on the same stream.
//!
//! Entries unchanged since the previous state keep their allocation (the
//! same `Arc`), so a change costs allocations only for what changed and
//! every holder keeps sharing one copy of each entry. Selector sets are
//! interned across messages: entries with the same selectors share one.
//!
//! A delta never guesses: one that arrives before a full message on its
//! stream, or that contradicts itself, is refused, and the caller
//! reconnects to get a full message.

use std::{collections::HashSet, sync::Arc};

use lanyard_identity::Selector;
use lanyard_jwt::Jwks;
use lanyard_proto::node::v1::{Entry, SyncResponse};
use rustls_pki_types::CertificateDer;

use crate::{
    AgentError,
    cache::{EntryInfo, SyncState},
    entries::Entries,
};

/// Interned selector sets kept at least this many before unused ones are
/// dropped.
const MIN_PRUNE: usize = 1024;

/// A parsed Sync message: the state (its CRL not yet verified, so `crl` is
/// `None`), the CRL's DER bytes and the CA certificates that may have
/// signed it besides the bundle's.
#[derive(Debug)]
pub struct Parsed {
    /// The new state.
    pub state: SyncState,
    /// The CRL as the server sent it.
    pub crl: Vec<u8>,
    /// Intermediates that may sign the CRL (upstream mode).
    pub crl_issuers: Vec<CertificateDer<'static>>,
    /// Whether the message was a delta.
    pub delta: bool,
}

/// Parses Sync messages, interning selector sets across them.
#[derive(Debug, Default)]
pub struct MessageParser {
    sets: HashSet<Arc<[Selector]>>,
    prune_at: usize,
}

impl MessageParser {
    /// Parses `resp`. `previous` is the state built from the previous
    /// message on the same stream (`None` before the first): a delta is
    /// applied to it, a full message shares its unchanged entries. Entries
    /// with a bad SPIFFE ID or selector are skipped (and logged) rather
    /// than failing the whole update; in a delta, such an entry's previous
    /// form is removed too.
    pub fn parse(
        &mut self,
        resp: SyncResponse,
        previous: Option<&SyncState>,
    ) -> Result<Parsed, AgentError> {
        let entries = match (resp.delta, previous) {
            (false, previous) => self.full(&resp, previous)?,
            (true, Some(previous)) => self.delta(&resp, previous)?,
            (true, None) => return Err(refused("a delta before any full message on the stream")),
        };
        self.prune();
        let state = SyncState {
            entries,
            bundle: resp.bundle.into_iter().map(CertificateDer::from).collect(),
            crl: None,
            revision: resp.revision,
            jwt_bundle: Arc::new(jwt_bundle(&resp.jwt_bundle)),
        };
        Ok(Parsed {
            state,
            crl: resp.crl,
            crl_issuers: resp
                .crl_issuers
                .into_iter()
                .map(CertificateDer::from)
                .collect(),
            delta: resp.delta,
        })
    }

    fn full(
        &mut self,
        resp: &SyncResponse,
        previous: Option<&SyncState>,
    ) -> Result<Entries, AgentError> {
        if !resp.removed_entry_ids.is_empty() {
            return Err(refused("a full message that removes entries"));
        }
        let known = |id: &str| previous.and_then(|p| p.entries.get(id));
        let mut ids: HashSet<&str> = HashSet::with_capacity(resp.entries.len());
        let mut entries = Vec::with_capacity(resp.entries.len());
        for e in &resp.entries {
            if !ids.insert(&e.id) {
                return Err(refused(format!("entry {} twice", e.id)));
            }
            if let Some(same) = known(&e.id).filter(|k| unchanged(k, e)) {
                entries.push(Arc::clone(same));
            } else if let Some(info) = self.entry(e) {
                entries.push(Arc::new(info));
            }
        }
        let entries: Entries = entries.into_iter().collect();
        Ok(match previous {
            Some(previous) => entries.sharing(&previous.entries),
            None => entries,
        })
    }

    fn delta(&mut self, resp: &SyncResponse, previous: &SyncState) -> Result<Entries, AgentError> {
        let removed: HashSet<&str> = resp.removed_entry_ids.iter().map(String::as_str).collect();
        let mut changed: HashSet<&str> = HashSet::with_capacity(resp.entries.len());
        for e in &resp.entries {
            if removed.contains(e.id.as_str()) {
                return Err(refused(format!("entry {} both changed and removed", e.id)));
            }
            if !changed.insert(&e.id) {
                return Err(refused(format!("entry {} twice", e.id)));
            }
        }
        let mut entries = previous.entries.clone();
        for id in removed {
            // An ID the agent does not hold (created and deleted between
            // two messages) is nothing to remove.
            entries.remove(id);
        }
        for e in &resp.entries {
            if previous.entries.get(&e.id).is_some_and(|k| unchanged(k, e)) {
                continue;
            }
            match self.entry(e) {
                Some(info) => {
                    entries.insert(Arc::new(info));
                }
                None => {
                    entries.remove(&e.id);
                }
            }
        }
        Ok(entries)
    }

    /// `e` parsed, with its selector set interned; `None` (logged) when
    /// unusable.
    fn entry(&mut self, e: &Entry) -> Option<EntryInfo> {
        match parse_entry(e, &mut self.sets) {
            Ok(info) => Some(info),
            Err(why) => {
                tracing::warn!(entry = %e.id, reason = %why, "ignoring unusable entry from Sync");
                None
            }
        }
    }

    /// Forgets the selector sets no entry holds any more, once there are
    /// twice as many as after the last time.
    fn prune(&mut self) {
        if self.sets.len() > self.prune_at.max(MIN_PRUNE) {
            self.sets.retain(|set| Arc::strong_count(set) > 1);
            self.prune_at = self.sets.len() * 2;
        }
    }
}

fn refused(problem: impl Into<String>) -> AgentError {
    AgentError::BadResponse {
        call: "Sync",
        problem: problem.into(),
    }
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
#[path = "sync_message_tests.rs"]
mod tests;
