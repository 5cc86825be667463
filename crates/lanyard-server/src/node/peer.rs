//! Authenticating the calling agent by the SVID it presented in the TLS
//! handshake (the chain was verified by the handshake's verifier).

use lanyard_identity::check_x509_svid;
use lanyard_store::AgentRecord;
use tonic::{
    Request, Status,
    transport::server::{TcpConnectInfo, TlsConnectInfo},
};

use crate::{state::ServerState, status::store_status};

/// The agent behind this call, checked against the store: known, current
/// SVID, neither banned nor evicted; and the serial of the SVID it
/// presented (issuance checks it again in its own transaction).
pub(crate) async fn authenticate<T>(
    state: &ServerState,
    req: &Request<T>,
) -> Result<(AgentRecord, String), Status> {
    let certs = req
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|info| info.peer_certs())
        .ok_or_else(|| {
            Status::unauthenticated(
                "this call needs the agent SVID as TLS client certificate: attest first",
            )
        })?;
    let leaf = certs
        .first()
        .ok_or_else(|| Status::unauthenticated("empty client certificate chain"))?;
    let svid = check_x509_svid(leaf).map_err(|e| {
        Status::unauthenticated(format!("client certificate is not an X.509-SVID: {e}"))
    })?;
    let id = svid.spiffe_id.clone();
    let agent = state
        .db(move |s| s.get_agent(&id))
        .await
        .map_err(store_status)?
        .ok_or_else(|| {
            Status::permission_denied(format!("{} is not an attested agent", svid.spiffe_id))
        })?;
    standing(&agent)?;
    if state.crl.load().revoked.contains(&svid.serial) {
        return Err(Status::permission_denied(format!(
            "agent SVID {} of {} is revoked",
            svid.serial, agent.spiffe_id
        )));
    }
    if agent.serial != svid.serial {
        return Err(Status::permission_denied(format!(
            "agent SVID {} of {} has been superseded by {}; reconnect with the current one",
            svid.serial, agent.spiffe_id, agent.serial
        )));
    }
    Ok((agent, svid.serial))
}

/// Refuses a banned or evicted agent.
pub(crate) fn standing(agent: &AgentRecord) -> Result<(), Status> {
    if agent.banned {
        return Err(Status::permission_denied(format!(
            "agent {} is banned",
            agent.spiffe_id
        )));
    }
    if agent.evicted {
        return Err(Status::permission_denied(format!(
            "agent {} was evicted; attest again with a new join token or x509pop",
            agent.spiffe_id
        )));
    }
    Ok(())
}
