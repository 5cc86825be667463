//! Lanyard's certificate authority: CA keys, the CA life cycle and its
//! rotation, and X.509-SVID signing from CSRs.
//!
//! This is the only Lanyard crate that touches signing keys. It knows nothing
//! of gRPC or storage: the server persists the [`CaJournal`] it hands out and
//! drives [`CertificateAuthority::rotate`] from its own loop. The CA never
//! reads the clock; every operation takes `now`, so the whole life cycle can
//! be tested with synthetic times.
//!
//! - **Self-signed mode** (default): each CA generation is a self-signed
//!   root (`O=Lanyard, CN=Lanyard CA <trust domain>`, URI SAN
//!   `spiffe://<trust domain>`), and the trust bundle lists every generation
//!   still valid.
//! - **Upstream mode**: an existing CA certificate and key are loaded from
//!   disk ([`UpstreamCa`]) and Lanyard's CA is their intermediate; the bundle
//!   is the upstream certificate and SVID chains are `[leaf, intermediate]`.
//!
//! Rotation follows SPIRE: at half the active CA's life the next CA is
//! prepared and published in the bundle, at five sixths it is activated, and
//! retired CAs leave the bundle when they expire. CA keys are ECDSA P-256,
//! stored as PEM PKCS#8 files, mode 0600, written atomically
//! ([`write_file_atomic`]).
//!
//! ```no_run
//! use std::time::{Duration, SystemTime};
//! use lanyard_ca::{CaConfig, CertificateAuthority, SvidKey, SvidRequest};
//! use lanyard_identity::{SpiffeId, TrustDomain};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let td = TrustDomain::new("example.org")?;
//! let cfg = CaConfig {
//!     jwt_algorithm: Default::default(),
//!     trust_domain: td.clone(),
//!     ca_ttl: Duration::from_secs(24 * 3600),
//!     key_dir: "/var/lib/lanyard/server/keys".into(),
//!     upstream: None,
//! };
//! let now = SystemTime::now();
//! // First start: no journal yet. Persist `ca.journal()` and pass it back on restart.
//! let mut ca = CertificateAuthority::load_or_create(cfg, None, now)?;
//!
//! // A workload's key and CSR (normally made by the agent).
//! let key = SvidKey::generate()?;
//! let csr = key.csr_der()?;
//! let id = SpiffeId::from_parts(&td, "/billing/api")?;
//! let svid = ca.sign_x509_svid(
//!     &SvidRequest {
//!         csr_der: &csr,
//!         spiffe_id: &id,
//!         dns_names: &[],
//!         ttl: Duration::from_secs(3600),
//!     },
//!     now,
//! )?;
//! println!("issued serial {} until {}", svid.serial, svid.not_after);
//!
//! // The server's rotation loop: sleep until `next_rotation_at`, then step.
//! let rotation = ca.rotate(ca.next_rotation_at())?;
//! println!("{rotation:?}; bundle has {} CAs", ca.trust_bundle().len());
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod authority;
mod crl;
mod error;
mod journal;
mod jwt_key;
mod keys;
mod rotation;
mod sealed;
mod signing;
mod slot;
mod upstream;
mod validity;

pub use self::{
    authority::{CaConfig, CertificateAuthority, MIN_CA_TTL, PreparedSvid},
    crl::{RevocationReason, RevokedSerial},
    error::CaError,
    journal::CaJournal,
    keys::random_serial_hex,
    rotation::Rotation,
    sealed::{KeyEncryptionKey, SealedKey, seal_key_files, unseal_key_files},
    signing::{IssuedSvid, SvidRequest},
    slot::{CaSlotInfo, CaSlotState},
    upstream::UpstreamCa,
};
/// Key material the CA shares with key holders that are not CAs (the
/// agent, the server's TLS identity): re-exported for the CA's users.
pub use lanyard_keys::{SvidKey, certificates_to_pem, pem_block, write_file_atomic};
