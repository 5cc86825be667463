//! The embedded default backend, on sled 0.34.
//!
//! One tree per kind of record, each record a JSON document keyed by its
//! natural key (entry ID, agent SPIFFE ID, token ID, serial). The `meta` tree
//! holds the format-version marker, the write generation, the CRL number and
//! the CA journal.
//!
//! sled only syncs to disk every 500 ms on its own, so every write method
//! flushes before it returns, then advances the seal file (see
//! [`crate::seal`]). Opening fails closed: an existing directory is used only
//! if it is a complete, undamaged store of our format that holds every write
//! it acknowledged.

use std::fmt;
use std::fs;
use std::io::ErrorKind;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use lanyard_identity::{Entry, EntryId, SpiffeId};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::transaction::TransactionError;
use tracing::{debug, error, info, warn};

use crate::records::StoredJoinToken;
use crate::seal::{SEAL_FILE, Seal};
use crate::{
    AgentRecord, AgentStanding, Datastore, IssueBatch, Issued, JoinTokenRecord, Refusal,
    Revocation, StoreError, SvidRecord, Sweep, TaskRecord,
};

/// The format marker this build writes into new stores and accepts in
/// existing ones. Bump it (and write a migration) when the layout changes.
pub const FORMAT_VERSION: &str = "lanyard-store/2";
/// The previous format: the same records without the issuance indexes,
/// which opening builds (once) before it writes [`FORMAT_VERSION`].
const FORMAT_V1: &str = "lanyard-store/1";

pub(crate) const FORMAT_KEY: &[u8] = b"format_version";
const CRL_NUMBER_KEY: &[u8] = b"crl_number";
const CA_JOURNAL_KEY: &[u8] = b"ca_journal";
/// How many writes the store has acknowledged; see [`crate::seal`].
const GENERATION_KEY: &[u8] = b"generation";

const ENTRIES: &str = "entries";
const ENTRY_INDEX: &str = "entry_index";
pub(crate) const AGENTS: &str = "agents";
const JOIN_TOKENS: &str = "join_tokens";
pub(crate) const SVIDS: &str = "svids";
const REVOCATIONS: &str = "revocations";
const META: &str = "meta";
pub(crate) const TASKS: &str = "tasks";
const AUDIT_HEAD_KEY: &[u8] = b"audit_head";
/// Index: entry ID bytes ++ serial -> () for every recorded SVID of an entry.
pub(crate) const SVIDS_BY_ENTRY: &str = "svids_by_entry";
/// Index: agent SPIFFE ID ++ 0 ++ serial -> () for every SVID issued to or
/// through an agent.
pub(crate) const SVIDS_BY_AGENT: &str = "svids_by_agent";
/// Index: parent SPIFFE ID ++ 0 ++ entry key -> () (node aliases are found
/// under the server's ID).
pub(crate) const ENTRIES_BY_PARENT: &str = "entries_by_parent";
/// Index: entry key -> task ID, for the entries that carry task grants.
pub(crate) const TASK_ENTRIES: &str = "task_entries";

/// The trees a store of the previous format has.
const TREES_V1: [&str; 8] = [
    ENTRIES,
    ENTRY_INDEX,
    AGENTS,
    JOIN_TOKENS,
    SVIDS,
    REVOCATIONS,
    META,
    TASKS,
];

/// The indexes format 2 adds.
const INDEXES: [&str; 4] = [
    SVIDS_BY_ENTRY,
    SVIDS_BY_AGENT,
    ENTRIES_BY_PARENT,
    TASK_ENTRIES,
];

/// The files sled 0.34 keeps in its directory that we require to be present
/// in an existing store.
const SLED_DATA_FILE: &str = "db";
const SLED_CONF_FILE: &str = "conf";

