//! Node attestation: join token and x509pop.

use lanyard_identity::{Selector, SpiffeId};
use lanyard_proto::node::v1::{JoinTokenAttestation, X509PopAttestation};
use lanyard_store::StoreError;
use ring::digest;
use rustls_pki_types::{CertificateDer, UnixTime};
use tonic::Status;

use crate::{join_token, state::ServerState, status::store_status};

use lanyard_identity::x509pop_challenge;

/// Who the node proved to be.
pub(crate) struct AttestedNode {
    pub agent_id: SpiffeId,
    pub attestation_type: &'static str,
    pub selectors: Vec<Selector>,
    /// The join token's ID, when one was used.
    pub token_id: Option<String>,
}

fn agent_path(td: &lanyard_identity::TrustDomain, path: &str) -> Result<SpiffeId, Status> {
    SpiffeId::from_parts(td, path).map_err(|e| Status::internal(format!("agent ID: {e}")))
}

pub(crate) async fn join_token(
    state: &ServerState,
    att: &JoinTokenAttestation,
) -> Result<AttestedNode, Status> {
    join_token::check_format(&att.token).map_err(Status::invalid_argument)?;
    let id = join_token::token_id(&att.token);
    let now = crate::state::now_unix();
    let lookup = id.clone();
    let record = state
        .db(move |s| s.consume_join_token(&lookup, now))
        .await
        .map_err(|e| {
            let why = match &e {
                StoreError::NotFound { .. } => "join token is unknown".to_owned(),
                StoreError::TokenUsed => {
                    "join token was already used (tokens are single use)".into()
                }
                StoreError::TokenExpired { expired_at } => {
                    format!("join token expired at {expired_at} (unix seconds)")
                }
                _ => return store_status(e),
            };
            tracing::warn!(token_id = %id, reason = %why, "join token attestation refused");
            Status::permission_denied(format!("attestation refused: {why}"))
        })?;
    let agent_id = match record.spiffe_id {
        Some(id) => id,
        None => agent_path(
            &state.cfg.trust_domain,
            &format!("/lanyard/agent/join_token/{id}"),
        )?,
    };
    let selector = Selector::new("join_token", "id", &id)
        .map_err(|e| Status::internal(format!("selector: {e}")))?;
    Ok(AttestedNode {
        agent_id,
        attestation_type: "join_token",
        selectors: vec![selector],
        token_id: Some(id),
    })
}

pub(crate) fn x509pop(
    state: &ServerState,
    att: &X509PopAttestation,
    csr_der: &[u8],
) -> Result<AttestedNode, Status> {
    let refuse = |why: String| {
        tracing::warn!(reason = %why, "x509pop attestation refused");
        Status::permission_denied(format!("attestation refused: {why}"))
    };
    let Some(bundle) = &state.x509pop else {
        return Err(Status::failed_precondition(
            "x509pop attestation is not enabled on this server ([x509pop] ca_bundle_path)",
        ));
    };
    let (leaf, intermediates) = att
        .cert_chain
        .split_first()
        .ok_or_else(|| Status::invalid_argument("x509pop: cert_chain is empty"))?;
    let leaf = CertificateDer::from(leaf.as_slice());
    let intermediates: Vec<CertificateDer<'_>> = intermediates
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    let anchors = bundle.anchors();
    let cert = webpki::EndEntityCert::try_from(&leaf)
        .map_err(|e| Status::invalid_argument(format!("x509pop: bad certificate: {e}")))?;
    cert.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &intermediates,
        UnixTime::now(),
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )
    .map_err(|e| {
        refuse(format!(
            "node certificate does not chain to the x509pop CA bundle: {e}"
        ))
    })?;
    let challenge = x509pop_challenge(csr_der);
    let proven = webpki::ALL_VERIFICATION_ALGS.iter().any(|alg| {
        cert.verify_signature(*alg, &challenge, &att.signature)
            .is_ok()
    });
    if !proven {
        return Err(refuse(
            "proof of possession signature does not verify".into(),
        ));
    }
    let fingerprint = hex::encode(digest::digest(&digest::SHA256, leaf.as_ref()));
    let agent_id = agent_path(
        &state.cfg.trust_domain,
        &format!("/lanyard/agent/x509pop/{fingerprint}"),
    )?;
    let mut selectors = Vec::new();
    if let Some(cn) = common_name(&leaf) {
        let s = Selector::new("x509pop", "subject", format!("cn:{cn}"))
            .map_err(|e| Status::invalid_argument(format!("x509pop: subject CN: {e}")))?;
        selectors.push(s);
    }
    Ok(AttestedNode {
        agent_id,
        attestation_type: "x509pop",
        selectors,
        token_id: None,
    })
}

fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned)
}
