//! Lanyard's identity types: SPIFFE IDs and trust domains, selectors,
//! registration entries, and the X.509-SVID profile checker.
//!
//! Nothing here does I/O or async work; every type is plain data that the CA,
//! the store, the server and the agent share.
//!
//! ```
//! use lanyard_identity::{SpiffeId, Selector};
//! let id: SpiffeId = "spiffe://example.org/billing/api".parse().unwrap();
//! assert_eq!(id.trust_domain().as_str(), "example.org");
//! let s: Selector = "unix:uid:1000".parse().unwrap();
//! assert_eq!(s.to_string(), "unix:uid:1000");
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod accounts;
mod attestation;
mod entry;
mod error;
mod profile;
mod selector;
mod serial;
mod spiffe_id;
mod task;

pub use self::{
    attestation::{X509POP_CHALLENGE_CONTEXT, x509pop_challenge},
    entry::{Entry, EntryId, MAX_DNS_NAMES, MAX_HINT_LEN, MAX_SELECTORS, validate_dns_name},
    error::{IdError, IdKind, ProfileError, SelectorError, TaskBindingError},
    profile::{SvidSummary, check_signing_certificate, check_x509_svid},
    selector::{Selector, matches_all},
    serial::{MAX_SERIAL_BYTES, Serial, SerialError},
    spiffe_id::{SpiffeId, TrustDomain},
    task::{TASK_BINDING_OID, TASK_BINDING_OID_STR, TaskBinding},
};
