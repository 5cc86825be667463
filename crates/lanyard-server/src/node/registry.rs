//! One shared snapshot of what agents are told: every entry indexed by
//! parent, the node aliases, the bundle, the CRL, and the recent changes.
//! It is rebuilt once per change (by the [`Builder`]) and published to
//! every Sync stream; a stream then picks its agent's entries out of the
//! index instead of re-reading the store, and after its first message
//! sends only what changed under its agent's parents (a delta) when the
//! agent accepts deltas.

use std::{collections::HashMap, sync::Arc, time::Duration};

use lanyard_identity::{Selector, SpiffeId, matches_all};
use lanyard_proto::node::v1::{Entry as NodeEntry, SyncResponse};
use lanyard_store::AgentRecord;
use tokio_util::sync::CancellationToken;

pub(crate) use super::builder::Builder;
use super::{
    changelog::{ChangeLog, Delta},
    group::Group,
};
use crate::{ServerError, state::ServerState};

/// A node alias: an entry parented to the server.
#[derive(Clone, Debug)]
pub(super) struct Alias {
    pub spiffe_id: SpiffeId,
    pub selectors: Vec<Selector>,
    pub expires_at: Option<i64>,
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
    /// The server's change counter when it was built (sent to agents).
    pub revision: u64,
    /// Bumped by each snapshot: what the change log counts in.
    pub(super) generation: u64,
    /// Entries by parent ID, shared with the next snapshot when unchanged.
    pub(super) by_parent: HashMap<SpiffeId, Arc<Group>>,
    /// A digest of what the trust domain publishes.
    pub(super) shared: u64,
    pub(super) aliases: Vec<Alias>,
    pub(super) published: Published,
    /// The changes of the last snapshots.
    pub(super) changes: ChangeLog,
}

/// What a Sync stream last sent: enough to tell what it must send next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Sent {
    /// The snapshot the agent's entries are as of.
    generation: u64,
    /// The parents whose entries the agent received.
    parents: Vec<SpiffeId>,
    /// The digest of what the trust domain published.
    shared: u64,
    /// When: entries that expired since are no longer the agent's.
    at: i64,
}

/// What a Sync stream sends next.
#[derive(Debug, PartialEq)]
pub(crate) enum Next {
    /// Nothing the agent sees changed.
    Nothing,
    /// Every entry the agent is authorized for.
    Full(SyncResponse),
    /// Only the entries changed since the stream's previous message.
    Delta(SyncResponse),
}

