//! Test PKI generated with rcgen (CAs, X.509-SVIDs, CRLs) and a TLS
//! handshake over an in-memory duplex.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::{
    collections::hash_map::RandomState,
    hash::{BuildHasher, Hasher},
    io,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevocationReason, RevokedCertParams, SanType, SerialNumber,
};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use time::{Duration, OffsetDateTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One subject name for every CA: rotated Lanyard CAs share it.
pub const CA_NAME: &str = "Lanyard CA example.org";

/// A signing CA.
pub struct Ca {
    pub cert: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

/// An issued X.509-SVID with its key.
pub struct Svid {
    pub id: String,
    pub chain: Vec<CertificateDer<'static>>,
    pub key_pkcs8: Vec<u8>,
    /// Lower-case hex without leading zeros.
    pub serial: String,
    serial_bytes: Vec<u8>,
}

impl Ca {
    /// A self-signed CA named [`CA_NAME`].
    pub fn new() -> Self {
        Self::named(CA_NAME)
    }

    /// A self-signed CA with the given common name.
    pub fn named(common_name: &str) -> Self {
        Self::make(common_name, None)
    }

    /// An intermediate CA signed by this one (Lanyard's CA in upstream mode).
    #[allow(dead_code)]
    pub fn intermediate(&self, common_name: &str) -> Self {
        Self::make(common_name, Some(self))
    }

    fn make(common_name: &str, parent: Option<&Ca>) -> Self {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Lanyard");
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.subject_alt_names = vec![SanType::URI("spiffe://example.org".try_into().unwrap())];
        params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
        params.not_before = OffsetDateTime::now_utc() - Duration::minutes(5);
        params.not_after = OffsetDateTime::now_utc() + Duration::days(1);
        let key = KeyPair::generate().unwrap();
        let cert = match parent {
            None => params.self_signed(&key).unwrap().der().clone(),
            Some(parent) => params
                .signed_by(&key, &parent.issuer)
                .unwrap()
                .der()
                .clone(),
        };
        Self {
            cert,
            issuer: Issuer::new(params, key),
        }
    }

    /// An X.509-SVID for `id`.
    pub fn svid(&self, id: &str) -> Svid {
        self.svid_with(id, None)
    }

    /// A task SVID for `id` carrying `binding` (the non-critical extension).
    #[allow(dead_code)]
    pub fn task_svid(&self, id: &str, binding: &lanyard_identity::TaskBinding) -> Svid {
        self.svid_with(id, Some(binding))
    }

    fn svid_with(&self, id: &str, binding: Option<&lanyard_identity::TaskBinding>) -> Svid {
        let mut params = CertificateParams::default();
        if let Some(b) = binding {
            params
                .custom_extensions
                .push(rcgen::CustomExtension::from_oid_content(
                    lanyard_identity::TASK_BINDING_OID,
                    b.to_der().unwrap(),
                ));
        }
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let serial_bytes = random_serial();
        params.serial_number = Some(SerialNumber::from_slice(&serial_bytes));
        params.not_before = OffsetDateTime::now_utc() - Duration::minutes(1);
        params.not_after = OffsetDateTime::now_utc() + Duration::hours(1);
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Svid {
            id: id.to_owned(),
            chain: vec![cert.der().clone()],
            key_pkcs8: key.serialize_der(),
            serial: hex::encode(&serial_bytes),
            serial_bytes,
        }
    }

    /// A CRL numbered `number` revoking `revoked`, valid for an hour.
    pub fn crl(&self, number: u64, revoked: &[&Svid]) -> Vec<u8> {
        let now = OffsetDateTime::now_utc();
        self.crl_at(
            number,
            revoked,
            now - Duration::minutes(1),
            now + Duration::hours(1),
        )
    }

    /// A CRL with explicit thisUpdate / nextUpdate.
    pub fn crl_at(
        &self,
        number: u64,
        revoked: &[&Svid],
        this_update: OffsetDateTime,
        next_update: OffsetDateTime,
    ) -> Vec<u8> {
        let params = CertificateRevocationListParams {
            this_update,
            next_update,
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&s.serial_bytes),
                    revocation_time: this_update,
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params.signed_by(&self.issuer).unwrap().der().to_vec()
    }
}

impl Svid {
    /// The rustls certified key.
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_pkcs8.clone()));
        let provider = rustls::crypto::ring::default_provider();
        Arc::new(CertifiedKey::from_der(self.chain.clone(), key, &provider).unwrap())
    }

    /// A resolver that always presents this SVID.
    pub fn resolver(&self) -> Arc<SingleCertAndKey> {
        Arc::new(SingleCertAndKey::from(self.certified_key()))
    }
}

