//! `lanyard-bench revocation`: how long a revoked SVID keeps getting in,
//! and what a large CRL costs to build.
//!
//! Propagation, on real `lanyard-server` and `lanyard-agent` processes: an
//! mTLS listener in this process takes its identity, bundle and CRL live
//! from the agent (`lanyard_mtls::WorkloadSource`); a client presents a
//! fixed SVID fetched from the same agent. Each round revokes the client's
//! SVID with `lanyard-server svid revoke`, starts the clock when the command
//! returns, and handshakes (a new TCP connection each time) until the
//! listener refuses one with `certificate_revoked`. The path measured is
//! server CRL signing -> Sync push to the agent -> Workload API stream to the
//! listener -> next handshake.

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use lanyard_identity::{TrustDomain, check_x509_svid};
use lanyard_mtls::split_certificates;
use lanyard_mtls::{Authorizer, SpiffeServerVerifier, TrustMaterial, WorkloadSource};
use lanyard_proto::workload::{X509svidRequest, X509svidResponse};
use rustls::{AlertDescription, ClientConfig, client::Resumption};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::{
    processes::{Agent, Binaries, Server, TRUST_DOMAIN},
    procfs,
    report::{Table, duration},
    stats::Summary,
    workload_client::{self, request},
};

/// Bound on one handshake attempt.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on one round (fresh SVID, or refusal after the revoke).
const ROUND_TIMEOUT: Duration = Duration::from_secs(30);
/// The byte the listener writes after an accepted handshake.
const ACCEPTED: u8 = b'k';
/// The figure's target (issue 4).
const TARGET_P99: Duration = Duration::from_secs(1);

/// Options of `lanyard-bench revocation`.
#[derive(Debug, clap::Args)]
pub struct RevocationArgs {
    /// Revocations to time (revoke -> refused handshake).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    rounds: u64,
    /// Revoked-serial counts for the CRL build measurement, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1_000, 100_000])]
    crl_sizes: Vec<usize>,
    /// Minimum signings per CRL size (cheap sizes run for at least a second).
    #[arg(long, default_value_t = 5)]
    crl_repeats: usize,
    /// CRL build only.
    #[arg(long, conflicts_with = "skip_crl")]
    skip_propagation: bool,
    /// Propagation only.
    #[arg(long)]
    skip_crl: bool,
}

/// Runs the measurements and returns their tables.
pub async fn run(args: RevocationArgs) -> anyhow::Result<Vec<Table>> {
    let mut tables = Vec::new();
    if !args.skip_propagation {
        tables.push(propagation(&args).await?);
    }
    if !args.skip_crl {
        let sizes = args.crl_sizes.clone();
        let repeats = args.crl_repeats;
        tables.push(
            tokio::task::spawn_blocking(move || crate::crl::run(&sizes, repeats))
                .await
                .context("CRL benchmark task failed")??,
        );
    }
    Ok(tables)
}

// === propagation ===

/// How one handshake attempt ended.
#[derive(Debug)]
enum Outcome {
    /// The listener accepted the client's SVID.
    Accepted,
    /// The listener refused it with `certificate_revoked`.
    Revoked,
    /// Anything else (timeout, other alert, I/O error).
    Failed(String),
}

