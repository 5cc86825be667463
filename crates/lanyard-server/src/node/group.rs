//! The entries under one parent, in the wire form agents receive, split
//! into buckets by entry ID: a change rebuilds the one bucket it falls in,
//! and successive snapshots share every other bucket. So a change to a
//! parent with 100,000 entries copies a few thousand pointers, not the
//! 100,000 entries. The group also keeps its entries' expiry times in
//! order, so that a Sync stream finds its own agent's expiries without
//! looking at anyone else's.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
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
    /// The entries that expire, by expiry time then ID.
    expiries: Arc<[(i64, EntryId)]>,
}

impl Group {
    /// Every entry of the group, in no particular order.
    pub fn entries(&self) -> impl Iterator<Item = &Arc<WireEntry>> {
        self.buckets.values().flat_map(|b| b.iter())
    }

    /// The entries that expire after `then` until `now` (none if the
    /// clock went back).
    pub fn expired_between(&self, then: i64, now: i64) -> &[(i64, EntryId)] {
        let (from, to) = (self.passed(then), self.passed(now));
        self.expiries.get(from..to).unwrap_or_default()
    }

    /// The first expiry after `now`.
    pub fn next_expiry(&self, now: i64) -> Option<i64> {
        self.expiries.get(self.passed(now)).map(|(t, _)| *t)
    }

    /// How many expiries are at or before `t`.
    fn passed(&self, t: i64) -> usize {
        self.expiries.partition_point(|(at, _)| *at <= t)
    }
}

/// The builder's side of one parent's entries: every entry by bucket, and
/// the snapshot of them last published.
#[derive(Debug, Default)]
pub(super) struct GroupBuilder {
    buckets: BTreeMap<u8, HashMap<EntryId, Arc<WireEntry>>>,
    expiries: BTreeSet<(i64, EntryId)>,
    /// Buckets changed since `published` was built.
    dirty: Vec<u8>,
    /// Whether `expiries` changed since `published` was built.
    expiries_dirty: bool,
    published: Arc<Group>,
}

impl GroupBuilder {
    /// Adds or replaces `entry`.
    pub fn insert(&mut self, id: EntryId, entry: Arc<WireEntry>) {
        let bucket = bucket_of(&id);
        if let Some(t) = entry.expires_at {
            self.expiries.insert((t, id));
            self.expiries_dirty = true;
        }
        let old = self.buckets.entry(bucket).or_default().insert(id, entry);
        self.forget_expiry(id, old.as_deref());
        self.dirty.push(bucket);
    }

    /// Removes entry `id`.
    pub fn remove(&mut self, id: &EntryId) {
        let bucket = bucket_of(id);
        if let Some(entries) = self.buckets.get_mut(&bucket) {
            let old = entries.remove(id);
            if entries.is_empty() {
                self.buckets.remove(&bucket);
            }
            self.forget_expiry(*id, old.as_deref());
            self.dirty.push(bucket);
        }
    }

    /// Drops the expiry of `old`, what entry `id` was, unless the entry
    /// now under `id` expires at that same time.
    fn forget_expiry(&mut self, id: EntryId, old: Option<&WireEntry>) {
        let Some(t) = old.and_then(|old| old.expires_at) else {
            return;
        };
        let bucket = bucket_of(&id);
        let now = self.buckets.get(&bucket).and_then(|b| b.get(&id));
        if now.is_none_or(|e| e.expires_at != Some(t)) {
            self.expiries.remove(&(t, id));
            self.expiries_dirty = true;
        }
    }

    /// Whether the parent has no entries left.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// The group as it is now, rebuilding only the buckets that changed.
    pub fn snapshot(&mut self) -> Arc<Group> {
        if self.dirty.is_empty() && !self.expiries_dirty {
            return Arc::clone(&self.published);
        }
        let mut group = (*self.published).clone();
        if std::mem::take(&mut self.expiries_dirty) {
            group.expiries = self.expiries.iter().copied().collect();
        }
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

    #[test]
    fn expiries_follow_their_entries() {
        let mut builder = GroupBuilder::default();
        let at = |name: &str, t: Option<i64>| {
            let e = entry(
                &format!("spiffe://td.org/{name}"),
                AGENT,
                &["unix:uid:1"],
                t,
            );
            (e.id, e)
        };
        let (a, mut ea) = at("a", Some(200));
        let (b, eb) = at("b", Some(100));
        let (c, ec) = at("c", None);
        for (id, e) in [(a, &ea), (b, &eb), (c, &ec)] {
            builder.insert(id, Arc::new(WireEntry::of(e)));
        }
        let group = builder.snapshot();
        assert_eq!(&group.expiries[..], [(100, b), (200, a)]);
        assert_eq!(group.next_expiry(50), Some(100));
        assert_eq!(group.next_expiry(100), Some(200), "100 has passed at 100");
        assert_eq!(group.next_expiry(200), None);
        assert_eq!(group.expired_between(50, 150), [(100, b)]);
        assert_eq!(group.expired_between(100, 200), [(200, a)]);
        assert!(
            group.expired_between(150, 120).is_empty(),
            "clock went back"
        );

        // Unrelated to expiries: the list is shared.
        builder.remove(&c);
        assert!(Arc::ptr_eq(&builder.snapshot().expiries, &group.expiries));

        // A new expiry time replaces the old one; the same time stays once.
        ea.expires_at = Some(50);
        builder.remove(&a);
        builder.insert(a, Arc::new(WireEntry::of(&ea)));
        builder.insert(b, Arc::new(WireEntry::of(&eb)));
        assert_eq!(&builder.snapshot().expiries[..], [(50, a), (100, b)]);
        ea.expires_at = None;
        builder.insert(a, Arc::new(WireEntry::of(&ea)));
        assert_eq!(&builder.snapshot().expiries[..], [(100, b)]);
        builder.remove(&b);
        assert!(builder.snapshot().expiries.is_empty());
    }
}
