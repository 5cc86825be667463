//! The agent's own X.509-SVID: what it presents to the server.

use std::{fmt, sync::Arc, time::SystemTime};

use lanyard_identity::{SpiffeId, TrustDomain, check_x509_svid};
use lanyard_keys::SvidKey;
use rustls_pki_types::CertificateDer;

use crate::schedule;

/// An agent SVID with its key, checked to belong together.
#[derive(Clone)]
pub struct AgentIdentity {
    /// The agent's SPIFFE ID.
    pub spiffe_id: SpiffeId,
    /// DER chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The SVID's private key (never logged: `Debug` redacts it).
    pub key: Arc<SvidKey>,
    /// Lower-case hex serial of the leaf.
    pub serial: String,
    /// NotBefore, seconds since the Unix epoch.
    pub not_before: i64,
    /// NotAfter, seconds since the Unix epoch.
    pub not_after: i64,
    /// When the agent got it.
    pub received_at: SystemTime,
}

impl fmt::Debug for AgentIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentIdentity")
            .field("spiffe_id", &self.spiffe_id)
            .field("serial", &self.serial)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl AgentIdentity {
    /// Checks the leaf against the X.509-SVID profile and that `key` is its key.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: Arc<SvidKey>,
        received_at: SystemTime,
    ) -> Result<Self, String> {
        let leaf = chain.first().ok_or("empty certificate chain")?;
        let summary = check_x509_svid(leaf).map_err(|e| format!("agent SVID: {e}"))?;
        let (_, cert) =
            x509_parser::parse_x509_certificate(leaf).map_err(|e| format!("agent SVID: {e}"))?;
        if cert.public_key().raw != key.public_key_der().as_slice() {
            return Err("the agent SVID does not certify the stored key".into());
        }
        Ok(Self {
            spiffe_id: summary.spiffe_id,
            chain,
            key,
            serial: summary.serial,
            not_before: summary.not_before,
            not_after: summary.not_after,
            received_at,
        })
    }

    /// The trust domain the agent belongs to.
    pub fn trust_domain(&self) -> TrustDomain {
        self.spiffe_id.trust_domain()
    }

    /// Whether NotAfter has passed.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        schedule::to_unix(now) >= self.not_after
    }

    /// When to renew it (half-life with jitter).
    pub fn refresh_at(&self, jitter: f64) -> SystemTime {
        let valid_from = schedule::from_unix(self.not_before).max(self.received_at);
        schedule::refresh_at(valid_from, schedule::from_unix(self.not_after), jitter)
    }
}
