//! The state every server component shares: config, store, CA, and the
//! change counter that wakes agents' Sync streams.

use std::{
    sync::{Arc, RwLock},
    time::SystemTime,
};

use lanyard_audit::{AuditLog, Event};
use lanyard_ca::CertificateAuthority;
use lanyard_identity::SpiffeId;
use lanyard_store::{Datastore, StoreError};
use rustls_pki_types::CertificateDer;
use tokio::sync::watch;
use tonic::Status;

use crate::{
    ServerConfig,
    clock::{Clock, SystemClock},
    revocation::PublishedCrl,
    status::store_status,
};

/// Shared server state.
pub(crate) struct ServerState {
    pub cfg: ServerConfig,
    pub store: Arc<dyn Datastore>,
    /// How this server coordinates with others on the same database.
    pub cluster: crate::cluster::Cluster,
    pub ca: RwLock<CertificateAuthority>,
    /// Wakes the rotation task when another server changed the CA.
    pub ca_changed: tokio::sync::Notify,
    /// Set when notifications may have been lost: the registry reloads
    /// every entry at its next change.
    pub resync_entries: std::sync::atomic::AtomicBool,
    pub server_id: SpiffeId,
    /// CAs that may vouch for nodes (x509pop), loaded at start-up and
    /// again on SIGHUP.
    pub x509pop: Option<crate::node::X509PopBundle>,
    /// The CRL now published (swapped whole on every change).
    pub crl: arc_swap::ArcSwap<PublishedCrl>,
    /// Serializes CRL rebuilds so numbers are published in order.
    pub crl_lock: tokio::sync::Mutex<()>,
    /// Serializes task state changes.
    pub tasks_lock: tokio::sync::Mutex<()>,
    /// Wakes the task scheduler when a task changes.
    pub tasks_changed: tokio::sync::Notify,
    /// Task notifications, when `[tasks] notify_url` is set.
    pub notifier: std::sync::OnceLock<crate::notify::Notifier>,
    /// The task policy in force (swapped whole on a reload).
    pub task_policy: arc_swap::ArcSwap<crate::task_policy::TaskPolicy>,
    /// Prometheus metrics.
    pub metrics: crate::metrics::Metrics,
    /// The append-only audit log (appends fsync, so they run off the runtime).
    audit_log: AuditSink,
    /// Bumped on every change agents must hear about (entries, bundle,
    /// agents' standing); Sync streams wait on it. Pushed, never polled.
    changes: watch::Sender<u64>,
    /// Entries changed since the registry last looked.
    changed_entries: std::sync::Mutex<std::collections::HashSet<lanyard_identity::EntryId>>,
    /// The snapshot every Sync stream reads, rebuilt once per change.
    pub registry: watch::Sender<Arc<crate::node::registry::Registry>>,
    /// Group-committed SVID issuance.
    pub issuer: crate::issuance::Issuer,
    /// Where domain code reads the time.
    pub clock: Arc<dyn Clock>,
    /// Cancelled when the server stops; streams end on it.
    pub shutdown: tokio_util::sync::CancellationToken,
}