/// A [`Datastore`] in a sled database in one directory.
///
/// Only one `SledStore` (in any process) may have a directory open at a time;
/// a second [`open`](SledStore::open) fails with [`StoreError::Open`].
pub struct SledStore {
    path: PathBuf,
    db: sled::Db,
    pub(crate) entries: sled::Tree,
    pub(crate) entry_index: sled::Tree,
    pub(crate) agents: sled::Tree,
    pub(crate) join_tokens: sled::Tree,
    pub(crate) svids: sled::Tree,
    pub(crate) revocations: sled::Tree,
    pub(crate) meta: sled::Tree,
    pub(crate) tasks: sled::Tree,
    pub(crate) svids_by_entry: sled::Tree,
    pub(crate) svids_by_agent: sled::Tree,
    pub(crate) entries_by_parent: sled::Tree,
    pub(crate) task_entries: sled::Tree,
    seal: Mutex<Seal>,
    /// Serializes the atomic operations (see [`crate::sled_atomic`]): each
    /// reads, decides and writes one transaction while holding it, so what
    /// it read is still true when it writes.
    pub(crate) writer: Mutex<()>,
}

impl fmt::Debug for SledStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// What [`SledStore::open`] found in the directory before opening it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DirState {
    /// Absent or empty: a new store is created.
    Fresh,
    /// Holds a sled database that must be a complete store of our format.
    Existing,
}

// === impl SledStore ===

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

    /// The directory this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
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
            let entry = decode_entry(&key, &value)?;
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
            decode_keyed(JOIN_TOKENS, &key, &value, |t: &StoredJoinToken| {
                t.token.token_id.as_str()
            })?;
        }
        self.list_tasks()?;
        let svids = self.list_svids()?;
        counts.svids = svids.len();
        counts.revocations = self.list_revocations()?.len();
        self.verify_indexes(&svids, counts.entries)?;
        Ok(counts)
    }

    fn lock_seal(&self) -> Result<MutexGuard<'_, Seal>, StoreError> {
        self.seal
            .lock()
            .map_err(|_| StoreError::Backend("the seal file's lock was poisoned by a panic".into()))
    }

    /// Makes every write so far durable and acknowledged: bumps the write
    /// generation, flushes sled (fsync), then advances the seal file.
    pub(crate) fn commit(&self) -> Result<(), StoreError> {
        let generation = increment_counter(&self.meta, GENERATION_KEY)?;
        self.db.flush().map_err(backend)?;
        self.lock_seal()?.advance(generation)
    }

    /// Removes every record of `tree` whose expiry (read by `not_after`) is
    /// before `expired_before`. A record changed concurrently is left alone.
    fn prune<T: DeserializeOwned>(
        &self,
        tree: &sled::Tree,
        name: &'static str,
        expired_before: i64,
        key_of: impl Fn(&T) -> &str,
        not_after: impl Fn(&T) -> i64,
    ) -> Result<usize, StoreError> {
        let mut removed = 0;
        for item in tree.iter() {
            let (key, value) = item.map_err(backend)?;
            let record: T = decode_keyed(name, &key, &value, &key_of)?;
            if not_after(&record) < expired_before {
                let swapped = tree
                    .compare_and_swap(&key, Some(&value), None::<&[u8]>)
                    .map_err(backend)?;
                if swapped.is_ok() {
                    removed += 1;
                }
            }
        }
        if removed > 0 {
            self.commit()?;
            info!(
                tree = name,
                removed, expired_before, "pruned expired records"
            );
        }
        Ok(removed)
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

/// Reads a big-endian `u64` counter from `meta`; absent is 0.
fn read_counter(meta: &sled::Tree, key: &[u8]) -> Result<u64, StoreError> {
    match meta.get(key).map_err(backend)? {
        None => Ok(0),
        Some(bytes) => decode_counter(key, &bytes),
    }
}

fn decode_counter(key: &[u8], bytes: &[u8]) -> Result<u64, StoreError> {
    let raw: [u8; 8] = bytes.try_into().map_err(|_| StoreError::Corrupt {
        what: format!(
            "counter {} in tree `{META}` is {} bytes long, expected 8",
            show_key(key),
            bytes.len()
        ),
    })?;
    Ok(u64::from_be_bytes(raw))
}

/// Atomically adds one to a counter in `meta` and returns the new value.
fn increment_counter(meta: &sled::Tree, key: &[u8]) -> Result<u64, StoreError> {
    loop {
        let current = meta.get(key).map_err(backend)?;
        let last = match &current {
            None => 0,
            Some(bytes) => decode_counter(key, bytes)?,
        };
        let next = last.checked_add(1).ok_or_else(|| StoreError::Corrupt {
            what: format!(
                "counter {} in tree `{META}` is at its maximum",
                show_key(key)
            ),
        })?;
        let swapped = meta
            .compare_and_swap(key, current, Some(&next.to_be_bytes()))
            .map_err(backend)?;
        if swapped.is_ok() {
            return Ok(next);
        }
    }
}

// === record encoding ===

pub(crate) fn backend(e: sled::Error) -> StoreError {
    match e {
        sled::Error::Corruption { .. } => StoreError::Corrupt {
            what: format!("sled detected damaged data: {e}"),
        },
        other => StoreError::Backend(Box::new(other)),
    }
}

pub(crate) fn transaction_error(e: TransactionError<StoreError>) -> StoreError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => backend(e),
    }
}

