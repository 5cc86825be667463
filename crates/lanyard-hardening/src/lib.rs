//! Process hardening that `lanyard-server` and `lanyard-agent` apply first
//! thing in `main`: both hold private keys (the CA's, the agent's SVID key,
//! workloads' SVID keys), which must not end up in a core file or be read
//! through `ptrace` or `/proc/PID/mem` by another process of the same user.
//!
//! ```no_run
//! lanyard_hardening::make_non_dumpable().expect("hardening");
//! ```
#![forbid(unsafe_code)]

mod dumpable;

pub use dumpable::{HardeningError, make_non_dumpable};
