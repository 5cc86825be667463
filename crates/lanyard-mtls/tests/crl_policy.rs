//! The service author's CRL policy: what a handshake does before the first
//! CRL and once the CRL is past its nextUpdate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;

use lanyard_mtls::{Authorizer, CrlPolicy, TrustMaterial, client_config, server_config};
use support::{Ca, Svid, handshake};
use time::{Duration, OffsetDateTime};

const SERVER_ID: &str = "spiffe://example.org/echo/server";
const CLIENT_ID: &str = "spiffe://example.org/echo/client";

/// Both sides share `trust`.
async fn handshake_with(trust: &Arc<TrustMaterial>, server: &Svid, client: &Svid) -> bool {
    let exact = |id: &str| Authorizer::exact([id.parse().unwrap()]);
    let s = server_config(trust.clone(), exact(CLIENT_ID), server.resolver()).unwrap();
    let c = client_config(trust.clone(), exact(SERVER_ID), client.resolver()).unwrap();
    handshake(Arc::new(s), Arc::new(c)).await.ok()
}

fn stale_crl(ca: &Ca, hours_past_next_update: i64) -> Vec<u8> {
    let now = OffsetDateTime::now_utc();
    ca.crl_at(
        1,
        &[],
        now - Duration::hours(hours_past_next_update + 1),
        now - Duration::hours(hours_past_next_update),
    )
}

#[tokio::test]
async fn soft_accepts_without_fresh_data_and_counts_it() {
    let ca = Ca::new();
    let (server, client) = (ca.svid(SERVER_ID), ca.svid(CLIENT_ID));
    let trust = Arc::new(TrustMaterial::new(vec![ca.cert.clone()]));
    assert_eq!(trust.crl_policy(), CrlPolicy::Soft, "the default");
    assert!(handshake_with(&trust, &server, &client).await, "no CRL yet");
    let counted = trust.unchecked_accepts();
    assert!(
        counted >= 2,
        "both sides checked a peer without a CRL: {counted}"
    );
    trust.set_crl(Some(stale_crl(&ca, 5))).unwrap();
    assert!(handshake_with(&trust, &server, &client).await, "stale CRL");
    assert!(trust.unchecked_accepts() > counted);
    trust.set_crl(Some(ca.crl(2, &[]))).unwrap();
    let before = trust.unchecked_accepts();
    assert!(handshake_with(&trust, &server, &client).await);
    assert_eq!(
        trust.unchecked_accepts(),
        before,
        "a fresh CRL is checked, not counted"
    );
}

#[tokio::test]
async fn strict_refuses_without_a_crl_and_past_the_grace() {
    let ca = Ca::new();
    let (server, client) = (ca.svid(SERVER_ID), ca.svid(CLIENT_ID));
    let strict = CrlPolicy::Strict {
        grace: std::time::Duration::from_secs(2 * 3600),
    };
    let trust = Arc::new(TrustMaterial::new(vec![ca.cert.clone()]).with_crl_policy(strict));
    assert!(
        !handshake_with(&trust, &server, &client).await,
        "no CRL yet: refused"
    );
    trust.set_crl(Some(stale_crl(&ca, 1))).unwrap();
    assert!(
        handshake_with(&trust, &server, &client).await,
        "1 h past nextUpdate, within the 2 h grace"
    );
    // A newer CRL whose nextUpdate is 3 h past.
    let now = OffsetDateTime::now_utc();
    let newer_stale = ca.crl_at(5, &[], now - Duration::hours(4), now - Duration::hours(3));
    trust.set_crl(Some(newer_stale)).unwrap();
    assert!(
        !handshake_with(&trust, &server, &client).await,
        "3 h past nextUpdate: refused"
    );
    trust.set_crl(Some(ca.crl(6, &[]))).unwrap();
    assert!(
        handshake_with(&trust, &server, &client).await,
        "a fresh CRL lets peers in again"
    );
    assert_eq!(
        trust.unchecked_accepts(),
        0,
        "strict never accepts unchecked"
    );
}
