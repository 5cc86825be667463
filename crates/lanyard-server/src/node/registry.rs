//! One shared snapshot of what agents are told: every entry indexed by
//! parent, the node aliases, the bundle and the CRL. It is rebuilt once per
//! change and published to every Sync stream; a stream then picks its
//! agent's entries out of the index instead of re-reading the store.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    hash::{DefaultHasher, Hash, Hasher},
    sync::Arc,
};

use lanyard_identity::{Entry, EntryId, Selector, SpiffeId, matches_all};
use lanyard_proto::node::v1::{Entry as NodeEntry, SyncResponse};
use lanyard_store::AgentRecord;
use prost::Message as _;
use tokio_util::sync::CancellationToken;

use crate::{ServerError, convert, state::ServerState};

/// A node alias: an entry parented to the server.
#[derive(Clone, Debug)]
pub(super) struct Alias {
    spiffe_id: SpiffeId,
    selectors: Vec<Selector>,
    expires_at: Option<i64>,
}

/// The entries under one parent, in wire form, with a digest of their
/// content so that a stream can tell "unchanged" without comparing them.
#[derive(Debug, Default)]
pub(super) struct Group {
    entries: Vec<(NodeEntry, Option<i64>)>,
    digest: u64,
}

impl Group {
    /// The group of `entries` (already in order).
    fn of<'a>(entries: impl Iterator<Item = &'a Entry>) -> Self {
        let entries: Vec<(NodeEntry, Option<i64>)> = entries
            .map(|e| (convert::entry_proto(e), e.expires_at))
            .collect();
        let mut hasher = DefaultHasher::new();
        for (entry, _) in &entries {
            entry.encode_to_vec().hash(&mut hasher);
        }
        Self {
            entries,
            digest: hasher.finish(),
        }
    }
}

/// What a stream's last message was made of: when it is the same after a
/// change, the stream has nothing to send and builds nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ViewKey {
    groups: Vec<(SpiffeId, u64)>,
    shared: u64,
    expired: usize,
}

/// What the trust domain publishes to every agent, whatever its entries.
#[derive(Clone, Debug, Default, Hash)]
pub(crate) struct Published {
    /// DER CA certificates of the trust bundle.
    pub bundle: Vec<Vec<u8>>,
    /// The DER CRL.
    pub crl: Vec<u8>,
    /// The intermediates that may sign the CRL (upstream mode).
    pub crl_issuers: Vec<Vec<u8>>,
    /// The JWT-SVID signing keys, a JWK Set (JSON).
    pub jwt_bundle: Vec<u8>,
}

impl Published {
    /// What `state` publishes now.
    pub fn now(state: &ServerState) -> Self {
        Self {
            bundle: state.bundle().into_iter().map(|c| c.to_vec()).collect(),
            crl: state.crl.load().der.clone(),
            crl_issuers: super::crl_issuers::crl_issuers(state),
            jwt_bundle: state.jwt_bundle().to_json(),
        }
    }
}

/// What every agent's view is made from, at one change.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    /// Bumped by each rebuild.
    pub revision: u64,
    /// Entries by parent ID, shared with the next snapshot when unchanged.
    by_parent: HashMap<SpiffeId, Arc<Group>>,
    /// A digest of what the trust domain publishes.
    shared: u64,
    aliases: Vec<Alias>,
    published: Published,
    /// The earliest entry expiry, when views change by themselves.
    expiries: Vec<i64>,
}

impl Registry {
    /// Indexes `entries` at once (tests; the server builds incrementally
    /// with [`Builder`]).
    #[cfg(test)]
    pub fn build(
        entries: &[Entry],
        server_id: &SpiffeId,
        published: Published,
        revision: u64,
    ) -> Self {
        Builder::new(server_id.clone(), entries.to_vec()).registry(published, revision)
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
                bundle: self.published.bundle.clone(),
                crl: self.published.crl.clone(),
                revision: self.revision,
                crl_issuers: self.published.crl_issuers.clone(),
                jwt_bundle: self.published.jwt_bundle.clone(),
            },
            self.next_expiry(now),
        )
    }

    /// The first entry expiry after `now`: views change by themselves then.
    pub fn next_expiry(&self, now: i64) -> Option<i64> {
        self.expiries.iter().copied().find(|t| *t > now)
    }
}

