//! Test helpers: other processes that call the Workload API socket.
//!
//! The test binary re-executes itself to get a caller it controls, so the
//! tests need no external tool: [`helper_process`] is an ordinary (empty)
//! test unless the environment asks it to play a caller.

use std::{
    env, fs,
    io::{self, BufRead, BufReader, Write},
    os::{
        fd::OwnedFd,
        unix::{net::UnixStream, process::CommandExt},
    },
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    time::{Duration, Instant},
};

use super::procfs;

const SOCKET_ENV: &str = "LANYARD_TEST_CALLER_SOCKET";
const MODE_ENV: &str = "LANYARD_TEST_CALLER_MODE";
const HELPER_TEST: &str = "attestor::test_support::helper_process";

/// What the caller process does once connected.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Caller {
    /// Exits at once.
    Exit,
    /// Waits for [`Helper::release`], then exits.
    WaitThenExit,
    /// Hands the socket to a child of its own (which keeps it open until the
    /// server closes it), waits for [`Helper::release`], then exits: the
    /// "connect, fork, parent exits" attack.
    HandOffThenExit,
    /// Waits for [`Helper::release`], then replaces itself with `cat`
    /// (which exits when the test closes its stdin).
    WaitThenExecCat,
    /// As [`WaitThenExecCat`](Self::WaitThenExecCat), but `cat` keeps the
    /// connection (as its stdout): the same process, holding the same
    /// socket, now running another binary.
    WaitThenExecCatKeeping,
}

impl Caller {
    fn name(self) -> &'static str {
        match self {
            Self::Exit => "exit",
            Self::WaitThenExit => "wait",
            Self::HandOffThenExit => "handoff",
            Self::WaitThenExecCat => "exec",
            Self::WaitThenExecCatKeeping => "exec-keep",
        }
    }
}

/// A running caller process.
pub(crate) struct Helper {
    pub(crate) child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Helper {
    /// Starts a caller of the socket at `socket` and waits until it has
    /// connected.
    pub(crate) fn connect(socket: &Path, mode: Caller) -> io::Result<Self> {
        let mut child = Command::new(env::current_exe()?)
            .args(["--exact", HELPER_TEST, "--nocapture", "--test-threads=1"])
            .env(SOCKET_ENV, socket)
            .env(MODE_ENV, mode.name())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take();
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("no stdout"))?;
        let mut helper = Self {
            child,
            stdin,
            stdout: BufReader::new(stdout),
        };
        helper.wait_for_line("connected")?;
        Ok(helper)
    }

