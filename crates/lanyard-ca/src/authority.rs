//! The certificate authority: its configuration, its CA generations and the
//! operations the server drives (signing, rotation, persistence).

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use lanyard_identity::{Serial, TaskBinding, TrustDomain};
use lanyard_jwt::{Alg, Claims, Jwks};
use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::error::CaError;
use crate::journal::CaJournal;
use crate::jwt_key::jwt_key_file;
use crate::keys::random_serial;
use crate::rotation::{Rotation, Schedule, Step, Window};
use crate::signing::{IssuedSvid, SvidRequest, checked_dns_names, csr_public_key, leaf_params};
use crate::slot::{CaSlot, CaSlotInfo, CaSlotState};
use crate::upstream::{Upstream, UpstreamCa};
use crate::validity::{BACKDATE_SECS, duration_secs, unix_secs};
use lanyard_keys::ensure_private_dir;

/// The shortest CA lifetime accepted. Shorter ones would make the rotation
/// thresholds (computed from the backdated NotBefore) fall due at once.
pub const MIN_CA_TTL: Duration = Duration::from_secs(60);

/// How many rotation steps `load_or_create` may take to catch up after a
/// long outage (prepare, activate, prune, and a spare).
const MAX_CATCH_UP_STEPS: usize = 8;

/// How the certificate authority is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaConfig {
    /// The trust domain the CA certifies.
    pub trust_domain: TrustDomain,
    /// Lifetime of each CA certificate (at least [`MIN_CA_TTL`]).
    pub ca_ttl: Duration,
    /// Directory of the CA key files (created 0700 if missing; keys are 0600,
    /// written atomically).
    pub key_dir: PathBuf,
    /// `None`: a self-signed root. `Some`: an intermediate of this upstream CA.
    pub upstream: Option<UpstreamCa>,
    /// The algorithm of the JWT key each new CA generation gets (existing
    /// generations keep theirs, so a change takes effect at the next
    /// rotation).
    pub jwt_algorithm: Alg,
}

/// A SPIFFE certificate authority for one trust domain.
///
/// It holds up to three kinds of CA generation: the active one, which signs;
/// at most one prepared one, already published in the trust bundle; and
/// retired ones, kept in the bundle until they expire. It never reads the
/// clock: every operation takes `now` from the caller.
///
/// `Debug` shows the slots' public facts and redacts every key.
pub struct CertificateAuthority {
    cfg: CaConfig,
    ttl_secs: i64,
    upstream: Option<Upstream>,
    /// Superseded CAs still in the bundle, oldest first.
    retired: Vec<CaSlot>,
    active: CaSlot,
    prepared: Option<CaSlot>,
}

impl CertificateAuthority {
    /// Restores the CA from `journal` (loading its keys from the key
    /// directory), or, without a journal, creates the first CA.
    ///
    /// Fails closed: a journal naming a key file that is missing or
    /// unreadable, or that does not match the configuration, is an error.
    /// After restoring, any rotation steps that fell due while the server was
    /// down are taken (so persist [`journal`](Self::journal) afterwards).
    pub fn load_or_create(
        cfg: CaConfig,
        journal: Option<CaJournal>,
        now: SystemTime,
    ) -> Result<Self, CaError> {
        if cfg.ca_ttl < MIN_CA_TTL {
            return Err(CaError::InvalidCaTtl {
                ttl: cfg.ca_ttl,
                min: MIN_CA_TTL,
            });
        }
        let ttl_secs = duration_secs(cfg.ca_ttl, "CA TTL")?;
        let now_secs = unix_secs(now, "now")?;
        let upstream = cfg
            .upstream
            .as_ref()
            .map(|u| Upstream::load(u, now_secs))
            .transpose()?;
        ensure_private_dir(&cfg.key_dir)?;

        let slots = match &journal {
            Some(journal) => journal
                .decode(cfg.trust_domain.as_str(), upstream.is_some())?
                .into_iter()
                .map(|s| CaSlot::restore(&cfg, upstream.as_ref(), s.state, &s.key_file, s.cert))
                .collect::<Result<Vec<_>, _>>()?,
            None => vec![CaSlot::mint(
                &cfg,
                ttl_secs,
                upstream.as_ref(),
                now_secs,
                CaSlotState::Active,
            )?],
        };

        let mut active = None;
        let mut prepared = None;
        let mut retired = Vec::new();
        for slot in slots {
            match slot.state {
                CaSlotState::Active => active = Some(slot),
                CaSlotState::Prepared => prepared = Some(slot),
                CaSlotState::Retired => retired.push(slot),
            }
        }
        // `decode` has checked there is exactly one active slot.
        let active = active.ok_or_else(|| CaError::journal("it holds no active CA"))?;
        retired.sort_by_key(|s| (s.not_before, s.not_after));
        let mut ca = Self {
            cfg,
            ttl_secs,
            upstream,
            retired,
            active,
            prepared,
        };
        for _ in 0..MAX_CATCH_UP_STEPS {
            if ca.rotate(now)? == Rotation::Unchanged {
                break;
            }
        }
        tracing::info!(
            trust_domain = %ca.cfg.trust_domain,
            restored = journal.is_some(),
            upstream = ca.upstream.is_some(),
            slots = ca.all_slots().count(),
            "certificate authority ready"
        );
        Ok(ca)
    }

