//! Harness for `lanyard-agent` processes: a temporary data dir and socket,
//! the server's bundle as bootstrap trust, readiness by `/health/ready`.

use std::{
    net::SocketAddr,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::PathBuf,
    process::{Child, Command, ExitStatus, Output, Stdio},
    time::{Duration, Instant},
};

use tempfile::TempDir;

use super::{READY_WITHIN, Server, TD, bin, free_port, write_pem};

/// A running `lanyard-agent`; killed on drop.
pub struct Agent {
    pub dir: TempDir,
    pub socket: PathBuf,
    pub http_addr: SocketAddr,
    pub server_addr: SocketAddr,
    /// Bootstrap with `--insecure-bootstrap` instead of `--trust-bundle`.
    pub insecure_bootstrap: bool,
    child: Option<Child>,
    starts: u32,
}

impl Agent {
    /// Starts an agent attesting to `server` with a fresh join token, and
    /// waits until it is ready.
    pub fn start(server: &Server) -> Self {
        let mut agent = Self::prepare(server);
        agent.spawn(Some(&server.token()), &[]);
        agent.wait_ready();
        agent
    }

    /// The directories and bundle, without starting the process.
    pub fn prepare(server: &Server) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("lanyard-agent")
            .tempdir()
            .unwrap();
        // Traversable by other uids (tests call the socket as another user);
        // the data dir inside is created 0700 by the agent.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        write_pem(&dir.path().join("bootstrap.pem"), &server.bundle());
        Self {
            socket: dir.path().join("sock").join("api.sock"),
            http_addr: free_port(),
            server_addr: server.node_addr,
            dir,
            insecure_bootstrap: false,
            child: None,
            starts: 0,
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn endpoint(&self) -> String {
        format!("unix:{}", self.socket.display())
    }

    pub fn log(&self) -> String {
        let mut out = String::new();
        for n in 1..=self.starts {
            out.push_str(&format!("--- agent start {n} ---\n"));
            out.push_str(
                &std::fs::read_to_string(self.dir.path().join(format!("agent-{n}.log")))
                    .unwrap_or_default(),
            );
        }
        out
    }

    pub fn run_command(&self, token: Option<&str>, extra: &[&str]) -> Command {
        let mut cmd = Command::new(bin("lanyard-agent"));
        cmd.arg("run")
            .args(["--server-address", &self.server_addr.to_string()]);
        if self.insecure_bootstrap {
            cmd.arg("--insecure-bootstrap");
        } else {
            cmd.arg("--trust-bundle")
                .arg(self.dir.path().join("bootstrap.pem"));
        }
        cmd.arg("--data-dir")
            .arg(self.data_dir())
            .arg("--socket-path")
            .arg(&self.socket)
            .args(["--http-address", &self.http_addr.to_string()])
            .args(["--log-level", "info,lanyard_agent=debug"]);
        if let Some(t) = token {
            cmd.args(["--join-token", t]);
        }
        cmd.args(extra);
        cmd
    }

    /// Starts the process (without waiting for readiness).
    pub fn spawn(&mut self, token: Option<&str>, extra: &[&str]) {
        assert!(self.child.is_none(), "agent already running");
        self.starts += 1;
        let log = std::fs::File::create(self.dir.path().join(format!("agent-{}.log", self.starts)))
            .unwrap();
        let child = self
            .run_command(token, extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start lanyard-agent");
        self.child = Some(child);
    }

    pub fn healthy(&self) -> bool {
        Command::new(bin("lanyard-agent"))
            .args(["healthcheck", "--http-address", &self.http_addr.to_string()])
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    }

    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("lanyard-agent exited early ({status}):\n{}", self.log());
            }
            if self.healthy() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "agent not ready in {READY_WITHIN:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().expect("agent not running");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "agent still running after {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM and wait.
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = self
            .child
            .as_ref()
            .expect("agent not running")
            .id()
            .to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.wait_exit(Duration::from_secs(15))
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `lanyard-agent api ...` against this agent's socket.
    pub fn api(&self, args: &[&str]) -> Output {
        self.api_command(args).output().unwrap()
    }

    pub fn api_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin("lanyard-agent"));
        cmd.arg("api")
            .args(args)
            .arg("--socket-path")
            .arg(&self.socket);
        cmd
    }

    /// The agent's SPIFFE ID, read from the SVID it stored.
    pub fn spiffe_id(&self) -> String {
        let pem = std::fs::read(self.data_dir().join("agent_svid.pem")).unwrap();
        let certs: Vec<rustls_pki_types::CertificateDer<'static>> =
            rustls_pki_types::pem::PemObject::pem_slice_iter(&pem)
                .collect::<Result<_, _>>()
                .unwrap();
        uri_san(&certs[0])
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The single URI SAN of a certificate.
pub fn uri_san(der: &[u8]) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    san.value
        .general_names
        .iter()
        .find_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) => Some(u.to_string()),
            _ => None,
        })
        .unwrap()
}

/// The uid this test runs as (owner of a file it creates).
pub fn my_uid() -> u32 {
    let f = tempfile::NamedTempFile::new().unwrap();
    f.as_file().metadata().unwrap().uid()
}

