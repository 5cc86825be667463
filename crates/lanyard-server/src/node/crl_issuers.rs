//! The CRL's issuers for the Sync stream: in upstream mode the bundle holds
//! only the upstream root, while Lanyard's active intermediate signs the
//! CRL. An agent (and, through the Workload API, every lanyard-mtls holder)
//! whose own SVID chain still carries the previous intermediate could not
//! check a CRL the new one signed, so revocations made just after a CA
//! rotation would not take effect for it until its SVID was renewed. Sending
//! the intermediates with the CRL closes that window.

use crate::state::ServerState;

/// DER certificates of Lanyard's intermediates (every generation the CA
/// still holds); empty for a self-signed CA, whose certificates are all in
/// the bundle.
pub(crate) fn crl_issuers(state: &ServerState) -> Vec<Vec<u8>> {
    let intermediates = match state.ca.read() {
        Ok(ca) => ca.intermediates(),
        Err(poisoned) => poisoned.into_inner().intermediates(),
    };
    intermediates.into_iter().map(|c| c.to_vec()).collect()
}
