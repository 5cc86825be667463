//! The end-to-end harness: starts the real `lanyard-server` and
//! `lanyard-agent` binaries (built by `cargo test --workspace`, found beside
//! the test executable) on loopback and temporary sockets, and talks to
//! them with the operator CLI, the Workload API and real TLS clients.
//!
//! A test panics with what went wrong (and the process's log) rather than
//! returning errors; every process and directory it starts is cleaned up on
//! drop. The tests in `tests/` use it as `common`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

pub use lanyard_ca::pem_block;
use std::{
    net::{SocketAddr, TcpListener},
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use lanyard_ca::SvidKey;
use lanyard_mtls::{Authorizer, SpiffeServerVerifier, TrustMaterial};
use lanyard_proto::node::v1::{
    AttestRequest, JoinTokenAttestation, X509svid, attest_request::Method, node_client::NodeClient,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, pem::PemObject};
use tempfile::TempDir;
use tonic::transport::Channel;

pub mod agent;
pub mod mtls;
pub mod operators;
pub mod other_user;
pub mod postgres;
pub mod python;
pub mod spawned;
pub mod stalling_fs;
pub mod upstream;
pub mod x509pop;

pub const TD: &str = "e2e.test";
/// How long a started server or agent may take to become ready.
pub const READY_WITHIN: Duration = Duration::from_secs(120);

/// A binary built by `cargo test --workspace` (they sit beside `deps/`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run the tests with `cargo test --workspace` so every binary is built first",
        path.display()
    );
    path
}

pub fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A running `lanyard-server` in a temporary data dir; killed on drop.
pub struct Server {
    pub dir: TempDir,
    pub node_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub socket: PathBuf,
    pub extra: Vec<String>,
    /// Directories removed with the server (e.g. its config's).
    pub keep: Vec<TempDir>,
    child: Option<Child>,
}

impl Server {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts with extra `run` flags.
    pub fn start_with(extra: &[&str]) -> Self {
        Self::start_with_socket(extra, None)
    }

    /// Starts with extra `run` flags and, if given, this admin socket.
    pub fn start_with_socket(extra: &[&str], socket: Option<PathBuf>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("lanyard-e2e")
            .tempdir()
            .unwrap();
        let socket = socket.unwrap_or_else(|| dir.path().join("admin.sock"));
        let mut server = Self {
            node_addr: free_port(),
            http_addr: free_port(),
            socket,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            dir,
            keep: Vec::new(),
            child: None,
        };
        server.spawn();
        server
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn run_command(&self) -> Command {
        let mut cmd = Command::new(bin("lanyard-server"));
        cmd.arg("run")
            .args(["--trust-domain", TD])
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--bind-address", &self.node_addr.to_string()])
            .args(["--http-address", &self.http_addr.to_string()])
            .arg("--admin-socket")
            .arg(&self.socket)
            .args(["--log-level", "info,lanyard_server=debug"])
            .args(&self.extra);
        cmd
    }

    pub fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("server.log")).unwrap();
        let child = self
            .run_command()
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start lanyard-server");
        self.child = Some(child);
        self.wait_ready();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn wait_ready(&mut self) {
        // Generous: a server that dies is seen at once (try_wait); one that is
        // slow to start (a restart over megabytes of state, a loaded CI
        // machine running debug builds) is not a failure.
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("lanyard-server exited early ({status}):\n{}", self.log());
            }
            if self.cli(&["healthcheck"]).status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "server not ready in {READY_WITHIN:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs an operator command against this server.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(bin("lanyard-server"))
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs an operator command that must succeed; returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "`lanyard-server {}` failed: {}\nserver log:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn cli_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--output", "json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.cli_ok(&all)).unwrap()
    }

    pub fn token(&self) -> String {
        self.cli_ok(&["token", "generate"]).trim().to_owned()
    }

    pub fn bundle(&self) -> Vec<CertificateDer<'static>> {
        let pem = self.cli_ok(&["bundle", "show", "--format", "pem"]);
        CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap()
    }

    pub fn server_id() -> lanyard_identity::SpiffeId {
        format!("spiffe://{TD}/lanyard/server").parse().unwrap()
    }

    /// Sends `signal` (`HUP`, `TERM` ...) to the running server.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{signal} {pid}");
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let child = self.child.as_mut().unwrap();
        let pid = child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(Instant::now() < deadline, "server ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn exit_code(out: &Output) -> i32 {
    out.status
        .code()
        .unwrap_or_else(|| 128 + out.status.signal().unwrap_or(0))
}

/// Node API client material: trust bundle and (optionally) an agent SVID.
#[derive(Debug)]
pub struct NodeIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: SvidKey,
}

