//! rustls client- and server-certificate verifiers for X.509-SVIDs.

use std::sync::Arc;

use lanyard_identity::{SpiffeId, SvidSummary};
use rustls::{
    DigitallySignedStruct, DistinguishedName, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature},
    server::danger::{ClientCertVerified, ClientCertVerifier},
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::{Authorizer, MtlsError, TrustMaterial};

/// Verifies `end_entity` (+ `intermediates`) against `bundle` at `now` for
/// the given key usage and returns the SVID's SPIFFE ID. Revocation is not
/// checked here: the verifiers check the [`TrustMaterial`]'s CRL after this.
pub fn verify_svid_chain(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    bundle: &[CertificateDer<'_>],
    now: UnixTime,
) -> Result<SpiffeId, MtlsError> {
    verify_chain(end_entity, intermediates, bundle, now).map(|s| s.spiffe_id)
}

fn verify_chain(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    bundle: &[CertificateDer<'_>],
    now: UnixTime,
) -> Result<SvidSummary, MtlsError> {
    if bundle.is_empty() {
        return Err(MtlsError::EmptyBundle);
    }
    let summary = lanyard_identity::check_x509_svid(end_entity)?;
    let anchors = bundle
        .iter()
        .map(|c| webpki::anchor_from_trusted_cert(c).map(|a| a.to_owned()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| MtlsError::Chain(format!("bad bundle certificate: {e}")))?;
    let cert =
        webpki::EndEntityCert::try_from(end_entity).map_err(|e| MtlsError::Chain(e.to_string()))?;
    // SVIDs carry both serverAuth and clientAuth; checking clientAuth here
    // is what a peer of either role needs, as both are required by the profile.
    // No webpki revocation options: its CRL matching goes by issuer name,
    // which CA rotation makes ambiguous (see the crl module).
    cert.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        intermediates,
        now,
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )
    .map_err(|e| MtlsError::Chain(e.to_string()))?;
    Ok(summary)
}

/// The SPIFFE ID of a peer's leaf certificate, without chain verification
/// (for use after the handshake verified it).
pub fn peer_spiffe_id(leaf: &CertificateDer<'_>) -> Result<SpiffeId, MtlsError> {
    Ok(lanyard_identity::check_x509_svid(leaf)?.spiffe_id)
}

fn algorithms() -> WebPkiSupportedAlgorithms {
    rustls::crypto::ring::default_provider().signature_verification_algorithms
}

/// Chain, then CRL, then authorization, all against one snapshot of the
/// trust material.
fn check(
    trust: &TrustMaterial,
    authorizer: &Authorizer,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
) -> Result<(), rustls::Error> {
    let snapshot = trust.snapshot();
    let svid = verify_chain(end_entity, intermediates, &snapshot.bundle, now).map_err(|e| {
        tracing::debug!(error = %e, "peer SVID refused");
        rustls::Error::from(e)
    })?;
    if let Some(crl) = &snapshot.crl {
        crl.warn_if_stale(now);
        // Only the leaf is looked up: Lanyard's CA signs SVIDs directly.
        if crl.is_revoked(&svid.serial) {
            tracing::info!(
                peer = %svid.spiffe_id,
                serial = %svid.serial,
                crl_number = crl.number().unwrap_or("-"),
                "peer SVID refused: revoked"
            );
            return Err(MtlsError::Revoked {
                serial: svid.serial,
                spiffe_id: svid.spiffe_id,
            }
            .into());
        }
    }
    if !authorizer.authorize(&svid.spiffe_id) {
        tracing::debug!(peer = %svid.spiffe_id, "peer SPIFFE ID not authorized");
        return Err(MtlsError::Unauthorized(svid.spiffe_id).into());
    }
    Ok(())
}

// === impl SpiffeServerVerifier ===

/// Used by TLS clients: checks the server's SVID.
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    trust: Arc<TrustMaterial>,
    authorizer: Authorizer,
}

impl SpiffeServerVerifier {
    /// A verifier over `trust` accepting the IDs `authorizer` allows.
    pub fn new(trust: Arc<TrustMaterial>, authorizer: Authorizer) -> Self {
        Self { trust, authorizer }
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // SPIFFE authenticates by SPIFFE ID, not by host name.
        check(
            &self.trust,
            &self.authorizer,
            end_entity,
            intermediates,
            now,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &algorithms())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        algorithms().supported_schemes()
    }
}

// === impl SpiffeClientVerifier ===

/// Used by TLS servers: checks the client's SVID.
#[derive(Debug)]
pub struct SpiffeClientVerifier {
    trust: Arc<TrustMaterial>,
    authorizer: Authorizer,
    mandatory: bool,
}

impl SpiffeClientVerifier {
    /// A verifier requiring a client SVID the authorizer accepts.
    pub fn new(trust: Arc<TrustMaterial>, authorizer: Authorizer) -> Self {
        Self {
            trust,
            authorizer,
            mandatory: true,
        }
    }

    /// Also admits clients that present no certificate (the application then
    /// decides per call, e.g. an attestation endpoint).
    pub fn optional(mut self) -> Self {
        self.mandatory = false;
        self
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        check(
            &self.trust,
            &self.authorizer,
            end_entity,
            intermediates,
            now,
        )?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &algorithms())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        algorithms().supported_schemes()
    }
}
