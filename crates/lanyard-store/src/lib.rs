//! CONTRACT for the helper building this crate (replace this file's contents
//! with the real crate; keep these public names and signatures so the server
//! compiles against them). All times are unix seconds (i64).
//!
//! ```text
//! #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
//! pub struct AgentRecord {
//!     pub spiffe_id: SpiffeId, pub attestation_type: String,   // "join_token" | "x509pop"
//!     pub selectors: Vec<Selector>,
//!     pub serial: String,          // current agent SVID serial (hex)
//!     pub expires_at: i64, pub attested_at: i64,
//!     pub banned: bool, pub evicted: bool,
//! }
//! #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
//! pub struct JoinTokenRecord {
//!     pub token_id: String,        // hex SHA-256 of the secret token, first 32 chars; the secret is never stored
//!     pub expires_at: i64, pub created_at: i64,
//!     pub spiffe_id: Option<SpiffeId>,   // agent ID override
//! }
//! #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
//! pub struct SvidRecord {
//!     pub serial: String, pub spiffe_id: SpiffeId,
//!     pub entry_id: Option<EntryId>,     // None for agent / server SVIDs
//!     pub agent_id: Option<SpiffeId>,    // the agent it was issued through (None for the server's own)
//!     pub issued_at: i64, pub not_after: i64,
//! }
//! #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
//! pub struct Revocation { pub serial: String, pub revoked_at: i64, pub not_after: i64, pub reason: String }
//!
//! /// Every write is flushed (fsync) before the method returns.
//! pub trait Datastore: Send + Sync + 'static {
//!     fn create_entry(&self, entry: &Entry) -> Result<(), StoreError>;  // AlreadyExists on same id, or same (spiffe_id, parent_id, selector set)
//!     fn get_entry(&self, id: &EntryId) -> Result<Option<Entry>, StoreError>;
//!     fn update_entry(&self, entry: &Entry) -> Result<(), StoreError>;  // NotFound if absent; same uniqueness rule
//!     fn delete_entry(&self, id: &EntryId) -> Result<Entry, StoreError>; // NotFound if absent
//!     fn list_entries(&self) -> Result<Vec<Entry>, StoreError>;          // ordered by created_at then id
//!     fn put_agent(&self, agent: &AgentRecord) -> Result<(), StoreError>;
//!     fn get_agent(&self, id: &SpiffeId) -> Result<Option<AgentRecord>, StoreError>;
//!     fn list_agents(&self) -> Result<Vec<AgentRecord>, StoreError>;
//!     fn create_join_token(&self, token: &JoinTokenRecord) -> Result<(), StoreError>;
//!     /// Atomic and single use: of any number of concurrent callers exactly one gets Ok.
//!     /// Unknown -> NotFound; already consumed -> TokenUsed; expired -> TokenExpired.
//!     fn consume_join_token(&self, token_id: &str, now: i64) -> Result<JoinTokenRecord, StoreError>;
//!     fn record_svid(&self, svid: &SvidRecord) -> Result<(), StoreError>;
//!     fn get_svid(&self, serial: &str) -> Result<Option<SvidRecord>, StoreError>;
//!     fn list_svids(&self) -> Result<Vec<SvidRecord>, StoreError>;
//!     fn prune_svids(&self, expired_before: i64) -> Result<usize, StoreError>;
//!     fn put_revocation(&self, revocation: &Revocation) -> Result<(), StoreError>;
//!     fn list_revocations(&self) -> Result<Vec<Revocation>, StoreError>;
//!     fn prune_revocations(&self, expired_before: i64) -> Result<usize, StoreError>;
//!     fn next_crl_number(&self) -> Result<u64, StoreError>;   // persisted, strictly increasing from 1
//!     fn get_ca_journal(&self) -> Result<Option<Vec<u8>>, StoreError>;
//!     fn put_ca_journal(&self, journal: &[u8]) -> Result<(), StoreError>;
//! }
//! pub struct SledStore { .. }
//! impl SledStore { pub fn open(dir: &Path) -> Result<Self, StoreError>; }  // fail closed
//! impl Datastore for SledStore
//! pub mod conformance { pub fn run_all(make: &dyn Fn() -> Box<dyn Datastore>); }  // one fn per property
//! #[non_exhaustive] pub enum StoreError { NotFound { kind: &'static str, key: String },
//!     AlreadyExists { kind: &'static str, key: String }, TokenUsed, TokenExpired { expired_at: i64 },
//!     Corrupt { what: String }, Backend(..), .. }
//! ```
