//! The SVID manager's entries in default serving order, kept sorted as
//! entries come and go.
//!
//! Every snapshot lists its SVIDs oldest entry first (creation time, then
//! entry ID: [`sort_default_first`](crate::cache::sort_default_first)).
//! Sorting all of them at each publication cost an agent with 100,000
//! entries about half its CPU time per entry change; keeping the order
//! costs a binary search and a shift of the index per entry added or
//! removed.

use std::sync::Arc;

/// Entry IDs in default serving order.
#[derive(Debug, Default)]
pub(crate) struct DefaultOrder {
    keys: Vec<(i64, Arc<str>)>,
}

impl DefaultOrder {
    /// Adds the entry `id` created at `created_at` (unix seconds), unless
    /// it is there already.
    pub(crate) fn insert(&mut self, created_at: i64, id: &Arc<str>) {
        if let Err(at) = self.position(created_at, id) {
            self.keys.insert(at, (created_at, Arc::clone(id)));
        }
    }

    /// Removes the entry `id` created at `created_at`, if it is there.
    pub(crate) fn remove(&mut self, created_at: i64, id: &str) {
        if let Ok(at) = self.position(created_at, id) {
            self.keys.remove(at);
        }
    }

    /// The entry IDs, oldest entry first.
    pub(crate) fn ids(&self) -> impl Iterator<Item = &Arc<str>> {
        self.keys.iter().map(|(_, id)| id)
    }

    /// How many entries it holds.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    fn position(&self, created_at: i64, id: &str) -> Result<usize, usize> {
        self.keys
            .binary_search_by(|(t, k)| (*t, &**k).cmp(&(created_at, id)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Random adds and removals (repeats included) always leave exactly
    /// the entries added and not removed, in (creation time, ID) order.
    #[test]
    fn stays_sorted_through_random_changes() {
        let mut rng = fastrand::Rng::with_seed(14);
        let mut order = DefaultOrder::default();
        let mut reference = BTreeSet::new();
        for _ in 0..5_000 {
            // Few creation times, so that most ties fall to the ID.
            let created_at = rng.i64(0..4);
            let id: Arc<str> = Arc::from(format!("entry-{:03}", rng.u32(0..300)));
            if rng.bool() {
                order.insert(created_at, &id);
                reference.insert((created_at, id));
            } else {
                order.remove(created_at, &id);
                reference.remove(&(created_at, id));
            }
            assert_eq!(order.len(), reference.len());
        }
        let ids: Vec<&str> = order.ids().map(|id| &**id).collect();
        let expected: Vec<&str> = reference.iter().map(|(_, id)| &**id).collect();
        assert_eq!(ids, expected);
    }
}