pub async fn node_channel(
    server: &Server,
    client: Option<&NodeIdentity>,
) -> Result<NodeClient<Channel>, lanyard_mtls::MtlsError> {
    let trust = Arc::new(TrustMaterial::new(server.bundle()));
    let verifier = SpiffeServerVerifier::new(trust, Authorizer::exact([Server::server_id()]));
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(verifier));
    let mut cfg = match client {
        Some(id) => builder
            .with_client_auth_cert(
                id.chain.clone(),
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key.pkcs8_der())),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let channel = lanyard_mtls::tls_channel(server.node_addr, Arc::new(cfg)).await?;
    Ok(NodeClient::new(channel))
}

pub fn chain_of(svid: &X509svid) -> Vec<CertificateDer<'static>> {
    svid.cert_chain
        .iter()
        .map(|c| CertificateDer::from(c.clone()))
        .collect()
}

/// Attests with a join token; returns the agent identity.
pub async fn attest(server: &Server, token: &str) -> Result<NodeIdentity, tonic::Status> {
    let key = SvidKey::generate().unwrap();
    let mut client = node_channel(server, None).await.unwrap();
    let resp = client
        .attest(AttestRequest {
            method: Some(Method::JoinToken(JoinTokenAttestation {
                token: token.into(),
            })),
            csr: key.csr_der().unwrap(),
        })
        .await?
        .into_inner();
    Ok(NodeIdentity {
        chain: chain_of(resp.svid.as_ref().unwrap()),
        key,
    })
}

/// Writes DER certificates as one PEM file.
pub fn write_pem(path: &Path, certs: &[CertificateDer<'_>]) {
    let out: String = certs.iter().map(|c| pem_block("CERTIFICATE", c)).collect();
    std::fs::write(path, out).unwrap();
}

/// `openssl verify` of `chain`'s leaf against `bundle` (+ intermediates);
/// returns (success, combined output).
pub fn openssl_verify(
    dir: &Path,
    bundle: &[CertificateDer<'_>],
    chain: &[CertificateDer<'_>],
) -> (bool, String) {
    openssl_verify_crl(dir, bundle, chain, None)
}

/// `openssl verify [-crl_check -CRLfile crl] -CAfile bundle [-untrusted
/// intermediates] leaf`; returns (success, combined output).
pub fn openssl_verify_crl(
    dir: &Path,
    bundle: &[CertificateDer<'_>],
    chain: &[CertificateDer<'_>],
    crl_der: Option<&[u8]>,
) -> (bool, String) {
    let ca = dir.join("ca.pem");
    let leaf = dir.join("leaf.pem");
    write_pem(&ca, bundle);
    write_pem(&leaf, &chain[..1]);
    let mut cmd = Command::new("openssl");
    cmd.arg("verify").arg("-CAfile").arg(&ca);
    if chain.len() > 1 {
        let untrusted = dir.join("untrusted.pem");
        write_pem(&untrusted, &chain[1..]);
        cmd.arg("-untrusted").arg(&untrusted);
    }
    if let Some(der) = crl_der {
        let crl = dir.join("crl.pem");
        std::fs::write(&crl, pem_block("X509 CRL", der)).unwrap();
        cmd.arg("-crl_check").arg("-CRLfile").arg(&crl);
    }
    let out = cmd
        .arg(&leaf)
        .output()
        .expect("openssl must be installed (it is part of the test set-up)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `GET /crl` body (DER), served as `application/pkix-crl`.
pub fn fetch_crl(server: &Server) -> Vec<u8> {
    let (head, body) = http_get(server.http_addr, "/crl");
    assert!(
        head.to_ascii_lowercase().contains("application/pkix-crl"),
        "{head}"
    );
    body
}

/// `GET path` with a raw HTTP/1.1 request; the head and body of a 200 answer.
pub fn http_get(addr: SocketAddr, path: &str) -> (String, Vec<u8>) {
    use std::io::{Read as _, Write as _};
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "GET {path}: {head}");
    (head, raw[split + 4..].to_vec())
}

/// `lanyard-server datastore import --file BACKUP --data-dir DIR`, offline.
pub fn import_backup(backup: &Path, data_dir: &Path) -> Output {
    import_backup_with(backup, data_dir, &[])
}

/// `import_backup` with more flags (e.g. `--config` naming a `[datastore]`).
pub fn import_backup_with(backup: &Path, data_dir: &Path, extra: &[&str]) -> Output {
    Command::new(bin("lanyard-server"))
        .args(["datastore", "import", "--file"])
        .arg(backup)
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra)
        .output()
        .unwrap()
}
