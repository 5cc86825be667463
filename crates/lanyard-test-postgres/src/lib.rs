//! A throwaway PostgreSQL cluster for tests (and `lanyard-bench`): `initdb`
//! and `pg_ctl` in a temporary directory, listening only on a Unix socket in
//! that directory.
//!
//! [`shared`] starts one cluster per process on first use; each test
//! takes a database of its own with [`Cluster::create_database`]. The
//! cluster stops, and its directory is removed, when the test process ends
//! however it ends: a watchdog process reads a pipe that only the test
//! process holds open, and stops the server at end of file.
//!
//! PostgreSQL refuses to run as root. When the tests run as root (as CI
//! does), the cluster's directory is given to the unprivileged user
//! `nobody` and `initdb`, `pg_ctl` and the server run as that user.
//!
//! A machine without PostgreSQL fails the test with instructions; nothing is
//! skipped.
//!
//! ```no_run
//! let url = lanyard_test_postgres::shared().create_database();
//! // connect to `url` (a `postgresql://` URL naming the socket directory)
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

/// The database superuser `initdb` creates; tests connect as it.
pub const SUPERUSER: &str = "lanyard";
/// The port number, which here only names the socket file in the cluster's
/// private directory.
const PORT: u16 = 5432;

/// What to tell a machine without PostgreSQL.
const INSTALL_HINT: &str = "PostgreSQL (initdb and pg_ctl) was not found on PATH, in \
    /usr/lib/postgresql/*/bin or in /usr/local/bin. The PostgreSQL tests start a real \
    server: install it with `apt-get install -y postgresql` (Debian, Ubuntu; `.ci/run` \
    does this), or put the bin directory of a PostgreSQL 15 or later on PATH.";

/// A running cluster in a temporary directory.
#[derive(Debug)]
pub struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    next_db: AtomicUsize,
    /// Held open for the life of the process; the watchdog stops the
    /// cluster when it closes.
    _watchdog: Mutex<ChildStdin>,
}

/// The cluster of this test process, started on first use.
///
/// # Panics
///
/// If PostgreSQL is not installed (with instructions) or does not start.
pub fn shared() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| Cluster::start().unwrap_or_else(|e| panic!("{e}")))
}

impl Cluster {
    /// Starts a new cluster in a new temporary directory, with `fsync`
    /// off: tests check behaviour, not durability. Dropping it stops the
    /// server and removes the directory (in the background).
    pub fn start() -> Result<Self, String> {
        Self::start_with(false)
    }

    /// [`start`](Cluster::start), but durable as a production server is
    /// (`fsync`, `synchronous_commit` and `full_page_writes` on), for
    /// measurements.
    pub fn start_durable() -> Result<Self, String> {
        Self::start_with(true)
    }

    fn start_with(durable: bool) -> Result<Self, String> {
        let bin = find_bin_dir()?;
        let owner = unprivileged_owner()?;
        let dir = tempfile::Builder::new()
            .prefix("lanyard-pg-")
            .tempdir()
            .map_err(|e| format!("cannot create a temporary directory: {e}"))?
            .keep();
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .map_err(|e| format!("cannot give {} to uid {uid}: {e}", dir.display()))?;
        }
        let data = dir.join("data");
        let watchdog = as_owner(Command::new("sh"), owner)
            .arg("-c")
            .arg(
                r#"cat >/dev/null; "$1" -D "$2" stop -m immediate -w >/dev/null 2>&1; rm -rf "$3""#,
            )
            .arg("lanyard-pg-watchdog")
            .arg(bin.join("pg_ctl"))
            .arg(&data)
            .arg(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start the cluster's watchdog: {e}"))?
            .stdin
            .take()
            .ok_or("the watchdog has no stdin")?;

        run(
            as_owner(Command::new(bin.join("initdb")), owner)
                .arg("-D")
                .arg(&data)
                .args([
                    "-U",
                    SUPERUSER,
                    "--auth=trust",
                    "--no-sync",
                    "--locale=C",
                    "-E",
                    "UTF8",
                ]),
            "initdb",
        )?;
        let durability = if durable {
            ""
        } else {
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        };
        let options = format!(
            "-c listen_addresses='' -k {} -p {PORT} -c max_connections=300 {durability}",
            dir.display()
        );
        run(
            as_owner(Command::new(bin.join("pg_ctl")), owner)
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(dir.join("server.log"))
                .args(["-w", "-t", "60", "-o", &options, "start"]),
            "pg_ctl start",
        )?;
        Ok(Self {
            bin,
            dir,
            next_db: AtomicUsize::new(0),
            _watchdog: Mutex::new(watchdog),
        })
    }

