//! End-to-end: a Sync stream lives only as long as the agent SVID it was
//! opened with is the agent's current, unrevoked one.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use lanyard_test_support as common;

use std::time::Duration;

use common::*;
use lanyard_ca::SvidKey;
use lanyard_proto::node::v1::{RenewAgentRequest, SyncRequest};

/// The next thing the stream says within 10 s: an error status, or `None`
/// if it only sent messages or ended cleanly.
async fn ends_with(
    stream: &mut tonic::Streaming<lanyard_proto::node::v1::SyncResponse>,
) -> tonic::Status {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, stream.message()).await {
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) => panic!("the stream ended without saying why"),
            Ok(Err(status)) => return status,
            Err(_) => panic!("the stream stayed open"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_superseded_or_revoked_agent_svid_loses_its_sync_stream() {
    let server = Server::start();
    let agent = attest(&server, &server.token()).await.unwrap();
    let mut client = node_channel(&server, Some(&agent)).await.unwrap();
    let mut old = client
        .sync(SyncRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(old.message().await.unwrap().is_some());

    // Renewal supersedes the SVID the first stream was opened with.
    let key = SvidKey::generate().unwrap();
    let renewed = client
        .renew_agent(RenewAgentRequest {
            csr: key.csr_der().unwrap(),
        })
        .await
        .unwrap()
        .into_inner()
        .svid
        .unwrap();
    let status = ends_with(&mut old).await;
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("superseded"), "{status:?}");

    // With the current SVID the stream opens; revoking that SVID ends it.
    let current = NodeIdentity {
        chain: chain_of(&renewed),
        key,
    };
    let mut client = node_channel(&server, Some(&current)).await.unwrap();
    let mut stream = client
        .sync(SyncRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(stream.message().await.unwrap().is_some());
    server.cli_ok(&["svid", "revoke", "--serial", &renewed.serial]);
    let status = ends_with(&mut stream).await;
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("is revoked"), "{status:?}");
}
