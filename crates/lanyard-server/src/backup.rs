//! Backing up and restoring a server: the datastore's records, the CA's
//! journal and key files, and the audit log with its anchored head.
//!
//! `datastore export` asks the running server for a [`Backup`]; `datastore
//! import` writes one into a fresh data directory, offline. A server started
//! on that directory (same trust domain) serves the same entries, bundle and
//! CRL. Join tokens are not carried over: they are single-use secrets and a
//! restored server should hand out new ones.

use std::{collections::BTreeMap, path::Path};

use lanyard_identity::Entry;
use lanyard_store::{AgentRecord, Datastore, Revocation, SvidRecord, TaskRecord};
use serde::{Deserialize, Serialize};

use crate::{BackupError, DatastoreConfig, ServerError};

/// The backup format this build writes and reads.
pub const BACKUP_FORMAT: &str = "lanyard-backup/1";

/// Everything a server needs to come back as it was.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backup {
    /// [`BACKUP_FORMAT`].
    pub format: String,
    /// The trust domain the server ran with; the restored one must match.
    pub trust_domain: String,
    /// When the backup was taken (unix seconds).
    pub created_at: i64,
    /// Registration entries.
    pub entries: Vec<Entry>,
    /// Attested agents.
    pub agents: Vec<AgentRecord>,
    /// Issued SVIDs.
    pub svids: Vec<SvidRecord>,
    /// Revoked serials.
    pub revocations: Vec<Revocation>,
    /// Task grants.
    pub tasks: Vec<TaskRecord>,
    /// The last CRL number issued; the restored server continues above it.
    pub crl_number: u64,
    /// The CA journal (opaque JSON).
    pub ca_journal: Option<String>,
    /// CA key files by name (PEM; secret).
    pub ca_keys: BTreeMap<String, String>,
    /// The audit log file as it was.
    pub audit_log: String,
    /// The audit head anchored in the store.
    pub audit_head: Option<(u64, String)>,
}

impl Backup {
    /// Parses and checks the format.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ServerError> {
        let backup: Backup = serde_json::from_slice(bytes).map_err(BackupError::NotJson)?;
        if backup.format != BACKUP_FORMAT {
            return Err(BackupError::Format {
                found: backup.format,
                supported: BACKUP_FORMAT,
            }
            .into());
        }
        Ok(backup)
    }

    /// Reads every record from `store`; the CA files from `ca_dir`.
    pub(crate) fn collect(
        store: &dyn Datastore,
        trust_domain: String,
        crl_number: u64,
        ca_dir: &Path,
        audit_log: String,
        audit_head: Option<(u64, String)>,
        now: i64,
    ) -> Result<Self, ServerError> {
        let mut ca_keys = BTreeMap::new();
        let listing = std::fs::read_dir(ca_dir)
            .map_err(|e| ServerError::io("cannot read CA key dir", ca_dir.display(), e))?;
        for item in listing {
            let item =
                item.map_err(|e| ServerError::io("cannot read CA key dir", ca_dir.display(), e))?;
            if item.file_type().is_ok_and(|t| t.is_file()) {
                let path = item.path();
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| ServerError::io("cannot read CA key", path.display(), e))?;
                ca_keys.insert(item.file_name().to_string_lossy().into_owned(), text);
            }
        }
        Ok(Self {
            format: BACKUP_FORMAT.into(),
            trust_domain,
            created_at: now,
            entries: store.list_entries()?,
            agents: store.list_agents()?,
            svids: store.list_svids()?,
            revocations: store.list_revocations()?,
            tasks: store.list_tasks()?,
            crl_number,
            ca_journal: store
                .get_ca_journal()?
                .map(|j| String::from_utf8_lossy(&j).into_owned()),
            ca_keys,
            audit_log,
            audit_head,
        })
    }

    /// Writes the backup into `data_dir` (CA keys, audit log) and the
    /// `datastore` (records, counters), neither of which may hold a store
    /// yet: a sled store in `data_dir`, or a PostgreSQL database with
    /// records, is refused.
    pub fn restore(
        &self,
        data_dir: &Path,
        datastore: &DatastoreConfig,
    ) -> Result<String, ServerError> {
        let store_dir = data_dir.join("store");
        if *datastore == DatastoreConfig::Sled
            && store_dir.read_dir().is_ok_and(|mut d| d.next().is_some())
        {
            return Err(BackupError::TargetNotEmpty { store_dir }.into());
        }
        let ca_dir = data_dir.join("ca");
        for dir in [data_dir, ca_dir.as_path()] {
            lanyard_hardening::create_dir_exact(dir, 0o700)
                .map_err(|e| ServerError::io("cannot create", dir.display(), e))?;
        }
        for (name, pem) in &self.ca_keys {
            if name.contains('/') || name.starts_with('.') {
                return Err(BackupError::CaFileName { name: name.clone() }.into());
            }
            lanyard_ca::write_file_atomic(&ca_dir.join(name), pem.as_bytes(), 0o600)?;
        }
        let (store, postgres) = crate::datastore::open_shared(datastore, data_dir)?;
        // One transaction: a restore of millions of records is one flush,
        // not one per record, and an interrupted one leaves nothing half done.
        store.import(&lanyard_store::Records {
            entries: self.entries.clone(),
            agents: self.agents.clone(),
            svids: self.svids.clone(),
            revocations: self.revocations.clone(),
            tasks: self.tasks.clone(),
        })?;
        store.raise_crl_number(self.crl_number)?;
        if let Some(journal) = &self.ca_journal {
            store.put_ca_journal(journal.as_bytes())?;
        }
        match &postgres {
            // On PostgreSQL the audit chain lives in the database.
            Some(pg) => self.restore_audit_chain(pg)?,
            None => {
                lanyard_ca::write_file_atomic(
                    &data_dir.join("audit.log"),
                    self.audit_log.as_bytes(),
                    0o600,
                )?;
                if let Some((seq, hash)) = &self.audit_head {
                    store.put_audit_head(*seq, hash)?;
                }
            }
        }
        Ok(format!(
            "restored {} entries, {} agents, {} SVID records, {} revocations, {} tasks, {} CA files into {} (trust domain {}; start the server with it)",
            self.entries.len(),
            self.agents.len(),
            self.svids.len(),
            self.revocations.len(),
            self.tasks.len(),
            self.ca_keys.len(),
            data_dir.display(),
            self.trust_domain
        ))
    }

    /// Writes the backup's audit records, as they are, into the empty
    /// audit chain of a PostgreSQL database, with the backup's head.
    fn restore_audit_chain(
        &self,
        pg: &lanyard_store_postgres::PostgresStore,
    ) -> Result<(), ServerError> {
        let lines: Vec<(u64, String)> = self
            .audit_log
            .lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(i, l)| (i as u64 + 1, l.to_owned()))
            .collect();
        let head = match (&self.audit_head, lines.last()) {
            (Some(head), _) => head.clone(),
            (None, None) => return Ok(()),
            (None, Some(_)) => {
                return Err(BackupError::NoAuditHead.into());
            }
        };
        pg.append_audit(|seq, _| {
            if seq != 0 {
                return Err(lanyard_store::StoreError::AlreadyExists {
                    kind: "audit chain",
                    key: format!("up to record {seq}"),
                });
            }
            Ok((lines, head))
        })?;
        Ok(())
    }
}