pub(crate) fn encode<T: Serialize>(what: &str, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|source| StoreError::Encode {
        what: what.to_owned(),
        source,
    })
}

fn show_key(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(s) => format!("{s:?}"),
        Err(_) => format!(
            "0x{}",
            key.iter().map(|b| format!("{b:02x}")).collect::<String>()
        ),
    }
}

fn decode<T: DeserializeOwned>(tree: &str, key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| {
        warn!(tree, key = %show_key(key), error = %e, "undecodable record");
        StoreError::Corrupt {
            what: format!(
                "record in tree `{tree}` under key {} cannot be decoded: {e}",
                show_key(key)
            ),
        }
    })
}

/// Decodes a record and checks that it is stored under its own key, so that
/// a record moved by damage is not served under another's name.
pub(crate) fn decode_keyed<T: DeserializeOwned>(
    tree: &str,
    key: &[u8],
    bytes: &[u8],
    key_of: impl Fn(&T) -> &str,
) -> Result<T, StoreError> {
    let record: T = decode(tree, key, bytes)?;
    if key_of(&record).as_bytes() != key {
        warn!(tree, key = %show_key(key), "record stored under another key");
        return Err(StoreError::Corrupt {
            what: format!(
                "record in tree `{tree}` under key {} names itself {:?}",
                show_key(key),
                key_of(&record)
            ),
        });
    }
    Ok(record)
}

pub(crate) use crate::rules::entry_key;

pub(crate) fn decode_entry(key: &[u8], bytes: &[u8]) -> Result<Entry, StoreError> {
    let entry: Entry = decode(ENTRIES, key, bytes)?;
    if entry_key(&entry.id).as_bytes() != key {
        return Err(StoreError::Corrupt {
            what: format!(
                "record in tree `{ENTRIES}` under key {} holds entry {}",
                show_key(key),
                entry.id.0
            ),
        });
    }
    Ok(entry)
}

/// The uniqueness key of an entry (see [`crate::rules::identity_key`]).
pub(crate) fn unique_key(entry: &Entry) -> Result<Vec<u8>, StoreError> {
    crate::rules::identity_key(entry).map(String::into_bytes)
}

pub(crate) use crate::rules::describe_identity as describe_unique;

// === impl Datastore for SledStore ===

impl Datastore for SledStore {
    fn create_entry(&self, entry: &Entry) -> Result<(), StoreError> {
        self.create_entry_atomic(entry)
    }

