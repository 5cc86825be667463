//! The entries under one parent, in the wire form agents receive, split
//! into buckets by entry ID: a change rebuilds the one bucket it falls in,
//! and successive snapshots share every other bucket. So a change to a
//! parent with 100,000 entries copies a few thousand pointers, not the
//! 100,000 entries.

use std::{
    collections::{BTreeMap, HashMap},
    hash::{DefaultHasher, Hash, Hasher},
    sync::Arc,
};

use lanyard_identity::{Entry, EntryId};
use lanyard_proto::node::v1::Entry as NodeEntry;

use crate::convert;

/// Buckets per parent: a change copies about 1/64 of its parent's pointers.
const BUCKETS: u64 = 64;

/// One entry as agents receive it, converted once when it changes.
#[derive(Debug, PartialEq)]
pub(super) struct WireEntry {
    /// The message sent.
    pub proto: NodeEntry,
    /// When the entry stops being served (unix seconds).
    pub expires_at: Option<i64>,
    /// Creation time and ID: the order of entries in a message.
    pub order: (i64, EntryId),
}

impl WireEntry {
    /// `entry` in wire form.
    pub fn of(entry: &Entry) -> Self {
        Self {
            proto: convert::entry_proto(entry),
            expires_at: entry.expires_at,
            order: (entry.created_at, entry.id),
        }
    }

    /// Whether the entry is still served at `now`.
    pub fn live_at(&self, now: i64) -> bool {
        self.expires_at.is_none_or(|t| t > now)
    }
}

/// The bucket of entry `id`.
fn bucket_of(id: &EntryId) -> u8 {
    let mut hasher = DefaultHasher::new();
    id.hash(&mut hasher);
    // Below BUCKETS (64), so it fits.
    (hasher.finish() % BUCKETS) as u8
}

/// A snapshot's entries under one parent (only non-empty buckets).
#[derive(Clone, Debug, Default)]
pub(super) struct Group {
    buckets: BTreeMap<u8, Arc<[Arc<WireEntry>]>>,
}

impl Group {
    /// Every entry of the group, in no particular order.
    pub fn entries(&self) -> impl Iterator<Item = &Arc<WireEntry>> {
        self.buckets.values().flat_map(|b| b.iter())
    }
}

/// The builder's side of one parent's entries: every entry by bucket, and
/// the snapshot of them last published.
#[derive(Debug, Default)]
pub(super) struct GroupBuilder {
    buckets: BTreeMap<u8, HashMap<EntryId, Arc<WireEntry>>>,
    /// Buckets changed since `published` was built.
    dirty: Vec<u8>,
    published: Arc<Group>,
}

impl GroupBuilder {
    /// Adds or replaces `entry`.
    pub fn insert(&mut self, id: EntryId, entry: Arc<WireEntry>) {
        let bucket = bucket_of(&id);
        self.buckets.entry(bucket).or_default().insert(id, entry);
        self.dirty.push(bucket);
    }

    /// Removes entry `id`.
    pub fn remove(&mut self, id: &EntryId) {
        let bucket = bucket_of(id);
        if let Some(entries) = self.buckets.get_mut(&bucket) {
            entries.remove(id);
            if entries.is_empty() {
                self.buckets.remove(&bucket);
            }
            self.dirty.push(bucket);
        }
    }

    /// Whether the parent has no entries left.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// The group as it is now, rebuilding only the buckets that changed.
    pub fn snapshot(&mut self) -> Arc<Group> {
        if self.dirty.is_empty() {
            return Arc::clone(&self.published);
        }
        let mut group = (*self.published).clone();
        self.dirty.sort_unstable();
        self.dirty.dedup();
        for bucket in self.dirty.drain(..) {
            match self.buckets.get(&bucket) {
                Some(entries) => {
                    group
                        .buckets
                        .insert(bucket, entries.values().cloned().collect());
                }
                None => {
                    group.buckets.remove(&bucket);
                }
            }
        }
        self.published = Arc::new(group);
        Arc::clone(&self.published)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    use crate::node::authz::tests::{AGENT, entry};

    #[test]
    fn a_change_rebuilds_one_bucket_and_shares_the_others() {
        let mut builder = GroupBuilder::default();
        let entries: Vec<Entry> = (0..1000)
            .map(|i| {
                entry(
                    &format!("spiffe://td.org/w{i}"),
                    AGENT,
                    &["unix:uid:1"],
                    None,
                )
            })
            .collect();
        for e in &entries {
            builder.insert(e.id, Arc::new(WireEntry::of(e)));
        }
        let before = builder.snapshot();
        assert_eq!(before.entries().count(), 1000);
        assert!(Arc::ptr_eq(&before, &builder.snapshot()), "nothing changed");

        let changed = &entries[7];
        builder.remove(&changed.id);
        let after = builder.snapshot();
        assert_eq!(after.entries().count(), 999);
        let bucket = bucket_of(&changed.id);
        for (b, entries) in &after.buckets {
            let shared = Arc::ptr_eq(entries, &before.buckets[b]);
            assert_eq!(shared, *b != bucket, "bucket {b}");
        }
        builder.insert(changed.id, Arc::new(WireEntry::of(changed)));
        assert_eq!(builder.snapshot().entries().count(), 1000);
        for e in &entries {
            builder.remove(&e.id);
        }
        assert!(builder.is_empty());
        assert_eq!(builder.snapshot().entries().count(), 0);
    }
}
