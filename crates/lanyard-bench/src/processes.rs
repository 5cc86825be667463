//! The harness that runs real `lanyard-server` and `lanyard-agent`
//! processes for a benchmark: binaries from the bench's own target dir,
//! free loopback ports, private temporary directories and sockets, readiness
//! waits, and cleanup on drop (every process killed and reaped, every
//! directory removed), on success, on error and on Ctrl-C alike.

use std::{
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The trust domain of every benchmark server.
pub const TRUST_DOMAIN: &str = "bench.lanyard.test";

/// How long a process may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The `lanyard-server` and `lanyard-agent` binaries built beside this one.
#[derive(Clone, Debug)]
pub struct Binaries {
    server: PathBuf,
    agent: PathBuf,
}

impl Binaries {
    /// Finds both binaries in the directory of the running bench binary
    /// (`target/release` under `cargo run --release`).
    pub fn locate() -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("locating the lanyard-bench binary")?;
        let dir = exe
            .parent()
            .context("the lanyard-bench binary has no parent directory")?;
        let find = |name: &str| -> anyhow::Result<PathBuf> {
            let path = dir.join(name);
            if path.is_file() {
                Ok(path)
            } else {
                bail!(
                    "{} not found: build every binary of the workspace into the same target \
                     directory first with `cargo build --release --workspace`",
                    path.display()
                )
            }
        };
        Ok(Self {
            server: find("lanyard-server")?,
            agent: find("lanyard-agent")?,
        })
    }
}

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?;
    listener.local_addr().context("reading the bound port")
}

/// A private scratch directory, removed on drop.
pub fn scratch_dir(what: &str) -> anyhow::Result<TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("lanyard-bench-{what}-"))
        .tempdir()
        .with_context(|| format!("creating a temporary directory for the {what}"))
}

/// A child process killed and reaped on drop.
#[derive(Debug)]
struct ChildGuard {
    name: &'static str,
    child: Child,
}

impl ChildGuard {
    fn spawn(name: &'static str, cmd: &mut Command, log: &Path) -> anyhow::Result<Self> {
        let log_file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Self { name, child })
    }

    /// An error if the process has already exited.
    fn check_running(&mut self, log: &Path) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited early ({status}); its log ends with:\n{}",
                self.name,
                log_tail(log)
            );
        }
        Ok(())
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last lines of a log file, for error messages.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

// === impl Server ===

/// A running `lanyard-server` in a temporary data directory.
#[derive(Debug)]
pub struct Server {
    // Declared before `dir`: the process dies before its directory goes.
    child: ChildGuard,
    dir: TempDir,
    binary: PathBuf,
    /// The admin socket the operator CLI and the Admin API use.
    pub admin_socket: PathBuf,
    /// The Node API address agents attest to.
    pub node_addr: SocketAddr,
    /// Health, CRL and metrics.
    pub http_addr: SocketAddr,
}

impl Server {
    /// Starts a server on free loopback ports with SVIDs that live an hour
    /// (no rotation during a run), and waits until its admin API is ready.
    pub async fn start(bins: &Binaries) -> anyhow::Result<Self> {
        Self::start_with(bins, &[]).await
    }

