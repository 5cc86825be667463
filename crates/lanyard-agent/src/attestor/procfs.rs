//! Parsers for the `/proc/<pid>` files attestation reads.
//!
//! The parsers are pure functions of the file text so that they can be tested
//! on fixtures; the few readers below them only add the path and the I/O.

use std::{
    fs, io,
    os::unix::fs::{FileExt as _, MetadataExt},
    path::PathBuf,
};

/// Why a `/proc` file could not be parsed. The text is the error message.
pub(crate) type ParseError = &'static str;

/// What `/proc/<pid>/exe` shows after its target was unlinked or replaced.
const DELETED_SUFFIX: &str = " (deleted)";

/// The identity of a binary on disk: a file is the same file exactly when
/// its device and inode are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FileId {
    pub(crate) dev: u64,
    pub(crate) ino: u64,
}

impl FileId {
    pub(crate) fn of(metadata: &fs::Metadata) -> Self {
        Self {
            dev: metadata.dev(),
            ino: metadata.ino(),
        }
    }
}

impl std::fmt::Display for FileId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.dev, self.ino)
    }
}

/// The process start time, field 22 of `/proc/<pid>/stat`, in clock ticks
/// after boot. Together with the pid it names one process for the lifetime
/// of the machine.
///
/// The second field (`comm`, in parentheses) is chosen by the process and may
/// hold spaces and parentheses, so the fields after it are counted from the
/// *last* `)` of the line.
pub(crate) fn parse_stat_start_time(stat: &str) -> Result<u64, ParseError> {
    let (_, rest) = stat
        .rsplit_once(')')
        .ok_or("no ')' closing the command name")?;
    // `rest` starts at field 3 (state); field 22 is the 20th field of it.
    rest.split_ascii_whitespace()
        .nth(19)
        .ok_or("fewer than 22 fields")?
        .parse()
        .map_err(|_| "start time (field 22) is not a number")
}

/// The process state, field 3 of `/proc/<pid>/stat` (`R`, `S`, `Z` ...).
#[cfg(test)]
pub(crate) fn parse_stat_state(stat: &str) -> Result<char, ParseError> {
    let (_, rest) = stat
        .rsplit_once(')')
        .ok_or("no ')' closing the command name")?;
    rest.split_ascii_whitespace()
        .next()
        .and_then(|state| state.chars().next())
        .ok_or("no state field")
}

/// Effective uid and gid from `/proc/<pid>/status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EffectiveIds {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// The effective uid and gid of `/proc/<pid>/status`: the second number of
/// its `Uid:` and `Gid:` lines (real, effective, saved, filesystem). The
/// effective ids are the ones `SO_PEERCRED` reports and the ones access
/// checks use.
pub(crate) fn parse_status_ids(status: &str) -> Result<EffectiveIds, ParseError> {
    fn effective(line: &str) -> Result<u32, ParseError> {
        line.split_ascii_whitespace()
            .nth(1)
            .ok_or("a Uid:/Gid: line has fewer than two ids")?
            .parse()
            .map_err(|_| "a Uid:/Gid: id is not a number")
    }
    let mut uid = None;
    let mut gid = None;
    for line in status.lines() {
        if let Some(ids) = line.strip_prefix("Uid:") {
            uid = Some(effective(ids)?);
        } else if let Some(ids) = line.strip_prefix("Gid:") {
            gid = Some(effective(ids)?);
        }
    }
    Ok(EffectiveIds {
        uid: uid.ok_or("no Uid: line")?,
        gid: gid.ok_or("no Gid: line")?,
    })
}

/// The cgroup paths of `/proc/<pid>/cgroup`, in file order, without
/// duplicates.
///
/// Each line is `hierarchy-id:controllers:path`; cgroup v2 has the single
/// line `0::/path`, v1 one line per hierarchy, often with the same path. The
/// path may itself contain `:`, so only the first two are separators. Lines
/// without a path are skipped.
pub(crate) fn parse_cgroup_paths(cgroup: &str) -> Vec<String> {
    let mut paths: Vec<String> = Vec::new();
    for line in cgroup.lines() {
        let Some(path) = line.splitn(3, ':').nth(2) else {
            continue;
        };
        if path.is_empty() || paths.iter().any(|seen| seen == path) {
            continue;
        }
        paths.push(path.to_owned());
    }
    paths
}

/// Whether a `/proc/<pid>/exe` link target says that the binary was unlinked
/// (deleted or replaced by a new file under the same name).
///
/// A binary whose own name ends in ` (deleted)` is refused too: the two
/// cannot be told apart from the link, and refusing is the safe side.
pub(crate) fn exe_is_deleted(target: &str) -> bool {
    target.ends_with(DELETED_SUFFIX)
}

