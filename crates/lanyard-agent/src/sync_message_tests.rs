//! Sync messages into states: full messages, deltas, and the deltas that
//! are refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn good() -> Entry {
    Entry {
        id: "e1".into(),
        spiffe_id: "spiffe://td.org/web".into(),
        parent_id: "spiffe://td.org/lanyard/agent/x".into(),
        selectors: vec!["unix:uid:1000".into()],
        x509_svid_ttl_seconds: 20,
        dns_names: vec!["web.local".into()],
        expires_at: 0,
        hint: "internal".into(),
        revision: 3,
        created_at: 1_700_000_000,
        jwt_svid_ttl_seconds: 0,
    }
}

fn with_id(id: &str, spiffe_id: &str) -> Entry {
    Entry {
        id: id.into(),
        spiffe_id: spiffe_id.into(),
        ..good()
    }
}

fn full(entries: Vec<Entry>, revision: u64) -> SyncResponse {
    SyncResponse {
        entries,
        revision,
        ..SyncResponse::default()
    }
}

fn delta(entries: Vec<Entry>, removed: &[&str], revision: u64) -> SyncResponse {
    SyncResponse {
        entries,
        removed_entry_ids: removed.iter().map(|s| s.to_string()).collect(),
        delta: true,
        revision,
        ..SyncResponse::default()
    }
}

fn ids(state: &SyncState) -> Vec<String> {
    let mut ids: Vec<String> = state
        .entries
        .iter()
        .map(|e| e.spiffe_id.to_string())
        .collect();
    ids.sort();
    ids
}

#[test]
fn parses_entries_and_skips_bad_ones() {
    let bad_id = with_id("e2", "http://nope");
    let bad_sel = Entry {
        id: "e3".into(),
        selectors: vec!["nocolon".into()],
        ..good()
    };
    let mut parser = MessageParser::default();
    let parsed = parser
        .parse(
            SyncResponse {
                entries: vec![good(), bad_id, bad_sel],
                bundle: vec![vec![1, 2, 3]],
                crl: vec![9],
                revision: 7,
                crl_issuers: vec![vec![4, 5]],
                jwt_bundle: br#"{"keys":[{"kty":"EC","kid":"k1"}]}"#.to_vec(),
                ..SyncResponse::default()
            },
            None,
        )
        .unwrap();
    let state = &parsed.state;
    assert!(!parsed.delta);
    assert_eq!(state.jwt_bundle.keys[0].kid.as_deref(), Some("k1"));
    assert_eq!(parsed.crl_issuers, [CertificateDer::from(vec![4u8, 5])]);
    assert_eq!(state.entries.len(), 1);
    let e = state.entries.get("e1").unwrap();
    assert_eq!(e.spiffe_id.to_string(), "spiffe://td.org/web");
    assert_eq!(e.hint, "internal");
    assert_eq!(e.ttl_secs, 20);
    assert_eq!(e.created_at, 1_700_000_000, "orders the default SVID");
    assert_eq!(state.bundle.len(), 1);
    assert_eq!(parsed.crl, vec![9]);
    assert!(state.crl.is_none(), "not verified yet");
    assert_eq!(state.revision, 7);
}

#[test]
fn a_full_message_shares_what_did_not_change() {
    let mut parser = MessageParser::default();
    let state = parser.parse(full(vec![good()], 7), None).unwrap().state;
    // The unchanged entry is the same allocation, a new one with the same
    // selectors shares their set.
    let other = with_id("e4", "spiffe://td.org/other");
    let again = parser
        .parse(full(vec![good(), other], 8), Some(&state))
        .unwrap()
        .state;
    let first = state.entries.get("e1").unwrap();
    assert!(Arc::ptr_eq(again.entries.get("e1").unwrap(), first));
    assert!(Arc::ptr_eq(
        &again.entries.get("e4").unwrap().selectors,
        &first.selectors
    ));
    // A changed one is parsed again.
    let changed = Entry {
        hint: "external".into(),
        revision: 4,
        ..good()
    };
    let after = parser
        .parse(full(vec![changed], 9), Some(&again))
        .unwrap()
        .state;
    assert!(!Arc::ptr_eq(after.entries.get("e1").unwrap(), first));
    assert_eq!(after.entries.get("e1").unwrap().hint, "external");
    assert_eq!(ids(&after), ["spiffe://td.org/web"], "e4 is gone");
    // Rewritten selectors are never taken for the old ones.
    let moved = Entry {
        selectors: vec!["unix:uid:1001".into()],
        ..good()
    };
    let moved = parser
        .parse(full(vec![moved], 10), Some(&again))
        .unwrap()
        .state;
    assert_eq!(moved.entries.get("e1").unwrap().selectors[0].value, "1001");
}

