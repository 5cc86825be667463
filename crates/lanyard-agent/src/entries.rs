//! The entries of a Sync state, by ID, in buckets that successive states
//! share: a delta copies only the buckets it touches, and two states are
//! compared bucket by bucket, skipping the shared ones. With 100,000
//! entries, a one-entry change costs a copy of ~1,600 pointers, and the
//! SVID manager finds what changed without looking at the other entries.

use std::{
    fmt,
    hash::{DefaultHasher, Hash, Hasher},
    sync::Arc,
};

use crate::cache::EntryInfo;

/// Buckets per state (when it has any entry).
const BUCKETS: usize = 64;

/// One bucket's entries, sorted by ID.
type Bucket = Vec<Arc<EntryInfo>>;

/// Authorized entries by ID. Cloning is cheap (the buckets are shared);
/// iteration order is fixed by the IDs, not by the server's order.
#[derive(Clone, Default)]
pub struct Entries {
    /// Empty, or [`BUCKETS`] buckets.
    buckets: Vec<Arc<Bucket>>,
    len: usize,
}

/// The bucket of entry `id`.
fn bucket_of(id: &str) -> usize {
    let mut hasher = DefaultHasher::new();
    id.hash(&mut hasher);
    // Below BUCKETS, so it fits.
    (hasher.finish() % BUCKETS as u64) as usize
}

fn position(bucket: &Bucket, id: &str) -> Result<usize, usize> {
    bucket.binary_search_by(|e| (*e.id).cmp(id))
}

impl Entries {
    /// How many entries there are.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The entry with this ID.
    pub fn get(&self, id: &str) -> Option<&Arc<EntryInfo>> {
        let bucket = self.buckets.get(bucket_of(id))?;
        position(bucket, id).ok().map(|i| &bucket[i])
    }

    /// Every entry.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<EntryInfo>> {
        self.buckets.iter().flat_map(|b| b.iter())
    }

    /// Adds `entry`, or replaces the one with its ID (returned).
    pub fn insert(&mut self, entry: Arc<EntryInfo>) -> Option<Arc<EntryInfo>> {
        if self.buckets.is_empty() {
            self.buckets = (0..BUCKETS).map(|_| Arc::default()).collect();
        }
        let bucket = Arc::make_mut(&mut self.buckets[bucket_of(&entry.id)]);
        match position(bucket, &entry.id) {
            Ok(i) => Some(std::mem::replace(&mut bucket[i], entry)),
            Err(i) => {
                bucket.insert(i, entry);
                self.len += 1;
                None
            }
        }
    }

    /// Removes the entry with this ID (returned).
    pub fn remove(&mut self, id: &str) -> Option<Arc<EntryInfo>> {
        let bucket = self.buckets.get_mut(bucket_of(id))?;
        let i = position(bucket, id).ok()?;
        let removed = Arc::make_mut(bucket).remove(i);
        self.len -= 1;
        Some(removed)
    }

    /// The IDs of entries added, removed or replaced (by another
    /// allocation) since `older`: only buckets that the two do not share
    /// are visited.
    pub fn changed_since(&self, older: &Entries) -> Vec<Arc<str>> {
        let mut changed = Vec::new();
        for i in 0..BUCKETS {
            let (new, old) = (self.buckets.get(i), older.buckets.get(i));
            if let (Some(new), Some(old)) = (new, old)
                && Arc::ptr_eq(new, old)
            {
                continue;
            }
            let mut new = new.map_or(&[][..], |b| &b[..]).iter().peekable();
            let mut old = old.map_or(&[][..], |b| &b[..]).iter().peekable();
            loop {
                match (new.peek(), old.peek()) {
                    (None, None) => break,
                    (Some(n), Some(o)) if n.id == o.id => {
                        if !Arc::ptr_eq(n, o) {
                            changed.push(Arc::clone(&n.id));
                        }
                        new.next();
                        old.next();
                    }
                    (Some(n), Some(o)) if n.id < o.id => {
                        changed.push(Arc::clone(&n.id));
                        new.next();
                    }
                    (Some(n), None) => {
                        changed.push(Arc::clone(&n.id));
                        new.next();
                    }
                    (_, Some(o)) => {
                        changed.push(Arc::clone(&o.id));
                        old.next();
                    }
                }
            }
        }
        changed
    }

    /// `self` holding `older`'s bucket wherever the two have the very same
    /// entries, so that what did not change stays shared.
    pub fn sharing(mut self, older: &Entries) -> Self {
        for (new, old) in self.buckets.iter_mut().zip(&older.buckets) {
            if new.len() == old.len() && new.iter().zip(old.iter()).all(|(a, b)| Arc::ptr_eq(a, b))
            {
                *new = Arc::clone(old);
            }
        }
        self
    }
}

