//! The recent entry changes, by snapshot generation, that let a Sync stream
//! send an agent only what changed under its parents since its previous
//! message, instead of every entry it is authorized for.
//!
//! The log is bounded: a stream whose previous message is older than the
//! oldest change it holds gets a full message instead. A stream may skip
//! snapshots (the watch channel keeps only the latest), so it always asks
//! for every change since the generation it last sent.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
};

use lanyard_identity::{EntryId, SpiffeId};
use lanyard_proto::node::v1::Entry as NodeEntry;

use super::group::WireEntry;

/// Snapshots with entry changes that the log remembers.
const MAX_BATCHES: usize = 64;
/// Entry changes the log remembers in all (a bigger delta is no cheaper
/// than a full message).
const MAX_CHANGES: usize = 20_000;

/// An entry as a change left it: its parent and wire form.
pub(super) type Placed = (SpiffeId, Arc<WireEntry>);

/// One entry's change, as agents see it.
#[derive(Debug)]
pub(super) struct Change {
    /// The entry.
    pub id: EntryId,
    /// Its parent before the change; `None` when it is new.
    pub before: Option<SpiffeId>,
    /// Its parent and wire form after the change; `None` when deleted.
    pub after: Option<Placed>,
}

/// What changed for one agent since its previous message: the entries to
/// send again, in message order, and the IDs it no longer receives.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Delta {
    /// Entries added or changed.
    pub entries: Vec<NodeEntry>,
    /// Entries removed (deleted, moved away, or expired when they changed).
    pub removed: Vec<String>,
}

impl Delta {
    /// Whether nothing changed for this agent.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.removed.is_empty()
    }
}

/// The changes of the last published generations (shared by snapshots).
#[derive(Clone, Debug, Default)]
pub(super) struct ChangeLog {
    /// Every change published in a generation at or after `base` is here:
    /// a stream that last sent generation `base` or later can be told
    /// exactly what changed since.
    base: u64,
    batches: VecDeque<(u64, Arc<[Change]>)>,
    changes: usize,
}

impl ChangeLog {
    /// An empty log that covers streams from `generation` on (nothing
    /// older: what they were sent is unknown to it).
    pub fn starting_at(generation: u64) -> Self {
        Self {
            base: generation,
            ..Self::default()
        }
    }

    /// Records the changes published at `generation` (after every
    /// generation already recorded), forgetting the oldest beyond the
    /// bounds.
    pub fn push(&mut self, generation: u64, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        self.changes += changes.len();
        self.batches.push_back((generation, changes.into()));
        while self.batches.len() > MAX_BATCHES || self.changes > MAX_CHANGES {
            let Some((oldest, changes)) = self.batches.pop_front() else {
                break;
            };
            self.changes -= changes.len();
            // A stream that sent `oldest` already has its changes.
            self.base = oldest;
        }
    }

