//! `lanyard-bench issue`: end-to-end X.509-SVID issuance through the Node
//! API over TLS, from several simulated agents, against the CA's own
//! single-thread signing rate measured in the same run.
//!
//! Each simulated agent attests with a join token, then sends its batches
//! of pre-generated CSRs one after another; all agents run at once. Every
//! SVID counted was recorded in the store and the audit log before the
//! server returned it (that is how the server issues).

use std::{sync::Arc, time::Duration, time::Instant};

use anyhow::{Context as _, bail};
use lanyard_ca::SvidKey;
use lanyard_identity::SpiffeId;
use lanyard_mtls::{Authorizer, SpiffeServerVerifier, TrustMaterial};
use lanyard_proto::node::v1::{
    AttestRequest, BatchNewX509svidRequest, JoinTokenAttestation, NewX509svidParams,
    attest_request::Method, batch_new_x509svid_result::Result as BatchResult,
    node_client::NodeClient,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, pem::PemObject as _};
use tonic::transport::Channel;

use crate::{
    measure::Sample,
    processes::{Binaries, Server, TRUST_DOMAIN},
    report::Table,
};

/// Options of `lanyard-bench issue`.
#[derive(Debug, clap::Args)]
pub struct IssueArgs {
    /// Simulated agents issuing at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    agents: u64,
    /// CSRs per BatchNewX509SVID call (the server accepts up to 1,000).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=1000))]
    batch: u64,
    /// Batches each agent sends, one after another.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    batches: u64,
    /// Seconds spent measuring the CA's single-thread rate.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    seconds: u64,
    /// Instead: register this many entries across 10 real agents and time
    /// until every SVID is issued; then time entry changes reaching the
    /// Sync stream of an agent holding 10,000 entries.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    burst: Option<u64>,
    /// The stores to measure, side by side: `sled` and `postgres` with one
    /// server each, `postgres-2` with two servers sharing one PostgreSQL
    /// database (the simulated agents split between them).
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["sled", "postgres", "postgres-2"])]
    datastores: Vec<Datastore>,
}

/// A simulated agent: its Node API client (authenticated with its SVID)
/// and the entry it issues for.
pub(crate) struct SimulatedAgent {
    pub client: NodeClient<Channel>,
    entry_id: String,
}

/// The server's trust bundle as verifier trust material.
pub(crate) async fn trust_of(server: &Server) -> anyhow::Result<Arc<TrustMaterial>> {
    let bundle: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(server.bundle_pem().await?.as_bytes())
            .collect::<Result<_, _>>()
            .context("parsing the server's bundle")?;
    Ok(Arc::new(TrustMaterial::new(bundle)))
}

/// Which store a measured server keeps its records in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Datastore {
    /// The embedded default.
    Sled,
    /// A fresh database of a throwaway PostgreSQL cluster started by the
    /// bench (initdb and pg_ctl from the machine's PostgreSQL), over its
    /// Unix socket.
    Postgres,
    /// Two servers on one such database, sharing one CA sealed in it.
    #[value(name = "postgres-2")]
    Postgres2,
}

/// Runs the measurements and returns the table.
pub async fn run(args: IssueArgs) -> anyhow::Result<Vec<Table>> {
    if let Some(burst) = args.burst {
        return crate::burst::run(&args, usize::try_from(burst)?).await;
    }
    let bins = Binaries::locate()?;
    let csrs: Vec<Vec<u8>> = (0..args.batch)
        .map(|_| SvidKey::generate()?.csr_der())
        .collect::<Result<_, _>>()
        .context("generating CSRs")?;
    // Durable as in production (sled fsyncs too); stopped when dropped.
    let cluster = if args
        .datastores
        .iter()
        .any(|d| matches!(d, Datastore::Postgres | Datastore::Postgres2))
    {
        Some(lanyard_test_postgres::Cluster::start_durable().map_err(anyhow::Error::msg)?)
    } else {
        None
    };
    let mut issued = Vec::new();
    for datastore in &args.datastores {
        let scratch = tempfile::tempdir().context("creating a config directory")?;
        let (configs, count) = match datastore {
            Datastore::Sled => (None, 1),
            Datastore::Postgres | Datastore::Postgres2 => {
                let cluster = cluster.as_ref().context("no PostgreSQL cluster")?;
                let config = postgres_config(scratch.path(), cluster)?;
                let count = if *datastore == Datastore::Postgres2 {
                    2
                } else {
                    1
                };
                (Some(config), count)
            }
        };
        let mut servers = Vec::new();
        for _ in 0..count {
            let extra: Vec<String> = match &configs {
                Some(config) => vec!["--config".to_owned(), config.display().to_string()],
                None => Vec::new(),
            };
            let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
            servers.push(Server::start_with(&bins, &extra).await?);
        }
        issued.push((*datastore, issue_end_to_end(&servers, &args, &csrs).await?));
    }
    let ca = crate::sign::single_thread_rate(Duration::from_secs(args.seconds))?;

    let mut table = Table::new(format!(
        "lanyard-bench issue: {} agents x {} batches x {} CSRs, over TLS to a real lanyard-server",
        args.agents, args.batches, args.batch
    ));
    for (datastore, sample) in &issued {
        table.rate(
            &format!(
                "(a) SVIDs issued end to end (recorded, signed, audited), {}",
                match datastore {
                    Datastore::Sled => "sled",
                    Datastore::Postgres => "PostgreSQL, one server",
                    Datastore::Postgres2 => "PostgreSQL, two servers",
                }
            ),
            *sample,
        );
    }
    table.rate("(b) CertificateAuthority::sign_x509_svid on one thread", ca);
    for (datastore, sample) in &issued {
        let ratio = if ca.rate() > 0.0 {
            sample.rate() / ca.rate()
        } else {
            0.0
        };
        table.derived(
            &format!("ratio a/b, {datastore:?}")
                .to_lowercase()
                .replace("postgres2", "postgres, two servers"),
            format!("{ratio:.2}"),
        );
    }
    table.note(
        "(a) includes TLS, gRPC, the standing checks and the store transaction, \
         signing on every core and the audit fsync, shared by concurrent batches.",
    );
    Ok(vec![table])
}

