//! Starting and stopping the server: store, CA, listeners and tasks.

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime},
};

use lanyard_audit::{AuditError, AuditLog, Problem};
use lanyard_grpc_unix::SocketPathAuthority;
use lanyard_mtls::TrustMaterial;
use lanyard_proto::{admin::v1::admin_server::AdminServer, node::v1::node_server::NodeServer};
use lanyard_store::Datastore;
use tokio::{net::TcpListener, sync::mpsc, task::JoinSet};
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tokio_util::sync::CancellationToken;

use crate::{
    ServerConfig, ServerError,
    admin::AdminService,
    listener::CappedListener,
    node::{NodeService, ServerSvid, node_tls_config},
    state::ServerState,
};

/// The largest Admin API request read: a BatchCreateEntries of 10,000
/// entries with many DNS names each is past tonic's 4 MiB default.
const MAX_ADMIN_REQUEST: usize = 64 * 1024 * 1024;
/// How long in-flight calls get to finish after a shutdown signal.
const DRAIN: Duration = Duration::from_secs(5);

/// Runs the server until `shutdown` is cancelled or a component fails.
pub async fn run(cfg: ServerConfig, shutdown: CancellationToken) -> Result<(), ServerError> {
    lanyard_hardening::create_dir_exact(&cfg.data_dir, 0o700)
        .map_err(|e| ServerError::io("cannot create data dir", cfg.data_dir.display(), e))?;

    // Configuration errors before anything is opened or created.
    let x509pop = cfg
        .x509pop_ca_bundle
        .as_deref()
        .map(crate::node::X509PopBundle::load)
        .transpose()?;
    // A bad task policy stops the server here, naming file and line.
    let task_policy = cfg
        .task_policy_file
        .as_deref()
        .map(crate::task_policy::TaskPolicy::load)
        .transpose()
        .map_err(|e| ServerError::Config(e.to_string()))?;
    let (store, postgres) = crate::datastore::open_shared(&cfg.datastore, &cfg.data_dir)?;
    let kek = match &cfg.datastore {
        crate::DatastoreConfig::Postgres {
            kek_file: Some(path),
            ..
        } => {
            let kek = lanyard_ca::KeyEncryptionKey::load(path)
                .map_err(|e| ServerError::Config(format!("datastore.kek_file: {e}")))?;
            tracing::info!(
                kek = kek.fingerprint(),
                "CA keys are sealed in the database"
            );
            Some(kek)
        }
        _ => None,
    };
    // Other servers' changes, from before anything is read (a change made
    // while this server loads is then heard, not missed).
    let changes = postgres.as_ref().map(|pg| pg.listen()).transpose()?;
    let cluster = crate::cluster::Cluster::new(postgres, kek);
    let ca = crate::cluster::load_ca(&cfg, store.as_ref(), &cluster, SystemTime::now())?;

    // The audit log must verify up to the head the store recorded: a log
    // that was edited or lost its tail stops the server (fail closed).
    // On PostgreSQL the chain lives in the database, shared by every
    // server (checked by `audit verify`, as the file is).
    let audit = match cluster.postgres() {
        Some(pg) => crate::state::AuditSink::Database(pg.clone(), server_name(&cfg)),
        None => {
            let audit_path = cfg.data_dir.join("audit.log");
            let head = store.get_audit_head()?;
            let log = open_audit_log(&audit_path, head, store.as_ref())?;
            crate::state::AuditSink::File(Arc::new(std::sync::Mutex::new(log)))
        }
    };
    let stop = shutdown.child_token();
    let (state, issue_queue) = ServerState::new(
        cfg.clone(),
        store,
        cluster,
        ca,
        audit,
        x509pop,
        stop.clone(),
    );
    if let Some(policy) = task_policy {
        tracing::info!(policy = %policy.origin(), sha256 = %policy.sha256(), "task policy loaded");
        state.task_policy.store(Arc::new(policy));
    }
    tasks_reload_on_sighup(&state, &stop)?;
    if let Some((url, secret_file)) = &cfg.notify {
        let secret = std::fs::read_to_string(secret_file).map_err(|e| {
            ServerError::Config(format!(
                "tasks.notify_secret_file {}: {e}",
                secret_file.display()
            ))
        })?;
        let secret = secret.trim();
        if secret.len() < 16 {
            return Err(ServerError::Config(format!(
                "tasks.notify_secret_file {}: the HMAC secret must be at least 16 characters",
                secret_file.display()
            )));
        }
        let notifier = crate::notify::Notifier::start(
            crate::notify::NotifyConfig {
                url: url.clone(),
                ca_file: cfg.https_ca_file.clone(),
                secret: secret.as_bytes().to_vec(),
                timeout: crate::config::defaults::TICKET_CHECK_TIMEOUT,
                retries: cfg.notify_retries,
            },
            state.metrics.task_notifications_sent.clone(),
            state.metrics.task_notifications_failed.clone(),
            stop.clone(),
        );
        let _ = state.notifier.set(notifier);
    }
    let changes = if let Some(mut changes) = changes {
        // Listening before the CRL and the entries are read.
        match changes.recv().await {
            Some(lanyard_store_postgres::Change::Listening { .. }) => {}
            other => {
                return Err(ServerError::Task {
                    task: "change listener",
                    reason: format!("did not start listening: {other:?}"),
                });
            }
        }
        Some(changes)
    } else {
        None
    };
    // A fresh CRL (new number, signed by the active key) and the agents'
    // registry before anyone connects.
    crate::revocation::publish(&state).await?;
    let registry = crate::node::registry::start(&state).await?;
    let trust = Arc::new(TrustMaterial::new(state.bundle()));
    let svid = ServerSvid::issue(&state).await?;
    let tls = Arc::new(node_tls_config(&state, svid.clone(), trust.clone())?);

    let node_listener = TcpListener::bind(cfg.bind_address)
        .await
        .map_err(|e| ServerError::io("cannot bind Node API", cfg.bind_address, e))?;
    let node_listener = CappedListener::new(node_listener, "Node API", &cfg.limits);
    let http_listener = TcpListener::bind(cfg.http_address)
        .await
        .map_err(|e| ServerError::io("cannot bind HTTP", cfg.http_address, e))?;
    let http_listener = CappedListener::new(http_listener, "HTTP", &cfg.limits);
    let admin_listener = crate::admin_socket::bind_admin_socket(
        &cfg.admin_socket,
        cfg.admin_socket_mode,
        cfg.admin_socket_group.as_deref(),
    )?;

    let ready = Arc::new(AtomicBool::new(false));
    let mut tasks: JoinSet<(&'static str, Result<(), ServerError>)> = JoinSet::new();

    tasks.spawn({
        let (state, stop) = (state.clone(), stop.clone());
        async move {
            (
                "issuance",
                crate::issuance::run(state, issue_queue, stop).await,
            )
        }
    });
    if let Some(changes) = changes {
        // Other servers' changes, buffered since start-up, from now on.
        let (state, stop) = (state.clone(), stop.clone());
        tasks.spawn(async move {
            (
                "change follower",
                crate::cluster::follow(state, changes, stop).await,
            )
        });
    }
    tasks.spawn({
        let (state, stop) = (state.clone(), stop.clone());
        async move {
            (
                "registry",
                crate::node::registry::run(state, registry, stop).await,
            )
        }
    });

    let (conn_tx, conn_rx) = mpsc::channel(64);
    tasks.spawn(crate::listener::accept_tls(
        node_listener,
        tls,
        cfg.limits.tls_handshake_timeout,
        conn_tx,
        stop.clone(),
    ));
    let node_service = NodeService::new(state.clone());
    let refusals = node_service.refusal_audit();
    let node = tonic::transport::Server::builder()
        // Healthy agents answer the pings, so their connections are never
        // idle long enough to be closed.
        .http2_keepalive_interval(Some(cfg.limits.connection_idle_timeout / 3))
        .add_service(NodeServer::new(node_service))
        .serve_with_incoming_shutdown(ReceiverStream::new(conn_rx), stop.clone().cancelled_owned());
    tasks.spawn(async move { ("Node API", node.await.map_err(task_err("Node API"))) });

    let admin = tonic::transport::Server::builder()
        .add_service(
            AdminServer::new(AdminService::new(state.clone()))
                .max_decoding_message_size(MAX_ADMIN_REQUEST),
        )
        .serve_with_incoming_shutdown(
            // Operators' scripts may use gRPC's C core, grpc-java or
            // grpc-swift, which send the socket path as `:authority`.
            tokio_stream::StreamExt::map(UnixListenerStream::new(admin_listener), |conn| {
                conn.map(SocketPathAuthority::new)
            }),
            stop.clone().cancelled_owned(),
        );
    tasks.spawn(async move { ("Admin API", admin.await.map_err(task_err("Admin API"))) });

    tasks.spawn({
        let (state, stop) = (state.clone(), stop.clone());
        async move { ("CRL refresh", crate::revocation::run(state, stop).await) }
    });
    tasks.spawn({
        let (state, stop) = (state.clone(), stop.clone());
        async move { ("task scheduler", crate::tasks::run(state, stop).await) }
    });
    tasks.spawn({
        let (state, stop) = (state.clone(), stop.clone());
        async move {
            (
                "x509pop reload",
                crate::node::reload_on_sighup(state, stop).await,
            )
        }
    });

    let http = crate::http::serve(http_listener, state.clone(), ready.clone(), stop.clone());
    tasks.spawn(async move {
        (
            "HTTP",
            http.await
                .map_err(|e| ServerError::io("HTTP", "listener", e)),
        )
    });

    tasks.spawn({
        let (state, svid, trust, stop) = (state.clone(), svid.clone(), trust.clone(), stop.clone());
        async move {
            (
                "rotation",
                crate::rotation::run(state, svid, trust, stop).await,
            )
        }
    });

    ready.store(true, Ordering::Release);
    tracing::info!(
        trust_domain = %cfg.trust_domain,
        node_api = %cfg.bind_address,
        http = %cfg.http_address,
        admin_socket = %cfg.admin_socket.display(),
        "lanyard-server ready"
    );

    // The first task to end (with or without error) stops the others.
    let mut result = Ok(());
    tokio::select! {
        () = stop.cancelled() => {}
        Some(done) = tasks.join_next() => {
            result = first_result(done);
            stop.cancel();
        }
    }
    ready.store(false, Ordering::Release);
    let drained = tokio::time::timeout(DRAIN, async {
        while let Some(done) = tasks.join_next().await {
            if let Err(e) = first_result(done) {
                tracing::warn!(error = %e, "task failed during shutdown");
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!("tasks did not drain in time; aborting them");
        tasks.abort_all();
    }
    // Refusal counts of open windows would die with the process.
    let pending = refusals.flush();
    if !pending.is_empty() {
        let sources = pending.len();
        if state.audit_all(pending).await.is_ok() {
            tracing::info!(sources, "audited the open attestation refusal counts");
        }
    }
    let _ = std::fs::remove_file(&cfg.admin_socket);
    tracing::info!("lanyard-server stopped");
    result
}

/// SIGHUP reloads `[tasks] policy_file`; a policy that fails to load is
/// logged and the one in force stays. Kept apart from other SIGHUP
/// reloads: each listener gets every signal. Installed without a policy
/// file too, so that a reload signal never stops the server.
fn tasks_reload_on_sighup(
    state: &Arc<ServerState>,
    stop: &CancellationToken,
) -> Result<(), ServerError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup())
        .map_err(|e| ServerError::io("cannot listen for SIGHUP", "signal", e))?;
    let (state, stop) = (state.clone(), stop.clone());
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                got = hangups.recv() => if got.is_none() { return },
            }
            let Some(path) = state.cfg.task_policy_file.clone() else {
                tracing::info!("SIGHUP: no [tasks] policy_file to reload");
                continue;
            };
            let loaded = tokio::task::spawn_blocking({
                let path = path.clone();
                move || crate::task_policy::TaskPolicy::load(&path)
            })
            .await;
            let old = state.task_policy.load_full();
            match loaded {
                Ok(Ok(policy)) => {
                    tracing::info!(policy = %policy.origin(), sha256 = %policy.sha256(), previous_sha256 = %old.sha256(), "task policy reloaded on SIGHUP");
                    state.task_policy.store(Arc::new(policy));
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, sha256 = %old.sha256(), "task policy reload failed; keeping the policy in force");
                }
                Err(e) => {
                    tracing::error!(error = %e, sha256 = %old.sha256(), "task policy reload failed; keeping the policy in force");
                }
            }
        }
    });
    Ok(())
}