async fn propagation(args: &RevocationArgs) -> anyhow::Result<Table> {
    let bins = Binaries::locate()?;
    let uid = procfs::own_uid()?;
    eprintln!("revocation: starting lanyard-server and lanyard-agent");
    let server = Server::start(&bins).await?;
    let mut agent = Agent::start(&bins, &server).await?;
    let selector = format!("unix:uid:{uid}");
    let ids = [
        format!("spiffe://{TRUST_DOMAIN}/bench/mtls-a"),
        format!("spiffe://{TRUST_DOMAIN}/bench/mtls-b"),
    ];
    for id in &ids {
        server
            .cli(&[
                "entry",
                "create",
                "--spiffe-id",
                id,
                "--parent-id",
                &agent.spiffe_id,
                "--selector",
                &selector,
            ])
            .await?;
    }

    // The Workload API stream the client takes its SVIDs from: wait for both.
    let mut client = workload_client::connect(&agent.socket).await?;
    let mut updates = client
        .fetch_x509svid(request(X509svidRequest {}))
        .await
        .context("FetchX509SVID")?
        .into_inner();
    let mut latest = next_message(&mut updates).await?;
    while !ids
        .iter()
        .all(|id| latest.svids.iter().any(|s| &s.spiffe_id == id))
    {
        latest = next_message(&mut updates).await?;
    }

    // The listener presents the agent's default SVID; the client uses the
    // other entry's, so revoking it never takes the listener's identity.
    let socket = agent
        .socket
        .to_str()
        .context("the agent socket path is not UTF-8")?;
    let source = WorkloadSource::connect(socket)
        .await
        .context("WorkloadSource::connect")?;
    let listener_id = source
        .spiffe_id()
        .context("the WorkloadSource has no SVID")?
        .to_string();
    let client_id = ids
        .iter()
        .find(|id| **id != listener_id)
        .context("no second entry for the client")?
        .clone();
    let trust_domain = TrustDomain::new(TRUST_DOMAIN)?;
    let server_config = source.server_config(Authorizer::TrustDomain(trust_domain.clone()))?;
    let listener = Listener::start(Arc::new(server_config)).await?;
    // The client checks the listener's chain only: the listener's SVID is
    // never revoked, and the figure is the listener's CRL.
    let client_trust = Arc::new(TrustMaterial::new(source.trust().bundle().to_vec()));

    let mut revoked = HashSet::new();
    let mut propagation = Vec::new();
    let mut handshakes = Vec::new();
    let mut revoke_runs = Vec::new();
    let mut since_revoke_start = Vec::new();
    let mut accepted_after = 0u64;
    let mut failed_after = 0u64;
    for round in 1..=args.rounds {
        // A fresh SVID: the agent renews the one revoked last round. The
        // stream sends the full state on every change; the latest counts.
        let FixedSvid { chain, key, serial } = tokio::time::timeout(ROUND_TIMEOUT, async {
            loop {
                if let Some(svid) = client_svid(&latest, &client_id, &revoked)? {
                    return anyhow::Ok(svid);
                }
                latest = next_message(&mut updates).await?;
            }
        })
        .await
        .with_context(|| format!("round {round}: no fresh SVID within {ROUND_TIMEOUT:?}"))??;
        let config = Arc::new(client_config(
            chain,
            key,
            client_trust.clone(),
            &trust_domain,
        )?);

        let start = Instant::now();
        match attempt(listener.addr, config.clone()).await {
            Outcome::Accepted => handshakes.push(start.elapsed()),
            other => bail!("round {round}: a fresh SVID was not accepted: {other:?}"),
        }

        let revoke_start = Instant::now();
        server.cli(&["svid", "revoke", "--serial", &serial]).await?;
        let start = Instant::now();
        revoke_runs.push(start - revoke_start);
        let mut last_failure = String::new();
        loop {
            match attempt(listener.addr, config.clone()).await {
                Outcome::Revoked => break,
                Outcome::Accepted => accepted_after += 1,
                Outcome::Failed(reason) => {
                    failed_after += 1;
                    last_failure = reason;
                }
            }
            if start.elapsed() > ROUND_TIMEOUT {
                agent.check_running()?;
                bail!(
                    "round {round}: serial {serial} still not refused {ROUND_TIMEOUT:?} after \
                     the revoke (last failure: {last_failure})"
                );
            }
        }
        propagation.push(start.elapsed());
        since_revoke_start.push(revoke_start.elapsed());
        revoked.insert(serial);
        if round % 10 == 0 {
            eprintln!("revocation: {round}/{} rounds", args.rounds);
        }
    }
    source.shutdown().await;
    drop(listener);

    let p = Summary::of(&propagation).context("no rounds")?;
    let h = Summary::of(&handshakes).context("no handshakes")?;
    let r = Summary::of(&revoke_runs).context("no revokes")?;
    let s = Summary::of(&since_revoke_start).context("no revokes")?;
    let mut table = Table::with_columns(
        "lanyard-bench revocation: propagation, revoke -> refused mTLS handshake",
        &["rounds", "p50", "p99", "max"],
    );
    let row = |s: &Summary| {
        vec![
            s.count.to_string(),
            duration(s.p50),
            duration(s.p99),
            duration(s.max),
        ]
    };
    table.row("(a) revoke returned -> handshake refused", row(&p));
    table.row("(b) one accepted handshake (resolution)", row(&h));
    table.row("    `svid revoke` CLI run (before a)", row(&r));
    table.row("    revoke started -> handshake refused", row(&s));
    table.note(format!(
        "target p99 < {}: {}",
        duration(TARGET_P99),
        if p.p99 < TARGET_P99 { "yes" } else { "no" }
    ));
    table.note(format!(
        "Handshakes after a revoke: {accepted_after} still accepted, {failed_after} failed \
         otherwise, {} refused as revoked.",
        p.count
    ));
    table.note(
        "Each attempt: new TCP connection, full TLS 1.3 handshake (no resumption), one byte \
         read; the listener refuses with certificate_revoked once its CRL from the agent \
         lists the serial.",
    );
    Ok(table)
}