// === readers ===

/// `/proc/<pid>/<name>`.
pub(crate) fn proc_path(pid: i32, name: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/{name}"))
}

/// Reads `/proc/<pid>/<name>` as text. These files are small and report
/// a size of 0, so the read starts with a page-sized buffer rather than
/// asking for the size (`fstat`, `lseek`) and growing from a few bytes.
/// The files read here (`status`, `stat`, `cgroup`) are each generated
/// whole by one `show` call of the kernel, which a read returns in full
/// when the buffer is larger: a short first read is the whole file, and
/// only a full buffer asks for more. (A file of many records, like `maps`,
/// may return short reads before its end: not for this function.)
pub(crate) fn read(pid: i32, name: &str) -> io::Result<String> {
    read_small(&proc_path(pid, name))
}

/// The text of the file at `path`, read as [`read`] does.
fn read_small(path: &std::path::Path) -> io::Result<String> {
    read_whole(&fs::File::open(path)?)
}

/// `/proc/<pid>/<name>`, opened to be read again with [`read_whole`] and
/// [`reads_as`]. An open `/proc/<pid>` file stays bound to its process:
/// once that process is reaped it reads as an error, never as the file of a
/// later process given the same pid.
pub(crate) fn open(pid: i32, name: &str) -> io::Result<fs::File> {
    fs::File::open(proc_path(pid, name))
}