impl ServerState {
    pub fn new(
        cfg: ServerConfig,
        store: Arc<dyn Datastore>,
        cluster: crate::cluster::Cluster,
        ca: CertificateAuthority,
        audit_log: AuditSink,
        x509pop: Option<crate::node::X509PopBundle>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> (
        Arc<Self>,
        tokio::sync::mpsc::Receiver<crate::issuance::Pending>,
    ) {
        let server_id = server_id(&cfg);
        let (changes, _) = watch::channel(0);
        let (issuer, queue) = crate::issuance::Issuer::new();
        let (registry, _) = watch::channel(Arc::default());
        // The TOML rules until run() installs a configured policy file.
        let task_policy =
            arc_swap::ArcSwap::from_pointee(crate::task_policy::TaskPolicy::toml(&cfg.policy));
        let state = Arc::new(Self {
            changed_entries: std::sync::Mutex::default(),
            registry,
            issuer,
            clock: Arc::new(SystemClock),
            shutdown,
            cfg,
            store,
            cluster,
            ca: RwLock::new(ca),
            ca_changed: tokio::sync::Notify::new(),
            resync_entries: std::sync::atomic::AtomicBool::new(false),
            crl: arc_swap::ArcSwap::from_pointee(PublishedCrl::default()),
            crl_lock: tokio::sync::Mutex::new(()),
            tasks_lock: tokio::sync::Mutex::new(()),
            tasks_changed: tokio::sync::Notify::new(),
            task_policy,
            notifier: std::sync::OnceLock::new(),
            metrics: crate::metrics::Metrics::new(),
            audit_log,
            server_id,
            x509pop,
            changes,
        });
        (state, queue)
    }

    /// The current time, from the injected clock.
    pub fn now(&self) -> SystemTime {
        self.clock.now()
    }

    /// Announces a change to every Sync stream (agents' standing, the
    /// bundle, the CRL).
    pub fn notify(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// Announces that these entries were created, changed or deleted.
    pub fn entries_changed(&self, ids: impl IntoIterator<Item = lanyard_identity::EntryId>) {
        match self.changed_entries.lock() {
            Ok(mut pending) => pending.extend(ids),
            Err(poisoned) => poisoned.into_inner().extend(ids),
        }
        self.notify();
    }

    /// Puts back entries taken by [`take_changed_entries`](Self::take_changed_entries)
    /// that could not be read, without waking anyone: the reader retries.
    pub fn requeue_changed_entries(
        &self,
        ids: impl IntoIterator<Item = lanyard_identity::EntryId>,
    ) {
        match self.changed_entries.lock() {
            Ok(mut pending) => pending.extend(ids),
            Err(poisoned) => poisoned.into_inner().extend(ids),
        }
    }

    /// The entries changed since the last call.
    pub fn take_changed_entries(&self) -> Vec<lanyard_identity::EntryId> {
        let mut pending = match self.changed_entries.lock() {
            Ok(pending) => pending,
            Err(poisoned) => poisoned.into_inner(),
        };
        pending.drain().collect()
    }

    /// A receiver that wakes on every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The trust bundle as the CA publishes it now.
    pub fn bundle(&self) -> Vec<CertificateDer<'static>> {
        match self.ca.read() {
            Ok(ca) => ca.trust_bundle(),
            Err(poisoned) => poisoned.into_inner().trust_bundle(),
        }
    }

    /// The JWT-SVID signing keys as the CA publishes them now.
    pub fn jwt_bundle(&self) -> lanyard_jwt::Jwks {
        match self.ca.read() {
            Ok(ca) => ca.jwt_bundle(),
            Err(poisoned) => poisoned.into_inner().jwt_bundle(),
        }
    }

    /// Runs a store operation off the async runtime (writes fsync).
    pub async fn db<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Datastore) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || f(store.as_ref())).await {
            Ok(r) => r,
            Err(e) => Err(StoreError::Backend(
                format!("store task failed: {e}").into(),
            )),
        }
    }

    /// Appends a security decision to the audit log and anchors the new head
    /// in the store, both durably, before the caller acknowledges the action.
    pub async fn audit(&self, event: Event) -> Result<(), AuditFailed> {
        self.audit_all(vec![event]).await
    }

    /// Appends several decisions with one fsync, then anchors the head.
    pub async fn audit_all(&self, events: Vec<Event>) -> Result<(), AuditFailed> {
        let sink = self.audit_log.clone();
        let store = self.store.clone();
        let now = self.now();
        let done = tokio::task::spawn_blocking(move || sink.append(store.as_ref(), events, now))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r);
        done.map_err(|e| {
            tracing::error!(error = %e, "audit append failed; refusing the action");
            AuditFailed(e)
        })
    }

    /// [`audit_all`](Self::audit_all) for code already off the runtime.
    pub fn audit_blocking(&self, events: Vec<Event>) -> Result<(), String> {
        self.audit_log
            .append(self.store.as_ref(), events, self.now())
            .map_err(|e| {
                tracing::error!(error = %e, "audit append failed; refusing the action");
                e
            })
    }

    /// Verifies the whole audit log against the head anchored in the store,
    /// holding the log so no append lands between the two reads.
    pub async fn verify_audit(&self) -> Result<lanyard_audit::VerifyReport, Status> {
        let sink = self.audit_log.clone();
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || -> Result<lanyard_audit::VerifyReport, Status> {
            let (text, head, origin) = sink.snapshot(store.as_ref())?;
            lanyard_audit::verify(
                std::io::Cursor::new(text),
                head.as_ref().map(|(seq, hash)| (*seq, hash.as_str())),
            )
            .map_err(|e| Status::data_loss(format!("{origin}: {e}")))
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
    }

    /// The audit log's content and the anchored head, read together under
    /// the log's lock (for backups).
    pub async fn audit_snapshot(&self) -> Result<(String, Option<(u64, String)>), Status> {
        let sink = self.audit_log.clone();
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let (text, head, _) = sink.snapshot(store.as_ref())?;
            Ok((text, head))
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
    }

    /// The audit records `filter` selects, in time order (the records of
    /// every server sharing the database, merged).
    pub async fn audit_records(
        &self,
        filter: lanyard_audit::Filter,
    ) -> Result<Vec<lanyard_audit::Record>, Status> {
        let sink = self.audit_log.clone();
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let (text, _, origin) = sink.snapshot(store.as_ref())?;
            let mut records = lanyard_audit::read(std::io::Cursor::new(text), &filter)
                .map_err(|e| Status::data_loss(format!("{origin}: {e}")))?;
            // RFC 3339 UTC with milliseconds sorts as text; the chain order
            // breaks ties.
            records.sort_by(|a, b| a.time.cmp(&b.time).then(a.seq.cmp(&b.seq)));
            Ok(records)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
    }
}

