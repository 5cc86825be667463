//! The agent: binds its listeners, attests (or re-uses its stored SVID),
//! then runs its loops until shutdown or the first fatal error.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use lanyard_identity::TrustDomain;
use lanyard_keys::SvidKey;
use lanyard_mtls::TrustMaterial;
use lanyard_proto::workload::spiffe_workload_api_server::SpiffeWorkloadApiServer;
use rustls_pki_types::{CertificateDer, UnixTime};
use tokio::{sync::watch, task::JoinSet};
use tokio_util::sync::CancellationToken;

use crate::{
    AgentError,
    agent_svid::AgentSvidRotator,
    attestation::attest_request,
    attestor,
    cache::Snapshot,
    config::{AgentConfig, Bootstrap},
    health,
    identity::AgentIdentity,
    jwt_svids::JwtSvids,
    metrics::Metrics,
    node_client::{NodeConnector, insecure_client},
    schedule::{backoff, random_unit},
    storage::{DataDir, read_certs},
    svid_manager::SvidManager,
    sync::SyncClient,
    trust_domain::{self, Expected, bundle_trust_domain},
    workload_api::{JwtHandle, WorkloadApi},
    workload_clock,
};

/// How long listeners get to drain after shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts at reaching the server for the first attestation.
const ATTEST_ATTEMPTS: u32 = 8;

