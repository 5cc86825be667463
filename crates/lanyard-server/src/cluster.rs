//! Several servers on one PostgreSQL database: one CA shared through the
//! store, changes followed over LISTEN/NOTIFY, and cluster-wide jobs under
//! advisory locks.
//!
//! # One CA, sealed in the store
//!
//! Every server of a trust domain signs with the same CA generation. Its
//! journal and its key files, each sealed with AES-256-GCM under the
//! key-encryption key of `[datastore] kek_file`, are stored together in the
//! database; a server opens them into its CA key directory (0600) as a single
//! server keeps them. Creating, rotating and reloading the CA happen under
//! the cluster's CA lock, each reading the stored journal first, so one
//! server prepares or activates a generation and the others load it when
//! notified. One CA means one trust bundle, one CRL and one CRL signer,
//! whatever server an agent asks.
//!
//! With sled (one server) the locks are no-ops and nothing is followed.

use std::{
    sync::{Arc, atomic::Ordering},
    time::SystemTime,
};

use lanyard_ca::{
    CaConfig, CaJournal, CertificateAuthority, KeyEncryptionKey, Rotation, SealedKey, UpstreamCa,
};
use lanyard_store::Datastore;
use lanyard_store_postgres::{Change, ClusterJob, ClusterLock, PostgresStore};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{ServerConfig, ServerError, state::ServerState};

/// How the servers sharing a store coordinate (nothing to do with sled).
#[derive(Default)]
pub(crate) struct Cluster {
    postgres: Option<Arc<PostgresStore>>,
    kek: Option<KeyEncryptionKey>,
}

/// A cluster-wide lock held (or, for one server, nothing to hold).
#[must_use = "the lock is released when dropped"]
pub(crate) struct Guard {
    _lock: Option<ClusterLock>,
}

/// The CA as stored when its keys are shared: the journal and every key
/// file it names, sealed.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SharedCa {
    journal: CaJournal,
    sealed_keys: Vec<SealedKey>,
}

impl Cluster {
    /// One server on PostgreSQL (or sled, with `postgres: None`).
    pub fn new(postgres: Option<Arc<PostgresStore>>, kek: Option<KeyEncryptionKey>) -> Self {
        Self { postgres, kek }
    }

    /// The shared store, when there is one.
    pub fn postgres(&self) -> Option<&Arc<PostgresStore>> {
        self.postgres.as_ref()
    }

    /// Waits for the cluster-wide lock of `job` (blocking).
    pub fn lock(&self, job: ClusterJob) -> Result<Guard, lanyard_store::StoreError> {
        Ok(Guard {
            _lock: match &self.postgres {
                Some(pg) => Some(pg.lock(job)?),
                None => None,
            },
        })
    }

    /// The lock of `job` if no other server holds it (blocking).
    pub fn try_lock(&self, job: ClusterJob) -> Result<Option<Guard>, lanyard_store::StoreError> {
        Ok(match &self.postgres {
            Some(pg) => pg.try_lock(job)?.map(|l| Guard { _lock: Some(l) }),
            None => Some(Guard { _lock: None }),
        })
    }

    /// Opens sealed CA keys into the key directory.
    fn unseal(
        &self,
        sealed: Option<&[SealedKey]>,
        key_dir: &std::path::Path,
    ) -> Result<(), ServerError> {
        let Some(sealed) = sealed else { return Ok(()) };
        let Some(kek) = &self.kek else {
            if sealed.iter().all(|k| key_dir.join(&k.name).is_file()) {
                // Restored from a backup with its key files: nothing to open.
                return Ok(());
            }
            return Err(ServerError::Config(
                "the CA in the database is sealed with a key-encryption key: set \
                 [datastore] kek_file to the file every server of this trust domain uses"
                    .into(),
            ));
        };
        let written = lanyard_ca::unseal_key_files(kek, key_dir, sealed)?;
        if written > 0 {
            tracing::info!(
                written,
                kek = kek.fingerprint(),
                "CA keys opened from the database"
            );
        }
        Ok(())
    }

