//! The quickstart's processes: a real `lanyard-server` and `lanyard-agent`
//! on loopback and a temporary directory, killed and removed on drop.

use std::{
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow, bail};

/// Where the binaries are: beside this example's own directory
/// (`target/<profile>/examples/quickstart` → `target/<profile>/`).
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the quickstart binary")?;
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .ok_or_else(|| anyhow!("unexpected quickstart location {}", exe.display()))
}

/// Builds `lanyard-server` and `lanyard-agent` with the cargo that runs this
/// example (a no-op when they are up to date).
pub fn build_binaries() -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let release = bin_dir()?.ends_with("release");
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--quiet",
        "-p",
        "lanyard-server",
        "-p",
        "lanyard-agent",
    ]);
    if release {
        cmd.arg("--release");
    }
    let status = cmd.status().context("running cargo build")?;
    if !status.success() {
        bail!("building lanyard-server and lanyard-agent failed ({status})");
    }
    Ok(())
}

fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Polls `check` until it holds or `timeout` passes.
pub fn wait_until(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> bool,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    while !check() {
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(start.elapsed())
}

/// A child process that is killed when dropped.
pub struct Proc {
    name: &'static str,
    child: Child,
}

impl Proc {
    pub fn spawn(name: &'static str, cmd: &mut Command, log: &Path) -> anyhow::Result<Self> {
        let log = std::fs::File::create(log)?;
        let child = cmd
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Self { name, child })
    }

    /// Fails if the process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            Some(status) => bail!("{} exited early ({status})", self.name),
            None => Ok(()),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Server, agent and their temporary directory.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub trust_domain: &'static str,
    pub admin_socket: PathBuf,
    pub agent_socket: PathBuf,
    pub agent_http: SocketAddr,
    pub server_http: SocketAddr,
    pub node_api: SocketAddr,
    pub agent_id: String,
    procs: Vec<Proc>,
}

impl Cluster {
    /// Starts the server on an embedded sled store in a temp dir.
    pub fn start_server() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("lanyard-quickstart")
            .tempdir()?;
        let uid = current_uid()?;
        // One person runs the quickstart, so this policy lets the requester
        // approve; production keeps require_distinct_approver = true.
        let config = dir.path().join("server.toml");
        std::fs::write(
            &config,
            format!(
                "trust_domain = \"quickstart.test\"\ndefault_x509_svid_ttl = \"10m\"\n\
                 [tasks]\nmax_ttl = \"1h\"\nrequesters = [\"uid:{uid}\"]\napprovers = [\"uid:{uid}\"]\n\
                 require_distinct_approver = false\n"
            ),
        )?;
        let server_http = free_port()?;
        let mut cluster = Self {
            admin_socket: dir.path().join("server/admin.sock"),
            agent_socket: dir.path().join("agent/api.sock"),
            agent_http: free_port()?,
            server_http,
            node_api: free_port()?,
            trust_domain: "quickstart.test",
            agent_id: String::new(),
            procs: Vec::new(),
            dir,
        };
        let server = Proc::spawn(
            "lanyard-server",
            Command::new(bin_dir()?.join("lanyard-server"))
                .arg("run")
                .arg("--config")
                .arg(&config)
                .arg("--data-dir")
                .arg(cluster.dir.path().join("server"))
                .args(["--bind-address", &cluster.node_api.to_string()])
                .args(["--http-address", &server_http.to_string()])
                .arg("--admin-socket")
                .arg(&cluster.admin_socket),
            &cluster.dir.path().join("server.log"),
        )?;
        cluster.procs.push(server);
        wait_until("the server", Duration::from_secs(30), || {
            cluster.cli(&["healthcheck"]).is_ok()
        })?;
        Ok(cluster)
    }

    /// Starts an agent attested with a fresh join token; returns how long
    /// attestation took.
    pub fn start_agent(&mut self) -> anyhow::Result<Duration> {
        let token = self.cli(&["token", "generate"])?.trim().to_owned();
        let bundle = self.dir.path().join("bundle.pem");
        std::fs::write(&bundle, self.cli(&["bundle", "show"])?)?;
        let node_api = self.node_api.to_string();
        let started = Instant::now();
        let agent = Proc::spawn(
            "lanyard-agent",
            Command::new(bin_dir()?.join("lanyard-agent"))
                .arg("run")
                .args(["--server-address", &node_api])
                .arg("--trust-bundle")
                .arg(&bundle)
                .args(["--join-token", &token])
                .arg("--data-dir")
                .arg(self.dir.path().join("agent-data"))
                .arg("--socket-path")
                .arg(&self.agent_socket)
                .args(["--http-address", &self.agent_http.to_string()]),
            &self.dir.path().join("agent.log"),
        )?;
        self.procs.push(agent);
        let http = self.agent_http;
        wait_until("the agent to attest", Duration::from_secs(30), || {
            http_get(http, "/health/ready").is_ok_and(|r| r.starts_with("HTTP/1.1 200"))
        })?;
        let agents: serde_json::Value =
            serde_json::from_str(&self.cli(&["--output", "json", "agent", "list"])?)?;
        self.agent_id = agents[0]["spiffe_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        Ok(started.elapsed())
    }

    /// Runs an operator command; returns stdout or the one-line error.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(bin_dir()?.join("lanyard-server"))
            .arg("--socket")
            .arg(&self.admin_socket)
            .args(args)
            .output()?;
        if !out.status.success() {
            bail!(
                "lanyard-server {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// Fails if the server or agent died.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        self.procs.iter_mut().try_for_each(Proc::check_alive)
    }

    /// Copies this executable to `bin/<name>`: a distinct binary path is a
    /// distinct workload to the agent (`unix:path:` selector).
    pub fn workload_binary(&self, name: &str) -> anyhow::Result<PathBuf> {
        let dir = self.dir.path().join("bin");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(name);
        std::fs::copy(std::env::current_exe()?, &path)?;
        Ok(path)
    }

    /// Registers `spiffe://<td>/<name>` for the binary at `path` run by us.
    pub fn register(&self, name: &str, path: &Path) -> anyhow::Result<String> {
        let uid = current_uid()?.to_string();
        Ok(self
            .cli(&[
                "entry",
                "create",
                "--spiffe-id",
                &self.id(name),
                "--parent-id",
                &self.agent_id,
                "--selector",
                &format!("unix:uid:{uid}"),
                "--selector",
                &format!("unix:path:{}", path.display()),
            ])?
            .trim()
            .to_owned())
    }

    pub fn id(&self, name: &str) -> String {
        format!("spiffe://{}/{name}", self.trust_domain)
    }

    /// Keeps a workload process alive for the cluster's lifetime.
    pub fn adopt(&mut self, proc: Proc) {
        self.procs.push(proc);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Workloads first, the agent, then the server; the TempDir goes last.
        while let Some(p) = self.procs.pop() {
            drop(p);
        }
    }
}

pub fn current_uid() -> anyhow::Result<u32> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|euid| euid.parse().ok())
        .ok_or_else(|| anyhow!("cannot read this process's uid"))
}

/// A plain HTTP/1.1 GET (health and CRL endpoints are unauthenticated).
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: quickstart\r\nConnection: close\r\n\r\n"
    )?;
    // Bodies may be binary (GET /crl is DER): the status line is what matters.
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}