    pub(crate) fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap_or(i32::MAX)
    }

    fn wait_for_line(&mut self, wanted: &str) -> io::Result<()> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.stdout.read_line(&mut line)? == 0 {
                return Err(io::Error::other(format!("caller ended before '{wanted}'")));
            }
            if line.trim() == wanted {
                return Ok(());
            }
        }
    }

    /// Lets a waiting caller go on.
    pub(crate) fn release(&mut self) -> io::Result<()> {
        match &mut self.stdin {
            Some(stdin) => stdin.write_all(b"go\n"),
            None => Err(io::Error::other("stdin already closed")),
        }
    }

    /// Closes the caller's stdin (ends `cat`).
    pub(crate) fn close_stdin(&mut self) {
        self.stdin = None;
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        self.stdin = None;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A cgroup made for one test under the root of a cgroup hierarchy (the
/// unified one if mounted, else the first v1 one), removed on drop once the
/// processes moved into it are gone. Needs root, as CI runs.
pub(crate) struct ScratchCgroup {
    dir: PathBuf,
    /// The cgroup path as `/proc/<pid>/cgroup` shows it.
    pub(crate) path: String,
    /// Whether it is in the unified (v2) hierarchy.
    pub(crate) unified: bool,
}

impl ScratchCgroup {
    pub(crate) fn new(name: &str) -> io::Result<Self> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
        // A mount of a v1 hierarchy's root: "id parent dev / mount-point …
        // - cgroup …".
        let v1_root = || {
            mountinfo.lines().find_map(|line| {
                let (fields, fs) = line.split_once(" - ")?;
                let mut fields = fields.split(' ').skip(3);
                let root = fields.next()? == "/" && fs.starts_with("cgroup ");
                root.then(|| PathBuf::from(fields.next().unwrap_or_default()))
            })
        };
        let (root, unified) = match super::cgroup_v2::cgroup2_root_mount(&mountinfo) {
            Some(mount) => (mount, true),
            None => (
                v1_root().ok_or_else(|| io::Error::other("no cgroup filesystem is mounted"))?,
                false,
            ),
        };
        let path = format!("/{name}-{}", std::process::id());
        let dir = root.join(path.trim_start_matches('/'));
        fs::create_dir(&dir).map_err(|e| {
            io::Error::other(format!(
                "creating the cgroup {} (this test moves a process between cgroups: \
                 it needs root and a writable cgroup filesystem): {e}",
                dir.display()
            ))
        })?;
        Ok(Self { dir, path, unified })
    }

    /// Moves process `pid` into this cgroup.
    pub(crate) fn enter(&self, pid: i32) -> io::Result<()> {
        fs::write(self.dir.join("cgroup.procs"), pid.to_string())
    }
}

impl Drop for ScratchCgroup {
    fn drop(&mut self) {
        if wait_until(|| fs::remove_dir(&self.dir).is_ok()).is_err() {
            eprintln!("could not remove the test cgroup {}", self.dir.display());
        }
    }
}

/// Waits until `pid` is a zombie: exited, not yet reaped.
pub(crate) fn wait_for_zombie(pid: i32) -> io::Result<()> {
    wait_until(|| {
        procfs::read(pid, "stat")
            .ok()
            .and_then(|stat| procfs::parse_stat_state(&stat).ok())
            == Some('Z')
    })
}

/// Polls `done` for up to ten seconds.
pub(crate) fn wait_until(mut done: impl FnMut() -> bool) -> io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if done() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(io::Error::other("timed out"))
}

/// The caller side, run in a re-executed test binary. An empty test
/// otherwise.
#[test]
#[allow(clippy::unwrap_used, clippy::expect_used)]
fn helper_process() {
    let (Ok(socket), Ok(mode)) = (env::var(SOCKET_ENV), env::var(MODE_ENV)) else {
        return;
    };
    let wait_for_release = || {
        let mut line = String::new();
        io::stdin().lock().read_line(&mut line).unwrap();
    };
    if mode == "hold" {
        // The child of a hand-off: the socket is stdin; keep it until the
        // server closes the connection.
        let _ = io::copy(&mut io::stdin(), &mut io::sink());
        std::process::exit(0);
    }
    let stream = UnixStream::connect(socket).unwrap();
    match mode.as_str() {
        "exit" => announce(),
        "wait" => {
            announce();
            wait_for_release();
        }
        "handoff" => {
            #[expect(
                clippy::zombie_processes,
                reason = "this process exits next; the holder is reparented and reaped"
            )]
            let _holder = Command::new(env::current_exe().unwrap())
                .args(["--exact", HELPER_TEST, "--nocapture", "--test-threads=1"])
                .env(MODE_ENV, "hold")
                .env(SOCKET_ENV, "-")
                .stdin(Stdio::from(OwnedFd::from(stream)))
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            announce();
            wait_for_release();
        }
        "exec" => {
            announce();
            wait_for_release();
            let error = Command::new("cat").stdout(Stdio::null()).exec();
            panic!("exec cat: {error}");
        }
        "exec-keep" => {
            announce();
            wait_for_release();
            let error = Command::new("cat")
                .stdout(Stdio::from(OwnedFd::from(stream)))
                .exec();
            panic!("exec cat: {error}");
        }
        other => panic!("unknown caller mode {other}"),
    }
    std::process::exit(0);
}

fn announce() {
    let mut stdout = io::stdout().lock();
    let _ = stdout.write_all(b"\nconnected\n");
    let _ = stdout.flush();
}