/// Runs the agent until `shutdown` fires (Ok) or a task fails (Err; a ban or
/// eviction first stops all serving and forgets the stored agent SVID).
pub async fn run(cfg: AgentConfig, shutdown: CancellationToken) -> Result<(), AgentError> {
    let data_dir = DataDir::open(&cfg.data_dir)?;
    let (snap_tx, snap_rx) = watch::channel(Arc::new(Snapshot::starting()));
    let snap_tx = Arc::new(snap_tx);
    let metrics = Metrics::new();
    let jwt: JwtHandle = Arc::default();
    // Not a child of `shutdown`: the tasks stop only after the stopped
    // snapshot below has ended every open Workload API stream, which the
    // server's graceful shutdown would otherwise wait for.
    let tasks_stop = CancellationToken::new();
    let mut tasks: JoinSet<(&'static str, Result<(), AgentError>)> = JoinSet::new();

    // Listeners first: health reports "starting" and the Workload API
    // answers Unavailable until the agent is ready.
    let http = tokio::net::TcpListener::bind(cfg.http_address)
        .await
        .map_err(|e| AgentError::Serve {
            what: "health endpoint",
            reason: format!("bind {}: {e}", cfg.http_address),
        })?;
    let socket = attestor::bind_socket(&cfg.socket_path)?;
    tracing::info!(socket = %cfg.socket_path.display(), http = %cfg.http_address, "listening");
    {
        let (rx, m, stop) = (snap_rx.clone(), metrics.clone(), tasks_stop.clone());
        tasks.spawn(async move { ("health", health::serve(http, rx, m, stop).await) });
    }
    {
        let (rx, m, stop) = (snap_rx.clone(), metrics.clone(), tasks_stop.clone());
        let api = WorkloadApi::new(rx, m, jwt.clone());
        let timeout = cfg.attestation_timeout;
        tasks.spawn(async move {
            (
                "workload API",
                serve_workload_api(socket, timeout, api, stop).await,
            )
        });
    }

    {
        let (tx, stop) = (snap_tx.clone(), tasks_stop.clone());
        tasks.spawn(async move {
            workload_clock::run(tx, stop).await;
            ("Workload API clock", Ok(()))
        });
    }

    let established = tokio::select! {
        () = shutdown.cancelled() => None,
        r = establish(&cfg, &data_dir) => Some(r),
    };
    let result = match established {
        None => Ok(()),
        Some(Err(e)) => Err(e),
        Some(Ok((identity, connector))) => {
            let td = identity.trust_domain();
            tracing::info!(agent = %identity.spiffe_id, not_after = identity.not_after, "agent identity ready");
            let connector = Arc::new(connector);
            let (id_tx, id_rx) = watch::channel(Arc::new(identity));
            let id_tx = Arc::new(id_tx);
            let (sync_tx, sync_rx) = watch::channel(None);
            let _ = jwt.set(Arc::new(JwtSvids::new(connector.clone(), id_rx.clone())));
            let rotator = AgentSvidRotator::new(connector.clone(), data_dir.clone(), id_tx.clone());
            let sync = SyncClient::new(
                connector.clone(),
                id_rx.clone(),
                sync_tx,
                data_dir.clone(),
                metrics.clone(),
            );
            let manager = SvidManager::new(connector, id_rx, sync_rx, snap_tx.clone(), td, metrics);
            let stop = tasks_stop.clone();
            tasks.spawn(async move { ("agent SVID rotation", rotator.run(stop).await) });
            let stop = tasks_stop.clone();
            tasks.spawn(async move { ("sync", sync.run(stop).await) });
            let stop = tasks_stop.clone();
            tasks.spawn(async move { ("SVID manager", manager.run(stop).await) });
            tokio::select! {
                r = supervise(&mut tasks, &tasks_stop) => r,
                () = shutdown.cancelled() => Ok(()),
            }
        }
    };
    if let Err(e) = &result {
        if e.is_refusal() {
            forget_refused_identity(e, &data_dir);
        }
        // Drops every cached SVID; open streams end at once.
        snap_tx.send_replace(Arc::new(Snapshot::stopped(e.to_string())));
    } else {
        snap_tx.send_replace(Arc::new(Snapshot::stopped("agent is shutting down")));
    }
    tasks_stop.cancel();
    match (result, drain(&mut tasks).await) {
        // Refused as the agent was shutting down: the refusal still counts.
        (Ok(()), Some(refusal)) => {
            forget_refused_identity(&refusal, &data_dir);
            Err(refusal)
        }
        (result, _) => result,
    }
}

/// The server no longer accepts this agent: its stored SVID goes, so that
/// the next start attests afresh instead of presenting a refused one.
fn forget_refused_identity(refusal: &AgentError, data_dir: &DataDir) {
    tracing::error!(reason = %refusal, "the server refuses this agent: stopped serving, dropping every cached SVID");
    if let Err(err) = data_dir.clear_identity() {
        tracing::warn!(error = %err, "could not remove the stored agent SVID");
    }
}

/// Waits up to [`DRAIN_TIMEOUT`] for the stopped `tasks` to end, then
/// aborts the rest; returns the first refusal one of them ended with (the
/// server's refusal may race the shutdown, and must not be lost with it).
async fn drain(tasks: &mut JoinSet<(&'static str, Result<(), AgentError>)>) -> Option<AgentError> {
    let mut refusal = None;
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((_, Err(e))) if e.is_refusal() && refusal.is_none() => refusal = Some(e),
                Ok((name, Err(e))) => {
                    tracing::debug!(task = name, error = %e, "task ended with an error during shutdown");
                }
                _ => {}
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!("tasks did not stop within {DRAIN_TIMEOUT:?}; aborting them");
        tasks.abort_all();
    }
    refusal
}

/// Waits for the first task to fail (or all to end after `stop`).
async fn supervise(
    tasks: &mut JoinSet<(&'static str, Result<(), AgentError>)>,
    stop: &CancellationToken,
) -> Result<(), AgentError> {
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((_, Ok(()))) if stop.is_cancelled() => {}
            Ok((name, Ok(()))) => {
                return Err(AgentError::Task {
                    task: name,
                    reason: "stopped before shutdown".into(),
                });
            }
            Ok((name, Err(e))) => {
                tracing::error!(task = name, error = %e, "task failed");
                return Err(e);
            }
            Err(e) => {
                return Err(AgentError::Task {
                    task: "agent",
                    reason: e.to_string(),
                });
            }
        }
    }
    Ok(())
}

