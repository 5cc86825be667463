//! Opening a sled store fail-closed, and verifying one: a directory is used
//! only if it is new, or a complete, undamaged store of this format that
//! holds every write it acknowledged.

use std::fs;
use std::io::ErrorKind;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::sync::Mutex;

use tracing::{error, info, warn};

use crate::records::StoredJoinToken;
use crate::seal::{SEAL_FILE, Seal};
use crate::sled_codec::{backend, decode_record, read_counter, show_key, unique_key};
use crate::sled_store::{
    AGENTS, CRL_NUMBER_KEY, ENTRIES, ENTRIES_BY_PARENT, ENTRY_INDEX, FORMAT_KEY, FORMAT_V1,
    FORMAT_VERSION, GENERATION_KEY, INDEXES, JOIN_TOKENS, META, REVOCATIONS, SLED_CONF_FILE,
    SLED_DATA_FILE, SVIDS, SVIDS_BY_AGENT, SVIDS_BY_ENTRY, TASK_ENTRIES, TASKS, TREES_V1,
};
use crate::{Datastore, SledStore, StoreError};

/// What [`SledStore::open`] found in the directory before opening it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DirState {
    /// Absent or empty: a new store is created.
    Fresh,
    /// Holds a sled database that must be a complete store of our format.
    Existing,
}

// === opening and verifying ===