    /// Stores the CA's journal (and, with a KEK, its sealed keys) unless the
    /// store already holds exactly that.
    fn persist(
        &self,
        store: &dyn Datastore,
        ca: &CertificateAuthority,
        key_dir: &std::path::Path,
        stored: &Stored,
    ) -> Result<bool, ServerError> {
        let journal = ca.journal();
        let names = ca.key_files();
        let same_journal = stored.journal.as_ref() == Some(&journal);
        let bytes = match &self.kek {
            Some(kek) => {
                let covered = stored
                    .sealed
                    .as_ref()
                    .is_some_and(|s| names.iter().all(|n| s.iter().any(|k| &k.name == n)));
                if same_journal && covered {
                    return Ok(false);
                }
                serde_json::to_vec(&SharedCa {
                    journal,
                    sealed_keys: lanyard_ca::seal_key_files(kek, key_dir, &names)?,
                })
            }
            None => {
                if same_journal && stored.sealed.is_none() {
                    return Ok(false);
                }
                serde_json::to_vec(&journal)
            }
        }
        .map_err(|e| ServerError::Config(format!("CA journal: {e}")))?;
        store.put_ca_journal(&bytes)?;
        Ok(true)
    }
}

/// The CA record the store holds.
#[derive(Default)]
struct Stored {
    journal: Option<CaJournal>,
    sealed: Option<Vec<SealedKey>>,
}

fn read_stored(store: &dyn Datastore) -> Result<Stored, ServerError> {
    let Some(bytes) = store.get_ca_journal()? else {
        return Ok(Stored::default());
    };
    if let Ok(shared) = serde_json::from_slice::<SharedCa>(&bytes) {
        return Ok(Stored {
            journal: Some(shared.journal),
            sealed: Some(shared.sealed_keys),
        });
    }
    let journal = serde_json::from_slice::<CaJournal>(&bytes)
        .map_err(|e| ServerError::Config(format!("CA journal in the store is unreadable: {e}")))?;
    Ok(Stored {
        journal: Some(journal),
        sealed: None,
    })
}

/// The CA configuration the server config gives.
pub(crate) fn ca_config(cfg: &ServerConfig) -> CaConfig {
    CaConfig {
        trust_domain: cfg.trust_domain.clone(),
        ca_ttl: cfg.ca_ttl,
        key_dir: cfg.data_dir.join("ca"),
        upstream: cfg.upstream.as_ref().map(|u| UpstreamCa {
            cert_path: u.cert_path.clone(),
            key_path: u.key_path.clone(),
        }),
        jwt_algorithm: cfg.jwt_algorithm,
    }
}

/// Loads the CA the store holds, or creates the trust domain's first one,
/// under the cluster's CA lock (blocking).
pub(crate) fn load_ca(
    cfg: &ServerConfig,
    store: &dyn Datastore,
    cluster: &Cluster,
    now: SystemTime,
) -> Result<CertificateAuthority, ServerError> {
    let _guard = cluster.lock(ClusterJob::Ca)?;
    let stored = read_stored(store)?;
    let ca_cfg = ca_config(cfg);
    cluster.unseal(stored.sealed.as_deref(), &ca_cfg.key_dir)?;
    let ca = CertificateAuthority::load_or_create(ca_cfg.clone(), stored.journal.clone(), now)?;
    if cluster.persist(store, &ca, &ca_cfg.key_dir, &stored)? {
        tracing::info!(sealed = cluster.kek.is_some(), "CA journal stored");
    }
    Ok(ca)
}

/// What one CA step did.
pub(crate) struct CaStep {
    /// The rotation this server took.
    pub rotation: Rotation,
    /// The CA changed (reloaded from the store or rotated here).
    pub changed: bool,
    /// The active generation changed.
    pub activated: bool,
    /// When the next rotation step falls due.
    pub next_at: SystemTime,
}