async fn serve_workload_api(
    listener: tokio::net::UnixListener,
    attestation_timeout: Duration,
    api: WorkloadApi,
    stop: CancellationToken,
) -> Result<(), AgentError> {
    tonic::transport::Server::builder()
        .add_service(SpiffeWorkloadApiServer::new(api))
        .serve_with_incoming_shutdown(
            attestor::incoming(listener, attestation_timeout),
            stop.cancelled_owned(),
        )
        .await
        .map_err(|e| AgentError::Serve {
            what: "Workload API",
            reason: e.to_string(),
        })
}

/// The agent's identity and a connector trusting the right bundle: the
/// stored SVID while it is valid, else a fresh node attestation.
async fn establish(
    cfg: &AgentConfig,
    data_dir: &DataDir,
) -> Result<(AgentIdentity, NodeConnector), AgentError> {
    if let Some(stored) = data_dir.load_identity()? {
        let configured = Expected::configured(cfg.trust_domain.as_ref());
        trust_domain::check(configured.as_ref(), &stored.trust_domain(), || {
            format!(
                "the stored agent SVID {} in {}",
                stored.spiffe_id,
                data_dir.path().display()
            )
        })?;
        if !stored.is_expired(SystemTime::now()) {
            let bundle = match data_dir.load_bundle()? {
                Some(b) => b,
                None => bootstrap_bundle(cfg)?.ok_or_else(|| {
                    AgentError::Config(
                        "no stored bundle: give --trust-bundle or --insecure-bootstrap".into(),
                    )
                })?,
            };
            tracing::info!(agent = %stored.spiffe_id, serial = %stored.serial, "re-using the stored agent SVID");
            let connector = NodeConnector::with_servers(
                cfg.server_address.clone(),
                Arc::new(TrustMaterial::new(bundle)),
                &stored.trust_domain(),
            )?;
            return Ok((stored, connector));
        }
        if cfg.attestation.is_none() {
            return Err(AgentError::AgentSvidExpired {
                expired_at: stored.not_after,
            });
        }
        tracing::warn!(agent = %stored.spiffe_id, "the stored agent SVID has expired; attesting again");
    }
    let method = cfg
        .attestation
        .as_ref()
        .ok_or(AgentError::NoAttestationMethod)?;
    let mut attempt = 0;
    loop {
        match attest_once(cfg, data_dir, method).await {
            Err(AgentError::Server { call, reason }) if attempt + 1 < ATTEST_ATTEMPTS => {
                let wait = backoff(
                    attempt,
                    Duration::from_millis(500),
                    Duration::from_secs(15),
                    random_unit(),
                );
                tracing::warn!(call, reason = %reason, retry_in = ?wait, "cannot reach the server to attest; retrying");
                attempt += 1;
                tokio::time::sleep(wait).await;
            }
            other => return other,
        }
    }
}

/// The configured bootstrap bundle, if `--trust-bundle` was given.
fn bootstrap_bundle(cfg: &AgentConfig) -> Result<Option<Vec<CertificateDer<'static>>>, AgentError> {
    match &cfg.bootstrap {
        Some(Bootstrap::TrustBundle(path)) => read_certs(path).map(Some),
        _ => Ok(None),
    }
}