#[test]
fn a_delta_adds_changes_and_removes_and_keeps_the_rest() {
    let mut parser = MessageParser::default();
    let a = with_id("a", "spiffe://td.org/a");
    let b = with_id("b", "spiffe://td.org/b");
    let c = with_id("c", "spiffe://td.org/c");
    let state = parser
        .parse(full(vec![a.clone(), b.clone(), c], 1), None)
        .unwrap()
        .state;
    let changed_b = Entry {
        dns_names: vec!["b.local".into()],
        revision: 9,
        ..b
    };
    let d = with_id("d", "spiffe://td.org/d");
    let parsed = parser
        .parse(delta(vec![changed_b, d], &["c"], 2), Some(&state))
        .unwrap();
    assert!(parsed.delta);
    let next = parsed.state;
    assert_eq!(next.revision, 2);
    assert_eq!(
        ids(&next),
        [
            "spiffe://td.org/a",
            "spiffe://td.org/b",
            "spiffe://td.org/d"
        ]
    );
    assert!(Arc::ptr_eq(
        next.entries.get("a").unwrap(),
        state.entries.get("a").unwrap()
    ));
    assert_eq!(next.entries.get("b").unwrap().dns_names, ["b.local"]);
    let mut changed: Vec<String> = next
        .entries
        .changed_since(&state.entries)
        .iter()
        .map(|id| id.to_string())
        .collect();
    changed.sort();
    assert_eq!(changed, ["b", "c", "d"]);
    // The previous state is untouched.
    assert_eq!(state.entries.len(), 3);
    assert!(state.entries.get("c").is_some());

    // An entry sent again unchanged stays the same allocation; an unknown
    // removal is nothing to do.
    let same = parser
        .parse(delta(vec![a], &["never-had"], 3), Some(&next))
        .unwrap()
        .state;
    assert!(same.entries.changed_since(&next.entries).is_empty());

    // An entry that cannot be used any more loses its old form too.
    let broken = Entry {
        selectors: vec!["nocolon".into()],
        revision: 10,
        ..with_id("a", "spiffe://td.org/a")
    };
    let without = parser
        .parse(delta(vec![broken], &[], 4), Some(&same))
        .unwrap()
        .state;
    assert_eq!(ids(&without), ["spiffe://td.org/b", "spiffe://td.org/d"]);
}

#[test]
fn deltas_that_cannot_be_applied_are_refused() {
    let mut parser = MessageParser::default();
    let a = with_id("a", "spiffe://td.org/a");
    let refused = |r: Result<Parsed, AgentError>| match r {
        Err(AgentError::BadResponse {
            call: "Sync",
            problem,
        }) => problem,
        other => panic!("not refused: {other:?}"),
    };
    // Before any full message on the stream.
    let problem = refused(parser.parse(delta(vec![a.clone()], &[], 1), None));
    assert!(problem.contains("before any full message"), "{problem}");
    let state = parser.parse(full(vec![a.clone()], 1), None).unwrap().state;
    // Changed and removed at once; twice in one message.
    let problem = refused(parser.parse(delta(vec![a.clone()], &["a"], 2), Some(&state)));
    assert!(problem.contains("both changed and removed"), "{problem}");
    let problem = refused(parser.parse(delta(vec![a.clone(), a.clone()], &[], 2), Some(&state)));
    assert!(problem.contains("twice"), "{problem}");
    // A full message that removes.
    let mut odd = full(vec![a], 2);
    odd.removed_entry_ids = vec!["a".into()];
    refused(parser.parse(odd, Some(&state)));
}

#[test]
fn selector_sets_are_shared_across_deltas_and_forgotten_when_unused() {
    let mut parser = MessageParser::default();
    let state = parser
        .parse(full(vec![with_id("a", "spiffe://td.org/a")], 1), None)
        .unwrap()
        .state;
    let next = parser
        .parse(
            delta(vec![with_id("b", "spiffe://td.org/b")], &[], 2),
            Some(&state),
        )
        .unwrap()
        .state;
    assert!(Arc::ptr_eq(
        &next.entries.get("a").unwrap().selectors,
        &next.entries.get("b").unwrap().selectors
    ));
    // Many sets come and go: the parser keeps only those in use.
    let mut state = next;
    for i in 0..5000u32 {
        let e = Entry {
            selectors: vec![format!("unix:uid:{i}")],
            ..with_id(&format!("x{i}"), &format!("spiffe://td.org/x{i}"))
        };
        let removed = (i > 0).then(|| format!("x{}", i - 1));
        let removed: Vec<&str> = removed.iter().map(String::as_str).collect();
        state = parser
            .parse(delta(vec![e], &removed, 3 + u64::from(i)), Some(&state))
            .unwrap()
            .state;
    }
    assert_eq!(state.entries.len(), 3);
    assert!(parser.sets.len() <= 2 * MIN_PRUNE, "{}", parser.sets.len());
}
