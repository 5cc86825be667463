//! `prctl(PR_SET_DUMPABLE, 0)`.

use rustix::process::{DumpableBehavior, dumpable_behavior, set_dumpable_behavior};

/// Why the process could not be hardened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HardeningError {
    /// `prctl(PR_SET_DUMPABLE, 0)` failed, or the kernel reports the process
    /// still dumpable afterwards.
    #[error(
        "cannot make the process non-dumpable (prctl PR_SET_DUMPABLE 0): {problem}; \
         refusing to hold private keys in a process that can be core-dumped or ptraced"
    )]
    Dumpable {
        /// What the kernel said.
        problem: String,
    },
}

/// Marks the process non-dumpable: no core dump on a crash, no `ptrace`
/// attach and no `/proc/PID/mem` (or `environ`, `maps`, ...) for anyone
/// but root; the kernel makes the process's `/proc/PID` files root-owned.
/// Children that `exec` get their own setting back, so this does not leak
/// into workloads. Checked by reading the attribute back.
pub fn make_non_dumpable() -> Result<(), HardeningError> {
    set_dumpable_behavior(DumpableBehavior::NotDumpable).map_err(|e| HardeningError::Dumpable {
        problem: e.to_string(),
    })?;
    match dumpable_behavior() {
        Ok(DumpableBehavior::NotDumpable) => Ok(()),
        Ok(other) => Err(HardeningError::Dumpable {
            problem: format!("still {other:?} after the call"),
        }),
        Err(e) => Err(HardeningError::Dumpable {
            problem: format!("cannot read the attribute back: {e}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_process_reads_back_as_non_dumpable() {
        make_non_dumpable().unwrap();
        assert_eq!(dumpable_behavior().unwrap(), DumpableBehavior::NotDumpable);
    }
}
