//! The state every server component shares: config, store, CA, and the
//! change counter that wakes agents' Sync streams.

use std::{
    sync::{Arc, RwLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use lanyard_audit::{Action, AuditLog, Event};
use lanyard_ca::{CertificateAuthority, IssuedSvid, SvidRequest};
use lanyard_identity::{EntryId, SpiffeId, TaskBinding};
use lanyard_store::{Datastore, StoreError, SvidRecord};
use rustls_pki_types::CertificateDer;
use tokio::sync::watch;
use tonic::Status;

use crate::{ServerConfig, revocation::PublishedCrl, status::store_status};

/// Shared server state.
pub(crate) struct ServerState {
    pub cfg: ServerConfig,
    pub store: Arc<dyn Datastore>,
    pub ca: RwLock<CertificateAuthority>,
    pub server_id: SpiffeId,
    /// CAs that may vouch for nodes (x509pop), loaded at start-up.
    pub x509pop_anchors: Option<Vec<rustls_pki_types::TrustAnchor<'static>>>,
    /// The CRL now published (swapped whole on every change).
    pub crl: arc_swap::ArcSwap<PublishedCrl>,
    /// Serializes CRL rebuilds so numbers are published in order.
    pub crl_lock: tokio::sync::Mutex<()>,
    /// Serializes task state changes.
    pub tasks_lock: tokio::sync::Mutex<()>,
    /// Wakes the task scheduler when a task changes.
    pub tasks_changed: tokio::sync::Notify,
    /// Prometheus metrics.
    pub metrics: crate::metrics::Metrics,
    /// The append-only audit log (appends fsync, so they run off the runtime).
    audit_log: Arc<std::sync::Mutex<AuditLog>>,
    /// Bumped on every change agents must hear about (entries, bundle,
    /// agents' standing); Sync streams wait on it. Pushed, never polled.
    changes: watch::Sender<u64>,
}

/// What to sign: the SPIFFE ID and the bookkeeping that goes with it.
pub(crate) struct Issue<'a> {
    pub csr_der: &'a [u8],
    pub spiffe_id: &'a SpiffeId,
    pub dns_names: &'a [String],
    pub ttl: Duration,
    pub entry_id: Option<EntryId>,
    pub agent_id: Option<&'a SpiffeId>,
    /// For a task SVID: its binding (the caller caps `ttl` to the window).
    pub task: Option<&'a TaskBinding>,
}

impl ServerState {
    pub fn new(
        cfg: ServerConfig,
        store: Arc<dyn Datastore>,
        ca: CertificateAuthority,
        audit_log: AuditLog,
        x509pop_anchors: Option<Vec<rustls_pki_types::TrustAnchor<'static>>>,
    ) -> Arc<Self> {
        let server_id = server_id(&cfg);
        let (changes, _) = watch::channel(0);
        Arc::new(Self {
            cfg,
            store,
            ca: RwLock::new(ca),
            crl: arc_swap::ArcSwap::from_pointee(PublishedCrl::default()),
            crl_lock: tokio::sync::Mutex::new(()),
            tasks_lock: tokio::sync::Mutex::new(()),
            tasks_changed: tokio::sync::Notify::new(),
            metrics: crate::metrics::Metrics::new(),
            audit_log: Arc::new(std::sync::Mutex::new(audit_log)),
            server_id,
            x509pop_anchors,
            changes,
        })
    }

    /// Announces a change to every Sync stream.
    pub fn notify(&self) {
        self.changes.send_modify(|n| *n += 1);
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
    pub async fn audit(&self, event: Event) -> Result<(), Status> {
        let log = self.audit_log.clone();
        let store = self.store.clone();
        let done = tokio::task::spawn_blocking(move || -> Result<(), String> {
            let mut log = log
                .lock()
                .map_err(|_| "audit log lock poisoned".to_owned())?;
            let record = log
                .append(event, SystemTime::now())
                .map_err(|e| e.to_string())?;
            store
                .put_audit_head(record.seq, &record.hash)
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r);
        done.map_err(|e| {
            tracing::error!(error = %e, "audit append failed; refusing the action");
            Status::internal("the audit log could not be written; the action was not taken")
        })
    }

    /// Verifies the whole audit log against the head anchored in the store,
    /// holding the log so no append lands between the two reads.
    pub async fn verify_audit(&self) -> Result<lanyard_audit::VerifyReport, Status> {
        let log = self.audit_log.clone();
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || -> Result<lanyard_audit::VerifyReport, Status> {
            let log = log
                .lock()
                .map_err(|_| Status::internal("audit log lock poisoned"))?;
            let head = store.get_audit_head().map_err(store_status)?;
            let path = log.path().to_path_buf();
            let file = std::fs::File::open(&path)
                .map_err(|e| Status::internal(format!("{}: {e}", path.display())))?;
            lanyard_audit::verify(
                std::io::BufReader::new(file),
                head.as_ref().map(|(seq, hash)| (*seq, hash.as_str())),
            )
            .map_err(|e| Status::data_loss(format!("{}: {e}", path.display())))
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
    }

    /// The audit log's content and the anchored head, read together under
    /// the log's lock (for backups).
    pub async fn audit_snapshot(&self) -> Result<(String, Option<(u64, String)>), Status> {
        let log = self.audit_log.clone();
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let log = log
                .lock()
                .map_err(|_| Status::internal("audit log lock poisoned"))?;
            let text = std::fs::read_to_string(log.path())
                .map_err(|e| Status::internal(format!("{}: {e}", log.path().display())))?;
            let head = store.get_audit_head().map_err(store_status)?;
            Ok((text, head))
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
    }

    /// The audit log file.
    pub fn audit_path(&self) -> std::path::PathBuf {
        match self.audit_log.lock() {
            Ok(log) => log.path().to_path_buf(),
            Err(poisoned) => poisoned.into_inner().path().to_path_buf(),
        }
    }

    /// Signs an SVID and durably records it before returning it, so that
    /// anything issued can later be listed and revoked.
    pub async fn issue(&self, req: Issue<'_>) -> Result<IssuedSvid, Status> {
        let started = std::time::Instant::now();
        let issued = {
            let ca = self
                .ca
                .read()
                .map_err(|_| Status::internal("CA lock poisoned"))?;
            ca.sign_task_svid(
                &SvidRequest {
                    csr_der: req.csr_der,
                    spiffe_id: req.spiffe_id,
                    dns_names: req.dns_names,
                    ttl: req.ttl,
                },
                req.task,
                SystemTime::now(),
            )
            .map_err(|e| Status::invalid_argument(e.to_string()))?
        };
        let record = SvidRecord {
            serial: issued.serial.clone(),
            spiffe_id: issued.spiffe_id.clone(),
            entry_id: req.entry_id,
            agent_id: req.agent_id.cloned(),
            issued_at: now_unix(),
            not_after: issued.not_after,
        };
        self.db(move |s| s.record_svid(&record))
            .await
            .map_err(store_status)?;
        let principal = req
            .agent_id
            .map(|a| a.to_string())
            .unwrap_or_else(|| "lanyard-server".into());
        let mut event = Event::new(principal, Action::SvidIssued, issued.spiffe_id.to_string())
            .detail("serial", issued.serial.clone())
            .detail("not_after", issued.not_after.to_string());
        if let Some(entry) = req.entry_id {
            event = event.detail("entry_id", entry.to_string());
        }
        if let Some(task) = req.task {
            event = event
                .ticket(task.ticket.clone())
                .detail("task_id", task.task_id.clone());
        }
        self.audit(event).await?;
        let kind = match (&req.task, &req.entry_id, req.agent_id) {
            (Some(_), _, _) => "task",
            (None, Some(_), _) => "workload",
            (None, None, Some(_)) => "agent",
            (None, None, None) => "server",
        };
        self.metrics.issued(kind, started.elapsed());
        tracing::info!(
            spiffe_id = %issued.spiffe_id,
            serial = %issued.serial,
            not_after = issued.not_after,
            agent = req.agent_id.map(|a| a.to_string()).unwrap_or_default(),
            "SVID issued"
        );
        Ok(issued)
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

/// Seconds since the Unix epoch.
pub(crate) fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