/// Keeps every entry in memory, indexed by parent, and turns the changes
/// it is told about into new [`Registry`] snapshots: only the groups whose
/// entries changed are rebuilt; the others are shared.
pub(crate) struct Builder {
    server_id: SpiffeId,
    entries: HashMap<EntryId, Entry>,
    by_parent: HashMap<SpiffeId, BTreeSet<EntryId>>,
    groups: HashMap<SpiffeId, Arc<Group>>,
}

impl Builder {
    /// Indexes every entry.
    pub fn new(server_id: SpiffeId, entries: Vec<Entry>) -> Self {
        let mut builder = Self {
            server_id,
            entries: HashMap::new(),
            by_parent: HashMap::new(),
            groups: HashMap::new(),
        };
        builder.apply(entries.into_iter().map(|e| (e.id, Some(e))).collect());
        builder
    }

    /// Applies changed entries (`None`: deleted) and rebuilds their groups.
    pub fn apply(&mut self, changes: Vec<(EntryId, Option<Entry>)>) {
        let mut dirty: HashSet<SpiffeId> = HashSet::new();
        for (id, entry) in changes {
            if let Some(old) = self.entries.remove(&id) {
                if let Some(ids) = self.by_parent.get_mut(&old.parent_id) {
                    ids.remove(&id);
                }
                dirty.insert(old.parent_id);
            }
            if let Some(entry) = entry {
                self.by_parent
                    .entry(entry.parent_id.clone())
                    .or_default()
                    .insert(id);
                dirty.insert(entry.parent_id.clone());
                self.entries.insert(id, entry);
            }
        }
        for parent in dirty {
            let ids = self.by_parent.get(&parent).filter(|ids| !ids.is_empty());
            match ids {
                Some(ids) if parent != self.server_id => {
                    let mut members: Vec<&Entry> =
                        ids.iter().filter_map(|id| self.entries.get(id)).collect();
                    members.sort_by_key(|e| (e.created_at, e.id));
                    self.groups
                        .insert(parent, Arc::new(Group::of(members.into_iter())));
                }
                Some(_) => {}
                None => {
                    self.by_parent.remove(&parent);
                    self.groups.remove(&parent);
                }
            }
        }
    }

    /// A snapshot of the entries as they are now, with what the trust
    /// domain publishes.
    pub fn registry(&self, published: Published, revision: u64) -> Registry {
        let aliases = self
            .by_parent
            .get(&self.server_id)
            .into_iter()
            .flatten()
            .filter_map(|id| self.entries.get(id))
            .map(|e| Alias {
                spiffe_id: e.spiffe_id.clone(),
                selectors: e.selectors.clone(),
                expires_at: e.expires_at,
            })
            .collect();
        let mut expiries: Vec<i64> = self.entries.values().filter_map(|e| e.expires_at).collect();
        expiries.sort_unstable();
        let mut hasher = DefaultHasher::new();
        published.hash(&mut hasher);
        Registry {
            revision,
            by_parent: self.groups.clone(),
            shared: hasher.finish(),
            aliases,
            published,
            expiries,
        }
    }
}

/// Publishes a snapshot of `builder` with the state's current bundle and CRL.
fn publish(state: &ServerState, builder: &Builder, revision: u64) {
    let registry = builder.registry(Published::now(state), revision);
    state.registry.send_replace(Arc::new(registry));
}

/// The registry between [`start`] and [`run`]: the builder, and the change
/// feed it subscribed to before it read the entries, so that no change made
/// in between (an operator calling the moment the server starts) is missed.
pub(crate) struct Started {
    builder: Builder,
    changes: tokio::sync::watch::Receiver<u64>,
}

/// Subscribes to changes, loads every entry, publishes the first snapshot,
/// and returns what [`run`] keeps up to date.
pub(crate) async fn start(state: &ServerState) -> Result<Started, ServerError> {
    let changes = state.subscribe();
    let store = state.store.clone();
    let entries = tokio::task::spawn_blocking(move || store.list_entries())
        .await
        .map_err(|e| ServerError::Task {
            task: "registry",
            reason: e.to_string(),
        })??;
    let builder = Builder::new(state.server_id.clone(), entries);
    publish(state, &builder, 0);
    Ok(Started { builder, changes })
}