    /// The record to persist: certificates, key file names and states.
    pub fn journal(&self) -> CaJournal {
        CaJournal::record(
            self.cfg.trust_domain.as_str(),
            self.upstream.is_some(),
            self.all_slots(),
        )
    }

    /// The trust domain this CA certifies.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.cfg.trust_domain
    }

    /// The trust anchors to publish, DER, oldest first: in self-signed mode
    /// every CA still in the bundle (retired but unexpired, active,
    /// prepared); in upstream mode the upstream CA certificate.
    pub fn trust_bundle(&self) -> Vec<CertificateDer<'static>> {
        match &self.upstream {
            Some(up) => vec![up.cert.clone()],
            None => self.all_slots().map(|s| s.cert.clone()).collect(),
        }
    }

    /// The CA certificates that are not in the trust bundle, oldest first:
    /// in upstream mode every generation this CA holds (each issued by the
    /// upstream CA, and one of them signing the CRL); empty for a
    /// self-signed CA, whose certificates are all in the bundle. Verifiers
    /// need them to check a CRL whose signer their own chain lacks.
    pub fn intermediates(&self) -> Vec<CertificateDer<'static>> {
        match &self.upstream {
            Some(_) => self.all_slots().map(|s| s.cert.clone()).collect(),
            None => Vec::new(),
        }
    }

    /// The CA generations, oldest first (public facts only).
    pub fn slots(&self) -> Vec<CaSlotInfo> {
        self.all_slots().map(CaSlot::info).collect()
    }

    /// The active CA generation (signs SVIDs and the CRL).
    pub(crate) fn active_slot(&self) -> &CaSlot {
        &self.active
    }

    /// The active CA's certificate (the intermediate in upstream mode).
    pub fn active_certificate(&self) -> CertificateDer<'static> {
        self.active.cert.clone()
    }

    /// Signs an X.509-SVID.
    ///
    /// Only the public key is taken from the CSR, after checking its
    /// signature; it must be ECDSA P-256 or P-384. The SPIFFE ID (which must
    /// be in this trust domain and have a path), the DNS names and the TTL
    /// come from the request; the TTL is capped to the active CA's remaining
    /// life. NotBefore is backdated 30 s; the serial is random, positive and
    /// 126 bits long. The result is checked against the X.509-SVID profile
    /// (and its SPIFFE ID against the request) before it is returned.
    pub fn sign_x509_svid(
        &self,
        req: &SvidRequest<'_>,
        now: SystemTime,
    ) -> Result<IssuedSvid, CaError> {
        self.sign_task_svid(req, None, now)
    }

    /// Signs an X.509-SVID like [`sign_x509_svid`](Self::sign_x509_svid),
    /// adding the non-critical task binding extension
    /// ([`lanyard_identity::TaskBinding`]) when `task` is given; the result
    /// is checked to carry exactly that binding.
    pub fn sign_task_svid(
        &self,
        req: &SvidRequest<'_>,
        task: Option<&TaskBinding>,
        now: SystemTime,
    ) -> Result<IssuedSvid, CaError> {
        let prepared = self.prepare_svid(req, now)?;
        self.sign_prepared(&prepared, task, now)
    }

    /// The first half of signing: checks the request (trust domain, TTL,
    /// DNS names, the CSR's signature and key) and fixes the serial and
    /// notAfter the SVID will carry, so that the caller can record them
    /// before anything is signed. The TTL is capped to the active CA's
    /// remaining life.
    pub fn prepare_svid(
        &self,
        req: &SvidRequest<'_>,
        now: SystemTime,
    ) -> Result<PreparedSvid, CaError> {
        let now = unix_secs(now, "now")?;
        let td = &self.cfg.trust_domain;
        if !req.spiffe_id.is_member_of(td) {
            return Err(CaError::ForeignTrustDomain {
                spiffe_id: req.spiffe_id.clone(),
                trust_domain: td.clone(),
            });
        }
        if req.spiffe_id.is_trust_domain_id() {
            return Err(CaError::TrustDomainIdAsSvid {
                spiffe_id: req.spiffe_id.clone(),
            });
        }
        let ttl = duration_secs(req.ttl, "SVID TTL")?;
        if ttl == 0 {
            return Err(CaError::InvalidTtl { ttl: req.ttl });
        }
        let dns_names = checked_dns_names(req.dns_names)?;
        let public_key = csr_public_key(req.csr_der)?;
        let not_after = now.saturating_add(ttl).min(self.active.not_after);
        if not_after <= now {
            return Err(CaError::CaExpired {
                not_after: self.active.not_after,
                now,
            });
        }
        let serial = random_serial()?;
        Ok(PreparedSvid {
            spiffe_id: req.spiffe_id.clone(),
            dns_names,
            public_key,
            serial_hex: Serial::from_bytes(&serial.to_bytes()).into_string(),
            serial,
            not_after,
        })
    }

    /// The second half of signing: signs a [`PreparedSvid`] with the active
    /// CA key (NotBefore backdated 30 s, never before the CA's own), adds
    /// the task binding when given, and checks the result against the
    /// X.509-SVID profile, its SPIFFE ID, serial and binding before
    /// returning it. Takes `&self`: any number of threads sign at once.
    pub fn sign_prepared(
        &self,
        prepared: &PreparedSvid,
        task: Option<&TaskBinding>,
        now: SystemTime,
    ) -> Result<IssuedSvid, CaError> {
        let now = unix_secs(now, "now")?;
        let active = &self.active;
        // A rotation since `prepare_svid` only ever brings a CA that lives
        // longer; the cap keeps the certificate inside its issuer anyway.
        let not_after = prepared.not_after.min(active.not_after);
        if not_after <= now {
            return Err(CaError::CaExpired {
                not_after: active.not_after,
                now,
            });
        }
        let not_before = (now - BACKDATE_SECS).max(active.not_before);

        let mut params = leaf_params(
            &prepared.spiffe_id,
            &prepared.dns_names,
            prepared.serial.clone(),
            not_before,
            not_after,
        )?;
        if let Some(task) = task {
            params
                .custom_extensions
                .push(rcgen::CustomExtension::from_oid_content(
                    lanyard_identity::TASK_BINDING_OID,
                    task.to_der()
                        .map_err(|e| CaError::encoding_reason("task binding", e.to_string()))?,
                ));
        }
        let leaf = params
            .signed_by(&prepared.public_key, &active.issuer)
            .map_err(|e| CaError::encoding("X.509-SVID", e))?
            .der()
            .clone();

        // Never hand out a certificate that breaks the profile or names
        // anything but what was asked for.
        let summary = lanyard_identity::check_x509_svid(leaf.as_ref()).map_err(|source| {
            CaError::NonConformingSvid {
                spiffe_id: prepared.spiffe_id.clone(),
                source,
            }
        })?;
        if summary.spiffe_id != prepared.spiffe_id {
            return Err(CaError::IdentityMismatch {
                requested: prepared.spiffe_id.clone(),
                issued: summary.spiffe_id,
            });
        }
        if summary.serial != prepared.serial_hex {
            return Err(CaError::encoding_reason(
                "serial",
                format!(
                    "the signed SVID carries serial {}, {} was recorded",
                    summary.serial, prepared.serial_hex
                ),
            ));
        }
        check_issuer_name(leaf.as_ref(), &active.subject_raw)?;
        let carried = TaskBinding::from_certificate(leaf.as_ref())
            .map_err(|e| CaError::encoding_reason("task binding", e.to_string()))?;
        if carried.as_ref() != task {
            return Err(CaError::encoding_reason(
                "task binding",
                "the signed SVID does not carry the requested binding".into(),
            ));
        }

        tracing::debug!(
            spiffe_id = %summary.spiffe_id,
            serial = %summary.serial,
            not_after = summary.not_after,
            ca_serial = %active.serial,
            "signed X.509-SVID"
        );
        let mut cert_chain = vec![leaf];
        if self.upstream.is_some() {
            cert_chain.push(active.cert.clone());
        }
        Ok(IssuedSvid {
            spiffe_id: summary.spiffe_id,
            cert_chain,
            serial: summary.serial,
            not_before: summary.not_before,
            not_after: summary.not_after,
        })
    }

    /// Takes the one rotation step due at `now`, if any: at half the active
    /// CA's life the next CA is prepared (and published in the bundle at
    /// once); at five sixths it is activated and the active one retired;
    /// retired CAs are dropped once they expire.
    ///
    /// One call takes at most one step; when several are due (after an
    /// outage), [`next_rotation_at`](Self::next_rotation_at) is already past
    /// and the next call takes the next one. Persist
    /// [`journal`](Self::journal) after every step other than `Unchanged`.
    pub fn rotate(&mut self, now: SystemTime) -> Result<Rotation, CaError> {
        let now = unix_secs(now, "now")?;
        match self.schedule(|schedule| schedule.step(now)) {
            Step::None => Ok(Rotation::Unchanged),
            Step::Prepare => {
                let slot = CaSlot::mint(
                    &self.cfg,
                    self.ttl_secs,
                    self.upstream.as_ref(),
                    now,
                    CaSlotState::Prepared,
                )?;
                tracing::info!(
                    trust_domain = %self.cfg.trust_domain,
                    serial = %slot.serial,
                    activates_at = window(&self.active).activate_at(),
                    "prepared the next CA and published it in the trust bundle"
                );
                self.prepared = Some(slot);
                Ok(Rotation::Prepared)
            }
            Step::Activate => {
                let Some(mut next) = self.prepared.take() else {
                    // The schedule only activates when a prepared CA exists.
                    return Ok(Rotation::Unchanged);
                };
                next.state = CaSlotState::Active;
                let mut old = std::mem::replace(&mut self.active, next);
                old.state = CaSlotState::Retired;
                tracing::info!(
                    trust_domain = %self.cfg.trust_domain,
                    serial = %self.active.serial,
                    not_after = self.active.not_after,
                    retired_serial = %old.serial,
                    "activated the prepared CA; the previous one is retired"
                );
                self.retired.push(old);
                Ok(Rotation::Activated)
            }
            Step::Prune => {
                let mut dropped = Vec::new();
                if self.prepared.as_ref().is_some_and(|p| p.not_after <= now) {
                    dropped.extend(self.prepared.take());
                }
                let (expired, kept) = std::mem::take(&mut self.retired)
                    .into_iter()
                    .partition(|s| s.not_after <= now);
                self.retired = kept;
                dropped.extend::<Vec<CaSlot>>(expired);
                for slot in &dropped {
                    tracing::info!(
                        trust_domain = %self.cfg.trust_domain,
                        serial = %slot.serial,
                        not_after = slot.not_after,
                        "dropped an expired CA from the trust bundle"
                    );
                }
                Ok(Rotation::Pruned)
            }
        }
    }

    /// When the next rotation step is due: a pure function of the slots'
    /// validity. It may be in the past (a step is due now).
    pub fn next_rotation_at(&self) -> SystemTime {
        lanyard_time::from_unix(self.schedule(|schedule| schedule.next_at()))
    }

    /// The names of the key files in the key directory that the current
    /// slots use (each generation's CA key and JWT key), for sealing them
    /// into a shared store.
    pub fn key_files(&self) -> Vec<String> {
        self.all_slots()
            .flat_map(|s| [s.key_file.clone(), jwt_key_file(&s.key_file)])
            .collect()
    }

    /// Deletes CA key files in the key directory that the current slots no
    /// longer use (those of dropped CAs, or of a CA prepared before a crash
    /// and never journaled). Call it only after the current
    /// [`journal`](Self::journal) is persisted, so that the persisted journal
    /// never names a deleted key. Returns how many files were removed.
    pub fn remove_unused_key_files(&self) -> Result<usize, CaError> {
        let dir = &self.cfg.key_dir;
        let entries = std::fs::read_dir(dir).map_err(|e| CaError::io("list", dir, e))?;
        let mut removed = 0;
        for entry in entries {
            let entry = entry.map_err(|e| CaError::io("list", dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let ours =
                (name.starts_with("ca-") || name.starts_with("jwt-")) && name.ends_with(".key");
            let used = self
                .all_slots()
                .any(|s| s.key_file == name || jwt_key_file(&s.key_file) == name);
            if ours && !used {
                let path = entry.path();
                std::fs::remove_file(&path).map_err(|e| CaError::io("remove", &path, e))?;
                tracing::info!(path = %path.display(), "removed unused CA key file");
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The trust domain's JWT bundle: the public key of every generation
    /// (retired, active, prepared), `use: jwt-svid`, each with its `kid`.
    pub fn jwt_bundle(&self) -> Jwks {
        Jwks {
            keys: self.all_slots().map(|s| s.jwt.public_jwk()).collect(),
        }
    }

    /// Signs a JWT-SVID with the active generation's key. Its `exp` is cut
    /// to the active CA's NotAfter, so no token outlives the publication of
    /// the key that signed it. Returns the token and its final `exp`.
    pub fn sign_jwt_svid(
        &self,
        mut claims: Claims,
        now: SystemTime,
    ) -> Result<(String, i64), CaError> {
        let now = unix_secs(now, "now")?;
        if self.active.not_after <= now {
            return Err(CaError::CaExpired {
                not_after: self.active.not_after,
                now,
            });
        }
        claims.exp = claims.exp.min(self.active.not_after);
        let token = self
            .active
            .jwt
            .sign(&claims)
            .map_err(|e| CaError::encoding_reason("JWT-SVID", e.to_string()))?;
        Ok((token, claims.exp))
    }

    /// Every slot, oldest first: retired, active, prepared.
    fn all_slots(&self) -> impl Iterator<Item = &CaSlot> {
        self.retired
            .iter()
            .chain(std::iter::once(&self.active))
            .chain(self.prepared.iter())
    }

    fn schedule<T>(&self, f: impl FnOnce(&Schedule<'_>) -> T) -> T {
        let retired: Vec<Window> = self.retired.iter().map(window).collect();
        f(&Schedule {
            active: window(&self.active),
            prepared: self.prepared.as_ref().map(window),
            retired: &retired,
        })
    }
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("trust_domain", &self.cfg.trust_domain)
            .field("key_dir", &self.cfg.key_dir)
            .field(
                "upstream",
                &self
                    .upstream
                    .as_ref()
                    .map(|u| u.cert_path.display().to_string()),
            )
            .field("retired", &self.retired)
            .field("active", &self.active)
            .field("prepared", &self.prepared)
            .finish()
    }
}

fn window(slot: &CaSlot) -> Window {
    Window {
        not_before: slot.not_before,
        not_after: slot.not_after,
    }
}

/// The leaf's issuer name must be the CA's subject, byte for byte, or path
/// building in verifiers fails.
fn check_issuer_name(leaf: &[u8], ca_subject: &[u8]) -> Result<(), CaError> {
    let (_, cert) = X509Certificate::from_der(leaf).map_err(|e| CaError::BrokenChain {
        what: "X.509-SVID",
        problem: format!("does not parse ({e})"),
    })?;
    if cert.issuer().as_raw() != ca_subject {
        return Err(CaError::BrokenChain {
            what: "X.509-SVID",
            problem: "its issuer name differs from the CA's subject".into(),
        });
    }
    Ok(())
}

/// An X.509-SVID checked and planned by
/// [`CertificateAuthority::prepare_svid`], not yet signed.
#[derive(Clone, Debug)]
pub struct PreparedSvid {
    spiffe_id: lanyard_identity::SpiffeId,
    dns_names: Vec<String>,
    public_key: rcgen::SubjectPublicKeyInfo,
    serial: rcgen::SerialNumber,
    serial_hex: String,
    not_after: i64,
}

impl PreparedSvid {
    /// The serial the SVID will carry, lower-case hex as
    /// [`IssuedSvid::serial`] prints it.
    pub fn serial(&self) -> &str {
        &self.serial_hex
    }

    /// The notAfter it will carry (at most; a CA that expires sooner caps it).
    pub fn not_after(&self) -> i64 {
        self.not_after
    }

    /// The SPIFFE ID it certifies.
    pub fn spiffe_id(&self) -> &lanyard_identity::SpiffeId {
        &self.spiffe_id
    }
}
