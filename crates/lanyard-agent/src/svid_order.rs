//! The SVID manager's slots, kept in default serving order.
//!
//! Every snapshot lists its SVIDs oldest entry first (creation time, then
//! entry ID: [`sort_default_first`](crate::cache::sort_default_first)).
//! Collecting them from a hash map and sorting them at each publication
//! cost an agent with 100,000 entries most of its CPU time per entry
//! change. Here the slots live in that order, so a publication walks them
//! once; a lookup by entry ID (a change, an issued SVID) costs one hash
//! lookup more.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

/// Values by entry ID, iterated in default serving order.
#[derive(Debug)]
pub(crate) struct Ordered<T> {
    by_order: BTreeMap<(i64, Arc<str>), T>,
    /// Each ID's creation time: its key in `by_order`.
    created_at: HashMap<Arc<str>, i64>,
}

impl<T> Default for Ordered<T> {
    fn default() -> Self {
        Self {
            by_order: BTreeMap::new(),
            created_at: HashMap::new(),
        }
    }
}

impl<T> Ordered<T> {
    /// Puts `value` under the entry `id` created at `created_at` (unix
    /// seconds), replacing any value it had.
    pub(crate) fn insert(&mut self, created_at: i64, id: &Arc<str>, value: T) {
        self.remove(id);
        self.created_at.insert(Arc::clone(id), created_at);
        self.by_order.insert((created_at, Arc::clone(id)), value);
    }

    /// Takes the value of `id` out.
    pub(crate) fn remove(&mut self, id: &str) -> Option<T> {
        let key = self.key(id)?;
        self.created_at.remove(id);
        self.by_order.remove(&key)
    }

    pub(crate) fn get(&self, id: &str) -> Option<&T> {
        self.by_order.get(&self.key(id)?)
    }

    pub(crate) fn get_mut(&mut self, id: &str) -> Option<&mut T> {
        let key = self.key(id)?;
        self.by_order.get_mut(&key)
    }

    /// The key of `id` in `by_order` (its `Arc` shared, not copied).
    fn key(&self, id: &str) -> Option<(i64, Arc<str>)> {
        let (id, created_at) = self.created_at.get_key_value(id)?;
        Some((*created_at, Arc::clone(id)))
    }

    /// Moves `id` to the place of an entry created at `created_at`.
    pub(crate) fn set_created_at(&mut self, id: &str, created_at: i64) {
        let Some((_, key)) = self.key(id) else {
            return;
        };
        if let Some(value) = self.remove(id) {
            self.insert(created_at, &key, value);
        }
    }

    /// The entry IDs and values, oldest entry first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &T)> {
        self.by_order.iter().map(|((_, id), value)| (id, value))
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &T> {
        self.by_order.values()
    }

    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.by_order.values_mut()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_order.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Random inserts, moves and removals (repeats included) always leave
    /// exactly the entries present, found by ID, in (creation time, ID)
    /// order.
    #[test]
    fn stays_ordered_through_random_changes() {
        let mut rng = fastrand::Rng::with_seed(14);
        let mut ordered = Ordered::default();
        let mut reference: HashMap<String, (i64, u32)> = HashMap::new();
        for step in 0..5_000_u32 {
            // Few creation times, so that most ties fall to the ID.
            let created_at = rng.i64(0..4);
            let name = format!("entry-{:03}", rng.u32(0..300));
            let id: Arc<str> = Arc::from(name.as_str());
            match rng.u8(0..3) {
                0 => {
                    ordered.insert(created_at, &id, step);
                    reference.insert(name.clone(), (created_at, step));
                }
                1 => {
                    ordered.set_created_at(&id, created_at);
                    if let Some(entry) = reference.get_mut(&name) {
                        entry.0 = created_at;
                    }
                }
                _ => {
                    assert_eq!(ordered.remove(&id), reference.remove(&name).map(|e| e.1));
                }
            }
            assert_eq!(ordered.len(), reference.len());
            assert_eq!(ordered.get(&name), reference.get(&name).map(|e| &e.1));
        }
        let expected: BTreeSet<(i64, &str, u32)> = reference
            .iter()
            .map(|(id, (t, v))| (*t, id.as_str(), *v))
            .collect();
        let found: Vec<(i64, &str, u32)> = ordered
            .iter()
            .map(|(id, v)| (reference[&**id].0, &**id, *v))
            .collect();
        assert_eq!(found, expected.into_iter().collect::<Vec<_>>());
        let first = found.first().map(|f| f.1.to_owned()).expect("entries left");
        *ordered.get_mut(&first).unwrap() = 99_999;
        assert_eq!(ordered.get(&first), Some(&99_999));
        assert_eq!(ordered.values().count(), ordered.len());
        assert_eq!(ordered.values_mut().count(), ordered.len());
    }
}
