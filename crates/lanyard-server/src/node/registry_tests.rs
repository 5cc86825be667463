//! The registry's snapshots and what a Sync stream sends from them: full
//! views that agree with [`authorized_entries`](super::authorized_entries),
//! and deltas that, applied in turn, always give the full view.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use crate::test_support::agent_record as agent;
use lanyard_identity::{Entry, SpiffeId};
use lanyard_proto::node::v1::SyncResponse;
use lanyard_store::AgentRecord;

use super::{
    authz::tests::{AGENT, SERVER, entry, fixture},
    registry::{Builder, Next, Published, Registry, Sent},
};

const OTHER: &str = "spiffe://td.org/lanyard/agent/join_token/zzz";

fn server() -> SpiffeId {
    SERVER.parse().unwrap()
}

/// A node alias the test agent matches (`spiffe://td.org/node/web`), and
/// an entry under it.
fn alias_and_entry() -> (Entry, Entry) {
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
    (alias, via)
}

fn ids(resp: &SyncResponse) -> Vec<String> {
    let mut ids: Vec<String> = resp.entries.iter().map(|e| e.spiffe_id.clone()).collect();
    ids.sort();
    ids
}

/// An agent's side of a stream: the entries it holds, by entry ID.
#[derive(Default)]
struct Holder {
    entries: BTreeMap<String, lanyard_proto::types::v1::Entry>,
    sent: Option<Sent>,
    fulls: usize,
    deltas: usize,
}

impl Holder {
    /// Lets the stream send what it would from `registry` at `now`.
    fn sync(&mut self, registry: &Registry, me: &AgentRecord, now: i64) {
        let (next, sent) = registry.next(me, now, self.sent.as_ref(), true);
        self.sent = Some(sent);
        match next {
            Next::Nothing => {}
            Next::Full(resp) => {
                assert!(!resp.delta && resp.removed_entry_ids.is_empty());
                self.fulls += 1;
                self.entries = resp
                    .entries
                    .into_iter()
                    .map(|e| (e.id.clone(), e))
                    .collect();
            }
            Next::Delta(resp) => {
                assert!(resp.delta);
                self.deltas += 1;
                for id in &resp.removed_entry_ids {
                    self.entries.remove(id);
                }
                for e in resp.entries {
                    assert!(!resp.removed_entry_ids.contains(&e.id));
                    self.entries.insert(e.id.clone(), e);
                }
            }
        }
    }

    /// Whether it holds exactly the registry's full view.
    fn agrees_with(&self, registry: &Registry, me: &AgentRecord, now: i64) {
        let view = registry.view(me, now);
        let want: BTreeMap<String, _> = view
            .entries
            .into_iter()
            .map(|e| (e.id.clone(), e))
            .collect();
        let name = |e: Option<&lanyard_proto::types::v1::Entry>| e.map(|e| e.spiffe_id.clone());
        let wrong: Vec<_> = self
            .entries
            .keys()
            .chain(want.keys())
            .filter(|id| self.entries.get(*id) != want.get(*id))
            .map(|id| (id, name(self.entries.get(id)), name(want.get(id))))
            .collect();
        assert!(
            wrong.is_empty(),
            "(entry, held, wanted) at {now}: {wrong:?}"
        );
    }
}

#[test]
fn view_agrees_with_authorized_entries() {
    let entries = fixture();
    let agent = agent(AGENT);
    let server = server();
    let registry = Registry::build(&entries, &server, Published::default(), 7);
    let view = registry.view(&agent, 100);
    let mut want: Vec<String> =
        super::authorized_entries(&entries, &agent.spiffe_id, &agent.selectors, &server, 100)
            .iter()
            .map(|e| e.spiffe_id.to_string())
            .collect();
    want.sort();
    assert_eq!(ids(&view), want);
    assert_eq!(
        ids(&view),
        [
            "spiffe://td.org/direct",
            "spiffe://td.org/later",
            "spiffe://td.org/via-alias"
        ]
    );
    let (_, sent) = registry.next(&agent, 100, None, true);
    assert_eq!(
        registry.next_expiry(&sent, 100),
        Some(500),
        "the next expiry after now"
    );
    assert_eq!(view.revision, 7);
}

