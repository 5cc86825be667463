//! The x509pop CA bundle: read at start-up, read again on SIGHUP.
//!
//! A bundle that cannot be used at start-up stops the server naming the
//! key. On SIGHUP the file is read again and, only if it is usable, replaces
//! the bundle in force for every later attestation; a missing, unreadable or
//! empty file is logged as an error and the previous bundle stays in force,
//! so a botched edit never turns x509pop attestation off (or on for the
//! wrong CAs). Agents already attested are unaffected: they are
//! authenticated by their agent SVID from then on.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use arc_swap::ArcSwap;
use rustls_pki_types::{CertificateDer, TrustAnchor, pem::PemObject};
use tokio_util::sync::CancellationToken;

use crate::{ServerError, state::ServerState};

/// The CAs that may vouch for nodes, and the file they come from.
pub(crate) struct X509PopBundle {
    path: PathBuf,
    anchors: ArcSwap<Vec<TrustAnchor<'static>>>,
}

impl X509PopBundle {
    /// Reads the bundle at `path`.
    pub(crate) fn load(path: &Path) -> Result<Self, ServerError> {
        Ok(Self {
            path: path.to_owned(),
            anchors: ArcSwap::from_pointee(read_anchors(path)?),
        })
    }

    /// The CAs in force.
    pub(crate) fn anchors(&self) -> Arc<Vec<TrustAnchor<'static>>> {
        self.anchors.load_full()
    }

    /// Reads the file again; on success the new CAs are in force and their
    /// number is returned, on error the previous ones stay.
    pub(crate) fn reload(&self) -> Result<usize, ServerError> {
        let anchors = read_anchors(&self.path)?;
        let count = anchors.len();
        self.anchors.store(Arc::new(anchors));
        Ok(count)
    }
}

fn read_anchors(path: &Path) -> Result<Vec<TrustAnchor<'static>>, ServerError> {
    let bad = |why: String| {
        ServerError::Config(format!("x509pop.ca_bundle_path {}: {why}", path.display()))
    };
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let cas = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not PEM certificates: {e}")))?;
    if cas.is_empty() {
        return Err(bad("holds no certificate".into()));
    }
    cas.iter()
        .map(|c| webpki::anchor_from_trusted_cert(c).map(|a| a.to_owned()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not a usable CA certificate: {e}")))
}

/// Reloads the bundle on every SIGHUP until `stop`. Installing the handler
/// also keeps SIGHUP from terminating the server when x509pop is off.
pub(crate) async fn reload_on_sighup(
    state: Arc<ServerState>,
    stop: CancellationToken,
) -> Result<(), ServerError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup())
        .map_err(|e| ServerError::io("cannot handle SIGHUP", "signal", e))?;
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            received = hangups.recv() => if received.is_none() { return Ok(()) },
        }
        match &state.x509pop {
            None => tracing::info!("SIGHUP: nothing to reload ([x509pop] is not configured)"),
            Some(bundle) => match bundle.reload() {
                Ok(cas) => tracing::info!(
                    path = %bundle.path.display(),
                    cas,
                    "SIGHUP: reloaded the x509pop CA bundle"
                ),
                Err(error) => tracing::error!(
                    %error,
                    "SIGHUP: x509pop CA bundle not reloaded; the previous bundle stays in force"
                ),
            },
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A self-signed certificate: all a trust anchor needs here.
    fn ca_pem(name: &str) -> String {
        rcgen::generate_simple_self_signed([name.to_owned()])
            .unwrap()
            .cert
            .pem()
    }

    #[test]
    fn reload_replaces_a_good_bundle_and_keeps_the_old_one_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bundle.pem");
        std::fs::write(&path, ca_pem("a") + &ca_pem("b")).unwrap();
        let bundle = X509PopBundle::load(&path).unwrap();
        assert_eq!(bundle.anchors().len(), 2);

        std::fs::write(&path, ca_pem("b")).unwrap();
        assert_eq!(bundle.reload().unwrap(), 1);
        assert_eq!(bundle.anchors().len(), 1);

        for broken in ["", "not a certificate"] {
            std::fs::write(&path, broken).unwrap();
            let error = bundle.reload().unwrap_err();
            assert!(
                error.to_string().contains("x509pop.ca_bundle_path"),
                "{error}"
            );
            assert_eq!(bundle.anchors().len(), 1);
        }
        std::fs::remove_file(&path).unwrap();
        assert!(bundle.reload().is_err());
        assert_eq!(bundle.anchors().len(), 1);
    }
}
