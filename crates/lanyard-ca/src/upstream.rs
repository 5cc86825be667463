//! Upstream mode: an existing CA certificate and key, loaded from disk, that
//! certifies Lanyard's CA as its intermediate.

use std::path::{Path, PathBuf};

use rcgen::{Issuer, KeyPair, PublicKeyData};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::error::CaError;
use crate::keys::parse_pem_key;

/// Where the upstream CA's PEM files are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamCa {
    /// The upstream CA certificate (PEM `CERTIFICATE`; the first block is used).
    pub cert_path: PathBuf,
    /// The upstream CA private key (PEM PKCS#8 `PRIVATE KEY`).
    pub key_path: PathBuf,
}

/// A loaded, checked upstream CA.
pub(crate) struct Upstream {
    pub(crate) cert: CertificateDer<'static>,
    pub(crate) cert_path: PathBuf,
    pub(crate) not_after: i64,
    subject_raw: Vec<u8>,
    pub(crate) issuer: Issuer<'static, KeyPair>,
}

impl Upstream {
    /// Loads and checks the upstream certificate and key: the certificate must
    /// be a CA allowed to certify another CA, valid at `now`, and the key must
    /// be the one it certifies.
    pub(crate) fn load(cfg: &UpstreamCa, now: i64) -> Result<Self, CaError> {
        let cert_path = &cfg.cert_path;
        let bad_cert = |problem: String| CaError::Upstream {
            path: cert_path.clone(),
            problem,
        };
        let pem = std::fs::read(cert_path).map_err(|e| CaError::Upstream {
            path: cert_path.clone(),
            problem: format!("cannot read it: {e}"),
        })?;
        let cert = CertificateDer::from_pem_slice(&pem)
            .map_err(|e| bad_cert(format!("no PEM CERTIFICATE block could be read ({e})")))?
            .into_owned();

        let (subject_raw, not_after, spki_bits) = {
            let (_, x509) = X509Certificate::from_der(cert.as_ref())
                .map_err(|e| bad_cert(format!("the certificate does not parse as X.509 ({e})")))?;
            check_is_ca(&x509).map_err(&bad_cert)?;
            let nb = x509.validity().not_before.timestamp();
            let na = x509.validity().not_after.timestamp();
            if now < nb {
                return Err(bad_cert(format!(
                    "the certificate is not valid before {nb} (unix seconds); it is now {now}"
                )));
            }
            if now >= na {
                return Err(bad_cert(format!(
                    "the certificate expired at {na} (unix seconds); it is now {now}"
                )));
            }
            (
                x509.subject().as_raw().to_vec(),
                na,
                x509.public_key().subject_public_key.data.to_vec(),
            )
        };

        let key = load_upstream_key(&cfg.key_path)?;
        if key.der_bytes() != spki_bits.as_slice() {
            return Err(CaError::Upstream {
                path: cfg.key_path.clone(),
                problem: format!(
                    "the private key does not belong to the certificate {}",
                    cert_path.display()
                ),
            });
        }
        let issuer = Issuer::from_ca_cert_der(&cert, key)
            .map_err(|e| bad_cert(format!("cannot use it as an issuer ({e})")))?;
        tracing::info!(
            cert_path = %cert_path.display(),
            not_after,
            "loaded upstream CA"
        );
        Ok(Self {
            cert,
            cert_path: cert_path.clone(),
            not_after,
            subject_raw,
            issuer,
        })
    }

    /// Checks that `der` (an intermediate this CA minted, or one named by the
    /// journal) was issued by this upstream CA: issuer name and signature.
    pub(crate) fn verify_issued(&self, der: &[u8]) -> Result<(), CaError> {
        let broken = |problem: String| CaError::BrokenChain {
            what: "intermediate CA",
            problem,
        };
        let (_, child) =
            X509Certificate::from_der(der).map_err(|e| broken(format!("does not parse ({e})")))?;
        let (_, parent) = X509Certificate::from_der(self.cert.as_ref())
            .map_err(|e| broken(format!("upstream certificate does not parse ({e})")))?;
        if child.issuer().as_raw() != self.subject_raw.as_slice() {
            return Err(broken(format!(
                "its issuer name is not the subject of the upstream CA {}",
                self.cert_path.display()
            )));
        }
        child
            .verify_signature(Some(parent.public_key()))
            .map_err(|e| {
                broken(format!(
                    "its signature does not verify with the upstream CA {} ({e})",
                    self.cert_path.display()
                ))
            })
    }
}

fn load_upstream_key(path: &Path) -> Result<KeyPair, CaError> {
    let pem = std::fs::read_to_string(path).map_err(|e| CaError::Upstream {
        path: path.to_path_buf(),
        problem: format!("cannot read it: {e}"),
    })?;
    parse_pem_key(&pem).map_err(|problem| CaError::Upstream {
        path: path.to_path_buf(),
        problem,
    })
}

fn check_is_ca(x509: &X509Certificate<'_>) -> Result<(), String> {
    let bc = x509
        .basic_constraints()
        .map_err(|e| format!("its basicConstraints extension is malformed ({e})"))?;
    match bc {
        Some(bc) if bc.value.ca => {
            if bc.value.path_len_constraint == Some(0) {
                return Err(
                    "its pathLenConstraint is 0, so it cannot certify Lanyard's \
                            intermediate CA; use a CA with pathLenConstraint >= 1 or none"
                        .into(),
                );
            }
        }
        _ => {
            return Err("it is not a CA certificate (basicConstraints cA=true is required)".into());
        }
    }
    let ku = x509
        .key_usage()
        .map_err(|e| format!("its keyUsage extension is malformed ({e})"))?;
    if ku.is_some_and(|ku| !ku.value.key_cert_sign()) {
        return Err("its keyUsage lacks keyCertSign, so it may not sign certificates".into());
    }
    Ok(())
}
