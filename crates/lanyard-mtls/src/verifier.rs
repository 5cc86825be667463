//! rustls client- and server-certificate verifiers for X.509-SVIDs.

use std::sync::Arc;

use lanyard_identity::{SpiffeId, SvidSummary, TaskBinding};
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
    .map_err(chain_error)?;
    Ok(summary)
}

/// The SPIFFE ID of a peer's leaf certificate, without chain verification
/// (for use after the handshake verified it).
pub fn peer_spiffe_id(leaf: &CertificateDer<'_>) -> Result<SpiffeId, MtlsError> {
    Ok(lanyard_identity::check_x509_svid(leaf)?.spiffe_id)
}

/// Keeps the errors a peer should be told precisely (expired, not yet
/// valid); the rest are chain failures.
fn chain_error(e: webpki::Error) -> MtlsError {
    match e {
        webpki::Error::CertExpired { time, not_after } => MtlsError::Expired { time, not_after },
        webpki::Error::CertNotValidYet { time, not_before } => {
            MtlsError::NotYetValid { time, not_before }
        }
        other => MtlsError::Chain(other.to_string()),
    }
}

fn algorithms() -> WebPkiSupportedAlgorithms {
    rustls::crypto::ring::default_provider().signature_verification_algorithms
}

/// This side's own SPIFFE ID, read at each handshake (it follows the live
/// SVID). Task SVIDs are accepted only by an audience they name.
#[derive(Clone)]
pub struct OwnIdentity(Arc<dyn Fn() -> Option<SpiffeId> + Send + Sync>);

impl OwnIdentity {
    /// A fixed ID.
    pub fn fixed(id: SpiffeId) -> Self {
        Self(Arc::new(move || Some(id.clone())))
    }

    /// An ID read at each handshake (e.g. from a live SVID).
    pub fn live(f: impl Fn() -> Option<SpiffeId> + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    fn get(&self) -> Option<SpiffeId> {
        (self.0)()
    }
}

impl std::fmt::Debug for OwnIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("OwnIdentity").field(&self.get()).finish()
    }
}

/// A task SVID (one carrying the task binding extension with audiences) is
/// accepted only by a peer whose own SPIFFE ID is among its audiences; a
/// verifier that does not know its own ID refuses it. Plain SVIDs pass.
fn check_audience(
    end_entity: &CertificateDer<'_>,
    peer: &SpiffeId,
    own: Option<&OwnIdentity>,
) -> Result<(), MtlsError> {
    let binding = TaskBinding::from_certificate(end_entity)
        .map_err(|e| MtlsError::TaskBinding(e.to_string()))?;
    let Some(binding) = binding else {
        return Ok(());
    };
    let me = own.and_then(OwnIdentity::get);
    match &me {
        Some(me) if binding.admits(me) => Ok(()),
        _ => {
            tracing::info!(
                peer = %peer,
                task = %binding.task_id,
                ticket = %binding.ticket,
                own = me.as_ref().map(ToString::to_string).unwrap_or_default(),
                "peer task SVID refused: this service is not among its audiences"
            );
            Err(MtlsError::AudienceMismatch {
                task_id: binding.task_id,
                audiences: binding.audiences,
                own: me,
            })
        }
    }
}

/// Chain, then CRL, then authorization, then task audience, all against one
/// snapshot of the trust material.
fn check(
    trust: &TrustMaterial,
    authorizer: &Authorizer,
    own: Option<&OwnIdentity>,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
) -> Result<(), rustls::Error> {
    let snapshot = trust.snapshot();
    let svid = verify_chain(end_entity, intermediates, &snapshot.bundle, now).map_err(|e| {
        tracing::debug!(error = %e, "peer SVID refused");
        rustls::Error::from(e)
    })?;
    trust
        .check_freshness(snapshot.crl.as_deref(), now)
        .map_err(|e| {
            tracing::warn!(error = %e, "peer refused: no fresh CRL (CrlPolicy::Strict)");
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
    check_audience(end_entity, &svid.spiffe_id, own)?;
    Ok(())
}

// === impl SpiffeServerVerifier ===

/// Used by TLS clients: checks the server's SVID.
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    trust: Arc<TrustMaterial>,
    authorizer: Authorizer,
    own: Option<OwnIdentity>,
}

impl SpiffeServerVerifier {
    /// A verifier over `trust` accepting the IDs `authorizer` allows.
    pub fn new(trust: Arc<TrustMaterial>, authorizer: Authorizer) -> Self {
        Self {
            trust,
            authorizer,
            own: None,
        }
    }

    /// This client's own ID, so a server presenting a task SVID is accepted
    /// when this client is among its audiences.
    pub fn with_own_identity(mut self, own: OwnIdentity) -> Self {
        self.own = Some(own);
        self
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
            self.own.as_ref(),
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
    own: Option<OwnIdentity>,
}

impl SpiffeClientVerifier {
    /// A verifier requiring a client SVID the authorizer accepts.
    pub fn new(trust: Arc<TrustMaterial>, authorizer: Authorizer) -> Self {
        Self {
            trust,
            authorizer,
            mandatory: true,
            own: None,
        }
    }

    /// This server's own ID: a client's task SVID is accepted only when it
    /// is among the SVID's audiences.
    pub fn with_own_identity(mut self, own: OwnIdentity) -> Self {
        self.own = Some(own);
        self
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
            self.own.as_ref(),
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
