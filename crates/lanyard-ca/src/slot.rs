//! One CA generation: its key, its certificate and where it stands in the
//! rotation (prepared, active, retired).

use std::fmt;

use lanyard_identity::{Serial, TrustDomain};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, SanType,
};
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use x509_parser::prelude::{FromDer, X509Certificate};

use lanyard_jwt::SigningKey;

use crate::authority::CaConfig;
use crate::error::CaError;
use crate::jwt_key::{jwt_key_file, load_jwt_key, mint_jwt_key};
use crate::keys::{generate_p256, load_key, random_serial, save_key};
use crate::upstream::Upstream;
use crate::validity::{BACKDATE_SECS, offset_date_time};

/// Where a CA generation stands in the rotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaSlotState {
    /// Minted and published in the trust bundle, not yet signing.
    Prepared,
    /// Signs every new SVID.
    Active,
    /// Superseded; kept in the trust bundle until its NotAfter so that the
    /// SVIDs it signed still verify.
    Retired,
}

/// A public description of one CA generation (no key material).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaSlotInfo {
    /// Where it stands in the rotation.
    pub state: CaSlotState,
    /// Its serial, lower-case hex.
    pub serial: String,
    /// NotBefore, seconds since the Unix epoch.
    pub not_before: i64,
    /// NotAfter, seconds since the Unix epoch.
    pub not_after: i64,
    /// Its certificate, DER.
    pub certificate: CertificateDer<'static>,
}

/// A CA generation with its signing key.
pub(crate) struct CaSlot {
    pub(crate) state: CaSlotState,
    pub(crate) key_file: String,
    pub(crate) cert: CertificateDer<'static>,
    pub(crate) serial: String,
    pub(crate) not_before: i64,
    pub(crate) not_after: i64,
    pub(crate) subject_raw: Vec<u8>,
    pub(crate) issuer: Issuer<'static, KeyPair>,
    /// The generation's JWT signing key (`jwt-<id>.key` beside the CA key).
    pub(crate) jwt: SigningKey,
}

impl CaSlot {
    /// Mints a new CA generation valid from `now` (backdated) for `ttl_secs`,
    /// capped to the upstream CA's NotAfter, and writes its keys (the CA's
    /// and its JWT key, of `cfg.jwt_algorithm`) to the key directory.
    pub(crate) fn mint(
        cfg: &CaConfig,
        ttl_secs: i64,
        upstream: Option<&Upstream>,
        now: i64,
        state: CaSlotState,
    ) -> Result<Self, CaError> {
        let (trust_domain, key_dir) = (&cfg.trust_domain, cfg.key_dir.as_path());
        let mut not_after = now.saturating_add(ttl_secs);
        if let Some(up) = upstream {
            not_after = not_after.min(up.not_after);
            if not_after <= now {
                return Err(CaError::Upstream {
                    path: up.cert_path.clone(),
                    problem: format!(
                        "the upstream CA expired at {} (unix seconds); it is now {now}",
                        up.not_after
                    ),
                });
            }
        }
        let not_before = now - BACKDATE_SECS;

        let key = generate_p256()?;
        let serial = random_serial()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = ca_subject(trust_domain);
        params.subject_alt_names = vec![SanType::URI(
            trust_domain
                .id()
                .as_str()
                .try_into()
                .map_err(|e| CaError::encoding("CA certificate", e))?,
        )];
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
        ];
        params.serial_number = Some(serial.clone());
        params.not_before = offset_date_time(not_before, "CA NotBefore")?;
        params.not_after = offset_date_time(not_after, "CA NotAfter")?;

        let cert = match upstream {
            None => params.self_signed(&key),
            Some(up) => {
                params.use_authority_key_identifier_extension = true;
                params.signed_by(&key, &up.issuer)
            }
        }
        .map_err(|e| CaError::encoding("CA certificate", e))?
        .der()
        .clone();

        lanyard_identity::check_signing_certificate(cert.as_ref()).map_err(|source| {
            CaError::NonConformingCa {
                trust_domain: trust_domain.clone(),
                source,
            }
        })?;
        if let Some(up) = upstream {
            up.verify_issued(cert.as_ref())?;
        }