impl SledStore {
    /// Opens the store in `dir`, creating it (and `dir`) on first use.
    ///
    /// Fails closed rather than start empty over existing data, or serve a
    /// store that silently lost writes. A directory that is not empty must
    /// hold a complete store: sled's `db` and `conf`, the seal file, a
    /// database sled recovers, the format marker [`FORMAT_VERSION`], all of
    /// the store's trees, every record decodable and stored under its own
    /// key, and no fewer acknowledged writes than the seal records. Anything
    /// else is an error saying what is wrong; nothing is repaired or
    /// recreated over it.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let state = inspect_dir(dir)?;
        if state == DirState::Fresh {
            lanyard_hardening::create_dir_exact(dir, 0o700).map_err(|e| StoreError::Open {
                path: dir.to_path_buf(),
                reason: format!("cannot create the directory: {e}"),
            })?;
        }
        // sled panics on some damaged files instead of returning an error;
        // such a store is refused like any other damaged one.
        let opened = panic::catch_unwind(AssertUnwindSafe(|| Self::open_in(dir, state)));
        match opened {
            Ok(result) => {
                if let Err(e) = &result {
                    warn!(path = %dir.display(), error = %e, "refused to open store");
                }
                result
            }
            Err(payload) => {
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_owned());
                error!(path = %dir.display(), panic = %message, "sled failed on the store's files");
                Err(StoreError::Corrupt {
                    what: format!(
                        "sled failed while reading the database in {}: {message}",
                        dir.display()
                    ),
                })
            }
        }
    }

    fn open_in(dir: &Path, state: DirState) -> Result<Self, StoreError> {
        // Every write is flushed before it returns (`commit`), so sled's
        // background flusher adds nothing; without it, dropping the store
        // releases the database and its lock at once.
        let db = sled::Config::new()
            .path(dir)
            .flush_every_ms(None)
            .open()
            .map_err(|e| StoreError::Open {
                path: dir.to_path_buf(),
                reason: format!("sled refused the database: {e}"),
            })?;
        private_subdirs(dir)?;

        let (seal, format) = match state {
            DirState::Existing => {
                let format = check_existing(dir, &db)?;
                (Some(Seal::open(dir)?), format)
            }
            DirState::Fresh => (None, FORMAT_VERSION),
        };

        let open_tree = |name: &str| {
            db.open_tree(name).map_err(|e| StoreError::Open {
                path: dir.to_path_buf(),
                reason: format!("cannot open tree `{name}`: {e}"),
            })
        };
        let entries = open_tree(ENTRIES)?;
        let entry_index = open_tree(ENTRY_INDEX)?;
        let agents = open_tree(AGENTS)?;
        let join_tokens = open_tree(JOIN_TOKENS)?;
        let svids = open_tree(SVIDS)?;
        let revocations = open_tree(REVOCATIONS)?;
        let meta = open_tree(META)?;
        let tasks = open_tree(TASKS)?;
        let svids_by_entry = open_tree(SVIDS_BY_ENTRY)?;
        let svids_by_agent = open_tree(SVIDS_BY_AGENT)?;
        let entries_by_parent = open_tree(ENTRIES_BY_PARENT)?;
        let task_entries = open_tree(TASK_ENTRIES)?;

        let seal = match seal {
            Some(seal) => seal,
            None => {
                // The marker is written after every tree exists and the seal
                // after the marker is durable, so a store whose creation was
                // interrupted is refused later rather than taken as complete.
                meta.insert(FORMAT_KEY, FORMAT_VERSION.as_bytes())
                    .map_err(backend)?;
                meta.insert(GENERATION_KEY, &0u64.to_be_bytes())
                    .map_err(backend)?;
                db.flush().map_err(backend)?;
                Seal::create(dir, 0)?
            }
        };

        let store = Self {
            path: dir.to_path_buf(),
            db,
            entries,
            entry_index,
            agents,
            join_tokens,
            svids,
            revocations,
            meta,
            tasks,
            svids_by_entry,
            svids_by_agent,
            entries_by_parent,
            task_entries,
            seal: Mutex::new(seal),
            writer: Mutex::new(()),
        };
        if format == FORMAT_V1 {
            store.migrate_from_v1()?;
        }

        match state {
            DirState::Fresh => {
                info!(path = %dir.display(), format = FORMAT_VERSION, "created new store");
            }
            DirState::Existing => {
                let counts = store.verify()?;
                info!(
                    path = %dir.display(),
                    format = FORMAT_VERSION,
                    generation = counts.generation,
                    entries = counts.entries,
                    agents = counts.agents,
                    svids = counts.svids,
                    revocations = counts.revocations,
                    "opened existing store"
                );
            }
        }
        Ok(store)
    }

    /// Reads every record of every tree and checks the store's invariants:
    /// each record decodes and is stored under its own key, the entry index
    /// matches the entries, and the data file holds every write the seal
    /// file says was acknowledged. [`open`](SledStore::open) runs it on every
    /// existing store; it can also be run on a live one, e.g. by a health
    /// check.
    pub fn verify(&self) -> Result<VerifyCounts, StoreError> {
        let mut counts = VerifyCounts::default();

        let generation = read_counter(&self.meta, GENERATION_KEY)?;
        let sealed = self.lock_seal()?.sealed();
        if generation < sealed {
            return Err(StoreError::Corrupt {
                what: format!(
                    "the data file in {} holds writes up to number {generation}, but {} \
                     writes were acknowledged (seal file `{SEAL_FILE}`): sled dropped the \
                     latest writes of a damaged or truncated data file",
                    self.path.display(),
                    sealed
                ),
            });
        }
        counts.generation = generation;
        read_counter(&self.meta, CRL_NUMBER_KEY)?;

        for item in self.entries.iter() {
            let (key, value) = item.map_err(backend)?;
            let entry = decode_record::<lanyard_identity::Entry>(&key, &value)?;
            let unique = unique_key(&entry)?;
            match self.entry_index.get(&unique).map_err(backend)? {
                Some(id) if id.as_ref() == key.as_ref() => {}
                _ => {
                    return Err(StoreError::Corrupt {
                        what: format!(
                            "tree `{ENTRY_INDEX}` does not map entry {} to its identity",
                            show_key(&key)
                        ),
                    });
                }
            }
            counts.entries += 1;
        }
        let indexed = self.entry_index.len();
        if indexed != counts.entries {
            return Err(StoreError::Corrupt {
                what: format!(
                    "tree `{ENTRY_INDEX}` has {indexed} keys for {} entries",
                    counts.entries
                ),
            });
        }
        counts.agents = self.list_agents()?.len();
        for item in self.join_tokens.iter() {
            let (key, value) = item.map_err(backend)?;
            decode_record::<StoredJoinToken>(&key, &value)?;
        }
        self.list_tasks()?;
        let svids = self.list_svids()?;
        counts.svids = svids.len();
        counts.revocations = self.list_revocations()?.len();
        self.verify_indexes(&svids, counts.entries)?;
        Ok(counts)
    }
}

/// What [`SledStore::verify`] read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyCounts {
    /// How many writes the store has acknowledged since it was created.
    pub generation: u64,
    /// Registration entries.
    pub entries: usize,
    /// Agents.
    pub agents: usize,
    /// Recorded SVIDs.
    pub svids: usize,
    /// Revocations.
    pub revocations: usize,
}