    /// [`start`](Server::start) with more `run` flags (e.g. `--config`).
    pub async fn start_with(bins: &Binaries, extra: &[&str]) -> anyhow::Result<Self> {
        let dir = scratch_dir("server")?;
        let admin_socket = dir.path().join("admin.sock");
        let node_addr = free_port()?;
        let http_addr = free_port()?;
        let log = dir.path().join("server.log");
        let mut cmd = Command::new(&bins.server);
        cmd.arg("run")
            .args(["--trust-domain", TRUST_DOMAIN])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--bind-address", &node_addr.to_string()])
            .args(["--http-address", &http_addr.to_string()])
            .arg("--admin-socket")
            .arg(&admin_socket)
            .args(["--default-x509-svid-ttl", "1h"])
            .args(["--log-level", "warn"])
            .args(extra);
        let child = ChildGuard::spawn("lanyard-server", &mut cmd, &log)?;
        let mut server = Self {
            child,
            dir,
            binary: bins.server.clone(),
            admin_socket,
            node_addr,
            http_addr,
        };
        server.wait_ready().await?;
        Ok(server)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let log = self.dir.path().join("server.log");
        loop {
            self.child.check_running(&log)?;
            if self.cli(&["healthcheck"]).await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "lanyard-server not ready after {READY_TIMEOUT:?}; its log ends with:\n{}",
                    log_tail(&log)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs an operator command (`lanyard-server --socket <admin> ARGS`) and
    /// returns its stdout; an error carries its stderr.
    pub async fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = tokio::process::Command::new(&self.binary)
            .arg("--socket")
            .arg(&self.admin_socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .context("running the lanyard-server CLI")?;
        if !out.status.success() {
            bail!(
                "`lanyard-server {}` failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        String::from_utf8(out.stdout).context("the lanyard-server CLI printed non-UTF-8")
    }

    /// A one-time join token and the agent SPIFFE ID it will produce.
    pub async fn join_token(&self) -> anyhow::Result<(String, String)> {
        let out = self.cli(&["--output", "json", "token", "generate"]).await?;
        let json: serde_json::Value =
            serde_json::from_str(&out).context("parsing `token generate --output json`")?;
        let field = |key: &str| {
            json.get(key)
                .and_then(|v| v.as_str())
                .map(str::to_owned)
                .with_context(|| format!("`token generate` printed no {key}: {out}"))
        };
        Ok((field("token")?, field("agent_id")?))
    }

    /// A counter from `GET /metrics` (0 when it has no sample yet): cheap to
    /// poll, unlike listing every SVID.
    pub async fn metric(&self, sample: &str) -> anyhow::Result<f64> {
        metric(self.http_addr, sample).await
    }

    /// The trust bundle as PEM.
    pub async fn bundle_pem(&self) -> anyhow::Result<String> {
        self.cli(&["bundle", "show", "--format", "pem"]).await
    }
}

// === impl Agent ===

/// A running `lanyard-agent` attested to a [`Server`] with a join token.
#[derive(Debug)]
pub struct Agent {
    child: ChildGuard,
    dir: TempDir,
    /// Its Workload API socket.
    pub socket: PathBuf,
    /// Its SPIFFE ID (the parent ID of the entries it serves).
    pub spiffe_id: String,
    http_addr: SocketAddr,
}

impl Agent {
    /// Starts an agent with a fresh join token and the server's bundle as
    /// bootstrap trust, and waits until `/health/ready` answers 200.
    pub async fn start(bins: &Binaries, server: &Server) -> anyhow::Result<Self> {
        let dir = scratch_dir("agent")?;
        let (token, spiffe_id) = server.join_token().await?;
        let bundle = dir.path().join("bootstrap.pem");
        std::fs::write(&bundle, server.bundle_pem().await?)
            .with_context(|| format!("writing {}", bundle.display()))?;
        let socket = dir.path().join("sock").join("api.sock");
        let http_addr = free_port()?;
        let log = dir.path().join("agent.log");
        let mut cmd = Command::new(&bins.agent);
        cmd.arg("run")
            .args(["--server-address", &server.node_addr.to_string()])
            .arg("--trust-bundle")
            .arg(&bundle)
            .args(["--join-token", &token])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--socket-path")
            .arg(&socket)
            .args(["--http-address", &http_addr.to_string()])
            .args(["--log-level", "warn"]);
        let child = ChildGuard::spawn("lanyard-agent", &mut cmd, &log)?;
        let mut agent = Self {
            child,
            dir,
            socket,
            spiffe_id,
            http_addr,
        };
        agent.wait_ready().await?;
        Ok(agent)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let log = self.dir.path().join("agent.log");
        loop {
            self.child.check_running(&log)?;
            if matches!(http_status(self.http_addr, "/health/ready").await, Ok(200)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "lanyard-agent not ready after {READY_TIMEOUT:?}; its log ends with:\n{}",
                    log_tail(&log)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A sample from the agent's `GET /metrics` (0 when it has none yet).
    pub async fn metric(&self, sample: &str) -> anyhow::Result<f64> {
        metric(self.http_addr, sample).await
    }

    /// The agent's process ID.
    pub fn pid(&self) -> u32 {
        self.child.child.id()
    }

    /// An error (with the log's tail) if the agent has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        let log = self.dir.path().join("agent.log");
        self.child.check_running(&log)
    }
}

/// The value of `sample` in `GET /metrics` on `addr` (0 when absent).
async fn metric(addr: SocketAddr, sample: &str) -> anyhow::Result<f64> {
    let response = http_get(addr, "/metrics").await?;
    let text = String::from_utf8_lossy(&response);
    Ok(text
        .lines()
        .find(|l| l.starts_with(sample))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0))
}

/// The HTTP status of `GET path` on `addr` (HTTP/1.1, one request).
async fn http_status(addr: SocketAddr, path: &str) -> anyhow::Result<u16> {
    let response = http_get(addr, path).await?;
    parse_status_line(&response).context("malformed HTTP response")
}

/// The raw HTTP/1.1 response to `GET path`.
async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<Vec<u8>> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        anyhow::Ok(response)
    };
    tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .context("HTTP request timed out")?
}

/// The status code of an HTTP/1.x response.
fn parse_status_line(response: &[u8]) -> Option<u16> {
    let line = response.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/1."))?;
    parts.next()?.parse().ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(
            parse_status_line(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"),
            Some(200)
        );
        assert_eq!(
            parse_status_line(b"HTTP/1.1 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(parse_status_line(b"SSH-2.0-x\r\n"), None);
        assert_eq!(parse_status_line(b""), None);
    }

    #[test]
    fn free_ports_are_loopback() {
        assert!(free_port().unwrap().ip().is_loopback());
    }
}
