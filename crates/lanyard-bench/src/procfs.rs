//! What the benchmarks read from `/proc/<pid>/status` and `stat`: a
//! process's resident memory (`VmRSS`), the CPU time it has used, and this
//! process's uid (the one the agent attests).

use std::time::Duration;

use anyhow::Context as _;

/// The value of `field` in a `/proc/<pid>/status` text (`Name:\tvalue`).
fn field<'a>(status: &'a str, name: &str) -> Option<&'a str> {
    status.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key == name).then_some(value.trim())
    })
}

/// `VmRSS` in bytes (the kernel reports it in kB, i.e. KiB).
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let value = field(status, "VmRSS")?;
    let kib = value.strip_suffix("kB")?.trim().parse::<u64>().ok()?;
    kib.checked_mul(1024)
}

/// The effective uid in a status text (`Uid:` lists real, effective, saved,
/// filesystem): the one SO_PEERCRED reports to the agent.
pub fn parse_effective_uid(status: &str) -> Option<u32> {
    field(status, "Uid")?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The resident memory of process `pid`, in bytes.
pub fn vm_rss(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_vm_rss(&status).with_context(|| format!("no VmRSS line in {path}"))
}

/// User plus system clock ticks in a `/proc/<pid>/stat` text (fields 14
/// and 15, counted after the command name, which may hold spaces and
/// parentheses).
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let (_, after) = stat.rsplit_once(')')?;
    let mut fields = after.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    utime.checked_add(stime)
}

/// The CPU time, user plus system over all its threads, process `pid`
/// has used so far (to the kernel's clock tick, usually 10 ms).
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let ticks = parse_cpu_ticks(&stat).with_context(|| format!("no CPU times in {path}"))?;
    let per_second = rustix::param::clock_ticks_per_second().max(1);
    Ok(Duration::from_secs_f64(ticks as f64 / per_second as f64))
}

/// This process's effective uid.
pub fn own_uid() -> anyhow::Result<u32> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    parse_effective_uid(&status).context("no Uid line in /proc/self/status")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tlanyard-agent\nUmask:\t0022\nState:\tS (sleeping)\n\
        Uid:\t1000\t1001\t1001\t1001\nGid:\t1000\t1000\t1000\t1000\n\
        VmPeak:\t  123456 kB\nVmHWM:\t   20480 kB\nVmRSS:\t   12345 kB\nRssAnon:\t    8000 kB\n";

    #[test]
    fn reads_cpu_ticks_after_a_command_name_with_spaces() {
        let stat = "4242 (tokio (rt) 1) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 75 0 0 20 0 9 0 123456 1000000 300";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
        assert_eq!(parse_cpu_ticks("4242 (x) S 1"), None);
        let own = cpu_time(std::process::id()).unwrap();
        assert!(own < Duration::from_secs(3600), "{own:?}");
    }

    #[test]
    fn reads_vm_rss_in_bytes() {
        assert_eq!(parse_vm_rss(STATUS), Some(12345 * 1024));
        // Not confused by VmHWM or RssAnon, and absent when missing.
        assert_eq!(parse_vm_rss("VmHWM:\t 1 kB\nRssAnon:\t 2 kB\n"), None);
        assert_eq!(parse_vm_rss("VmRSS:\t lots\n"), None);
        // A kernel thread has no VmRSS line at all.
        assert_eq!(parse_vm_rss("Name:\tkthreadd\n"), None);
    }

    #[test]
    fn reads_the_effective_uid() {
        assert_eq!(parse_effective_uid(STATUS), Some(1001));
        assert_eq!(parse_effective_uid("Uid:\t0\t0\t0\t0\n"), Some(0));
        assert_eq!(parse_effective_uid("Uid:\t0\n"), None);
    }

    #[test]
    fn reads_this_process() {
        assert!(vm_rss(std::process::id()).unwrap() > 0);
        own_uid().unwrap();
    }
}
