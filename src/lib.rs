//! Lanyard: a SPIFFE workload-identity certificate authority.
//!
//! This facade re-exports the libraries; the daemons are the
//! `lanyard-server` and `lanyard-agent` binaries. See the README for the
//! quickstart and the operator guide.
//!
//! - [`identity`]: SPIFFE IDs, selectors, entries, the X.509-SVID profile.
//! - [`ca`]: keys, CA rotation, SVID signing.
//! - [`store`]: the `Datastore` trait and its sled backend.
//! - [`server`]: the server library.
//! - [`mtls`]: rustls verifiers for SPIFFE mTLS.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use lanyard_ca as ca;
pub use lanyard_identity as identity;
pub use lanyard_mtls as mtls;
pub use lanyard_server as server;
pub use lanyard_store as store;
