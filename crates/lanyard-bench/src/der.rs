//! Splitting the Workload API's concatenated DER certificates.

use anyhow::Context as _;
use rustls_pki_types::CertificateDer;

/// Splits concatenated DER certificates as the Workload API encodes a chain
/// or a bundle; each must parse as an X.509 certificate.
pub fn split_certificates(mut der: &[u8]) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let mut out = Vec::new();
    while !der.is_empty() {
        let (rest, _) =
            x509_parser::parse_x509_certificate(der).context("malformed DER certificate list")?;
        let (cert, _) = der.split_at(der.len() - rest.len());
        out.push(CertificateDer::from(cert.to_vec()));
        der = rest;
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn cert() -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        rcgen::CertificateParams::new(vec!["a.test".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap()
            .der()
            .to_vec()
    }

    #[test]
    fn splits_concatenated_certificates() {
        let (a, b) = (cert(), cert());
        let certs = split_certificates(&[a.clone(), b.clone()].concat()).unwrap();
        assert_eq!(certs.len(), 2);
        assert_eq!(certs[0].as_ref(), a.as_slice());
        assert_eq!(certs[1].as_ref(), b.as_slice());
        assert!(split_certificates(&[]).unwrap().is_empty());
    }

    #[test]
    fn refuses_truncated_or_foreign_input() {
        let a = cert();
        assert!(split_certificates(&a[..a.len() - 1]).is_err());
        assert!(split_certificates(&[0x04, 0x01, 0x00]).is_err());
        assert!(split_certificates(&[0x30, 0x02, 0x01, 0x02]).is_err());
    }
}