async fn attest_once(
    cfg: &AgentConfig,
    data_dir: &DataDir,
    method: &crate::config::NodeAttestation,
) -> Result<(AgentIdentity, NodeConnector), AgentError> {
    // Who we expect to talk to: the configured trust domain and the one the
    // bootstrap bundle names (they must agree; an upstream root names none),
    // or with an insecure bootstrap the configured one, if any.
    let (mut client, expected) = match (
        &cfg.bootstrap,
        bootstrap_bundle(cfg)?,
        data_dir.load_bundle()?,
    ) {
        (Some(Bootstrap::Insecure), _, _) => {
            tracing::warn!(
                server = %cfg.server_address,
                "insecure bootstrap: the server is NOT verified for this first attestation; its bundle is trusted afterwards"
            );
            let configured = Expected::configured(cfg.trust_domain.as_ref());
            (insecure_client(&cfg.server_address).await?, configured)
        }
        (_, Some(bundle), _) | (_, None, Some(bundle)) => {
            let bundle_path = match &cfg.bootstrap {
                Some(Bootstrap::TrustBundle(path)) => path.clone(),
                _ => data_dir.path().join("bundle.pem"),
            };
            let named =
                bundle_trust_domain(&bundle).map_err(|p| AgentError::bad_file(&bundle_path, p))?;
            let expected = trust_domain::expected(cfg.trust_domain.as_ref(), named, &bundle_path)?;
            let connector = NodeConnector::with_servers(
                cfg.server_address.clone(),
                Arc::new(TrustMaterial::new(bundle)),
                &expected.td,
            )?;
            (
                connector.connect_to_attest(&expected).await?,
                Some(expected),
            )
        }
        (_, None, None) => {
            return Err(AgentError::Config(
                "no way to trust the server: give trust_bundle_path (--trust-bundle) or insecure_bootstrap".into(),
            ));
        }
    };
    let key = SvidKey::generate()?;
    let request = attest_request(method, key.csr_der()?)?;
    let resp = match client.attest(request).await {
        Ok(r) => r.into_inner(),
        Err(status) => {
            return Err(match status.code() {
                tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::DeadlineExceeded => {
                    AgentError::server("Attest", &status)
                }
                _ => AgentError::AttestationRefused(status.message().to_owned()),
            });
        }
    };
    let bad = |problem: String| AgentError::BadResponse {
        call: "Attest",
        problem,
    };
    let td = TrustDomain::new(&resp.trust_domain).map_err(|e| bad(format!("trust_domain: {e}")))?;
    trust_domain::check(expected.as_ref(), &td, || {
        format!("the server at {} (its Attest answer)", cfg.server_address)
    })?;
    let bundle: Vec<CertificateDer<'static>> =
        resp.bundle.into_iter().map(CertificateDer::from).collect();
    let svid = resp
        .svid
        .ok_or_else(|| bad("no SVID in the answer".into()))?;
    let chain: Vec<CertificateDer<'static>> = svid
        .cert_chain
        .into_iter()
        .map(CertificateDer::from)
        .collect();
    let identity = AgentIdentity::new(chain, Arc::new(key), SystemTime::now()).map_err(bad)?;
    let (leaf, intermediates) = identity
        .chain
        .split_first()
        .ok_or_else(|| bad("empty chain".into()))?;
    lanyard_mtls::verify_svid_chain(leaf, intermediates, &bundle, UnixTime::now()).map_err(
        |e| {
            bad(format!(
                "agent SVID does not verify against the returned bundle: {e}"
            ))
        },
    )?;
    if !identity.spiffe_id.is_member_of(&td) {
        return Err(bad(format!(
            "agent SVID {} is not in trust domain {td}",
            identity.spiffe_id
        )));
    }
    data_dir.save_identity(&identity)?;
    data_dir.save_bundle(&bundle)?;
    tracing::info!(agent = %identity.spiffe_id, trust_domain = %td, "node attested");
    let connector = NodeConnector::with_servers(
        cfg.server_address.clone(),
        Arc::new(TrustMaterial::new(bundle)),
        &td,
    )?;
    Ok((identity, connector))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A refusal one stopped task ends with is returned, whatever the
    /// other tasks end with; without one, nothing is.
    #[tokio::test]
    async fn draining_keeps_a_refusal_that_raced_the_shutdown() {
        let mut tasks: JoinSet<(&'static str, Result<(), AgentError>)> = JoinSet::new();
        tasks.spawn(async { ("sync", Ok(())) });
        tasks.spawn(async {
            let failed = AgentError::Task {
                task: "agent SVID rotation",
                reason: "the server is unreachable".into(),
            };
            ("agent SVID rotation", Err(failed))
        });
        tasks.spawn(async { ("SVID manager", Err(AgentError::Banned("banned".into()))) });
        let refusal = drain(&mut tasks).await;
        assert!(
            matches!(refusal, Some(AgentError::Banned(_))),
            "{refusal:?}"
        );
        assert!(tasks.is_empty());

        tasks.spawn(async { ("sync", Ok(())) });
        assert!(drain(&mut tasks).await.is_none());
    }
}
