//! Two stores on one database, as two servers share it: a join token is
//! still single use, and CRL numbers never repeat.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::Barrier;

use lanyard_store::{Datastore, JoinTokenRecord, StoreError};
use lanyard_store_postgres::{PostgresConfig, PostgresStore};

fn two_stores() -> [PostgresStore; 2] {
    let url = lanyard_test_postgres::shared().create_database();
    let open = || PostgresStore::open(&PostgresConfig::new(url.clone())).unwrap();
    [open(), open()]
}

#[test]
fn fifty_consumers_of_one_token_over_two_stores_give_one_winner() {
    const CALLERS: usize = 50;
    for round in 0..5 {
        let stores = two_stores();
        let token = JoinTokenRecord {
            token_id: format!("token-{round}"),
            expires_at: i64::MAX,
            created_at: 0,
            spiffe_id: None,
        };
        stores[0].create_join_token(&token).unwrap();
        let barrier = Barrier::new(CALLERS);
        let results: Vec<Result<JoinTokenRecord, StoreError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..CALLERS)
                .map(|i| {
                    let (store, barrier, id) = (&stores[i % 2], &barrier, &token.token_id);
                    scope.spawn(move || {
                        barrier.wait();
                        store.consume_join_token(id, 1)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let winners = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(winners, 1, "round {round}: {winners} consumers won");
        assert!(
            results
                .iter()
                .all(|r| r.is_ok() || matches!(r, Err(StoreError::TokenUsed))),
            "round {round}: {results:?}"
        );
    }
}

#[test]
fn crl_numbers_from_two_stores_never_repeat() {
    let stores = two_stores();
    let numbers: Vec<u64> = std::thread::scope(|scope| {
        let handles: Vec<_> = stores
            .iter()
            .flat_map(|store| (0..2).map(move |_| store))
            .map(|store| {
                scope.spawn(move || {
                    (0..25)
                        .map(|_| store.next_crl_number().unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let distinct: BTreeSet<u64> = numbers.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        numbers.len(),
        "a CRL number was handed out twice"
    );
    assert_eq!(distinct.last(), Some(&100));
}
