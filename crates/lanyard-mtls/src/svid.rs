//! The workload's own X.509-SVID, as delivered by the Workload API, and the
//! checks a message passes before anything from it is used.

use std::{fmt, sync::Arc};

use lanyard_identity::SpiffeId;
use lanyard_proto::workload::X509svidResponse;
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use x509_parser::{certificate::X509Certificate, prelude::FromDer};

use crate::MtlsError;

/// The workload's current X.509-SVID and its key, ready for rustls.
pub struct WorkloadSvid {
    spiffe_id: SpiffeId,
    serial: String,
    not_after: i64,
    hint: String,
    key: Arc<CertifiedKey>,
}

impl WorkloadSvid {
    /// The SVID's SPIFFE ID.
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.spiffe_id
    }

    /// The leaf's serial (lower-case hex, no leading zeros).
    pub fn serial(&self) -> &str {
        &self.serial
    }

    /// NotAfter, in seconds since the Unix epoch.
    pub fn not_after(&self) -> i64 {
        self.not_after
    }

    /// The operator's hint for this SVID (empty if none).
    pub fn hint(&self) -> &str {
        &self.hint
    }

    /// The certificate chain, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.key.cert
    }

    /// Chain and signing key for rustls.
    pub fn certified_key(&self) -> &Arc<CertifiedKey> {
        &self.key
    }
}

impl fmt::Debug for WorkloadSvid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("WorkloadSvid")
            .field("spiffe_id", &self.spiffe_id)
            .field("serial", &self.serial)
            .field("not_after", &self.not_after)
            .field("hint", &self.hint)
            .finish_non_exhaustive()
    }
}

/// Everything one `FetchX509SVID` message carries that this crate uses.
pub(crate) struct Update {
    pub(crate) svid: WorkloadSvid,
    pub(crate) bundle: Vec<CertificateDer<'static>>,
    /// The trust domain's CRL, if the message carries one.
    pub(crate) crl: Option<Vec<u8>>,
    /// Every CA certificate the chain carries after the leaf: candidate CRL
    /// signers (each must still chain to the bundle). In upstream mode the
    /// agent appends the CRL's issuer here when the SVID's own chain lacks
    /// it (right after an intermediate rotation).
    pub(crate) crl_signers: Vec<CertificateDer<'static>>,
}

/// Checks and converts a message: the first (default) SVID must be a valid
/// X.509-SVID whose key matches and which chains to the bundle sent with it.
/// `Ok(None)` when the message carries no SVID at all.
pub(crate) fn parse_response(
    msg: X509svidResponse,
    now: UnixTime,
) -> Result<Option<Update>, MtlsError> {
    let X509svidResponse { svids, crl, .. } = msg;
    let Some(first) = svids.into_iter().next() else {
        return Ok(None);
    };
    let chain = split_certificates(&first.x509_svid)
        .map_err(|e| MtlsError::BadSvid(format!("x509_svid: {e}")))?;
    let bundle = split_certificates(&first.bundle)
        .map_err(|e| MtlsError::BadSvid(format!("bundle: {e}")))?;
    let Some((leaf, intermediates)) = chain.split_first() else {
        return Err(MtlsError::BadSvid("x509_svid holds no certificate".into()));
    };
    let summary = lanyard_identity::check_x509_svid(leaf)?;
    if !first.spiffe_id.is_empty() && first.spiffe_id != summary.spiffe_id.to_string() {
        return Err(MtlsError::BadSvid(format!(
            "spiffe_id {:?} differs from the certificate's {}",
            first.spiffe_id, summary.spiffe_id
        )));
    }
    crate::verify_svid_chain(leaf, intermediates, &bundle, now)?;
    let crl_signers = intermediates.to_vec();
    // Only the issuing path goes into handshakes; a CRL issuer appended
    // after it is for us, not for peers.
    let mut chain = chain;
    chain.truncate(issuing_path_len(&chain));
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(first.x509_svid_key.to_vec()));
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(chain, key, &provider)
        .map_err(|e| MtlsError::BadSvid(format!("x509_svid_key: {e}")))?;
    Ok(Some(Update {
        svid: WorkloadSvid {
            spiffe_id: summary.spiffe_id,
            serial: summary.serial,
            not_after: summary.not_after,
            hint: first.hint,
            key: Arc::new(certified),
        },
        bundle,
        crl: crl.into_iter().next().filter(|c| !c.is_empty()),
        crl_signers,
    }))
}

/// How many certificates of `chain` (leaf first) form its issuing path: the
/// leaf, then each certificate whose key signed the one before it. Anything
/// after that rides along for another reason (the CRL's issuer, appended by
/// the agent in upstream mode).
fn issuing_path_len(chain: &[CertificateDer<'_>]) -> usize {
    let parsed: Vec<Option<X509Certificate<'_>>> = chain
        .iter()
        .map(|c| X509Certificate::from_der(c).ok().map(|(_, c)| c))
        .collect();
    let signed = |pair: &[Option<X509Certificate<'_>>]| match pair {
        [Some(child), Some(parent)] => child.verify_signature(Some(parent.public_key())).is_ok(),
        _ => false,
    };
    1 + parsed.windows(2).take_while(|pair| signed(pair)).count()
}

/// A concatenation of DER certificates that does not split into
/// certificates.
#[derive(Debug, thiserror::Error)]
#[error("certificate {index} of the list does not parse: {reason}")]
pub struct CertificateListError {
    /// Which certificate (1-based).
    pub index: usize,
    /// The parser's reason.
    pub reason: String,
}

/// Splits concatenated DER certificates, the Workload API's encoding of a
/// chain or a bundle; each must parse as an X.509 certificate.
pub fn split_certificates(
    mut der: &[u8],
) -> Result<Vec<CertificateDer<'static>>, CertificateListError> {
    let mut out = Vec::new();
    while !der.is_empty() {
        let (rest, _) = X509Certificate::from_der(der).map_err(|e| CertificateListError {
            index: out.len() + 1,
            reason: e.to_string(),
        })?;
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

    #[test]
    fn empty_input_splits_into_nothing_and_garbage_is_refused() {
        assert!(split_certificates(&[]).unwrap().is_empty());
        assert!(split_certificates(b"garbage").is_err());
    }

    fn self_signed() -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        rcgen::CertificateParams::new(vec!["a.test".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap()
            .der()
            .to_vec()
    }

    #[test]
    fn splits_concatenated_certificates_and_names_the_bad_one() {
        let (a, b) = (self_signed(), self_signed());
        let certs = split_certificates(&[a.clone(), b.clone()].concat()).unwrap();
        assert_eq!(certs.len(), 2);
        assert_eq!(certs[0].as_ref(), a.as_slice());
        assert_eq!(certs[1].as_ref(), b.as_slice());
        let truncated = [a.clone(), b[..b.len() - 1].to_vec()].concat();
        assert_eq!(split_certificates(&truncated).unwrap_err().index, 2);
        assert!(split_certificates(&[0x04, 0x01, 0x00]).is_err());
        assert!(split_certificates(&[0x30, 0x02, 0x01, 0x02]).is_err());
    }

    #[test]
    fn a_message_without_svids_is_no_identity() {
        let msg = X509svidResponse::default();
        assert!(parse_response(msg, UnixTime::now()).unwrap().is_none());
    }
}
