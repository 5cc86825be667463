//! The swappable trust material a verifier checks against.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls_pki_types::CertificateDer;

/// The current trust bundle (CA certificates, DER), replaced atomically on
/// rotation; every handshake reads the latest.
#[derive(Debug)]
pub struct TrustMaterial {
    bundle: ArcSwap<Vec<CertificateDer<'static>>>,
}

impl TrustMaterial {
    /// Starts with `bundle`.
    pub fn new(bundle: Vec<CertificateDer<'static>>) -> Self {
        Self {
            bundle: ArcSwap::from_pointee(bundle),
        }
    }

    /// Replaces the bundle.
    pub fn set_bundle(&self, bundle: Vec<CertificateDer<'static>>) {
        self.bundle.store(Arc::new(bundle));
    }

    /// The current bundle.
    pub fn bundle(&self) -> Arc<Vec<CertificateDer<'static>>> {
        self.bundle.load_full()
    }
}
