//! PEM encoding of certificates (decoding comes from rustls-pki-types).

use rustls_pki_types::CertificateDer;

/// Encodes DER certificates as concatenated PEM `CERTIFICATE` blocks, in
/// order: the form of `bundle.pem` and `svid.pem` files and of
/// `bundle show --format pem`.
pub fn certificates_to_pem(certs: &[CertificateDer<'_>]) -> String {
    let mut out = String::new();
    for cert in certs {
        out.push_str(&pem_block("CERTIFICATE", cert.as_ref()));
    }
    out
}

/// One PEM block (RFC 7468): `-----BEGIN <label>-----`, base64 in
/// 64-column lines, `-----END <label>-----`, LF line endings. The one PEM
/// encoder of the project (the `pem` crate underneath).
pub fn pem_block(label: &str, der: &[u8]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new(label, der), config)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use rustls_pki_types::pem::PemObject;

    #[test]
    fn round_trips_through_pki_types() {
        let a = CertificateDer::from(vec![0x30u8; 100]);
        let b = CertificateDer::from(vec![0x31u8; 7]);
        let pem = certificates_to_pem(&[a.clone(), b.clone()]);
        let back: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(back, vec![a, b]);
        assert!(pem.lines().all(|l| l.len() <= 64));
    }

    #[test]
    fn blocks_have_lf_lines_of_64_columns() {
        let pem = pem_block("X509 CRL", &[0x30, 0x00]);
        assert_eq!(
            pem,
            "-----BEGIN X509 CRL-----\nMAA=\n-----END X509 CRL-----\n"
        );
        let long = pem_block("CERTIFICATE", &[7u8; 100]);
        assert!(long.lines().all(|l| l.len() <= 64) && !long.contains('\r'));
    }
}
