//! One shared snapshot of what agents are told: every entry indexed by
//! parent, the node aliases, the bundle and the CRL. It is rebuilt once per
//! change and published to every Sync stream; a stream then picks its
//! agent's entries out of the index instead of re-reading the store.

use std::{
    collections::HashMap,
    hash::{DefaultHasher, Hash, Hasher},
    sync::Arc,
};

use lanyard_identity::{Entry, Selector, SpiffeId, matches_all};
use lanyard_proto::node::v1::{Entry as NodeEntry, SyncResponse};
use lanyard_store::AgentRecord;
use prost::Message as _;
use tokio_util::sync::CancellationToken;

use crate::{ServerError, convert, state::ServerState};

/// A node alias: an entry parented to the server.
#[derive(Debug)]
struct Alias {
    spiffe_id: SpiffeId,
    selectors: Vec<Selector>,
    expires_at: Option<i64>,
}

/// The entries under one parent, in wire form, with a digest of their
/// content so that a stream can tell "unchanged" without comparing them.
#[derive(Debug, Default)]
struct Group {
    entries: Vec<(NodeEntry, Option<i64>)>,
    digest: u64,
}

/// What a stream's last message was made of: when it is the same after a
/// change, the stream has nothing to send and builds nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ViewKey {
    groups: Vec<(SpiffeId, u64)>,
    shared: u64,
    expired: usize,
}

/// What every agent's view is made from, at one change.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    /// Bumped by each rebuild.
    pub revision: u64,
    /// Entries by parent ID.
    by_parent: HashMap<SpiffeId, Group>,
    /// A digest of the bundle, the CRL and its issuers.
    shared: u64,
    aliases: Vec<Alias>,
    bundle: Vec<Vec<u8>>,
    crl: Vec<u8>,
    /// The intermediates that may sign the CRL (upstream mode).
    crl_issuers: Vec<Vec<u8>>,
    /// The earliest entry expiry, when views change by themselves.
    expiries: Vec<i64>,
}

impl Registry {
    /// Indexes `entries`; entries parented to `server_id` are node aliases.
    pub fn build(
        entries: &[Entry],
        server_id: &SpiffeId,
        bundle: Vec<Vec<u8>>,
        crl: Vec<u8>,
        crl_issuers: Vec<Vec<u8>>,
        revision: u64,
    ) -> Self {
        let mut by_parent: HashMap<SpiffeId, Group> = HashMap::new();
        let mut aliases = Vec::new();
        let mut expiries = Vec::new();
        for e in entries {
            expiries.extend(e.expires_at);
            if &e.parent_id == server_id {
                aliases.push(Alias {
                    spiffe_id: e.spiffe_id.clone(),
                    selectors: e.selectors.clone(),
                    expires_at: e.expires_at,
                });
            } else {
                by_parent
                    .entry(e.parent_id.clone())
                    .or_default()
                    .entries
                    .push((convert::node_entry(e), e.expires_at));
            }
        }
        expiries.sort_unstable();
        for group in by_parent.values_mut() {
            let mut hasher = DefaultHasher::new();
            for (entry, _) in &group.entries {
                entry.encode_to_vec().hash(&mut hasher);
            }
            group.digest = hasher.finish();
        }
        let mut hasher = DefaultHasher::new();
        (&bundle, &crl, &crl_issuers).hash(&mut hasher);
        Self {
            revision,
            by_parent,
            shared: hasher.finish(),
            aliases,
            bundle,
            crl,
            crl_issuers,
            expiries,
        }
    }

    /// The parents whose entries `agent` receives: its own ID and the node
    /// aliases it matches at `now`.
    fn parents<'a>(&'a self, agent: &'a AgentRecord, now: i64) -> Vec<&'a SpiffeId> {
        let mut parents = vec![&agent.spiffe_id];
        parents.extend(
            self.aliases
                .iter()
                .filter(|a| {
                    a.expires_at.is_none_or(|t| t > now)
                        && matches_all(&a.selectors, &agent.selectors)
                })
                .map(|a| &a.spiffe_id),
        );
        parents.sort();
        parents.dedup();
        parents
    }

    /// What the agent's view at `now` is made of, cheaply: equal keys mean
    /// equal views.
    pub fn key(&self, agent: &AgentRecord, now: i64) -> ViewKey {
        ViewKey {
            groups: self
                .parents(agent, now)
                .into_iter()
                .map(|p| (p.clone(), self.by_parent.get(p).map_or(0, |g| g.digest)))
                .collect(),
            shared: self.shared,
            expired: self.expiries.partition_point(|t| *t <= now),
        }
    }

    /// The agent's view at `now`: its own entries and those under node
    /// aliases it matches (as [`authorized_entries`](super::authorized_entries)
    /// defines them), and when that view next changes by itself.
    pub fn view(&self, agent: &AgentRecord, now: i64) -> (SyncResponse, Option<i64>) {
        let entries = self
            .parents(agent, now)
            .into_iter()
            .filter_map(|p| self.by_parent.get(p))
            .flat_map(|g| &g.entries)
            .filter(|(_, expires_at)| expires_at.is_none_or(|t| t > now))
            .map(|(e, _)| e.clone())
            .collect();
        (
            SyncResponse {
                entries,
                bundle: self.bundle.clone(),
                crl: self.crl.clone(),
                revision: self.revision,
                crl_issuers: self.crl_issuers.clone(),
            },
            self.next_expiry(now),
        )
    }

    /// The first entry expiry after `now`: views change by themselves then.
    pub fn next_expiry(&self, now: i64) -> Option<i64> {
        self.expiries.iter().copied().find(|t| *t > now)
    }
}