/// The whole text of `file`, read from its start (`pread` at offset 0,
/// which makes the kernel generate a `/proc` file afresh), as [`read`]
/// reads.
pub(crate) fn read_whole(file: &fs::File) -> io::Result<String> {
    let mut text = vec![0_u8; PROC_READ_SIZE];
    let mut len = 0;
    loop {
        let offset = u64::try_from(len).unwrap_or(u64::MAX);
        match file.read_at(text.get_mut(len..).unwrap_or_default(), offset) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        if len < text.len() {
            break;
        }
        text.resize(len * 2, 0);
    }
    text.truncate(len);
    String::from_utf8(text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Whether `file`, read afresh from its start, is exactly `expected`. A
/// text that fits one page is compared in place, with no allocation; any
/// read error counts as a difference.
pub(crate) fn reads_as(file: &fs::File, expected: &str) -> bool {
    let mut page = [0_u8; PROC_READ_SIZE];
    match file.read_at(&mut page, 0) {
        Ok(n) if n < page.len() => page.get(..n) == Some(expected.as_bytes()),
        Ok(_) => read_whole(file).is_ok_and(|text| text == expected),
        Err(_) => false,
    }
}

/// What [`read`] first asks for: `/proc/<pid>/status` is under 2 KiB.
const PROC_READ_SIZE: usize = 4096;

/// Device and inode of the binary `/proc/<pid>/exe` points to, without
/// resolving its path by name (the kernel follows the link to the very file
/// that was executed).
pub(crate) fn exe_id(pid: i32) -> io::Result<FileId> {
    fs::metadata(proc_path(pid, "exe")).map(|metadata| FileId::of(&metadata))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// A real line (`cat /proc/self/stat`), start time 8361245.
    const STAT: &str = "4242 (cat) R 4100 4242 4100 34816 4242 4194304 104 0 0 0 0 0 0 0 20 0 1 0 \
                        8361245 5636096 231 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 3 0 \
                        0 0 0 0 0 0 0 0 0 0\n";

    #[test]
    fn reads_whole_files_past_the_first_buffer() {
        let dir = tempfile::tempdir().unwrap();
        for size in [
            0,
            1,
            PROC_READ_SIZE,
            PROC_READ_SIZE + 1,
            3 * PROC_READ_SIZE + 7,
        ] {
            let path = dir.path().join(format!("f{size}"));
            let text: String = (0..size)
                .map(|i| char::from(b'a' + (i % 26) as u8))
                .collect();
            fs::write(&path, &text).unwrap();
            assert_eq!(read_small(&path).unwrap(), text, "{size} bytes");
        }
        let status = read(i32::try_from(std::process::id()).unwrap(), "status").unwrap();
        assert!(status.contains("\nUid:\t"), "{status}");
        fs::write(dir.path().join("bad"), [0xff, 0xfe]).unwrap();
        assert_eq!(
            read_small(&dir.path().join("bad")).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }

    #[test]
    fn a_held_file_reads_afresh_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, "first\n").unwrap();
        let file = fs::File::open(&path).unwrap();
        assert!(reads_as(&file, "first\n"));
        assert!(!reads_as(&file, "first"));
        let long = "x".repeat(2 * PROC_READ_SIZE + 3);
        fs::write(&path, &long).unwrap();
        assert!(!reads_as(&file, "first\n"));
        assert!(reads_as(&file, &long));
        assert_eq!(read_whole(&file).unwrap(), long);
        // A page exactly: the first read fills it, so it is read on.
        let page = "y".repeat(PROC_READ_SIZE);
        fs::write(&path, &page).unwrap();
        assert!(reads_as(&file, &page));
        assert!(!reads_as(&file, &page[1..]));
    }

    #[test]
    fn a_held_proc_file_fails_once_its_process_is_reaped() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        let file = open(pid, "cgroup").unwrap();
        let text = read_whole(&file).unwrap();
        assert!(text.contains("::"), "{text}");
        assert!(reads_as(&file, &text));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(read_whole(&file).is_err());
        assert!(!reads_as(&file, &text));
    }

    #[test]
    fn stat_start_time() {
        assert_eq!(parse_stat_start_time(STAT), Ok(8_361_245));
        assert_eq!(parse_stat_state(STAT), Ok('R'));
    }

    #[test]
    fn stat_comm_with_spaces_and_parentheses() {
        // A process may name itself anything, including text that looks like
        // the rest of the line: only the last ')' ends the name.
        let stat = STAT.replace(
            "(cat)",
            "(a) (b) 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 ) x)",
        );
        assert_eq!(parse_stat_start_time(&stat), Ok(8_361_245));
        let stat = STAT.replace("(cat)", "() (Z)");
        assert_eq!(parse_stat_start_time(&stat), Ok(8_361_245));
        assert_eq!(parse_stat_state(&stat), Ok('R'));
    }

    #[test]
    fn stat_malformed() {
        assert!(parse_stat_start_time("").is_err());
        assert!(parse_stat_start_time("4242 cat R 1 2 3").is_err());
        assert!(parse_stat_start_time("4242 (cat) R 1 2 3").is_err());
        let bad = STAT.replace("8361245", "-1");
        assert!(parse_stat_start_time(&bad).is_err());
    }

    const STATUS: &str = "Name:\tsleep\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t77\n\
                          Pid:\t77\nPPid:\t1\nUid:\t1000\t1001\t1002\t1003\n\
                          Gid:\t2000\t2001\t2002\t2003\nFDSize:\t64\nGroups:\t4 24 27\n";

    #[test]
    fn status_effective_ids() {
        assert_eq!(
            parse_status_ids(STATUS),
            Ok(EffectiveIds {
                uid: 1001,
                gid: 2001
            })
        );
    }

    #[test]
    fn status_malformed() {
        assert!(parse_status_ids("Name:\tx\n").is_err());
        assert!(parse_status_ids("Uid:\t0\t0\t0\t0\n").is_err());
        assert!(parse_status_ids("Uid:\t0\nGid:\t0\t0\n").is_err());
        assert!(parse_status_ids("Uid:\t0\tx\t0\t0\nGid:\t0\t0\t0\t0\n").is_err());
    }

    #[test]
    fn cgroup_v2() {
        assert_eq!(
            parse_cgroup_paths("0::/system.slice/payments.service\n"),
            vec!["/system.slice/payments.service"]
        );
        assert_eq!(parse_cgroup_paths("0::/\n"), vec!["/"]);
    }

    #[test]
    fn cgroup_v1_deduplicated() {
        let v1 = "12:pids:/docker/abc\n\
                  11:cpu,cpuacct:/docker/abc\n\
                  10:memory:/docker/abc\n\
                  1:name=systemd:/system.slice/docker-abc.scope\n\
                  0::/system.slice/docker-abc.scope\n";
        assert_eq!(
            parse_cgroup_paths(v1),
            vec!["/docker/abc", "/system.slice/docker-abc.scope"]
        );
    }

    #[test]
    fn cgroup_path_with_colon_and_junk_lines() {
        assert_eq!(
            parse_cgroup_paths("garbage\n3:cpu:\n0::/a:b/c\n"),
            vec!["/a:b/c"]
        );
        assert!(parse_cgroup_paths("").is_empty());
    }

    #[test]
    fn deleted_exe() {
        assert!(exe_is_deleted("/usr/bin/payments (deleted)"));
        assert!(!exe_is_deleted("/usr/bin/payments"));
        assert!(!exe_is_deleted("/usr/bin/deleted"));
    }

    #[test]
    fn proc_paths() {
        assert_eq!(proc_path(42, "exe"), PathBuf::from("/proc/42/exe"));
    }
}