#[test]
fn incremental_changes_give_the_views_of_a_full_rebuild() {
    let server = server();
    let a = entry("spiffe://td.org/a", AGENT, &["unix:uid:1"], None);
    let b = entry("spiffe://td.org/b", AGENT, &["unix:uid:2"], Some(500));
    let (alias, via) = alias_and_entry();
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
    assert_eq!(incremental.view(&me, 100).entries.len(), 2);
    let (_, sent) = incremental.next(&me, 100, None, true);
    assert_eq!(
        incremental.next_expiry(&sent, 100),
        None,
        "b's expiry went with it"
    );
    // Deleting the last entry of a parent drops its group.
    let mut builder = Builder::new(server.clone(), vec![a.clone()]);
    builder.apply(vec![(a.id, None)]);
    let empty = builder.registry(Published::default(), 4);
    assert!(empty.view(&me, 100).entries.is_empty());
}

#[test]
fn a_stream_sends_full_first_then_only_what_changed_for_its_agent() {
    let me = agent(AGENT);
    let mine = entry("spiffe://td.org/mine", AGENT, &["unix:uid:1"], None);
    let theirs = entry("spiffe://td.org/theirs", OTHER, &["unix:uid:1"], None);
    let mut builder = Builder::new(server(), vec![mine.clone(), theirs.clone()]);
    let first = builder.registry(Published::default(), 1);
    let (next, sent) = first.next(&me, 100, None, true);
    let Next::Full(resp) = next else {
        panic!("the first message is full: {next:?}")
    };
    assert_eq!(ids(&resp), ["spiffe://td.org/mine"]);
    assert_eq!(first.next(&me, 100, Some(&sent), true).0, Next::Nothing);

    // Another agent's entry: nothing to send.
    let more = entry("spiffe://td.org/theirs2", OTHER, &["unix:uid:2"], None);
    builder.apply(vec![(more.id, Some(more))]);
    let unrelated = builder.registry(Published::default(), 2);
    let (next, sent) = unrelated.next(&me, 100, Some(&sent), true);
    assert_eq!(next, Next::Nothing);

    // Its own entry changed: a delta of that entry alone; a stream that
    // does not accept deltas gets everything again.
    let mut renamed = mine.clone();
    renamed.hint = "changed".into();
    builder.apply(vec![(mine.id, Some(renamed))]);
    let changed = builder.registry(Published::default(), 3);
    let Next::Delta(delta) = changed.next(&me, 100, Some(&sent), true).0 else {
        panic!("a delta")
    };
    assert_eq!(delta.entries.len(), 1);
    assert_eq!(delta.entries[0].hint, "changed");
    assert_eq!(delta.revision, 3);
    let Next::Full(full) = changed.next(&me, 100, Some(&sent), false).0 else {
        panic!("full for an agent without deltas")
    };
    assert!(!full.delta);
    assert_eq!(ids(&full), ["spiffe://td.org/mine"]);

    // A new CRL alone: a delta without entries, carrying it.
    let (_, sent) = changed.next(&me, 100, Some(&sent), true);
    let crl = Published {
        crl: vec![1],
        ..Published::default()
    };
    let news = builder.registry(crl, 4);
    let Next::Delta(delta) = news.next(&me, 100, Some(&sent), true).0 else {
        panic!("a delta")
    };
    assert!(delta.entries.is_empty() && delta.removed_entry_ids.is_empty());
    assert_eq!(delta.crl, [1]);
}

