//! Splitting the Workload API's concatenated DER certificates.

use anyhow::{Context as _, bail};
use rustls_pki_types::CertificateDer;

/// Splits concatenated DER certificates (each a SEQUENCE) as the Workload
/// API encodes a chain or a bundle.
pub fn split_certificates(mut der: &[u8]) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let mut out = Vec::new();
    while !der.is_empty() {
        let len = element_len(der).context("malformed DER certificate list")?;
        let (cert, rest) = der.split_at(len);
        out.push(CertificateDer::from(cert.to_vec()));
        der = rest;
    }
    Ok(out)
}

/// The total length (header + content) of the DER SEQUENCE at the start of
/// `der`.
fn element_len(der: &[u8]) -> anyhow::Result<usize> {
    let [tag, first, rest @ ..] = der else {
        bail!("truncated header");
    };
    if *tag != 0x30 {
        bail!("expected a SEQUENCE, found tag {tag:#04x}");
    }
    let (header, content) = if first & 0x80 == 0 {
        (2, usize::from(*first))
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            bail!("unsupported length encoding");
        }
        let content = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (2 + n, content)
    };
    let total = header + content;
    if total > der.len() {
        bail!("element of {total} bytes in {} bytes", der.len());
    }
    Ok(total)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn splits_short_and_long_form_lengths() {
        let short = [0x30, 0x02, 0x01, 0x02];
        let mut long = vec![0x30, 0x82, 0x01, 0x00];
        long.extend(std::iter::repeat_n(0xaa, 256));
        let mut all = short.to_vec();
        all.extend(&long);
        let certs = split_certificates(&all).unwrap();
        assert_eq!(certs.len(), 2);
        assert_eq!(certs[0].as_ref(), short);
        assert_eq!(certs[1].as_ref(), long.as_slice());
        assert!(split_certificates(&[]).unwrap().is_empty());
    }

    #[test]
    fn refuses_truncated_or_foreign_input() {
        assert!(split_certificates(&[0x30, 0x05, 0x01]).is_err());
        assert!(split_certificates(&[0x04, 0x01, 0x00]).is_err());
        assert!(split_certificates(&[0x30]).is_err());
        assert!(split_certificates(&[0x30, 0x80]).is_err());
    }
}
