//! The quickstart's workloads: the same executable copied under different
//! names, so the agent tells them apart by binary path. Each gets its
//! identity from the agent's Workload API through lanyard-mtls.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, anyhow, bail};
use lanyard_mtls::{Authorizer, WorkloadSource};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// `<binary> workload serve <socket> <addr-file>`: an mTLS echo server that
/// accepts any SVID of the trust domain (audiences of task SVIDs apply) and
/// writes its address to `addr-file` once it has an identity.
async fn serve(socket: &str, addr_file: PathBuf) -> anyhow::Result<()> {
    let source = WorkloadSource::connect(socket).await?;
    let td = source
        .spiffe_id()
        .map(|id| id.trust_domain())
        .ok_or_else(|| anyhow!("no identity"))?;
    let config = Arc::new(source.server_config(Authorizer::TrustDomain(td))?);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    std::fs::write(&addr_file, listener.local_addr()?.to_string())?;
    loop {
        let (tcp, _) = listener.accept().await?;
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                return;
            };
            let peer = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| lanyard_mtls::peer_spiffe_id(c).ok())
                .map(|id| id.to_string())
                .unwrap_or_default();
            let (read, mut write) = tokio::io::split(&mut tls);
            let mut line = String::new();
            if BufReader::new(read).read_line(&mut line).await.is_ok() {
                let _ = write
                    .write_all(format!("echo to {peer}: {line}").as_bytes())
                    .await;
            }
        });
    }
}

/// A credential fixed at one moment: the SVID chain, its key and the
/// bundle, as a workload got them. The quickstart keeps presenting such a
/// credential after it is revoked, as a thief would.
pub struct Pinned {
    pub chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    bundle: Vec<CertificateDer<'static>>,
}

impl Pinned {
    /// Writes `chain.pem`, `key.pem` (0600) and `bundle.pem` into `dir`.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(
            dir.join("chain.pem"),
            lanyard_ca::certificates_to_pem(&self.chain),
        )?;
        std::fs::write(
            dir.join("bundle.pem"),
            lanyard_ca::certificates_to_pem(&self.bundle),
        )?;
        lanyard_ca::write_file_atomic(
            &dir.join("key.pem"),
            lanyard_ca::pem_block("PRIVATE KEY", self.key.secret_der()).as_bytes(),
            0o600,
        )?;
        Ok(())
    }

    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let certs = |name: &str| -> anyhow::Result<Vec<CertificateDer<'static>>> {
            Ok(CertificateDer::pem_file_iter(dir.join(name))?.collect::<Result<_, _>>()?)
        };
        Ok(Self {
            chain: certs("chain.pem")?,
            key: PrivateKeyDer::from_pem_file(dir.join("key.pem"))?,
            bundle: certs("bundle.pem")?,
        })
    }

    /// The leaf's serial (lower-case hex).
    pub fn serial(&self) -> anyhow::Result<String> {
        let leaf = self.chain.first().ok_or_else(|| anyhow!("empty chain"))?;
        Ok(lanyard_identity::check_x509_svid(leaf)?.serial)
    }

    /// A client configuration presenting exactly this credential to a
    /// server with SPIFFE ID `server_id`; no session resumption.
    pub fn client_config(&self, server_id: &str) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        let trust = Arc::new(lanyard_mtls::TrustMaterial::new(self.bundle.clone()));
        let verifier =
            lanyard_mtls::SpiffeServerVerifier::new(trust, Authorizer::exact([server_id.parse()?]));
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(self.chain.clone(), self.key.clone_key())?;
        config.resumption = rustls::client::Resumption::disabled();
        Ok(Arc::new(config))
    }
}

/// `<binary> workload call <socket> <server-addr> <server-id> <out-dir>`:
/// fetches its SVID from the Workload API with the `spiffe` crate's client,
/// saves it to `out-dir`, and makes one mTLS round trip with it.
async fn call(
    socket: &str,
    server: SocketAddr,
    server_id: &str,
    out: PathBuf,
) -> anyhow::Result<()> {
    let client = spiffe::WorkloadApiClient::connect_to(format!("unix:{socket}")).await?;
    let svid = client.fetch_x509_svid().await?;
    let bundles = client.fetch_x509_bundles().await?;
    let bundle = bundles
        .get(svid.spiffe_id().trust_domain())
        .ok_or_else(|| anyhow!("no bundle for {}", svid.spiffe_id()))?;
    let pinned = Pinned {
        chain: svid
            .cert_chain()
            .iter()
            .map(|c| CertificateDer::from(c.as_ref().to_vec()))
            .collect(),
        key: PrivateKeyDer::Pkcs8(svid.private_key().as_ref().to_vec().into()),
        bundle: bundle
            .authorities()
            .iter()
            .map(|c| CertificateDer::from(c.as_ref().to_vec()))
            .collect(),
    };
    pinned.save(&out)?;
    if let Some(binding) = lanyard_identity::TaskBinding::from_certificate(&pinned.chain[0])? {
        println!(
            "{} holds a task SVID: {} ({}), audiences {:?}",
            svid.spiffe_id(),
            binding.task_id,
            binding.ticket,
            binding
                .audiences
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        );
    }
    print!("{}", echo(pinned.client_config(server_id)?, server).await?);
    Ok(())
}

/// One mTLS round trip: send a line, read the echo.
pub async fn echo(config: Arc<rustls::ClientConfig>, server: SocketAddr) -> anyhow::Result<String> {
    let connector = tokio_rustls::TlsConnector::from(config);
    let tcp = tokio::net::TcpStream::connect(server).await?;
    let name = rustls_pki_types::ServerName::try_from("quickstart.invalid")?;
    let io = async {
        let mut tls = connector.connect(name, tcp).await?;
        tls.write_all(b"hello\n").await?;
        let mut line = String::new();
        BufReader::new(&mut tls).read_line(&mut line).await?;
        if line.is_empty() {
            return Err(std::io::Error::other("connection closed without a reply"));
        }
        Ok::<_, std::io::Error>(line)
    };
    tokio::time::timeout(Duration::from_secs(5), io)
        .await
        .context("mTLS round trip timed out")?
        .map_err(|e| anyhow!(describe(&e)))
}

/// Names the TLS alert when there is one ("certificate revoked", ...).
pub fn describe(e: &std::io::Error) -> String {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRevoked)) => {
            "certificate revoked".into()
        }
        Some(other) => other.to_string(),
        None => e.to_string(),
    }
}

/// Entry point of the workload roles.
pub fn main(args: &[String]) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match args {
        [role, socket, addr_file] if role == "serve" => {
            rt.block_on(serve(socket, addr_file.into()))
        }
        [role, socket, server, server_id, out] if role == "call" => {
            rt.block_on(call(socket, server.parse()?, server_id, out.into()))
        }
        _ => bail!(
            "usage: quickstart workload serve SOCKET ADDR_FILE | call SOCKET ADDR SERVER_ID OUT_DIR"
        ),
    }
}
