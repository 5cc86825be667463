//! x509pop material for end-to-end tests: node CAs and node certificates,
//! generated with rcgen and written as PEM files.

use std::path::{Path, PathBuf};

/// A node CA (self-signed) that issues node certificates.
pub struct NodeCa {
    /// The CA certificate, PEM.
    pub pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

/// A node certificate and its key, as PEM files.
pub struct NodeCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl NodeCert {
    /// The agent flags that attest with it.
    pub fn flags(&self) -> [&str; 4] {
        [
            "--x509pop-cert",
            self.cert.to_str().unwrap(),
            "--x509pop-key",
            self.key.to_str().unwrap(),
        ]
    }
}

impl NodeCa {
    pub fn new(cn: &str) -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let pem = params.self_signed(&key).unwrap().pem();
        Self {
            pem,
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A node certificate with CN `cn` (EKU clientAuth), written to
    /// `<dir>/<cn>.pem` and `<dir>/<cn>.key`.
    pub fn node(&self, dir: &Path, cn: &str) -> NodeCert {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let node = NodeCert {
            cert: dir.join(format!("{cn}.pem")),
            key: dir.join(format!("{cn}.key")),
        };
        std::fs::write(&node.cert, cert.pem()).unwrap();
        std::fs::write(&node.key, key.serialize_pem()).unwrap();
        node
    }
}

/// A server config file in `dir` enabling x509pop with the bundle at
/// `bundle`.
pub fn server_config(dir: &Path, bundle: &Path) -> PathBuf {
    let cfg = dir.join("server.toml");
    std::fs::write(
        &cfg,
        format!(
            "[x509pop]\nca_bundle_path = {:?}\n",
            bundle.to_str().unwrap()
        ),
    )
    .unwrap();
    cfg
}