#[test]
fn skipped_snapshots_and_removals_reach_the_agent() {
    let me = agent(AGENT);
    let a = entry("spiffe://td.org/a", AGENT, &["unix:uid:1"], None);
    let b = entry("spiffe://td.org/b", AGENT, &["unix:uid:1"], None);
    let mut builder = Builder::new(server(), vec![a.clone(), b.clone()]);
    let mut holder = Holder::default();
    holder.sync(&builder.registry(Published::default(), 1), &me, 100);
    // Three snapshots, of which the stream sees only the last.
    let c = entry("spiffe://td.org/c", AGENT, &["unix:uid:1"], None);
    builder.apply(vec![(a.id, None)]);
    builder.registry(Published::default(), 2);
    builder.apply(vec![(c.id, Some(c.clone()))]);
    builder.registry(Published::default(), 3);
    let mut moved = b.clone();
    moved.parent_id = OTHER.parse().unwrap();
    builder.apply(vec![(b.id, Some(moved))]);
    let last = builder.registry(Published::default(), 4);
    holder.sync(&last, &me, 100);
    assert_eq!((holder.fulls, holder.deltas), (1, 1));
    holder.agrees_with(&last, &me, 100);
    assert_eq!(
        holder
            .entries
            .values()
            .map(|e| &e.spiffe_id)
            .collect::<Vec<_>>(),
        ["spiffe://td.org/c"]
    );
}

#[test]
fn an_expiry_is_a_delta_for_its_agent_and_nothing_for_others() {
    let me = agent(AGENT);
    let a = entry("spiffe://td.org/a", AGENT, &["unix:uid:1"], None);
    let soon = entry("spiffe://td.org/soon", AGENT, &["unix:uid:1"], Some(150));
    let later = entry("spiffe://td.org/later", AGENT, &["unix:uid:1"], Some(200));
    let theirs = entry("spiffe://td.org/theirs", OTHER, &["unix:uid:1"], Some(120));
    let mut builder = Builder::new(server(), vec![a, soon.clone(), later.clone(), theirs]);
    let mut holder = Holder::default();
    let registry = builder.registry(Published::default(), 1);
    holder.sync(&registry, &me, 100);
    assert_eq!(holder.entries.len(), 3);
    let sent = holder.sent.clone().unwrap();
    assert_eq!(
        registry.next_expiry(&sent, 100),
        Some(150),
        "its own next expiry; another agent's is not its concern"
    );

    // Another agent's entry expires: nothing for this one.
    holder.sync(&registry, &me, 130);
    assert_eq!((holder.fulls, holder.deltas), (1, 0));

    // Its own: the same snapshot, later, removes that entry alone.
    let (next, _) = registry.next(&me, 150, holder.sent.as_ref(), true);
    let Next::Delta(delta) = &next else {
        panic!("a delta: {next:?}")
    };
    assert!(delta.entries.is_empty());
    assert_eq!(delta.removed_entry_ids, [soon.id.to_string()]);
    let (full, _) = registry.next(&me, 150, holder.sent.as_ref(), false);
    assert!(
        matches!(full, Next::Full(_)),
        "an agent without deltas gets everything"
    );
    holder.sync(&registry, &me, 150);
    holder.agrees_with(&registry, &me, 150);
    assert_eq!(
        (holder.fulls, holder.deltas, holder.entries.len()),
        (1, 1, 2)
    );

    // An entry that expired and was deleted since: removed once.
    builder.apply(vec![(later.id, None)]);
    let deleted = builder.registry(Published::default(), 2);
    let (next, _) = deleted.next(&me, 250, holder.sent.as_ref(), true);
    let Next::Delta(delta) = &next else {
        panic!("a delta: {next:?}")
    };
    assert_eq!(delta.removed_entry_ids, [later.id.to_string()]);
    holder.sync(&deleted, &me, 250);
    holder.agrees_with(&deleted, &me, 250);
    assert_eq!(
        deleted.next_expiry(holder.sent.as_ref().unwrap(), 250),
        None
    );

    // The clock goes back: everything again.
    holder.sync(&deleted, &me, 240);
    assert_eq!((holder.fulls, holder.deltas), (2, 2));
    holder.agrees_with(&deleted, &me, 240);
}