        let key_file = format!("ca-{}.key", hex::encode(&serial.to_bytes()[..8]));
        save_key(&key_dir.join(&key_file), &key)?;
        let jwt = mint_jwt_key(&key_dir.join(jwt_key_file(&key_file)), cfg.jwt_algorithm)?;
        let slot = Self::assemble(state, key_file, cert, key, jwt)?;
        tracing::info!(
            trust_domain = %trust_domain,
            serial = %slot.serial,
            not_before = slot.not_before,
            not_after = slot.not_after,
            state = ?state,
            upstream = upstream.is_some(),
            "minted CA certificate"
        );
        Ok(slot)
    }

    /// Restores a generation from its journal record, loading its key from
    /// `key_dir`. Fails closed: a missing key, a key that does not match the
    /// certificate, or a certificate that fails the profile is an error.
    pub(crate) fn restore(
        cfg: &CaConfig,
        upstream: Option<&Upstream>,
        state: CaSlotState,
        key_file: &str,
        cert: CertificateDer<'static>,
    ) -> Result<Self, CaError> {
        let (trust_domain, key_dir) = (&cfg.trust_domain, cfg.key_dir.as_path());
        if key_file.is_empty()
            || key_file == "."
            || key_file == ".."
            || key_file.contains('/')
            || key_file.contains('\0')
        {
            return Err(CaError::journal(format!(
                "key file name {key_file:?} is not a plain file name inside the key directory"
            )));
        }
        let path = key_dir.join(key_file);
        let key = load_key(&path)?;
        lanyard_identity::check_signing_certificate(cert.as_ref()).map_err(|source| {
            CaError::NonConformingCa {
                trust_domain: trust_domain.clone(),
                source,
            }
        })?;
        {
            let (_, x509) = X509Certificate::from_der(cert.as_ref()).map_err(|e| {
                CaError::journal(format!("a CA certificate does not parse as X.509 ({e})"))
            })?;
            if x509.public_key().subject_public_key.data.as_ref() != key.der_bytes() {
                return Err(CaError::BadKeyFile {
                    path,
                    problem: "the key does not belong to the CA certificate the journal \
                              pairs it with"
                        .into(),
                });
            }
            if !names_trust_domain(&x509, trust_domain) {
                return Err(CaError::journal(format!(
                    "a CA certificate in the journal is not for trust domain {trust_domain}"
                )));
            }
        }
        if let Some(up) = upstream {
            up.verify_issued(cert.as_ref())?;
        }
        let jwt_path = key_dir.join(jwt_key_file(key_file));
        let jwt = if jwt_path.exists() {
            load_jwt_key(&jwt_path)?
        } else {
            // A generation from before JWT-SVIDs: it gets its key now.
            tracing::info!(path = %jwt_path.display(), "minting the JWT key of an existing CA generation");
            mint_jwt_key(&jwt_path, cfg.jwt_algorithm)?
        };
        Self::assemble(state, key_file.to_owned(), cert, key, jwt)
    }

    fn assemble(
        state: CaSlotState,
        key_file: String,
        cert: CertificateDer<'static>,
        key: KeyPair,
        jwt: SigningKey,
    ) -> Result<Self, CaError> {
        let (serial, not_before, not_after, subject_raw) = {
            let (_, x509) = X509Certificate::from_der(cert.as_ref()).map_err(|e| {
                CaError::encoding_reason("CA certificate", format!("does not parse ({e})"))
            })?;
            (
                Serial::from_bytes(x509.raw_serial()).into_string(),
                x509.validity().not_before.timestamp(),
                x509.validity().not_after.timestamp(),
                x509.subject().as_raw().to_vec(),
            )
        };
        let issuer =
            Issuer::from_ca_cert_der(&cert, key).map_err(|e| CaError::encoding("CA issuer", e))?;
        Ok(Self {
            state,
            key_file,
            cert,
            serial,
            not_before,
            not_after,
            subject_raw,
            issuer,
            jwt,
        })
    }

    pub(crate) fn info(&self) -> CaSlotInfo {
        CaSlotInfo {
            state: self.state,
            serial: self.serial.clone(),
            not_before: self.not_before,
            not_after: self.not_after,
            certificate: self.cert.clone(),
        }
    }
}

impl fmt::Debug for CaSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaSlot")
            .field("state", &self.state)
            .field("serial", &self.serial)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("key_file", &self.key_file)
            .field("key", &"<redacted>")
            .field("jwt_kid", &self.jwt.kid())
            .finish()
    }
}

/// The subject of every Lanyard CA certificate: `O=Lanyard, CN=Lanyard CA <td>`.
fn ca_subject(trust_domain: &TrustDomain) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Lanyard");
    dn.push(DnType::CommonName, format!("Lanyard CA {trust_domain}"));
    dn
}

/// Whether a CA certificate's URI SAN is the trust domain's ID.
fn names_trust_domain(x509: &X509Certificate<'_>, trust_domain: &TrustDomain) -> bool {
    let want = trust_domain.id();
    match x509.subject_alternative_name() {
        Ok(Some(san)) => san.value.general_names.iter().any(|name| {
            matches!(name, x509_parser::extensions::GeneralName::URI(uri) if *uri == want.as_str())
        }),
        _ => false,
    }
}
