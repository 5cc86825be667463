//! Keeps every entry in memory, indexed by parent, and turns the changes it
//! is told about into new [`Registry`] snapshots. Work per change is
//! proportional to the change: one bucket of the changed entry's parent is
//! rebuilt (see [`group`](super::group)), and the change is recorded in the
//! [`ChangeLog`] that lets Sync streams send deltas.

use std::{
    collections::{BTreeSet, HashMap},
    hash::{DefaultHasher, Hash, Hasher},
    sync::Arc,
};

use lanyard_identity::{Entry, EntryId, SpiffeId};

use super::{
    changelog::{Change, ChangeLog, Placed},
    group::{GroupBuilder, WireEntry},
    registry::{Alias, Published, Registry},
};

/// Builds [`Registry`] snapshots, one per change.
pub(crate) struct Builder {
    server_id: SpiffeId,
    entries: HashMap<EntryId, Entry>,
    groups: HashMap<SpiffeId, GroupBuilder>,
    /// Entries parented to the server: the node aliases.
    aliases: BTreeSet<EntryId>,
    /// The last snapshot's generation.
    generation: u64,
    /// Changes applied since the last snapshot.
    pending: Vec<Change>,
    log: ChangeLog,
}

impl Builder {
    /// Indexes every entry.
    pub fn new(server_id: SpiffeId, entries: Vec<Entry>) -> Self {
        let mut builder = Self {
            server_id,
            entries: HashMap::new(),
            groups: HashMap::new(),
            aliases: BTreeSet::new(),
            generation: 0,
            pending: Vec::new(),
            // Streams that were sent anything older than the first
            // snapshot get a full message.
            log: ChangeLog::starting_at(1),
        };
        builder.load(entries);
        builder
    }

    /// Replaces every entry (after changes may have been missed). Streams
    /// get a full message next: the log starts again.
    pub fn reload(&mut self, entries: Vec<Entry>) {
        let generation = self.generation;
        *self = Self::new(self.server_id.clone(), entries);
        self.generation = generation;
        self.log = ChangeLog::starting_at(generation + 1);
    }

    fn load(&mut self, entries: Vec<Entry>) {
        self.apply(entries.into_iter().map(|e| (e.id, Some(e))).collect());
        self.pending.clear();
    }

    /// Applies changed entries (`None`: deleted).
    pub fn apply(&mut self, changes: Vec<(EntryId, Option<Entry>)>) {
        for (id, entry) in changes {
            let before = self.remove(&id);
            let after = entry.map(|e| self.insert(e));
            self.pending.push(Change { id, before, after });
        }
    }

    /// Removes entry `id`; returns its parent.
    fn remove(&mut self, id: &EntryId) -> Option<SpiffeId> {
        let old = self.entries.remove(id)?;
        if old.parent_id == self.server_id {
            self.aliases.remove(id);
        } else if let Some(group) = self.groups.get_mut(&old.parent_id) {
            group.remove(id);
        }
        Some(old.parent_id)
    }

    /// Adds `entry`; returns its parent and wire form.
    fn insert(&mut self, entry: Entry) -> Placed {
        let wire = Arc::new(WireEntry::of(&entry));
        if entry.parent_id == self.server_id {
            self.aliases.insert(entry.id);
        } else {
            self.groups
                .entry(entry.parent_id.clone())
                .or_default()
                .insert(entry.id, Arc::clone(&wire));
        }
        let parent = entry.parent_id.clone();
        self.entries.insert(entry.id, entry);
        (parent, wire)
    }

    /// The next snapshot: the entries as they are now, with what the trust
    /// domain publishes. The changes applied since the last one are
    /// recorded under its generation.
    pub fn registry(&mut self, published: Published, revision: u64) -> Registry {
        self.generation += 1;
        self.log
            .push(self.generation, std::mem::take(&mut self.pending));
        self.groups.retain(|_, g| !g.is_empty());
        let by_parent = self
            .groups
            .iter_mut()
            .map(|(parent, g)| (parent.clone(), g.snapshot()))
            .collect();
        let aliases = self
            .aliases
            .iter()
            .filter_map(|id| self.entries.get(id))
            .map(|e| Alias {
                spiffe_id: e.spiffe_id.clone(),
                selectors: e.selectors.clone(),
                expires_at: e.expires_at,
            })
            .collect();
        let mut hasher = DefaultHasher::new();
        published.hash(&mut hasher);
        Registry {
            revision,
            generation: self.generation,
            by_parent,
            shared: hasher.finish(),
            aliases,
            published,
            changes: self.log.clone(),
        }
    }
}
