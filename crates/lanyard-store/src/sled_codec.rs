//! How the sled backend encodes records: JSON documents keyed by their
//! natural key, big-endian counters in the `meta` tree, and the errors that
//! name the tree and key of a damaged record. [`Keyed`] gives every kind of
//! record its tree and key once, so reading one record or all of them is
//! one generic function each.

use std::borrow::Cow;

use lanyard_identity::Entry;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::transaction::TransactionError;
use tracing::warn;

use crate::records::StoredJoinToken;
use crate::sled_store::{AGENTS, ENTRIES, JOIN_TOKENS, META, REVOCATIONS, SVIDS, TASKS};
use crate::{AgentRecord, Revocation, StoreError, SvidRecord, TaskRecord};

/// A kind of record kept in one tree under its own natural key.
pub(crate) trait Keyed: DeserializeOwned {
    /// The tree it is kept in.
    const TREE: &'static str;
    /// The key it must be stored under.
    fn key(&self) -> Cow<'_, str>;
}

impl Keyed for Entry {
    const TREE: &'static str = ENTRIES;
    fn key(&self) -> Cow<'_, str> {
        Cow::Owned(entry_key(&self.id))
    }
}

impl Keyed for AgentRecord {
    const TREE: &'static str = AGENTS;
    fn key(&self) -> Cow<'_, str> {
        Cow::Borrowed(self.spiffe_id.as_str())
    }
}

impl Keyed for StoredJoinToken {
    const TREE: &'static str = JOIN_TOKENS;
    fn key(&self) -> Cow<'_, str> {
        Cow::Borrowed(&self.token.token_id)
    }
}

impl Keyed for SvidRecord {
    const TREE: &'static str = SVIDS;
    fn key(&self) -> Cow<'_, str> {
        Cow::Borrowed(&self.serial)
    }
}

impl Keyed for Revocation {
    const TREE: &'static str = REVOCATIONS;
    fn key(&self) -> Cow<'_, str> {
        Cow::Borrowed(&self.serial)
    }
}

impl Keyed for TaskRecord {
    const TREE: &'static str = TASKS;
    fn key(&self) -> Cow<'_, str> {
        Cow::Borrowed(&self.id)
    }
}

/// Decodes a record and checks that it is stored under its own key, so that
/// a record moved by damage is not served under another's name.
pub(crate) fn decode_record<T: Keyed>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    let record: T = decode(T::TREE, key, bytes)?;
    if record.key().as_bytes() != key {
        warn!(tree = T::TREE, key = %show_key(key), "record stored under another key");
        return Err(StoreError::Corrupt {
            what: format!(
                "record in tree `{}` under key {} names itself {:?}",
                T::TREE,
                show_key(key),
                record.key()
            ),
        });
    }
    Ok(record)
}

/// The record under `key`, if any.
pub(crate) fn get_record<T: Keyed>(tree: &sled::Tree, key: &[u8]) -> Result<Option<T>, StoreError> {
    match tree.get(key).map_err(backend)? {
        Some(bytes) => decode_record(key, &bytes).map(Some),
        None => Ok(None),
    }
}

/// Every record of the tree, in key order; a damaged one is an error, never
/// skipped.
pub(crate) fn list_records<T: Keyed>(tree: &sled::Tree) -> Result<Vec<T>, StoreError> {
    tree.iter()
        .map(|item| {
            let (key, value) = item.map_err(backend)?;
            decode_record(&key, &value)
        })
        .collect()
}

/// Reads a big-endian `u64` counter from `meta`; absent is 0.
pub(crate) fn read_counter(meta: &sled::Tree, key: &[u8]) -> Result<u64, StoreError> {
    match meta.get(key).map_err(backend)? {
        None => Ok(0),
        Some(bytes) => decode_counter(key, &bytes),
    }
}

pub(crate) fn decode_counter(key: &[u8], bytes: &[u8]) -> Result<u64, StoreError> {
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
pub(crate) fn increment_counter(meta: &sled::Tree, key: &[u8]) -> Result<u64, StoreError> {
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

pub(crate) fn show_key(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(s) => format!("{s:?}"),
        Err(_) => format!("0x{}", hex::encode(key)),
    }
}

pub(crate) fn decode<T: DeserializeOwned>(
    tree: &str,
    key: &[u8],
    bytes: &[u8],
) -> Result<T, StoreError> {
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

pub(crate) use crate::rules::entry_key;

/// The uniqueness key of an entry (see [`crate::rules::identity_key`]).
pub(crate) fn unique_key(entry: &Entry) -> Result<Vec<u8>, StoreError> {
    crate::rules::identity_key(entry).map(String::into_bytes)
}

pub(crate) use crate::rules::describe_identity as describe_unique;
