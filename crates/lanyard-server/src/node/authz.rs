//! Which entries an agent is authorized for: a pure function of the entries,
//! the agent and the clock, so it can be tested without any I/O.

use lanyard_identity::{Entry, Selector, SpiffeId, matches_all};

/// The entries an agent may receive SVIDs for.
///
/// An agent is authorized for entries whose parent is its own ID, or the ID
/// of a node-alias entry (an entry parented to the server) whose selectors
/// the agent's attestation selectors match: SPIRE's node aliasing. Expired
/// entries and alias entries themselves are excluded.
pub fn authorized_entries(
    entries: &[Entry],
    agent_id: &SpiffeId,
    agent_selectors: &[Selector],
    server_id: &SpiffeId,
    now: i64,
) -> Vec<Entry> {
    let live = |e: &&Entry| e.expires_at.is_none_or(|t| t > now);
    let mut parents = vec![agent_id.clone()];
    parents.extend(
        entries
            .iter()
            .filter(live)
            .filter(|e| &e.parent_id == server_id && matches_all(&e.selectors, agent_selectors))
            .map(|e| e.spiffe_id.clone()),
    );
    entries
        .iter()
        .filter(live)
        .filter(|e| &e.parent_id != server_id && parents.contains(&e.parent_id))
        .cloned()
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests {
    use super::*;
    pub(crate) use crate::test_support::entry;

    pub(crate) const SERVER: &str = "spiffe://td.org/lanyard/server";
    pub(crate) const AGENT: &str = "spiffe://td.org/lanyard/agent/join_token/abc";

    /// Entries of every kind an agent (`AGENT`, selector
    /// `join_token:id:abc`) may or may not receive at time 100: direct, of
    /// another agent, node aliases it matches and does not, entries under
    /// each alias, expired, and expiring later.
    pub(crate) fn fixture() -> Vec<Entry> {
        let other = "spiffe://td.org/lanyard/agent/join_token/zzz";
        vec![
            entry("spiffe://td.org/direct", AGENT, &["unix:uid:1"], None),
            entry("spiffe://td.org/other", other, &["unix:uid:1"], None),
            entry(
                "spiffe://td.org/node/web",
                SERVER,
                &["join_token:id:abc"],
                None,
            ),
            entry(
                "spiffe://td.org/via-alias",
                "spiffe://td.org/node/web",
                &["unix:uid:2"],
                None,
            ),
            entry(
                "spiffe://td.org/node/db",
                SERVER,
                &["join_token:id:nope"],
                None,
            ),
            entry(
                "spiffe://td.org/via-db",
                "spiffe://td.org/node/db",
                &["unix:uid:3"],
                None,
            ),
            entry("spiffe://td.org/expired", AGENT, &["unix:uid:1"], Some(99)),
            entry("spiffe://td.org/later", AGENT, &["unix:uid:4"], Some(500)),
        ]
    }

    #[test]
    fn direct_alias_and_foreign_entries() {
        let entries = fixture();
        let got = authorized_entries(
            &entries,
            &AGENT.parse().unwrap(),
            &["join_token:id:abc".parse().unwrap()],
            &SERVER.parse().unwrap(),
            100,
        );
        let ids: Vec<String> = got.iter().map(|e| e.spiffe_id.to_string()).collect();
        assert_eq!(
            ids,
            [
                "spiffe://td.org/direct",
                "spiffe://td.org/via-alias",
                "spiffe://td.org/later"
            ]
        );
    }
}
