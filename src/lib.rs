//! Lanyard: a SPIFFE workload-identity certificate authority.
//!
//! This facade re-exports the libraries; the daemons are the
//! `lanyard-server` and `lanyard-agent` binaries. See the README for the
//! quickstart and the operator guide.
//!
//! - [`identity`]: SPIFFE IDs, selectors, entries, serials, the X.509-SVID
//!   profile.
//! - [`ca`]: keys, CA rotation, SVID signing.
//! - [`jwt`]: JWT-SVIDs: JWS on ring, JWK Sets, claims.
//! - [`store`]: the `Datastore` trait and its sled backend (PostgreSQL is
//!   the crate `lanyard-store-postgres`, linked by the server).
//! - [`audit`]: the hash-chained audit log and its verification.
//! - [`server`]: the server library.
//! - [`agent`]: the agent library.
//! - [`mtls`]: rustls verifiers for SPIFFE mTLS.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use lanyard_agent as agent;
pub use lanyard_audit as audit;
pub use lanyard_ca as ca;
pub use lanyard_identity as identity;
pub use lanyard_jwt as jwt;
pub use lanyard_mtls as mtls;
pub use lanyard_server as server;
pub use lanyard_store as store;