    /// The directory holding the server's socket.
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// The connection URL of database `name`, as the superuser over the socket.
    pub fn url(&self, name: &str) -> String {
        format!(
            "postgresql:///{name}?host={}&port={PORT}&user={SUPERUSER}",
            self.dir.display()
        )
    }

    /// Creates a new, empty database and returns its URL.
    ///
    /// # Panics
    ///
    /// If the server refuses.
    pub fn create_database(&self) -> String {
        let name = format!(
            "lanyard_test_{}",
            self.next_db.fetch_add(1, Ordering::Relaxed)
        );
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    /// Runs SQL in database `db` with `psql` and returns what it printed
    /// (unaligned, tuples only).
    ///
    /// # Panics
    ///
    /// If `psql` fails; the message holds its output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let psql = [self.bin.join("psql"), PathBuf::from("psql")]
            .into_iter()
            .find(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from("psql"));
        let output = Command::new(psql)
            .arg("-h")
            .arg(&self.dir)
            .args(["-p", &PORT.to_string(), "-U", SUPERUSER, "-d", db])
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .unwrap_or_else(|e| panic!("cannot run psql: {e}"));
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "psql -d {db} -c {sql:?} failed: {}{stdout}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }
}

/// The directory holding `initdb` and `pg_ctl`: on PATH, else the newest
/// `/usr/lib/postgresql/*/bin`, else `/usr/local/bin`.
fn find_bin_dir() -> Result<PathBuf, String> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    // Newest major version first.
    debian.sort_by_key(|p| {
        std::cmp::Reverse(
            p.parent()
                .and_then(|v| v.file_name())
                .and_then(|v| v.to_str())
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(0),
        )
    });
    on_path
        .into_iter()
        .chain(debian)
        .chain([PathBuf::from("/usr/local/bin")])
        .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
        .map(|dir| {
            std::fs::canonicalize(dir.join("initdb"))
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf))
                .filter(|d| d.join("pg_ctl").is_file())
                .unwrap_or(dir)
        })
        .ok_or_else(|| INSTALL_HINT.to_owned())
}

/// `Some((uid, gid))` of `nobody` when this process is root (PostgreSQL
/// refuses to run as root), `None` otherwise.
fn unprivileged_owner() -> Result<Option<(u32, u32)>, String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("cannot read /proc/self/status: {e}"))?;
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|id| id.parse::<u32>().ok())
        .ok_or("cannot tell the effective uid from /proc/self/status")?;
    if euid != 0 {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let nobody = passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        match fields.as_slice() {
            ["nobody", _, uid, gid, ..] => Some((uid.parse().ok()?, gid.parse().ok()?)),
            _ => None,
        }
    });
    Ok(Some(nobody.unwrap_or((65534, 65534))))
}

fn as_owner(mut command: Command, owner: Option<(u32, u32)>) -> Command {
    if let Some((uid, gid)) = owner {
        // std drops root's supplementary groups along with the uid.
        command.uid(uid).gid(gid).current_dir("/");
    }
    command
}

fn run(command: &mut Command, what: &str) -> Result<(), String> {
    let output = command
        .output()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&output.stdout)
        ))
    }
}