impl Registry {
    /// Indexes `entries` at once (tests; the server builds incrementally
    /// with [`Builder`]).
    #[cfg(test)]
    pub fn build(
        entries: &[lanyard_identity::Entry],
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

    /// What a stream for `agent` sends at `now`, after `sent` (`None`:
    /// nothing yet), and what it will then have sent. A delta only when
    /// the agent accepts `deltas` and the change log says exactly what
    /// changed; a full message when the agent's parents changed, the clock
    /// went back, or the log no longer reaches back to the stream's
    /// previous message.
    ///
    /// An entry of the agent's that expired since `sent` without any change
    /// to it is removed in the delta: it was live when `sent` was (else the
    /// agent would not hold it), and no change since says so.
    ///
    /// The work is proportional to the changes and expiries since `sent`,
    /// not to the agent's entries, except for a full message.
    pub fn next(
        &self,
        agent: &AgentRecord,
        now: i64,
        sent: Option<&Sent>,
        deltas: bool,
    ) -> (Next, Sent) {
        let parents = self.parents(agent, now);
        let now_sent = Sent {
            generation: self.generation,
            parents: parents.iter().map(|p| (*p).clone()).collect(),
            shared: self.shared,
            at: now,
        };
        let delta = sent
            .filter(|s| s.parents == now_sent.parents && s.at <= now)
            .and_then(|s| {
                let mut delta = self.changes.since(s.generation, &parents, now)?;
                self.remove_expired(&mut delta, &parents, s.at, now);
                Some((s, delta))
            });
        let next = match delta {
            Some((s, d)) if d.is_empty() && s.shared == self.shared => Next::Nothing,
            Some((_, d)) if deltas => Next::Delta(self.message(d, true)),
            _ => Next::Full(self.full(&parents, now)),
        };
        (next, now_sent)
    }

    /// The agent's view at `now`: its own entries and those under node
    /// aliases it matches (as [`authorized_entries`](super::authorized_entries)
    /// defines them).
    #[cfg(test)]
    pub fn view(&self, agent: &AgentRecord, now: i64) -> SyncResponse {
        self.full(&self.parents(agent, now), now)
    }

    /// Every live entry under `parents`, parent by parent, each parent's
    /// in creation order.
    fn full(&self, parents: &[&SpiffeId], now: i64) -> SyncResponse {
        let mut entries: Vec<NodeEntry> = Vec::new();
        for group in parents.iter().filter_map(|p| self.by_parent.get(*p)) {
            let mut live: Vec<_> = group.entries().filter(|e| e.live_at(now)).collect();
            live.sort_by_key(|e| e.order);
            entries.extend(live.into_iter().map(|e| e.proto.clone()));
        }
        let removed = Vec::new();
        self.message(Delta { entries, removed }, false)
    }

    /// A message carrying `entries` (all of them, or a delta) with what
    /// the trust domain publishes now.
    fn message(&self, entries: Delta, delta: bool) -> SyncResponse {
        SyncResponse {
            entries: entries.entries,
            removed_entry_ids: entries.removed,
            delta,
            bundle: self.published.bundle.clone(),
            crl: self.published.crl.clone(),
            revision: self.revision,
            crl_issuers: self.published.crl_issuers.clone(),
            jwt_bundle: self.published.jwt_bundle.clone(),
        }
    }

    /// Adds to `delta` the removal of every entry under `parents` that
    /// expired after `then` until `now`, once: one that also changed is
    /// there already (its last state is the current one, expired). Only
    /// the parents' own expiries are looked at.
    fn remove_expired(&self, delta: &mut Delta, parents: &[&SpiffeId], then: i64, now: i64) {
        let before = delta.removed.len();
        for group in parents.iter().filter_map(|p| self.by_parent.get(*p)) {
            let expired = group.expired_between(then, now);
            delta
                .removed
                .extend(expired.iter().map(|(_, id)| id.to_string()));
        }
        if delta.removed.len() > before {
            delta.removed.sort_unstable();
            delta.removed.dedup();
        }
    }

    /// When the view of the stream that last `sent` changes by itself
    /// next, after `now`: the first expiry of an entry under its parents,
    /// or of a node alias (which may take a parent away).
    pub fn next_expiry(&self, sent: &Sent, now: i64) -> Option<i64> {
        let entries = sent
            .parents
            .iter()
            .filter_map(|p| self.by_parent.get(p))
            .filter_map(|group| group.next_expiry(now));
        let aliases = self
            .aliases
            .iter()
            .filter_map(|a| a.expires_at)
            .filter(|&t| t > now);
        entries.chain(aliases).min()
    }
}

/// Publishes a snapshot of `builder` with the state's current bundle and CRL.
fn publish(state: &ServerState, builder: &mut Builder, revision: u64) {
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
    let entries = state.db(|s| s.list_entries()).await?;
    let mut builder = Builder::new(state.server_id.clone(), entries);
    publish(state, &mut builder, 0);
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
        if let Err(e) = refresh(&state, &mut builder).await {
            // Keep serving the last snapshot (the store is failing, and
            // every other path reports it too), and try again shortly:
            // what was to be read is still pending.
            tracing::error!(error = %e, "cannot read the entries for agents; retrying");
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(READ_RETRY) => state.notify(),
            }
            continue;
        }
        publish(&state, &mut builder, revision);
    }
}

/// How long the registry waits before reading the store again after a
/// failed read.
const READ_RETRY: Duration = Duration::from_secs(1);

/// Brings `builder` up to date with the store: reloads every entry when a
/// resync is due (changes of other servers may have been missed), then
/// re-reads the entries announced as changed. Nothing it was told about is
/// lost: on an error the resync stays due and the announced entries stay
/// pending, for the next call.
///
/// The announced entries are taken *before* a reload reads the store, so
/// that an entry changed while the reload runs is still pending afterwards
/// and read again, never overwritten by the reload's older copy.
async fn refresh(state: &ServerState, builder: &mut Builder) -> Result<(), ServerError> {
    use std::sync::atomic::Ordering;
    if state.resync_entries.swap(false, Ordering::AcqRel) {
        // Every entry announced so far is in what the reload reads.
        let announced = state.take_changed_entries();
        match state.db(|s| s.list_entries()).await {
            Ok(entries) => builder.reload(entries),
            Err(e) => {
                state.resync_entries.store(true, Ordering::Release);
                state.requeue_changed_entries(announced);
                return Err(e.into());
            }
        }
    }
    let ids = state.take_changed_entries();
    if ids.is_empty() {
        return Ok(());
    }
    let wanted = ids.clone();
    let read = state
        .db(move |s| {
            wanted
                .into_iter()
                .map(|id| Ok((id, s.get_entry(&id)?)))
                .collect::<Result<Vec<_>, _>>()
        })
        .await;
    match read {
        Ok(changes) => {
            builder.apply(changes);
            Ok(())
        }
        Err(e) => {
            state.requeue_changed_entries(ids);
            Err(e.into())
        }
    }
}