/// 16 random bytes, positive, with a non-zero first byte.
fn random_serial() -> Vec<u8> {
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    let mut out = Vec::with_capacity(16);
    for _ in 0..2 {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        out.extend_from_slice(&h.finish().to_be_bytes());
    }
    out[0] = (out[0] & 0x7f) | 0x10;
    out
}

/// What each side of a handshake + one echo saw.
#[derive(Debug)]
pub struct Outcome {
    pub server: Result<(), io::Error>,
    pub client: Result<(), io::Error>,
    /// Whether the client's handshake was a full one (not resumed).
    pub client_full_handshake: Option<bool>,
    /// The leaf the client saw the server present.
    pub server_leaf: Option<CertificateDer<'static>>,
    /// The leaf the server saw the client present.
    pub client_leaf: Option<CertificateDer<'static>>,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.server.is_ok() && self.client.is_ok()
    }

    /// The rustls error the server side reported, if any.
    pub fn server_tls_error(&self) -> Option<&rustls::Error> {
        tls_error(self.server.as_ref().err()?)
    }

    /// The rustls error the client side reported, if any.
    pub fn client_tls_error(&self) -> Option<&rustls::Error> {
        tls_error(self.client.as_ref().err()?)
    }
}

pub fn tls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

/// One TLS handshake and a one-line echo over an in-memory pipe.
pub async fn handshake(
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
) -> Outcome {
    let (c, s) = tokio::io::duplex(64 * 1024);
    let acceptor = tokio_rustls::TlsAcceptor::from(server);
    let connector = tokio_rustls::TlsConnector::from(client);
    let server_side = async move {
        let mut tls = acceptor.accept(s).await?;
        let leaf = peer_leaf(tls.get_ref().1.peer_certificates());
        let mut buf = [0u8; 5];
        tls.read_exact(&mut buf).await?;
        tls.write_all(&buf).await?;
        tls.shutdown().await?;
        Ok::<_, io::Error>(leaf)
    };
    let client_side = async move {
        let name = ServerName::try_from("lanyard.invalid").unwrap();
        let mut tls = connector.connect(name, c).await?;
        let full = tls
            .get_ref()
            .1
            .handshake_kind()
            .map(|k| k == rustls::HandshakeKind::Full);
        let leaf = peer_leaf(tls.get_ref().1.peer_certificates());
        tls.write_all(b"ping\n").await?;
        let mut buf = [0u8; 5];
        tls.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"ping\n");
        Ok::<_, io::Error>((full, leaf))
    };
    let (server, client) = tokio::join!(server_side, client_side);
    let (client_full_handshake, server_leaf) = match &client {
        Ok((full, leaf)) => (*full, leaf.clone()),
        Err(_) => (None, None),
    };
    let client_leaf = server.as_ref().ok().cloned().flatten();
    Outcome {
        server: server.map(|_| ()),
        client: client.map(|_| ()),
        client_full_handshake,
        server_leaf,
        client_leaf,
    }
}

fn peer_leaf(certs: Option<&[CertificateDer<'static>]>) -> Option<CertificateDer<'static>> {
    certs.and_then(|c| c.first()).cloned()
}