    fn create_entries(&self, entries: &[Entry]) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        self.create_entries_atomic(entries)
    }

    fn import(&self, records: &crate::Records) -> Result<(), StoreError> {
        self.import_atomic(records)
    }

    fn get_entry(&self, id: &EntryId) -> Result<Option<Entry>, StoreError> {
        let key = entry_key(id);
        match self.entries.get(key.as_bytes()).map_err(backend)? {
            Some(bytes) => decode_entry(key.as_bytes(), &bytes).map(Some),
            None => Ok(None),
        }
    }

    fn update_entry(
        &self,
        entry: &Entry,
        sweep: &Sweep,
    ) -> Result<(Entry, Vec<Revocation>), StoreError> {
        self.update_entry_atomic(entry, sweep)
    }

    fn delete_entry(
        &self,
        id: &EntryId,
        sweep: &Sweep,
    ) -> Result<(Entry, Vec<Revocation>), StoreError> {
        self.delete_entry_atomic(id, sweep)
    }

    fn list_entries(&self) -> Result<Vec<Entry>, StoreError> {
        let mut entries = Vec::new();
        for item in self.entries.iter() {
            let (key, value) = item.map_err(backend)?;
            entries.push(decode_entry(&key, &value)?);
        }
        entries.sort_by_key(|e| (e.created_at, e.id));
        Ok(entries)
    }

    fn put_agent(&self, agent: &AgentRecord) -> Result<(), StoreError> {
        self.put_agent_atomic(agent)
    }

    fn attest_agent(
        &self,
        agent: &AgentRecord,
        svid: &SvidRecord,
    ) -> Result<AgentRecord, StoreError> {
        self.attest_agent_atomic(agent, svid)
    }

    fn renew_agent(
        &self,
        agent_id: &SpiffeId,
        presented_serial: &str,
        svid: &SvidRecord,
    ) -> Result<AgentRecord, StoreError> {
        self.renew_agent_atomic(agent_id, presented_serial, svid)
    }

    fn set_agent_standing(
        &self,
        agent_id: &SpiffeId,
        standing: AgentStanding,
        sweep: &Sweep,
    ) -> Result<(AgentRecord, Vec<Revocation>), StoreError> {
        self.set_agent_standing_atomic(agent_id, standing, sweep)
    }

    fn get_agent(&self, id: &SpiffeId) -> Result<Option<AgentRecord>, StoreError> {
        let key = id.as_str().as_bytes();
        match self.agents.get(key).map_err(backend)? {
            Some(bytes) => {
                decode_keyed(AGENTS, key, &bytes, |a: &AgentRecord| a.spiffe_id.as_str()).map(Some)
            }
            None => Ok(None),
        }
    }

    fn list_agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        self.agents
            .iter()
            .map(|item| {
                let (key, value) = item.map_err(backend)?;
                decode_keyed(AGENTS, &key, &value, |a: &AgentRecord| a.spiffe_id.as_str())
            })
            .collect()
    }

    fn create_join_token(&self, token: &JoinTokenRecord) -> Result<(), StoreError> {
        let value = encode(
            "join token",
            &StoredJoinToken {
                token: token.clone(),
                used_at: None,
            },
        )?;
        let created = self
            .join_tokens
            .compare_and_swap(token.token_id.as_bytes(), None::<&[u8]>, Some(value))
            .map_err(backend)?;
        if created.is_err() {
            return Err(StoreError::AlreadyExists {
                kind: "join token",
                key: token.token_id.clone(),
            });
        }
        self.commit()?;
        info!(token_id = %token.token_id, expires_at = token.expires_at, "join token created");
        Ok(())
    }

    fn consume_join_token(&self, token_id: &str, now: i64) -> Result<JoinTokenRecord, StoreError> {
        let key = token_id.as_bytes();
        // Compare-and-swap from the unused record to its used tombstone:
        // exactly one caller's swap succeeds; the others see the tombstone
        // when they read again.
        loop {
            let Some(current) = self.join_tokens.get(key).map_err(backend)? else {
                return Err(StoreError::NotFound {
                    kind: "join token",
                    key: token_id.to_owned(),
                });
            };
            let stored: StoredJoinToken =
                decode_keyed(JOIN_TOKENS, key, &current, |t: &StoredJoinToken| {
                    t.token.token_id.as_str()
                })?;
            if let Some(used_at) = stored.used_at {
                info!(token_id, used_at, "refused join token: already used");
                return Err(StoreError::TokenUsed);
            }
            if now >= stored.token.expires_at {
                info!(
                    token_id,
                    expired_at = stored.token.expires_at,
                    now,
                    "refused join token: expired"
                );
                return Err(StoreError::TokenExpired {
                    expired_at: stored.token.expires_at,
                });
            }
            let used = encode(
                "join token",
                &StoredJoinToken {
                    token: stored.token.clone(),
                    used_at: Some(now),
                },
            )?;
            let swapped = self
                .join_tokens
                .compare_and_swap(key, Some(&current), Some(used))
                .map_err(backend)?;
            if swapped.is_ok() {
                self.commit()?;
                info!(token_id, "join token consumed");
                return Ok(stored.token);
            }
        }
    }

    fn record_svid(&self, svid: &SvidRecord) -> Result<(), StoreError> {
        self.record_svid_atomic(svid)
    }

    fn issue_svids(
        &self,
        batches: &[IssueBatch],
        now: i64,
    ) -> Result<Vec<Vec<Result<Issued, Refusal>>>, StoreError> {
        self.issue_svids_atomic(batches, now)
    }

    fn revoke_svid(&self, serial: &str, sweep: &Sweep) -> Result<Option<Revocation>, StoreError> {
        self.revoke_svid_atomic(serial, sweep)
    }

    fn get_svid(&self, serial: &str) -> Result<Option<SvidRecord>, StoreError> {
        let key = serial.as_bytes();
        match self.svids.get(key).map_err(backend)? {
            Some(bytes) => {
                decode_keyed(SVIDS, key, &bytes, |s: &SvidRecord| s.serial.as_str()).map(Some)
            }
            None => Ok(None),
        }
    }

    fn list_svids(&self) -> Result<Vec<SvidRecord>, StoreError> {
        self.svids
            .iter()
            .map(|item| {
                let (key, value) = item.map_err(backend)?;
                decode_keyed(SVIDS, &key, &value, |s: &SvidRecord| s.serial.as_str())
            })
            .collect()
    }

    fn prune_svids(&self, expired_before: i64) -> Result<usize, StoreError> {
        self.prune_svids_atomic(expired_before)
    }

    fn put_revocation(&self, revocation: &Revocation) -> Result<(), StoreError> {
        let value = encode("revocation", revocation)?;
        self.revocations
            .insert(revocation.serial.as_bytes(), value)
            .map_err(backend)?;
        self.commit()?;
        info!(serial = %revocation.serial, reason = %revocation.reason, "revocation stored");
        Ok(())
    }

    fn list_revocations(&self) -> Result<Vec<Revocation>, StoreError> {
        self.revocations
            .iter()
            .map(|item| {
                let (key, value) = item.map_err(backend)?;
                decode_keyed(REVOCATIONS, &key, &value, |r: &Revocation| {
                    r.serial.as_str()
                })
            })
            .collect()
    }

    fn prune_revocations(&self, expired_before: i64) -> Result<usize, StoreError> {
        self.prune(
            &self.revocations,
            REVOCATIONS,
            expired_before,
            |r: &Revocation| r.serial.as_str(),
            |r| r.not_after,
        )
    }

    fn next_crl_number(&self) -> Result<u64, StoreError> {
        let next = increment_counter(&self.meta, CRL_NUMBER_KEY)?;
        self.commit()?;
        debug!(crl_number = next, "CRL number allocated");
        Ok(next)
    }

    fn raise_crl_number(&self, issued: u64) -> Result<(), StoreError> {
        loop {
            let current = self.meta.get(CRL_NUMBER_KEY).map_err(backend)?;
            let last = match &current {
                None => 0,
                Some(bytes) => decode_counter(CRL_NUMBER_KEY, bytes)?,
            };
            if last >= issued {
                return Ok(());
            }
            let swapped = self
                .meta
                .compare_and_swap(CRL_NUMBER_KEY, current, Some(&issued.to_be_bytes()))
                .map_err(backend)?;
            if swapped.is_ok() {
                self.commit()?;
                info!(crl_number = issued, "CRL counter raised");
                return Ok(());
            }
        }
    }

    fn get_ca_journal(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .meta
            .get(CA_JOURNAL_KEY)
            .map_err(backend)?
            .map(|v| v.to_vec()))
    }

    fn put_ca_journal(&self, journal: &[u8]) -> Result<(), StoreError> {
        self.meta.insert(CA_JOURNAL_KEY, journal).map_err(backend)?;
        self.commit()?;
        info!(bytes = journal.len(), "CA journal stored");
        Ok(())
    }

    fn put_task(&self, task: &TaskRecord) -> Result<(), StoreError> {
        self.put_task_atomic(task)
    }

    fn activate_task(&self, task: &TaskRecord, entry: &Entry) -> Result<(), StoreError> {
        self.activate_task_atomic(task, entry)
    }

    fn end_task(&self, task: &TaskRecord, sweep: &Sweep) -> Result<Vec<Revocation>, StoreError> {
        self.end_task_atomic(task, sweep)
    }

    fn get_task(&self, id: &str) -> Result<Option<TaskRecord>, StoreError> {
        match self.tasks.get(id.as_bytes()).map_err(backend)? {
            Some(bytes) => {
                decode_keyed(TASKS, id.as_bytes(), &bytes, |t: &TaskRecord| t.id.as_str()).map(Some)
            }
            None => Ok(None),
        }
    }

    fn list_tasks(&self) -> Result<Vec<TaskRecord>, StoreError> {
        self.tasks
            .iter()
            .map(|item| {
                let (key, value) = item.map_err(backend)?;
                decode_keyed(TASKS, &key, &value, |t: &TaskRecord| t.id.as_str())
            })
            .collect()
    }

    fn get_audit_head(&self) -> Result<Option<(u64, String)>, StoreError> {
        match self.meta.get(AUDIT_HEAD_KEY).map_err(backend)? {
            Some(bytes) => decode(META, AUDIT_HEAD_KEY, &bytes).map(Some),
            None => Ok(None),
        }
    }

    fn put_audit_head(&self, seq: u64, hash: &str) -> Result<(), StoreError> {
        let value = encode("audit head", &(seq, hash))?;
        self.meta.insert(AUDIT_HEAD_KEY, value).map_err(backend)?;
        self.commit()
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use lanyard_identity::Selector;

    fn open() -> (tempfile::TempDir, SledStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        (dir, store)
    }

    fn assert_corrupt_naming<T: fmt::Debug>(result: Result<T, StoreError>, tree: &str, key: &str) {
        match result {
            Err(StoreError::Corrupt { what }) => assert!(
                what.contains(&format!("`{tree}`")) && what.contains(key),
                "the error must name tree {tree} and key {key}: {what}"
            ),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn undecodable_records_are_errors_on_read_never_skipped() {
        let (_dir, store) = open();
        store.svids.insert("0f", &b"{\"serial\":"[..]).unwrap();
        assert_corrupt_naming(store.list_svids(), SVIDS, "\"0f\"");
        assert_corrupt_naming(store.get_svid("0f"), SVIDS, "\"0f\"");
        assert_corrupt_naming(store.prune_svids(i64::MAX), SVIDS, "\"0f\"");

        store.join_tokens.insert("t", &b"[]"[..]).unwrap();
        assert_corrupt_naming(store.consume_join_token("t", 0), JOIN_TOKENS, "\"t\"");

        let id = EntryId(uuid::Uuid::new_v4());
        store
            .entries
            .insert(entry_key(&id).as_bytes(), &b"null"[..])
            .unwrap();
        assert_corrupt_naming(store.list_entries(), ENTRIES, &entry_key(&id));
        assert_corrupt_naming(store.get_entry(&id), ENTRIES, &entry_key(&id));
        assert_corrupt_naming(
            store.delete_entry(
                &id,
                &Sweep {
                    revoked_at: 0,
                    reason: String::new(),
                },
            ),
            ENTRIES,
            &entry_key(&id),
        );

        store.meta.insert(CRL_NUMBER_KEY, &b"7"[..]).unwrap();
        assert_corrupt_naming(store.next_crl_number(), META, "crl_number");
        assert!(matches!(store.verify(), Err(StoreError::Corrupt { .. })));
    }

    #[test]
    fn a_missing_revocation_index_key_is_refused() {
        let (_dir, store) = open();
        let agent = SpiffeId::new("spiffe://example.org/lanyard/agent/join_token/n").unwrap();
        store
            .record_svid(&SvidRecord {
                serial: "0a".into(),
                spiffe_id: SpiffeId::new("spiffe://example.org/w").unwrap(),
                entry_id: Some(EntryId(uuid::Uuid::new_v4())),
                agent_id: Some(agent.clone()),
                task_id: None,
                issued_at: 0,
                not_after: 10,
            })
            .unwrap();
        assert!(store.verify().is_ok());
        let key = store.svids_by_agent.iter().next().unwrap().unwrap().0;
        store.svids_by_agent.remove(key).unwrap();
        match store.verify() {
            Err(StoreError::Corrupt { what }) => assert!(what.contains("svids_by_agent"), "{what}"),
            other => panic!("a sweep could miss that serial, yet verify said {other:?}"),
        }
    }

    #[test]
    fn every_write_advances_the_generation_and_the_seal() {
        let (dir, store) = open();
        assert_eq!(read_counter(&store.meta, GENERATION_KEY).unwrap(), 0);
        store.put_ca_journal(b"j").unwrap();
        store.next_crl_number().unwrap();
        assert_eq!(read_counter(&store.meta, GENERATION_KEY).unwrap(), 2);
        assert_eq!(store.lock_seal().unwrap().sealed(), 2);
        // A read-only or no-op call acknowledges nothing new.
        assert_eq!(store.prune_svids(i64::MAX).unwrap(), 0);
        assert_eq!(store.verify().unwrap().generation, 2);
        drop(store);
        assert_eq!(Seal::open(dir.path()).unwrap().sealed(), 2);
    }

    #[test]
    fn uniqueness_key_ignores_selector_order_and_duplicates() {
        let selector = |s: &str| s.parse::<Selector>().unwrap();
        let base = Entry {
            id: EntryId(uuid::Uuid::new_v4()),
            spiffe_id: SpiffeId::new("spiffe://example.org/a").unwrap(),
            parent_id: SpiffeId::new("spiffe://example.org/p").unwrap(),
            selectors: vec![selector("unix:uid:1"), selector("unix:gid:2")],
            x509_svid_ttl_secs: None,
            jwt_svid_ttl_secs: None,
            dns_names: Vec::new(),
            expires_at: None,
            hint: String::new(),
            revision: 0,
            created_at: 0,
        };
        let mut shuffled = base.clone();
        shuffled.selectors = vec![
            selector("unix:gid:2"),
            selector("unix:uid:1"),
            selector("unix:gid:2"),
        ];
        shuffled.id = EntryId(uuid::Uuid::new_v4());
        assert_eq!(unique_key(&base).unwrap(), unique_key(&shuffled).unwrap());
        let mut other_parent = base.clone();
        other_parent.parent_id = SpiffeId::new("spiffe://example.org/q").unwrap();
        assert_ne!(
            unique_key(&base).unwrap(),
            unique_key(&other_parent).unwrap()
        );
        assert_eq!(
            describe_unique(&shuffled),
            "with spiffe_id spiffe://example.org/a parent_id spiffe://example.org/p \
             and selectors [unix:gid:2, unix:uid:1]"
        );
    }
}