/// Under the cluster's CA lock: loads the stored CA if another server
/// changed it, takes the rotation step that is due, and stores the result
/// (blocking).
pub(crate) fn ca_step(state: &ServerState, now: SystemTime) -> Result<CaStep, ServerError> {
    let poisoned = || ServerError::Task {
        task: "rotation",
        reason: "CA lock poisoned".into(),
    };
    let _guard = state.cluster.lock(ClusterJob::Ca)?;
    let ca_cfg = ca_config(&state.cfg);
    let store = state.store.as_ref();
    let stored = if state.cluster.postgres.is_some() {
        read_stored(store)?
    } else {
        Stored::default()
    };
    let mut ca = state.ca.write().map_err(|_| poisoned())?;
    let before = ca.active_certificate();
    let mut changed = false;
    if let Some(journal) = &stored.journal
        && *journal != ca.journal()
    {
        state
            .cluster
            .unseal(stored.sealed.as_deref(), &ca_cfg.key_dir)?;
        *ca = CertificateAuthority::load_or_create(ca_cfg.clone(), Some(journal.clone()), now)?;
        tracing::info!("CA reloaded: another server changed it");
        changed = true;
    }
    let rotation = ca.rotate(now)?;
    if rotation != Rotation::Unchanged || changed {
        let stored = if state.cluster.postgres.is_some() {
            stored
        } else {
            // sled: this server is the only writer; store what it holds.
            Stored::default()
        };
        state
            .cluster
            .persist(store, &ca, &ca_cfg.key_dir, &stored)?;
        if let Err(e) = ca.remove_unused_key_files() {
            tracing::warn!(error = %e, "cannot remove retired CA key files");
        }
    }
    Ok(CaStep {
        rotation,
        changed: changed || rotation != Rotation::Unchanged,
        activated: ca.active_certificate() != before,
        next_at: ca.next_rotation_at(),
    })
}

/// Follows the changes other servers commit until `shutdown`: entries and
/// agents reach this server's agents, a newer CRL is published here, a
/// changed CA is loaded, tasks are rescheduled.
pub(crate) async fn follow(
    state: Arc<ServerState>,
    mut changes: mpsc::Receiver<Change>,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    loop {
        let change = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            change = changes.recv() => change,
        };
        let Some(change) = change else {
            return Err(ServerError::Task {
                task: "change listener",
                reason: "the listener stopped".into(),
            });
        };
        tracing::debug!(?change, "change from the database");
        match change {
            Change::Listening { reconnected: true } => {
                tracing::warn!("change listener reconnected: reloading entries, CA and CRL");
                state.resync_entries.store(true, Ordering::Release);
                state.notify();
                state.ca_changed.notify_one();
                state.tasks_changed.notify_one();
                adopt_crl(&state).await;
            }
            Change::Entry(id) => state.entries_changed([id]),
            Change::Agent(_) => state.notify(),
            Change::Task(_) => state.tasks_changed.notify_one(),
            Change::Ca => state.ca_changed.notify_one(),
            Change::Crl(number) if number > state.crl.load().number => adopt_crl(&state).await,
            _ => {}
        }
    }
}

/// Publishes here the CRL the database holds, if it is newer than ours.
pub(crate) async fn adopt_crl(state: &Arc<ServerState>) {
    let Some(pg) = state.cluster.postgres().cloned() else {
        return;
    };
    let got = tokio::task::spawn_blocking(move || pg.published_crl()).await;
    match got {
        Ok(Ok(Some((number, der)))) if number > state.crl.load().number => {
            match crate::revocation::PublishedCrl::from_der(der) {
                Ok(crl) => crate::revocation::install(state, crl),
                Err(e) => {
                    tracing::error!(error = %e, crl_number = number, "cannot read the CRL another server published")
                }
            }
        }
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "cannot read the published CRL"),
        Err(e) => tracing::error!(error = %e, "cannot read the published CRL"),
    }
}
