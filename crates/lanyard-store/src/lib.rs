//! Lanyard's storage: the [`Datastore`] trait the server is written against,
//! [`SledStore`], the embedded sled backend used by default, the [`rules`]
//! every backend decides by, and the `conformance` suite every backend
//! must pass (the PostgreSQL backend, for several servers, is the crate
//! `lanyard-store-postgres`). The suite is behind the `conformance` feature.
//!
//! Everything the server must not forget lives here: registration entries,
//! attested agents, one-time join tokens, every issued SVID's serial,
//! revocations, the CRL number and the CA's rotation journal. Every write is
//! durable (fsynced) before the method returns, a join token can be consumed
//! exactly once, and a damaged or foreign store is refused with an error
//! rather than silently replaced by an empty one. All times are seconds since
//! the Unix epoch (`i64`).
//!
//! ```no_run
//! use std::path::Path;
//! use std::sync::Arc;
//! use lanyard_store::{Datastore, JoinTokenRecord, SledStore, StoreError};
//!
//! # fn main() -> Result<(), StoreError> {
//! let store: Arc<dyn Datastore> = Arc::new(SledStore::open(Path::new("/var/lib/lanyard/store"))?);
//! store.create_join_token(&JoinTokenRecord {
//!     token_id: "3f2a9c".into(),
//!     expires_at: 1_700_000_600,
//!     created_at: 1_700_000_000,
//!     spiffe_id: None,
//! })?;
//! let token = store.consume_join_token("3f2a9c", 1_700_000_100)?;
//! assert!(matches!(
//!     store.consume_join_token(&token.token_id, 1_700_000_101),
//!     Err(StoreError::TokenUsed)
//! ));
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "conformance")]
pub mod conformance;
mod datastore;
mod error;
mod issuance;
mod records;
pub mod rules;
mod seal;
mod sled_atomic;
mod sled_codec;
mod sled_open;
mod sled_store;

pub use self::{
    datastore::Datastore,
    error::StoreError,
    issuance::{AgentStanding, IssueBatch, IssueItem, Issued, Refusal, Sweep},
    records::{
        AgentRecord, JoinTokenRecord, Records, Revocation, SvidRecord, TaskRecord, TaskState,
        TaskTransition,
    },
    sled_open::VerifyCounts,
    sled_store::{FORMAT_VERSION, SledStore},
};