#[test]
fn new_parents_a_reload_or_an_outrun_log_send_everything() {
    let me = agent(AGENT);
    let a = entry("spiffe://td.org/a", AGENT, &["unix:uid:1"], None);
    let mut builder = Builder::new(server(), vec![a.clone()]);
    let mut holder = Holder::default();
    let registry = builder.registry(Published::default(), 1);
    holder.sync(&registry, &me, 100);
    assert_eq!(holder.entries.len(), 1);

    // A node alias the agent matches, with an entry under it.
    let (alias, via) = alias_and_entry();
    builder.apply(vec![(via.id, Some(via))]);
    holder.sync(&builder.registry(Published::default(), 2), &me, 160);
    assert_eq!(holder.fulls, 1, "not its parent yet");
    builder.apply(vec![(alias.id, Some(alias.clone()))]);
    let aliased = builder.registry(Published::default(), 3);
    holder.sync(&aliased, &me, 160);
    assert_eq!(holder.fulls, 2, "a new parent");
    holder.agrees_with(&aliased, &me, 160);
    assert_eq!(holder.entries.len(), 2);
    // The alias goes: so do its entries.
    builder.apply(vec![(alias.id, None)]);
    let gone = builder.registry(Published::default(), 4);
    holder.sync(&gone, &me, 160);
    assert_eq!(holder.fulls, 3);
    holder.agrees_with(&gone, &me, 160);

    // A reload (changes of other servers may have been missed).
    builder.reload(vec![a.clone()]);
    let reloaded = builder.registry(Published::default(), 5);
    holder.sync(&reloaded, &me, 160);
    assert_eq!(holder.fulls, 4);
    holder.agrees_with(&reloaded, &me, 160);

    // More changes than the log holds since the stream's last message.
    let deltas = holder.deltas;
    let mut last = reloaded;
    for i in 0..100 {
        let e = entry(
            &format!("spiffe://td.org/n{i}"),
            AGENT,
            &["unix:uid:1"],
            None,
        );
        builder.apply(vec![(e.id, Some(e))]);
        last = builder.registry(Published::default(), 6 + i);
    }
    holder.sync(&last, &me, 160);
    assert_eq!((holder.fulls, holder.deltas), (5, deltas));
    holder.agrees_with(&last, &me, 160);
}

#[test]
fn deltas_applied_in_turn_always_give_the_full_view() {
    let me = agent(AGENT);
    let parents = [AGENT, OTHER, "spiffe://td.org/node/web"];
    let (alias, _) = alias_and_entry();
    let mut live: Vec<Entry> = Vec::new();
    let mut builder = Builder::new(server(), vec![alias]);
    let mut holder = Holder::default();
    // Seeded, so that a failure repeats.
    let mut rng = fastrand::Rng::with_seed(0x9e37_79b9_7f4a_7c15);
    for revision in 1..2000u64 {
        let mut changes = Vec::new();
        for _ in 0..=rng.usize(..3) {
            match rng.usize(..4) {
                0 | 1 => {
                    let parent = parents[rng.usize(..parents.len())];
                    let expires = (rng.usize(..40) == 0)
                        .then(|| 1_001 + revision as i64 + rng.usize(..50) as i64);
                    let e = entry(
                        &format!("spiffe://td.org/e{revision}"),
                        parent,
                        &["unix:uid:1"],
                        expires,
                    );
                    live.push(e.clone());
                    changes.push((e.id, Some(e)));
                }
                2 if !live.is_empty() => {
                    let i = rng.usize(..live.len());
                    let e = &mut live[i];
                    e.hint = format!("h{revision}");
                    e.parent_id = parents[rng.usize(..parents.len())].parse().unwrap();
                    changes.push((e.id, Some(e.clone())));
                }
                _ if !live.is_empty() => {
                    let e = live.swap_remove(rng.usize(..live.len()));
                    changes.push((e.id, None));
                }
                _ => {}
            }
        }
        builder.apply(changes);
        let registry = builder.registry(Published::default(), revision);
        // The stream sees some snapshots and skips others; time moves on.
        if rng.usize(..3) != 0 {
            let now = 1_000 + revision as i64;
            holder.sync(&registry, &me, now);
            holder.agrees_with(&registry, &me, now);
        }
    }
    assert!(
        holder.deltas > 5 * holder.fulls,
        "mostly deltas: {} full, {} deltas",
        holder.fulls,
        holder.deltas
    );
}