    /// What changed under `parents` after generation `since`, as seen at
    /// `now` (an entry changed into one already expired is removed), or
    /// `None` when the log no longer holds every change since then.
    ///
    /// An entry counts when any of its changes since then was under one of
    /// `parents`, before or after: it moved away, came in, or changed. Its
    /// last change says what it is now.
    pub fn since(&self, since: u64, parents: &[&SpiffeId], now: i64) -> Option<Delta> {
        if since < self.base {
            return None;
        }
        let mine = |p: &SpiffeId| parents.contains(&p);
        // Per entry: whether it concerns this agent, and its last state.
        let mut net: HashMap<EntryId, (bool, Option<&Placed>)> = HashMap::new();
        let newer = self.batches.iter().filter(|(g, _)| *g > since);
        for change in newer.flat_map(|(_, changes)| changes.iter()) {
            let concerns = change.before.as_ref().is_some_and(mine)
                || change.after.as_ref().is_some_and(|(p, _)| mine(p));
            let slot = net.entry(change.id).or_insert((false, None));
            slot.0 |= concerns;
            slot.1 = change.after.as_ref();
        }
        let mut upserts: Vec<&WireEntry> = Vec::new();
        let mut removed: Vec<EntryId> = Vec::new();
        for (id, (concerns, after)) in net {
            if !concerns {
                continue;
            }
            match after {
                Some((parent, entry)) if mine(parent) && entry.live_at(now) => upserts.push(entry),
                _ => removed.push(id),
            }
        }
        upserts.sort_by_key(|e| e.order);
        removed.sort_unstable();
        Some(Delta {
            entries: upserts.into_iter().map(|e| e.proto.clone()).collect(),
            removed: removed.iter().map(ToString::to_string).collect(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    use crate::node::authz::tests::{AGENT, entry};

    const OTHER: &str = "spiffe://td.org/lanyard/agent/join_token/zzz";

    fn parent(id: &str) -> SpiffeId {
        id.parse().unwrap()
    }

    /// A change of `e` from parent `before` to its own parent (or deleted).
    fn change(e: &lanyard_identity::Entry, before: Option<&str>, deleted: bool) -> Change {
        Change {
            id: e.id,
            before: before.map(parent),
            after: (!deleted).then(|| (e.parent_id.clone(), Arc::new(WireEntry::of(e)))),
        }
    }

    fn ids(delta: &Delta) -> Vec<&str> {
        let mut ids: Vec<&str> = delta.entries.iter().map(|e| e.spiffe_id.as_str()).collect();
        ids.sort_unstable();
        ids
    }

    #[test]
    fn a_stream_that_skipped_snapshots_gets_every_change_since_it_last_sent() {
        let me = parent(AGENT);
        let a = entry("spiffe://td.org/a", AGENT, &["unix:uid:1"], None);
        let b = entry("spiffe://td.org/b", AGENT, &["unix:uid:1"], None);
        let theirs = entry("spiffe://td.org/theirs", OTHER, &["unix:uid:1"], None);
        let mut log = ChangeLog::starting_at(1);
        log.push(2, vec![change(&a, None, false)]);
        log.push(3, vec![change(&theirs, None, false)]);
        log.push(4, vec![change(&b, None, false)]);
        // Sent 1, skipped 2 and 3: both of its entries.
        let delta = log.since(1, &[&me], 100).unwrap();
        assert_eq!(ids(&delta), ["spiffe://td.org/a", "spiffe://td.org/b"]);
        assert!(delta.removed.is_empty());
        // Sent 3: only b. Sent 4: nothing.
        assert_eq!(
            ids(&log.since(3, &[&me], 100).unwrap()),
            ["spiffe://td.org/b"]
        );
        assert!(log.since(4, &[&me], 100).unwrap().is_empty());
        // Another agent's entry alone changes nothing for this one.
        let mut log = ChangeLog::starting_at(1);
        log.push(2, vec![change(&theirs, None, false)]);
        assert!(log.since(1, &[&me], 100).unwrap().is_empty());
    }

    #[test]
    fn removals_are_never_lost() {
        let me = parent(AGENT);
        let a = entry("spiffe://td.org/a", AGENT, &["unix:uid:1"], None);
        let mut moved = a.clone();
        moved.parent_id = parent(OTHER);
        let mut log = ChangeLog::starting_at(1);
        log.push(2, vec![change(&a, Some(AGENT), true)]);
        let delta = log.since(1, &[&me], 100).unwrap();
        assert_eq!(delta.removed, [a.id.to_string()], "deleted");
        assert!(delta.entries.is_empty());

        // Moved away, then changed again under its new parent: the last
        // change alone is not this agent's, the first one was.
        let mut log = ChangeLog::starting_at(1);
        log.push(2, vec![change(&moved, Some(AGENT), false)]);
        let mut again = moved.clone();
        again.hint = "again".into();
        log.push(3, vec![change(&again, Some(OTHER), false)]);
        let delta = log.since(1, &[&me], 100).unwrap();
        assert_eq!(delta.removed, [a.id.to_string()], "moved away");
        assert!(log.since(2, &[&me], 100).unwrap().is_empty());

        // Created and deleted between two messages: a removal of an entry
        // the agent never had (it ignores it), never an upsert.
        let mut log = ChangeLog::starting_at(1);
        log.push(2, vec![change(&a, None, false)]);
        log.push(3, vec![change(&a, Some(AGENT), true)]);
        let delta = log.since(1, &[&me], 100).unwrap();
        assert!(delta.entries.is_empty());
        assert_eq!(delta.removed, [a.id.to_string()]);

        // Changed into an expired entry: removed.
        let mut expired = a.clone();
        expired.expires_at = Some(50);
        let mut log = ChangeLog::starting_at(1);
        log.push(2, vec![change(&expired, Some(AGENT), false)]);
        assert_eq!(
            log.since(1, &[&me], 100).unwrap().removed,
            [a.id.to_string()]
        );
    }

    #[test]
    fn an_entry_moved_in_is_sent_and_the_last_change_wins() {
        let me = parent(AGENT);
        let a = entry("spiffe://td.org/a", OTHER, &["unix:uid:1"], None);
        let mut mine = a.clone();
        mine.parent_id = parent(AGENT);
        let mut changed = mine.clone();
        changed.hint = "changed".into();
        let mut log = ChangeLog::starting_at(1);
        log.push(2, vec![change(&a, None, false)]);
        log.push(3, vec![change(&mine, Some(OTHER), false)]);
        log.push(4, vec![change(&changed, Some(AGENT), false)]);
        let delta = log.since(1, &[&me], 100).unwrap();
        assert_eq!(delta.entries.len(), 1);
        assert_eq!(delta.entries[0].hint, "changed");
        assert!(delta.removed.is_empty());
    }

    #[test]
    fn an_overflowing_log_says_it_cannot_tell() {
        let me = parent(AGENT);
        let mut log = ChangeLog::starting_at(1);
        assert!(log.since(0, &[&me], 100).is_none(), "before the log began");
        for g in 2..(MAX_BATCHES as u64 + 3) {
            let e = entry(
                &format!("spiffe://td.org/e{g}"),
                AGENT,
                &["unix:uid:1"],
                None,
            );
            log.push(g, vec![change(&e, None, false)]);
        }
        assert!(
            log.since(1, &[&me], 100).is_none(),
            "its first change is gone"
        );
        assert!(
            log.since(2, &[&me], 100).is_some(),
            "it had generation 2's changes"
        );
        let latest = MAX_BATCHES as u64 + 2;
        assert_eq!(log.since(latest - 1, &[&me], 100).unwrap().entries.len(), 1);

        // One batch bigger than the bound is not kept at all.
        let mut log = ChangeLog::starting_at(1);
        let many = (0..=MAX_CHANGES)
            .map(|i| {
                let e = entry(
                    &format!("spiffe://td.org/m{i}"),
                    AGENT,
                    &["unix:uid:1"],
                    None,
                );
                change(&e, None, false)
            })
            .collect();
        log.push(2, many);
        assert!(log.since(1, &[&me], 100).is_none());
        assert!(log.since(2, &[&me], 100).unwrap().is_empty());
    }
}