/// A config file in `dir` whose `[datastore]` is a new database of
/// `cluster`, with a key-encryption key (so that several servers may use
/// it, sharing one CA).
fn postgres_config(
    dir: &std::path::Path,
    cluster: &lanyard_test_postgres::Cluster,
) -> anyhow::Result<std::path::PathBuf> {
    use std::io::Read as _;
    use std::os::unix::fs::PermissionsExt as _;
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .context("reading /dev/urandom")?;
    let kek = dir.join("kek");
    std::fs::write(&kek, hex::encode(key)).context("writing the KEK")?;
    std::fs::set_permissions(&kek, std::fs::Permissions::from_mode(0o600))
        .context("chmod the KEK")?;
    let config = dir.join("server.toml");
    std::fs::write(
        &config,
        format!(
            "[datastore]\nkind = \"postgres\"\nurl = {:?}\nkek_file = {:?}\n",
            cluster.create_database(),
            kek.display().to_string()
        ),
    )
    .context("writing the server's config")?;
    Ok(config)
}

/// Every simulated agent sends its batches at once, agent `n` to server
/// `n % servers.len()`; the SVIDs issued and the time they took.
async fn issue_end_to_end(
    servers: &[Server],
    args: &IssueArgs,
    csrs: &[Vec<u8>],
) -> anyhow::Result<Sample> {
    let first = servers.first().context("no server")?;
    // One CA: every server's bundle is the same.
    let trust = trust_of(first).await?;
    let mut agents = Vec::new();
    for n in 0..args.agents {
        let server = &servers[(n as usize) % servers.len()];
        agents.push(simulated_agent(server, &trust, n).await?.0);
    }
    let started = Instant::now();
    let sent = futures::future::try_join_all(agents.into_iter().map(|agent| async move {
        let SimulatedAgent {
            mut client,
            entry_id,
        } = agent;
        let mut issued = 0u64;
        for _ in 0..args.batches {
            let params = csrs
                .iter()
                .map(|csr| NewX509svidParams {
                    entry_id: entry_id.clone(),
                    csr: csr.clone(),
                })
                .collect();
            let resp = client
                .batch_new_x509svid(BatchNewX509svidRequest { params })
                .await
                .context("BatchNewX509SVID")?
                .into_inner();
            for r in resp.results {
                match r.result {
                    Some(BatchResult::Svid(_)) => issued += 1,
                    other => bail!("an SVID was refused: {other:?}"),
                }
            }
        }
        Ok::<u64, anyhow::Error>(issued)
    }))
    .await?;
    Ok(Sample {
        ops: sent.iter().sum(),
        elapsed: started.elapsed(),
    })
}

/// Attests one agent with a join token and registers an entry under it;
/// returns it and its SPIFFE ID.
pub(crate) async fn simulated_agent(
    server: &Server,
    trust: &Arc<TrustMaterial>,
    n: u64,
) -> anyhow::Result<(SimulatedAgent, String)> {
    let (token, agent_id) = server.join_token().await?;
    let key = SvidKey::generate()?;
    let mut anonymous = NodeClient::new(channel(server, trust, None).await?);
    let svid = anonymous
        .attest(AttestRequest {
            method: Some(Method::JoinToken(JoinTokenAttestation { token })),
            csr: key.csr_der()?,
        })
        .await
        .context("attesting a simulated agent")?
        .into_inner()
        .svid
        .context("Attest returned no SVID")?;
    let chain = svid
        .cert_chain
        .into_iter()
        .map(CertificateDer::from)
        .collect();
    let client = NodeClient::new(channel(server, trust, Some((chain, &key))).await?)
        .max_decoding_message_size(64 * 1024 * 1024)
        .max_encoding_message_size(64 * 1024 * 1024);
    let entry_id = server
        .cli(&[
            "entry",
            "create",
            "--spiffe-id",
            &format!("spiffe://{TRUST_DOMAIN}/bench/issue-{n}"),
            "--parent-id",
            &agent_id,
            "--selector",
            "unix:uid:1000",
        ])
        .await?
        .trim()
        .to_owned();
    Ok((SimulatedAgent { client, entry_id }, agent_id))
}

/// A TLS 1.3 channel to the Node API, verifying the server's SVID and
/// presenting `client`'s, if given.
async fn channel(
    server: &Server,
    trust: &Arc<TrustMaterial>,
    client: Option<(Vec<CertificateDer<'static>>, &SvidKey)>,
) -> anyhow::Result<Channel> {
    let server_id = SpiffeId::new(&format!("spiffe://{TRUST_DOMAIN}/lanyard/server"))?;
    let verifier = SpiffeServerVerifier::new(trust.clone(), Authorizer::exact([server_id]));
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])?
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(verifier));
    let mut cfg = match client {
        Some((chain, key)) => builder.with_client_auth_cert(
            chain,
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.pkcs8_der())),
        )?,
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(lanyard_mtls::tls_channel(server.node_addr, Arc::new(cfg)).await?)
}
