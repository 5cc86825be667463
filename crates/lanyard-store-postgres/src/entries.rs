//! Registration entries: create (one or a batch), compare-and-swap update,
//! delete with its revocation sweep.

use std::collections::HashSet;

use deadpool_postgres::GenericClient;
use lanyard_identity::{Entry, EntryId};
use lanyard_store::rules::{
    describe_identity, entry_key, entry_not_found, identity_key, reissues, updated_entry,
};
use lanyard_store::{Revocation, StoreError, Sweep};
use tracing::debug;

use crate::PostgresStore;
use crate::rows::{self, ENTRY_COLUMNS, selector_texts, signed};
use crate::sql::{exec, opt_row, rows};
use crate::svids::{Subject, sweep};

pub(crate) async fn load(
    c: &impl GenericClient,
    id: &EntryId,
) -> Result<Option<Entry>, StoreError> {
    let sql = format!("SELECT {ENTRY_COLUMNS} FROM entries WHERE id = $1");
    opt_row(c, &sql, &[&id.0])
        .await?
        .as_ref()
        .map(rows::entry)
        .transpose()
}

/// The entries parented to `parent`.
pub(crate) async fn children(
    c: &impl GenericClient,
    parent: &str,
) -> Result<Vec<Entry>, StoreError> {
    let sql = format!("SELECT {ENTRY_COLUMNS} FROM entries WHERE parent_id = $1");
    rows(c, &sql, &[&parent])
        .await?
        .iter()
        .map(rows::entry)
        .collect()
}

pub(crate) async fn insert(c: &impl GenericClient, entry: &Entry) -> Result<(), StoreError> {
    let ttl = entry
        .x509_svid_ttl_secs
        .map(|t| signed("x509_svid_ttl_secs", t))
        .transpose()?;
    let jwt_ttl = entry
        .jwt_svid_ttl_secs
        .map(|t| signed("jwt_svid_ttl_secs", t))
        .transpose()?;
    exec(
        c,
        "INSERT INTO entries (id, spiffe_id, parent_id, selectors, x509_svid_ttl_secs, dns_names, \
         expires_at, hint, revision, created_at, identity_key, jwt_svid_ttl_secs) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        &[
            &entry.id.0,
            &entry.spiffe_id.as_str(),
            &entry.parent_id.as_str(),
            &selector_texts(&entry.selectors),
            &ttl,
            &entry.dns_names,
            &entry.expires_at,
            &entry.hint,
            &signed("revision", entry.revision)?,
            &entry.created_at,
            &identity_key(entry)?,
            &jwt_ttl,
        ],
    )
    .await?;
    Ok(())
}

/// Removes the entry and its task link.
pub(crate) async fn remove(c: &impl GenericClient, id: &EntryId) -> Result<(), StoreError> {
    exec(c, "DELETE FROM entries WHERE id = $1", &[&id.0]).await?;
    exec(c, "DELETE FROM task_entries WHERE entry_id = $1", &[&id.0]).await?;
    Ok(())
}

/// Refuses an entry whose SPIFFE ID, parent and selector set another entry
/// already has.
async fn check_unique(c: &impl GenericClient, entry: &Entry) -> Result<(), StoreError> {
    let other = opt_row(
        c,
        "SELECT id FROM entries WHERE identity_key = $1 AND id <> $2",
        &[&identity_key(entry)?, &entry.id.0],
    )
    .await?;
    match other {
        Some(row) => Err(StoreError::AlreadyExists {
            kind: "entry",
            key: format!(
                "{} (entry {})",
                describe_identity(entry),
                row.get::<_, uuid::Uuid>(0).hyphenated()
            ),
        }),
        None => Ok(()),
    }
}

/// Refuses a new entry whose ID is taken, or whose identity another has.
pub(crate) async fn check_new(c: &impl GenericClient, entry: &Entry) -> Result<(), StoreError> {
    if load(c, &entry.id).await?.is_some() {
        return Err(StoreError::AlreadyExists {
            kind: "entry",
            key: entry_key(&entry.id),
        });
    }
    check_unique(c, entry).await
}

// === impl PostgresStore ===

impl PostgresStore {
    pub(crate) fn create_entry_tx(&self, entry: &Entry) -> Result<(), StoreError> {
        self.serializable("create_entry", async |tx| {
            check_new(tx, entry).await?;
            insert(tx, entry).await
        })?;
        debug!(entry_id = %entry.id, spiffe_id = entry.spiffe_id.as_str(), "entry created");
        Ok(())
    }

    pub(crate) fn create_entries_tx(
        &self,
        entries: &[Entry],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let results = self.serializable("create_entries", async |tx| {
            let mut ids: HashSet<EntryId> = HashSet::new();
            let mut identities: HashSet<String> = HashSet::new();
            let mut results = Vec::with_capacity(entries.len());
            for entry in entries {
                let result = if !ids.insert(entry.id) {
                    Err(StoreError::AlreadyExists {
                        kind: "entry",
                        key: entry_key(&entry.id),
                    })
                } else if !identities.insert(identity_key(entry)?) {
                    Err(StoreError::AlreadyExists {
                        kind: "entry",
                        key: format!("{} (earlier in the same batch)", describe_identity(entry)),
                    })
                } else {
                    check_new(tx, entry).await
                };
                if result.is_ok() {
                    insert(tx, entry).await?;
                }
                results.push(result);
            }
            Ok(results)
        })?;
        debug!(entries = entries.len(), "entries created in one batch");
        Ok(results)
    }

    pub(crate) fn get_entry_now(&self, id: &EntryId) -> Result<Option<Entry>, StoreError> {
        self.read(async |c| load(c, id).await)
    }

    pub(crate) fn list_entries_now(&self) -> Result<Vec<Entry>, StoreError> {
        let sql = format!("SELECT {ENTRY_COLUMNS} FROM entries ORDER BY created_at, id");
        self.read(async |c| rows(c, &sql, &[]).await?.iter().map(rows::entry).collect())
    }

    pub(crate) fn update_entry_tx(
        &self,
        entry: &Entry,
        how: &Sweep,
    ) -> Result<(Entry, Vec<Revocation>), StoreError> {
        let (updated, revoked) = self.serializable("update_entry", async |tx| {
            let stored = load(tx, &entry.id)
                .await?
                .ok_or_else(|| entry_not_found(&entry.id))?;
            let updated = updated_entry(&stored, entry)?;
            check_unique(tx, &updated).await?;
            // Delete and insert: one statement list for every column; the
            // task link lives in its own table and is kept.
            exec(tx, "DELETE FROM entries WHERE id = $1", &[&entry.id.0]).await?;
            insert(tx, &updated).await?;
            let revoked = if reissues(&stored, &updated) {
                sweep(tx, Subject::Entry(&entry.id), how).await?
            } else {
                Vec::new()
            };
            Ok((updated, revoked))
        })?;
        debug!(entry_id = %entry.id, revision = updated.revision, revoked = revoked.len(), "entry updated");
        Ok((updated, revoked))
    }

    pub(crate) fn delete_entry_tx(
        &self,
        id: &EntryId,
        how: &Sweep,
    ) -> Result<(Entry, Vec<Revocation>), StoreError> {
        let (stored, revoked) = self.serializable("delete_entry", async |tx| {
            let stored = load(tx, id).await?.ok_or_else(|| entry_not_found(id))?;
            remove(tx, id).await?;
            let revoked = sweep(tx, Subject::Entry(id), how).await?;
            Ok((stored, revoked))
        })?;
        debug!(entry_id = %id, revoked = revoked.len(), "entry deleted");
        Ok((stored, revoked))
    }
}
