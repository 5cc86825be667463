//! Process hardening that `lanyard-server` and `lanyard-agent` apply first
//! thing in `main`: both hold private keys (the CA's, the agent's SVID key,
//! workloads' SVID keys), which must not end up in a core file or be read
//! through `ptrace` or `/proc/PID/mem` by another process of the same user.
//!
//! The daemons also add group and other to their umask at start
//! ([`restrict_umask`]), and create their directories with exact modes
//! ([`create_dir_exact`]), so that nothing they write is ever reachable with
//! the mode the umask they were started with would give.
//!
//! With the `signals` feature, `shutdown_signal` is what stops them.
//!
//! ```no_run
//! lanyard_hardening::make_non_dumpable().expect("hardening");
//! lanyard_hardening::restrict_umask();
//! ```
#![forbid(unsafe_code)]

mod dumpable;
mod files;
#[cfg(feature = "signals")]
mod signals;

pub use dumpable::{HardeningError, make_non_dumpable};
pub use files::{create_dir_exact, restrict_umask};
#[cfg(feature = "signals")]
pub use signals::shutdown_signal;