/// Decides whether `dir` is new or holds a sled database, refusing anything
/// else.
fn inspect_dir(dir: &Path) -> Result<DirState, StoreError> {
    let not_a_store = |reason: &str| StoreError::NotAStore {
        path: dir.to_path_buf(),
        reason: reason.to_owned(),
    };
    let io_error = |what: &str, e: std::io::Error| StoreError::Open {
        path: dir.to_path_buf(),
        reason: format!("{what}: {e}"),
    };

    let meta = match fs::metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(DirState::Fresh),
        Err(e) => return Err(io_error("cannot read the directory", e)),
    };
    if !meta.is_dir() {
        return Err(not_a_store("it is not a directory"));
    }
    let mut listing = fs::read_dir(dir).map_err(|e| io_error("cannot list the directory", e))?;
    if listing.next().is_none() {
        return Ok(DirState::Fresh);
    }

    match fs::metadata(dir.join(SLED_DATA_FILE)) {
        Ok(m) if m.is_file() && m.len() > 0 => {}
        Ok(m) if m.is_file() => {
            return Err(not_a_store(
                "the sled data file `db` is empty; the store was never written or was truncated",
            ));
        }
        Ok(_) => return Err(not_a_store("`db` is not a regular file")),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(not_a_store(
                "the directory is not empty but holds no sled data file `db`; \
                 point the data directory at an empty or absent directory to create a store",
            ));
        }
        Err(e) => return Err(io_error("cannot read the sled data file `db`", e)),
    }
    match fs::metadata(dir.join(SLED_CONF_FILE)) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Err(not_a_store("`conf` is not a regular file")),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            // sled would silently write a fresh `conf`; a database without
            // its configuration has been tampered with or half copied.
            return Err(not_a_store(
                "the sled configuration file `conf` is missing next to the data file `db`",
            ));
        }
        Err(e) => {
            return Err(io_error(
                "cannot read the sled configuration file `conf`",
                e,
            ));
        }
    }
    Ok(DirState::Existing)
}

/// Checks that a database sled opened from existing files is a store of
/// our format (this one or the previous) with all its trees; returns which.
fn check_existing(dir: &Path, db: &sled::Db) -> Result<&'static str, StoreError> {
    if !db.was_recovered() {
        return Err(StoreError::Corrupt {
            what: format!(
                "sled recovered no database from the data file in {}; \
                 it is damaged or not a sled 0.34 database",
                dir.display()
            ),
        });
    }
    let names = db.tree_names();
    let has_tree = |name: &str| names.iter().any(|n| n.as_ref() == name.as_bytes());
    if !has_tree(META) {
        return Err(StoreError::NotAStore {
            path: dir.to_path_buf(),
            reason: "the sled database has no `meta` tree and so no format-version marker; \
                     it was not written by Lanyard, or sled lost its contents"
                .to_owned(),
        });
    }
    let meta = db.open_tree(META).map_err(backend)?;
    match meta.get(FORMAT_KEY).map_err(backend)? {
        None => Err(StoreError::NotAStore {
            path: dir.to_path_buf(),
            reason: "the format-version marker is missing from the `meta` tree; \
                         the store is damaged or its creation was interrupted"
                .to_owned(),
        }),
        Some(found) => {
            let format = [FORMAT_VERSION, FORMAT_V1]
                .into_iter()
                .find(|f| found.as_ref() == f.as_bytes())
                .ok_or_else(|| StoreError::UnsupportedFormat {
                    path: dir.to_path_buf(),
                    found: String::from_utf8_lossy(&found).into_owned(),
                    expected: FORMAT_VERSION,
                })?;
            let required: &[&str] = if format == FORMAT_V1 { &[] } else { &INDEXES };
            if let Some(missing) = TREES_V1.iter().chain(required).find(|name| !has_tree(name)) {
                return Err(StoreError::Corrupt {
                    what: format!("tree `{missing}` is missing from the store"),
                });
            }
            Ok(format)
        }
    }
}

/// sled creates subdirectories (`blobs/`) with the process umask, which a
/// library cannot choose; they are set to 0700 once sled has opened. The
/// daemons also run with a umask of at least 077 (lanyard-hardening), so
/// nothing is reachable in between.
fn private_subdirs(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    let fail = |path: &Path, e: std::io::Error| StoreError::Open {
        path: path.to_path_buf(),
        reason: format!("cannot make sled's directory 0700: {e}"),
    };
    for entry in fs::read_dir(dir).map_err(|e| fail(dir, e))? {
        let entry = entry.map_err(|e| fail(dir, e))?;
        let path = entry.path();
        if entry.file_type().map_err(|e| fail(&path, e))?.is_dir() {
            fs::set_permissions(&path, fs::Permissions::from_mode(0o700))
                .map_err(|e| fail(&path, e))?;
        }
    }
    Ok(())
}
