//! Key material without CA powers, for everything that holds a key but does
//! not sign certificates: the agent (its own SVID key and its workloads'),
//! the server's TLS identity, and the CA crate beneath its signing keys.
//!
//! - [`SvidKey`]: an ECDSA key for an X.509-SVID: generated, loaded from
//!   PKCS#8, and a CSR for it. Its `Debug` never shows the key.
//! - [`pem_block`] and [`certificates_to_pem`]: the project's one PEM
//!   encoder.
//! - [`write_file_atomic`] and [`ensure_private_dir`]: durable writes that
//!   never leave a partial file or one readable wider than asked.
//!
//! ```
//! use lanyard_keys::{SvidKey, pem_block};
//! let key = SvidKey::generate().unwrap();
//! let csr = key.csr_der().unwrap();
//! assert!(pem_block("CERTIFICATE REQUEST", &csr).starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
//! assert_eq!(format!("{key:?}"), "SvidKey(<redacted>)");
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
mod fs;
mod pem;
mod svid_key;

pub use self::{
    error::KeyError,
    fs::{ensure_private_dir, write_file_atomic},
    pem::{certificates_to_pem, pem_block},
    svid_key::{SvidKey, accepted_svid_algorithm, generate_p256},
};
