//! Task SVIDs and audience binding: a lanyard-mtls server accepts a client's
//! task SVID only when its own SPIFFE ID is among the SVID's audiences.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;

use lanyard_identity::TaskBinding;
use lanyard_mtls::{
    Authorizer, MtlsError, OwnIdentity, TrustMaterial, client_config, server_config,
    server_config_for,
};
use rustls::CertificateError;
use support::{Ca, handshake};

const DB: &str = "spiffe://example.org/db";
const WEB: &str = "spiffe://example.org/web";
const MAINT: &str = "spiffe://example.org/maint/disk";

fn binding(audiences: &[&str]) -> TaskBinding {
    TaskBinding {
        task_id: "task-00112233aabbccdd".into(),
        ticket: "CHG-1234".into(),
        audiences: audiences.iter().map(|a| a.parse().unwrap()).collect(),
    }
}

/// Handshakes a client presenting `client` to a server at `server_id`
/// (which knows its own ID when `knows_itself`).
async fn connect(
    ca: &Ca,
    server_id: &str,
    client: &support::Svid,
    knows_itself: bool,
) -> support::Outcome {
    let trust = Arc::new(TrustMaterial::new(vec![ca.cert.clone()]));
    let server_svid = ca.svid(server_id);
    let server = if knows_itself {
        server_config_for(
            trust.clone(),
            Authorizer::Any,
            server_svid.resolver(),
            Some(OwnIdentity::fixed(server_id.parse().unwrap())),
        )
    } else {
        server_config(trust.clone(), Authorizer::Any, server_svid.resolver())
    }
    .unwrap();
    let client = client_config(trust, Authorizer::Any, client.resolver()).unwrap();
    handshake(Arc::new(server), Arc::new(client)).await
}

fn refused_for_audience(out: &support::Outcome) -> String {
    match out.server_tls_error() {
        Some(rustls::Error::InvalidCertificate(CertificateError::Other(other))) => {
            let text = other.to_string();
            assert!(text.contains("not for this service"), "{text}");
            text
        }
        other => panic!("expected an audience refusal, got {other:?} ({out:?})"),
    }
}

#[tokio::test]
async fn a_task_svid_is_accepted_only_by_its_audiences() {
    let ca = Ca::new();
    let task = ca.task_svid(MAINT, &binding(&[DB]));
    assert!(
        connect(&ca, DB, &task, true).await.ok(),
        "the audience accepts it"
    );
    let text = refused_for_audience(&connect(&ca, WEB, &task, true).await);
    assert!(text.contains(WEB) && text.contains(DB), "{text}");
    // A server that does not know its own ID cannot tell: it refuses.
    let text = refused_for_audience(&connect(&ca, DB, &task, false).await);
    assert!(text.contains("unknown"), "{text}");
}

#[tokio::test]
async fn plain_svids_and_unrestricted_task_svids_pass() {
    let ca = Ca::new();
    let plain = ca.svid(MAINT);
    assert!(connect(&ca, WEB, &plain, true).await.ok());
    assert!(connect(&ca, WEB, &plain, false).await.ok());
    let any = ca.task_svid(MAINT, &binding(&[]));
    assert!(
        connect(&ca, WEB, &any, true).await.ok(),
        "no audiences: any service"
    );
}

#[test]
fn the_error_names_task_audiences_and_self() {
    let e = MtlsError::AudienceMismatch {
        task_id: "task-1".into(),
        audiences: vec![DB.parse().unwrap()],
        own: Some(WEB.parse().unwrap()),
    };
    let text = e.to_string();
    assert!(
        text.contains("task-1") && text.contains(DB) && text.contains(WEB),
        "{text}"
    );
}