/// Registers an entry `spiffe://<td>/<path>` for `selector` under `agent`;
/// returns the entry ID.
pub fn register(
    server: &Server,
    agent: &Agent,
    path: &str,
    selector: &str,
    extra: &[&str],
) -> String {
    let id = format!("spiffe://{TD}/{path}");
    let parent = agent.spiffe_id();
    let mut args = vec![
        "entry",
        "create",
        "--spiffe-id",
        &id,
        "--parent-id",
        &parent,
        "--selector",
        selector,
    ];
    args.extend_from_slice(extra);
    server.cli_ok(&args).trim().to_owned()
}

/// Registers an entry for this test's own uid.
pub fn register_self(server: &Server, agent: &Agent, path: &str) -> String {
    register(server, agent, path, &format!("unix:uid:{}", my_uid()), &[])
}

/// Polls `f` until it returns `Some`, up to `timeout`.
pub fn eventually<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Opens a `FetchX509SVID` stream on the agent with the generated client
/// (the `spiffe` crate's transport), so a test sees every message.
pub async fn open_x509_stream(
    agent: &Agent,
) -> Result<tonic::Streaming<lanyard_proto::workload::X509svidResponse>, tonic::Status> {
    let mut client = workload_client(agent).await;
    let mut req = tonic::Request::new(lanyard_proto::workload::X509svidRequest {});
    req.metadata_mut()
        .insert("workload.spiffe.io", "true".parse().unwrap());
    Ok(client.fetch_x509svid(req).await?.into_inner())
}

/// One `FetchX509SVID` call on `channel` (any connection to a Workload
/// API, a relay's included): the SPIFFE IDs of its first answer, or the
/// refusal.
pub async fn first_x509_ids(
    channel: &tonic::transport::Channel,
) -> Result<Vec<String>, tonic::Status> {
    let mut client =
        lanyard_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient::new(
            channel.clone(),
        );
    let mut req = tonic::Request::new(lanyard_proto::workload::X509svidRequest {});
    req.metadata_mut()
        .insert("workload.spiffe.io", "true".parse().unwrap());
    req.set_timeout(Duration::from_secs(10));
    let mut stream = client.fetch_x509svid(req).await?.into_inner();
    let first = stream.message().await?.unwrap_or_default();
    Ok(first.svids.into_iter().map(|s| s.spiffe_id).collect())
}

/// A channel to the Unix socket at `path` (the `spiffe` crate's transport).
pub async fn unix_channel(path: &std::path::Path) -> tonic::transport::Channel {
    let endpoint: spiffe::transport::Endpoint = format!("unix:{}", path.display()).parse().unwrap();
    spiffe::transport::connect(&endpoint).await.unwrap()
}

/// Opens a `FetchX509Bundles` stream on the agent.
pub async fn open_bundles_stream(
    agent: &Agent,
) -> Result<tonic::Streaming<lanyard_proto::workload::X509BundlesResponse>, tonic::Status> {
    let mut client = workload_client(agent).await;
    let mut req = tonic::Request::new(lanyard_proto::workload::X509BundlesRequest {});
    req.metadata_mut()
        .insert("workload.spiffe.io", "true".parse().unwrap());
    Ok(client.fetch_x509_bundles(req).await?.into_inner())
}

async fn workload_client(
    agent: &Agent,
) -> lanyard_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient<
    tonic::transport::Channel,
> {
    let endpoint: spiffe::transport::Endpoint = agent.endpoint().parse().unwrap();
    lanyard_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient::new(
        spiffe::transport::connect(&endpoint).await.unwrap(),
    )
}

/// The first message of a `FetchX509SVID` stream that carries `id`,
/// retrying while the agent has not issued it yet; the stream stays open.
pub async fn stream_serving(
    agent: &Agent,
    id: &str,
) -> (
    tonic::Streaming<lanyard_proto::workload::X509svidResponse>,
    lanyard_proto::workload::X509svidResponse,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let last = match open_x509_stream(agent).await {
            Ok(mut stream) => match stream.message().await {
                Ok(Some(msg)) if msg.svids.iter().any(|s| s.spiffe_id == id) => {
                    return (stream, msg);
                }
                other => format!("{other:?}"),
            },
            Err(status) => format!("{status:?}"),
        };
        assert!(
            Instant::now() < deadline,
            "no stream serving {id}: {last}\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The normalized serial (lower-case hex, no leading zero bytes) of the
/// leaf of a concatenated DER chain.
pub fn leaf_serial(chain_der: &[u8]) -> String {
    let (_, leaf) = x509_parser::parse_x509_certificate(chain_der).unwrap();
    normalized_hex(leaf.raw_serial())
}

/// The normalized serials a DER CRL lists.
pub fn crl_serials(crl_der: &[u8]) -> Vec<String> {
    let (_, crl) = x509_parser::parse_x509_crl(crl_der).unwrap();
    crl.iter_revoked_certificates()
        .map(|r| normalized_hex(r.raw_serial()))
        .collect()
}

fn normalized_hex(bytes: &[u8]) -> String {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    bytes[start..].iter().map(|b| format!("{b:02x}")).collect()
}

/// `GET path` on the agent's HTTP address; returns the body of a 200 answer.
pub fn http_get(addr: SocketAddr, path: &str) -> String {
    String::from_utf8_lossy(&super::http_get(addr, path).1).into_owned()
}