/// The audit chain as text, its recorded head, and where it is kept.
type Snapshot = (String, Option<(u64, String)>, String);

/// Where the audit chain is kept: a file with its head anchored in the
/// store (sled, one server), or a table of the PostgreSQL database that
/// every server sharing it appends to (one chain, ordered by the database).
#[derive(Clone)]
pub(crate) enum AuditSink {
    /// The file log of one server.
    File(Arc<std::sync::Mutex<AuditLog>>),
    /// The chain in the shared database, and the name this server's
    /// records carry (detail `server`), so that one can tell who decided.
    Database(Arc<lanyard_store_postgres::PostgresStore>, String),
}

impl AuditSink {
    /// Appends `events`, durably, and records the new head.
    fn append(
        &self,
        store: &dyn Datastore,
        events: Vec<Event>,
        now: SystemTime,
    ) -> Result<(), String> {
        match self {
            Self::File(log) => append_and_anchor(log, store, events, now),
            Self::Database(pg, server) => {
                if events.is_empty() {
                    return Ok(());
                }
                let events: Vec<Event> = events
                    .into_iter()
                    .map(|e| e.detail("server", server.clone()))
                    .collect();
                pg.append_audit(|seq, hash| {
                    let head = (seq, hash.unwrap_or(lanyard_audit::GENESIS));
                    let chained = lanyard_audit::chain(head, events, now)
                        .map_err(|e| StoreError::Backend(Box::new(e)))?;
                    let last = chained
                        .last()
                        .map(|(r, _)| (r.seq, r.hash.clone()))
                        .unwrap_or((seq, head.1.to_owned()));
                    Ok((
                        chained.into_iter().map(|(r, line)| (r.seq, line)).collect(),
                        last,
                    ))
                })
                .map(|_| ())
                .map_err(|e| e.to_string())
            }
        }
    }

    /// The whole chain as text, its recorded head, and where it is kept
    /// (for messages), read together.
    fn snapshot(&self, store: &dyn Datastore) -> Result<Snapshot, Status> {
        match self {
            Self::File(log) => {
                let log = log
                    .lock()
                    .map_err(|_| Status::internal("audit log lock poisoned"))?;
                let text = std::fs::read_to_string(log.path())
                    .map_err(|e| Status::internal(format!("{}: {e}", log.path().display())))?;
                let head = store.get_audit_head().map_err(store_status)?;
                Ok((text, head, log.path().display().to_string()))
            }
            Self::Database(pg, _) => {
                let (lines, head) = pg.audit_chain().map_err(store_status)?;
                let mut text = String::new();
                for line in lines {
                    text.push_str(&line);
                    text.push('\n');
                }
                Ok((text, head, format!("audit chain in {}", pg.target())))
            }
        }
    }
}

/// The audit log could not be written: the action it records is not taken.
#[derive(Debug, thiserror::Error)]
#[error("the audit log could not be written ({0}); the action was not taken")]
pub(crate) struct AuditFailed(pub String);

impl From<AuditFailed> for Status {
    fn from(_: AuditFailed) -> Self {
        // The cause is in the server's log, not for the caller.
        Status::internal("the audit log could not be written; the action was not taken")
    }
}

/// Most audit records appended with one fsync before the head is anchored:
/// a crash between the two leaves at most this many records past the head,
/// which start-up accepts (they chain) and re-anchors.
pub(crate) const MAX_AUDIT_GROUP: usize = crate::issuance::MAX_GROUP;

/// Appends `events` with one fsync per [`MAX_AUDIT_GROUP`] records and
/// records the new head in the store after each.
fn append_and_anchor(
    log: &std::sync::Mutex<AuditLog>,
    store: &dyn Datastore,
    events: Vec<Event>,
    now: SystemTime,
) -> Result<(), String> {
    if events.is_empty() {
        return Ok(());
    }
    let mut log = log
        .lock()
        .map_err(|_| "audit log lock poisoned".to_owned())?;
    let records = log.append_all(events, now).map_err(|e| e.to_string())?;
    match records.last() {
        Some(last) => store
            .put_audit_head(last.seq, &last.hash)
            .map_err(|e| e.to_string()),
        None => Ok(()),
    }
}

/// `spiffe://<td>/lanyard/server`.
pub(crate) fn server_id(cfg: &ServerConfig) -> SpiffeId {
    match SpiffeId::from_parts(&cfg.trust_domain, "/lanyard/server") {
        Ok(id) => id,
        // A validated trust domain plus a constant valid path always parses.
        Err(_) => cfg.trust_domain.id(),
    }
}

pub(crate) use lanyard_time::now_unix;