/// How this server names itself in the shared audit chain: its host name
/// and Node API address.
fn server_name(cfg: &ServerConfig) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    if host.is_empty() {
        cfg.bind_address.to_string()
    } else {
        format!("{host}/{}", cfg.bind_address)
    }
}

fn first_result(
    done: Result<(&'static str, Result<(), ServerError>), tokio::task::JoinError>,
) -> Result<(), ServerError> {
    match done {
        Ok((_, r)) => r,
        Err(e) => Err(ServerError::Task {
            task: "server task",
            reason: e.to_string(),
        }),
    }
}

fn task_err(task: &'static str) -> impl Fn(tonic::transport::Error) -> ServerError {
    move |e| ServerError::Task {
        task,
        reason: e.to_string(),
    }
}

/// Opens the audit log, verified up to the head the store anchors. Appends
/// are serialized and the head is stored right after each one, so a crash
/// can leave one append group past the head (at most
/// [`MAX_AUDIT_GROUP`](crate::state::MAX_AUDIT_GROUP) records, each already
/// checked to chain correctly): that is accepted and re-anchored. Anything
/// more is refused.
fn open_audit_log(
    path: &Path,
    head: Option<(u64, String)>,
    store: &dyn Datastore,
) -> Result<AuditLog, ServerError> {
    let expected = head.as_ref().map(|(s, h)| (*s, h.as_str()));
    match AuditLog::open(path, expected) {
        Ok(log) => Ok(log),
        Err(AuditError::Broken {
            problem: Problem::BeyondHead { head_seq, last_seq },
            ..
        }) if last_seq > head_seq
            && last_seq - head_seq <= crate::state::MAX_AUDIT_GROUP as u64 =>
        {
            tracing::warn!(
                head_seq,
                last_seq,
                "audit log has one group of records past the stored head (a crash between append and anchor); re-anchoring"
            );
            let log = AuditLog::open(path, None).map_err(|source| ServerError::Audit {
                path: path.to_path_buf(),
                source,
            })?;
            let (seq, hash) = log.head();
            store.put_audit_head(seq, &hash)?;
            Ok(log)
        }
        Err(source) => Err(ServerError::Audit {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::state::MAX_AUDIT_GROUP;
    use lanyard_audit::{Action, Event};
    use lanyard_store::SledStore;

    /// A log whose head is anchored at its first record, then `extra`
    /// records appended in one group without anchoring (a crash).
    fn crashed_after_append(extra: usize) -> (tempfile::TempDir, SledStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(&dir.path().join("store")).unwrap();
        let path = dir.path().join("audit.log");
        let mut log = AuditLog::open(&path, None).unwrap();
        let first = log
            .append(
                Event::new("uid:0", Action::EntryCreated, "e"),
                SystemTime::now(),
            )
            .unwrap();
        store.put_audit_head(first.seq, &first.hash).unwrap();
        let events = (0..extra)
            .map(|n| Event::new("agent", Action::SvidIssued, format!("s-{n}")))
            .collect();
        log.append_all(events, SystemTime::now()).unwrap();
        (dir, store)
    }

    #[test]
    fn one_unanchored_group_past_the_head_is_accepted_and_re_anchored() {
        let (dir, store) = crashed_after_append(MAX_AUDIT_GROUP);
        let head = store.get_audit_head().unwrap();
        let log = open_audit_log(&dir.path().join("audit.log"), head, &store).unwrap();
        assert_eq!(log.head().0, 1 + MAX_AUDIT_GROUP as u64);
        assert_eq!(store.get_audit_head().unwrap(), Some(log.head()));
    }

    #[test]
    fn more_than_one_group_past_the_head_is_refused() {
        let (dir, store) = crashed_after_append(MAX_AUDIT_GROUP + 1);
        let head = store.get_audit_head().unwrap();
        let err = open_audit_log(&dir.path().join("audit.log"), head, &store).unwrap_err();
        assert!(err.to_string().contains("past its recorded head"), "{err}");
    }
}