impl FromIterator<Arc<EntryInfo>> for Entries {
    /// The entries of `iter`; of two with one ID, the last.
    fn from_iter<I: IntoIterator<Item = Arc<EntryInfo>>>(iter: I) -> Self {
        let mut buckets: Vec<Bucket> = vec![Vec::new(); BUCKETS];
        for entry in iter {
            buckets[bucket_of(&entry.id)].push(entry);
        }
        let mut len = 0;
        for bucket in &mut buckets {
            // Stable: of equal IDs the last comes last, and is kept.
            bucket.sort_by(|a, b| a.id.cmp(&b.id));
            bucket.reverse();
            bucket.dedup_by(|a, b| a.id == b.id);
            bucket.reverse();
            len += bucket.len();
        }
        if len == 0 {
            return Self::default();
        }
        Self {
            buckets: buckets.into_iter().map(Arc::new).collect(),
            len,
        }
    }
}

impl PartialEq for Entries {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl Eq for Entries {}

impl fmt::Debug for Entries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn entry(id: &str, hint: &str) -> Arc<EntryInfo> {
        Arc::new(EntryInfo {
            id: id.into(),
            spiffe_id: format!("spiffe://td.org/{id}").parse().unwrap(),
            selectors: vec!["unix:uid:1".parse().unwrap()].into(),
            ttl_secs: 0,
            dns_names: vec![],
            hint: hint.into(),
            revision: 1,
            created_at: 0,
        })
    }

    fn sorted(mut ids: Vec<Arc<str>>) -> Vec<String> {
        ids.sort();
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn inserts_replaces_removes_and_finds() {
        let mut entries: Entries = (0..500).map(|i| entry(&format!("e{i}"), "")).collect();
        assert_eq!(entries.len(), 500);
        assert_eq!(entries.get("e7").unwrap().id.as_ref(), "e7");
        assert!(entries.get("nope").is_none());
        let old = entries.insert(entry("e7", "changed")).unwrap();
        assert_eq!(old.hint, "");
        assert_eq!(entries.get("e7").unwrap().hint, "changed");
        assert_eq!(entries.len(), 500);
        assert!(entries.insert(entry("new", "")).is_none());
        assert_eq!(entries.len(), 501);
        assert!(entries.remove("e3").is_some());
        assert!(entries.remove("e3").is_none(), "gone already");
        assert_eq!(entries.len(), 500);
        assert_eq!(entries.iter().count(), 500);
        assert!(Entries::default().remove("x").is_none());
        // Of two with one ID, the last counts.
        let twice: Entries = [entry("a", "first"), entry("a", "second")]
            .into_iter()
            .collect();
        assert_eq!(twice.len(), 1);
        assert_eq!(twice.get("a").unwrap().hint, "second");
    }

    #[test]
    fn changes_are_found_without_visiting_shared_buckets() {
        let before: Entries = (0..500).map(|i| entry(&format!("e{i}"), "")).collect();
        let mut after = before.clone();
        assert!(after.changed_since(&before).is_empty());
        after.insert(entry("e1", "changed"));
        after.insert(entry("added", ""));
        after.remove("e2");
        assert_eq!(sorted(after.changed_since(&before)), ["added", "e1", "e2"]);
        assert_eq!(sorted(before.changed_since(&after)), ["added", "e1", "e2"]);
        let shared = shared_buckets(&before, &after);
        assert!(shared >= BUCKETS - 3, "{shared} buckets shared");
        // From nothing, everything is new.
        assert_eq!(after.changed_since(&Entries::default()).len(), 500);
        assert_eq!(Entries::default().changed_since(&after).len(), 500);
    }

    /// How many buckets `a` and `b` share (the same allocation).
    fn shared_buckets(a: &Entries, b: &Entries) -> usize {
        a.buckets
            .iter()
            .zip(&b.buckets)
            .filter(|(x, y)| Arc::ptr_eq(x, y))
            .count()
    }

    #[test]
    fn a_rebuilt_state_shares_the_buckets_it_did_not_change() {
        let before: Entries = (0..500).map(|i| entry(&format!("e{i}"), "")).collect();
        let mut same: Vec<Arc<EntryInfo>> = before.iter().cloned().collect();
        same.push(entry("added", ""));
        let after = same.into_iter().collect::<Entries>().sharing(&before);
        assert_eq!(sorted(after.changed_since(&before)), ["added"]);
        assert_eq!(shared_buckets(&before, &after), BUCKETS - 1);
        assert_eq!(after, after.clone());
        assert_ne!(after, before);
    }
}