/// Rebuilds the registry from the store and publishes it.
pub(crate) async fn refresh(state: &ServerState, revision: u64) -> Result<(), ServerError> {
    let store = state.store.clone();
    let entries = tokio::task::spawn_blocking(move || store.list_entries())
        .await
        .map_err(|e| ServerError::Task {
            task: "registry",
            reason: e.to_string(),
        })??;
    let bundle = state.bundle().into_iter().map(|c| c.to_vec()).collect();
    let crl = state.crl.load().der.clone();
    let crl_issuers = super::crl_issuers::crl_issuers(state);
    let registry = Registry::build(
        &entries,
        &state.server_id,
        bundle,
        crl,
        crl_issuers,
        revision,
    );
    state.registry.send_replace(Arc::new(registry));
    Ok(())
}

/// Rebuilds the registry on every change until `shutdown`.
pub(crate) async fn run(
    state: Arc<ServerState>,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    let mut changes = state.subscribe();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            changed = changes.changed() => if changed.is_err() { return Ok(()) },
        }
        let revision = *changes.borrow_and_update();
        if let Err(e) = refresh(&state, revision).await {
            tracing::error!(error = %e, "cannot read entries for agents; retrying at the next change");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    use crate::node::authz::tests::entry;

    fn agent(id: &str) -> AgentRecord {
        AgentRecord {
            spiffe_id: id.parse().unwrap(),
            attestation_type: "join_token".into(),
            selectors: vec!["join_token:id:abc".parse().unwrap()],
            serial: "01".into(),
            expires_at: 0,
            attested_at: 0,
            banned: false,
            evicted: false,
            revision: 1,
        }
    }

    #[test]
    fn view_agrees_with_authorized_entries() {
        const SERVER: &str = "spiffe://td.org/lanyard/server";
        const AGENT: &str = "spiffe://td.org/lanyard/agent/join_token/abc";
        let entries = vec![
            entry("spiffe://td.org/direct", AGENT, &["unix:uid:1"], None),
            entry(
                "spiffe://td.org/other",
                "spiffe://td.org/lanyard/agent/join_token/zzz",
                &["unix:uid:1"],
                None,
            ),
            entry(
                "spiffe://td.org/node/web",
                SERVER,
                &["join_token:id:abc"],
                None,
            ),
            entry(
                "spiffe://td.org/via-alias",
                "spiffe://td.org/node/web",
                &["unix:uid:2"],
                None,
            ),
            entry(
                "spiffe://td.org/node/db",
                SERVER,
                &["join_token:id:nope"],
                None,
            ),
            entry(
                "spiffe://td.org/via-db",
                "spiffe://td.org/node/db",
                &["unix:uid:3"],
                None,
            ),
            entry("spiffe://td.org/expired", AGENT, &["unix:uid:1"], Some(99)),
            entry("spiffe://td.org/later", AGENT, &["unix:uid:4"], Some(500)),
        ];
        let agent = agent(AGENT);
        let server: SpiffeId = SERVER.parse().unwrap();
        let registry = Registry::build(&entries, &server, vec![], vec![], vec![], 7);
        let (view, next) = registry.view(&agent, 100);
        let mut got: Vec<String> = view.entries.iter().map(|e| e.spiffe_id.clone()).collect();
        got.sort();
        let mut want: Vec<String> = super::super::authorized_entries(
            &entries,
            &agent.spiffe_id,
            &agent.selectors,
            &server,
            100,
        )
        .iter()
        .map(|e| e.spiffe_id.to_string())
        .collect();
        want.sort();
        assert_eq!(got, want);
        assert_eq!(
            got,
            [
                "spiffe://td.org/direct",
                "spiffe://td.org/later",
                "spiffe://td.org/via-alias"
            ]
        );
        assert_eq!(next, Some(500), "the next expiry after now");
        assert_eq!(view.revision, 7);
    }

    #[test]
    fn a_view_key_changes_only_with_what_the_agent_sees() {
        const SERVER: &str = "spiffe://td.org/lanyard/server";
        const AGENT: &str = "spiffe://td.org/lanyard/agent/join_token/abc";
        const OTHER: &str = "spiffe://td.org/lanyard/agent/join_token/zzz";
        let agent = agent(AGENT);
        let server: SpiffeId = SERVER.parse().unwrap();
        let mine = entry("spiffe://td.org/mine", AGENT, &["unix:uid:1"], None);
        let theirs = entry("spiffe://td.org/theirs", OTHER, &["unix:uid:1"], None);
        let build = |entries: &[Entry], crl: Vec<u8>| {
            Registry::build(entries, &server, vec![], crl, vec![], 1)
        };
        let before = build(&[mine.clone(), theirs.clone()], vec![]).key(&agent, 100);
        let more_theirs = entry("spiffe://td.org/theirs2", OTHER, &["unix:uid:2"], None);
        let unrelated = build(&[mine.clone(), theirs.clone(), more_theirs], vec![]);
        assert_eq!(
            unrelated.key(&agent, 100),
            before,
            "another agent's entry changes nothing"
        );
        let mut renamed = mine.clone();
        renamed.hint = "changed".into();
        assert_ne!(
            build(&[renamed, theirs.clone()], vec![]).key(&agent, 100),
            before
        );
        assert_ne!(
            build(&[mine.clone(), theirs.clone()], vec![1]).key(&agent, 100),
            before,
            "a new CRL is news"
        );
        let mut expiring = mine.clone();
        expiring.expires_at = Some(150);
        let r = build(&[expiring, theirs], vec![]);
        assert_ne!(
            r.key(&agent, 100),
            r.key(&agent, 150),
            "an expiry changes the view"
        );
    }
}