async fn next_message(
    updates: &mut tonic::Streaming<X509svidResponse>,
) -> anyhow::Result<X509svidResponse> {
    updates
        .message()
        .await
        .context("FetchX509SVID stream")?
        .context("the FetchX509SVID stream ended")
}

/// One SVID as the client presents it.
struct FixedSvid {
    chain: Vec<CertificateDer<'static>>,
    /// PKCS#8 DER.
    key: Vec<u8>,
    /// Lower-case hex, as `svid revoke` takes it.
    serial: String,
}

/// The client's SVID in `msg` if it is one not revoked yet.
fn client_svid(
    msg: &X509svidResponse,
    client_id: &str,
    revoked: &HashSet<String>,
) -> anyhow::Result<Option<FixedSvid>> {
    let Some(svid) = msg.svids.iter().find(|s| s.spiffe_id == client_id) else {
        return Ok(None);
    };
    let chain = split_certificates(&svid.x509_svid)?;
    let leaf = chain.first().context("an SVID with an empty chain")?;
    let serial = check_x509_svid(leaf)
        .context("the served SVID fails the profile check")?
        .serial;
    if revoked.contains(&serial) {
        return Ok(None);
    }
    Ok(Some(FixedSvid {
        chain,
        key: svid.x509_svid_key.to_vec(),
        serial,
    }))
}

/// A plain rustls client presenting one fixed SVID.
fn client_config(
    chain: Vec<CertificateDer<'static>>,
    key: Vec<u8>,
    trust: Arc<TrustMaterial>,
    trust_domain: &TrustDomain,
) -> anyhow::Result<ClientConfig> {
    let verifier = SpiffeServerVerifier::new(trust, Authorizer::TrustDomain(trust_domain.clone()));
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_auth_cert(chain, PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)))
            .context("building the client configuration")?;
    config.resumption = Resumption::disabled();
    Ok(config)
}

/// One handshake on a new connection, then one byte read: in TLS 1.3 the
/// server judges the client's certificate after the client has finished
/// its side, so a refusal arrives as an alert on the first read.
async fn attempt(addr: SocketAddr, config: Arc<ClientConfig>) -> Outcome {
    let exchange = async {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from("lanyard-bench.invalid")
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let mut tls = TlsConnector::from(config).connect(name, tcp).await?;
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await?;
        std::io::Result::Ok(byte[0])
    };
    match tokio::time::timeout(ATTEMPT_TIMEOUT, exchange).await {
        Ok(Ok(ACCEPTED)) => Outcome::Accepted,
        Ok(Ok(other)) => Outcome::Failed(format!("unexpected byte {other:#04x}")),
        Ok(Err(e)) if is_revoked_alert(&e) => Outcome::Revoked,
        Ok(Err(e)) => Outcome::Failed(e.to_string()),
        Err(_) => Outcome::Failed(format!("no answer within {ATTEMPT_TIMEOUT:?}")),
    }
}

/// Whether the peer closed the handshake with a `certificate_revoked` alert.
fn is_revoked_alert(e: &std::io::Error) -> bool {
    matches!(
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>()),
        Some(rustls::Error::AlertReceived(
            AlertDescription::CertificateRevoked
        ))
    )
}

/// The mTLS listener: accepts, writes one byte, closes. Stopped on drop.
struct Listener {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Listener {
    async fn start(config: Arc<rustls::ServerConfig>) -> anyhow::Result<Self> {
        let tcp = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the mTLS listener")?;
        let addr = tcp.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = tcp.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _ = stream.set_nodelay(true);
                    let accepted = tokio::time::timeout(ATTEMPT_TIMEOUT, acceptor.accept(stream));
                    if let Ok(Ok(mut tls)) = accepted.await {
                        let _ = tls.write_all(&[ACCEPTED]).await;
                        let _ = tls.shutdown().await;
                    }
                });
            }
        });
        Ok(Self { addr, task })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn only_the_revoked_alert_counts() {
        let revoked = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(AlertDescription::CertificateRevoked),
        );
        assert!(is_revoked_alert(&revoked));
        let other = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(AlertDescription::BadCertificate),
        );
        assert!(!is_revoked_alert(&other));
        assert!(!is_revoked_alert(&std::io::Error::other("reset")));
    }
}