/// Publishes a new snapshot on every change until `shutdown`, reading from
/// the store only the entries that changed.
pub(crate) async fn run(
    state: Arc<ServerState>,
    started: Started,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    let Started {
        mut builder,
        mut changes,
    } = started;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            changed = changes.changed() => if changed.is_err() { return Ok(()) },
        }
        let revision = *changes.borrow_and_update();
        if state
            .resync_entries
            .swap(false, std::sync::atomic::Ordering::AcqRel)
        {
            // Changes of other servers may have been missed: start over.
            let store = state.store.clone();
            match tokio::task::spawn_blocking(move || store.list_entries()).await {
                Ok(Ok(entries)) => {
                    state.take_changed_entries();
                    builder = Builder::new(state.server_id.clone(), entries);
                    publish(&state, &builder, revision);
                    continue;
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "cannot reload the entries for agents");
                    state
                        .resync_entries
                        .store(true, std::sync::atomic::Ordering::Release);
                }
                Err(e) => tracing::error!(error = %e, "cannot reload the entries for agents"),
            }
        }
        let ids = state.take_changed_entries();
        if !ids.is_empty() {
            let store = state.store.clone();
            let read = tokio::task::spawn_blocking(move || {
                ids.into_iter()
                    .map(|id| Ok((id, store.get_entry(&id)?)))
                    .collect::<Result<Vec<_>, lanyard_store::StoreError>>()
            })
            .await
            .map_err(|e| ServerError::Task {
                task: "registry",
                reason: e.to_string(),
            })?;
            match read {
                Ok(changes) => builder.apply(changes),
                Err(e) => {
                    // Keep serving the last snapshot; the server's store is
                    // failing and every other path reports it too.
                    tracing::error!(error = %e, "cannot read changed entries for agents");
                    continue;
                }
            }
        }
        publish(&state, &builder, revision);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    use crate::node::authz::tests::{AGENT, SERVER, entry, fixture};

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
        let entries = fixture();
        let agent = agent(AGENT);
        let server: SpiffeId = SERVER.parse().unwrap();
        let registry = Registry::build(&entries, &server, Published::default(), 7);
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
        const OTHER: &str = "spiffe://td.org/lanyard/agent/join_token/zzz";
        let agent = agent(AGENT);
        let server: SpiffeId = SERVER.parse().unwrap();
        let mine = entry("spiffe://td.org/mine", AGENT, &["unix:uid:1"], None);
        let theirs = entry("spiffe://td.org/theirs", OTHER, &["unix:uid:1"], None);
        let build = |entries: &[Entry], crl: Vec<u8>| {
            let published = Published {
                crl,
                ..Published::default()
            };
            Registry::build(entries, &server, published, 1)
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

    #[test]
    fn incremental_changes_give_the_views_of_a_full_rebuild() {
        let server: SpiffeId = SERVER.parse().unwrap();
        let a = entry("spiffe://td.org/a", AGENT, &["unix:uid:1"], None);
        let b = entry("spiffe://td.org/b", AGENT, &["unix:uid:2"], Some(500));
        let alias = entry(
            "spiffe://td.org/node/web",
            SERVER,
            &["join_token:id:abc"],
            None,
        );
        let via = entry(
            "spiffe://td.org/via",
            "spiffe://td.org/node/web",
            &["unix:uid:3"],
            None,
        );
        let mut builder = Builder::new(server.clone(), vec![a.clone(), b.clone()]);
        // Add an alias and an entry under it, change one, delete another.
        let mut a2 = a.clone();
        a2.hint = "changed".into();
        a2.revision = 1;
        builder.apply(vec![
            (alias.id, Some(alias.clone())),
            (via.id, Some(via.clone())),
            (a.id, Some(a2.clone())),
            (b.id, None),
        ]);
        let incremental = builder.registry(Published::default(), 3);
        let full = Registry::build(&[a2, alias, via], &server, Published::default(), 3);
        let me = agent(AGENT);
        assert_eq!(incremental.view(&me, 100), full.view(&me, 100));
        assert_eq!(incremental.key(&me, 100), full.key(&me, 100));
        assert_eq!(incremental.view(&me, 100).0.entries.len(), 2);
        // Deleting the last entry of a parent drops its group.
        let mut builder = Builder::new(server.clone(), vec![a.clone()]);
        builder.apply(vec![(a.id, None)]);
        assert!(
            builder
                .registry(Published::default(), 4)
                .view(&me, 100)
                .0
                .entries
                .is_empty()
        );
    }
}
