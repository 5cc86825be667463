//! The open-file limit: 1,000 concurrent Workload API callers hold 1,000
//! sockets in the bench and 1,000 more in the agent, which inherits the
//! bench's limits when the bench spawns it.

use anyhow::bail;
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Raises the soft RLIMIT_NOFILE of this process (and so of the children it
/// spawns afterwards) to at least `wanted`, up to the hard limit. Returns
/// the soft limit now in force.
pub fn raise_open_files(wanted: u64) -> anyhow::Result<u64> {
    let current = getrlimit(Resource::Nofile);
    let soft = current.current.unwrap_or(u64::MAX);
    if soft >= wanted {
        return Ok(soft);
    }
    let hard = current.maximum.unwrap_or(u64::MAX);
    if hard < wanted {
        bail!(
            "the open-file limit is too low: {wanted} descriptors are needed but the hard \
             limit is {hard}; raise it (e.g. `ulimit -Hn {wanted}` as root) or run with fewer callers"
        );
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(wanted),
            maximum: current.maximum,
        },
    )
    .map_err(|e| anyhow::anyhow!("raising RLIMIT_NOFILE to {wanted}: {e}"))?;
    Ok(wanted)
}

/// Descriptors needed for `callers` concurrent connections, with headroom for
/// the runtime, the TLS listener, log files and pipes.
pub fn needed_for(callers: usize) -> u64 {
    u64::try_from(callers)
        .unwrap_or(u64::MAX)
        .saturating_mul(2)
        .saturating_add(1024)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn headroom_for_callers() {
        assert_eq!(needed_for(0), 1024);
        assert_eq!(needed_for(1000), 3024);
    }

    #[test]
    fn a_limit_already_high_enough_is_kept() {
        let soft = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
        assert_eq!(raise_open_files(16).unwrap(), soft);
    }
}
