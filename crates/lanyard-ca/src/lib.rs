//! CONTRACT for the helper building this crate (replace this file's contents
//! with the real crate; keep these public names and signatures so the server
//! compiles against them).
//!
//! ```text
//! pub struct CaConfig {
//!     pub trust_domain: TrustDomain,
//!     pub ca_ttl: Duration,                 // lifetime of each CA certificate
//!     pub key_dir: PathBuf,                 // CA key files live here, 0600, written atomically
//!     pub upstream: Option<UpstreamCa>,     // None: self-signed root
//! }
//! pub struct UpstreamCa { pub cert_path: PathBuf, pub key_path: PathBuf }   // PEM files
//!
//! /// Serializable record of the CA slots (certs, key file names, states); the server
//! /// persists it in the Datastore. Never contains key material.
//! #[derive(Clone, Debug, Serialize, Deserialize, PartialEq)] pub struct CaJournal { .. }
//!
//! pub struct CertificateAuthority { .. }     // Debug redacts keys
//! impl CertificateAuthority {
//!     /// Restores from the journal (loading keys from key_dir) or creates the first CA.
//!     /// A journal that names a key file that is missing/unreadable is an error (fail closed).
//!     pub fn load_or_create(cfg: CaConfig, journal: Option<CaJournal>, now: SystemTime) -> Result<Self, CaError>;
//!     pub fn journal(&self) -> CaJournal;
//!     pub fn trust_domain(&self) -> &TrustDomain;
//!     /// Trust anchors to publish: every self-signed CA still in the bundle (active, prepared,
//!     /// retired-but-unexpired), or the upstream root in upstream mode. DER, oldest first.
//!     pub fn trust_bundle(&self) -> Vec<CertificateDer<'static>>;
//!     /// Signs an X.509-SVID. Only the public key is taken from the CSR (after checking its
//!     /// signature; P-256 or P-384 ECDSA keys only). SPIFFE ID, DNS names and TTL come from the
//!     /// request; the TTL is capped to the active CA's remaining life; NotBefore backdated 30 s;
//!     /// random positive serial (>= 64 bits). The result passes lanyard_identity::check_x509_svid
//!     /// before it is returned.
//!     pub fn sign_x509_svid(&self, req: &SvidRequest<'_>, now: SystemTime) -> Result<IssuedSvid, CaError>;
//!     /// Rotation step, driven by the server's loop: at half the active CA's life prepare the next
//!     /// CA (published in the bundle at once); at 5/6 activate it; drop retired CAs once expired.
//!     pub fn rotate(&mut self, now: SystemTime) -> Result<Rotation, CaError>;
//!     /// When the next rotation step is due (pure function of the slots' validity).
//!     pub fn next_rotation_at(&self) -> SystemTime;
//! }
//! pub struct SvidRequest<'a> { pub csr_der: &'a [u8], pub spiffe_id: &'a SpiffeId,
//!                              pub dns_names: &'a [String], pub ttl: Duration }
//! #[derive(Clone, Debug)] pub struct IssuedSvid {
//!     pub spiffe_id: SpiffeId,
//!     pub cert_chain: Vec<CertificateDer<'static>>,   // leaf first, then intermediates (upstream mode)
//!     pub serial: String,                            // lower-case hex, as SvidSummary.serial
//!     pub not_before: i64, pub not_after: i64,       // unix seconds
//! }
//! #[derive(Clone, Copy, Debug, PartialEq, Eq)] pub enum Rotation { Unchanged, Prepared, Activated, Pruned }
//!
//! /// A freshly generated P-256 key for an SVID (workload, agent or server TLS). Debug redacts.
//! pub struct SvidKey { .. }
//! impl SvidKey {
//!     pub fn generate() -> Result<Self, CaError>;
//!     pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, CaError>;
//!     pub fn pkcs8_der(&self) -> Vec<u8>;                 // secret: never log
//!     pub fn pkcs8_pem(&self) -> String;                  // secret: never log
//!     pub fn csr_der(&self) -> Result<Vec<u8>, CaError>;  // CSR with an empty subject
//! }
//! /// Atomic, durable file write with the given mode whatever the umask: temp file in the same
//! /// directory (created with `mode`), write, fsync, rename, fsync the directory.
//! pub fn write_file_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CaError>;
//! #[non_exhaustive] pub enum CaError { .. }          // thiserror, every variant documented
//! ```
