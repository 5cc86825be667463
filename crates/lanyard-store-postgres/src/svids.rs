//! Issued SVIDs and revocations: group-committed issuance, the revocation
//! sweeps, single revocations and pruning.

use deadpool_postgres::GenericClient;
use lanyard_identity::{EntryId, SpiffeId};
use lanyard_store::{Refusal, Revocation, StoreError, SvidRecord, Sweep};
use tracing::{debug, info, warn};

use crate::PostgresStore;
use crate::rows::{self, REVOCATION_COLUMNS, SVID_COLUMNS};
use crate::sql::{exec, opt_row, rows};

/// Whose SVIDs a sweep revokes.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Subject<'a> {
    /// Every SVID recorded for the entry.
    Entry(&'a EntryId),
    /// The agent's own SVIDs and every SVID issued through it.
    Agent(&'a SpiffeId),
}

/// Turns every unexpired, not yet revoked SVID of `subject` into a
/// revocation, in the caller's transaction; returns the new revocations.
pub(crate) async fn sweep(
    c: &impl GenericClient,
    subject: Subject<'_>,
    how: &Sweep,
) -> Result<Vec<Revocation>, StoreError> {
    let sql = |column: &str| {
        format!(
            "INSERT INTO revocations (serial, revoked_at, not_after, reason) \
             SELECT serial, $2, not_after, $3 FROM svids WHERE {column} = $1 AND not_after > $2 \
             ON CONFLICT (serial) DO NOTHING RETURNING {REVOCATION_COLUMNS}"
        )
    };
    let found = match subject {
        Subject::Entry(id) => {
            rows(c, &sql("entry_id"), &[&id.0, &how.revoked_at, &how.reason]).await?
        }
        Subject::Agent(id) => {
            rows(
                c,
                &sql("agent_id"),
                &[&id.as_str(), &how.revoked_at, &how.reason],
            )
            .await?
        }
    };
    let mut revoked: Vec<Revocation> = found
        .iter()
        .map(rows::revocation)
        .collect::<Result<_, _>>()?;
    revoked.sort_by(|a, b| a.serial.cmp(&b.serial));
    Ok(revoked)
}

pub(crate) async fn load(
    c: &impl GenericClient,
    serial: &str,
) -> Result<Option<SvidRecord>, StoreError> {
    let sql = format!("SELECT {SVID_COLUMNS} FROM svids WHERE serial = $1");
    opt_row(c, &sql, &[&serial])
        .await?
        .as_ref()
        .map(rows::svid)
        .transpose()
}

pub(crate) async fn insert(c: &impl GenericClient, svid: &SvidRecord) -> Result<(), StoreError> {
    exec(
        c,
        "INSERT INTO svids (serial, spiffe_id, entry_id, agent_id, task_id, issued_at, not_after) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &svid.serial,
            &svid.spiffe_id.as_str(),
            &svid.entry_id.map(|e| e.0),
            &svid.agent_id.as_ref().map(SpiffeId::as_str),
            &svid.task_id,
            &svid.issued_at,
            &svid.not_after,
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn insert_revocation(
    c: &impl GenericClient,
    r: &Revocation,
) -> Result<(), StoreError> {
    exec(
        c,
        "INSERT INTO revocations (serial, revoked_at, not_after, reason) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (serial) DO UPDATE SET revoked_at = EXCLUDED.revoked_at, \
         not_after = EXCLUDED.not_after, reason = EXCLUDED.reason",
        &[&r.serial, &r.revoked_at, &r.not_after, &r.reason],
    )
    .await?;
    Ok(())
}

/// Refuses a serial that is already recorded (a random serial collided).
pub(crate) async fn check_serial_free(
    c: &impl GenericClient,
    serial: &str,
) -> Result<(), StoreError> {
    match opt_row(c, "SELECT 1 FROM svids WHERE serial = $1", &[&serial]).await? {
        Some(_) => Err(Refusal::SerialTaken {
            serial: serial.to_owned(),
        }
        .into()),
        None => Ok(()),
    }
}

// === impl PostgresStore ===

impl PostgresStore {
    pub(crate) fn record_svid_tx(&self, svid: &SvidRecord) -> Result<(), StoreError> {
        self.serializable("record_svid", async |tx| match load(tx, &svid.serial).await? {
            Some(current) if current == *svid => Ok(()),
            Some(_) => {
                warn!(serial = %svid.serial, "refused to record a second SVID with a used serial");
                Err(StoreError::AlreadyExists {
                    kind: "svid",
                    key: svid.serial.clone(),
                })
            }
            None => insert(tx, svid).await,
        })?;
        debug!(serial = %svid.serial, spiffe_id = svid.spiffe_id.as_str(), not_after = svid.not_after, "svid recorded");
        Ok(())
    }

    pub(crate) fn revoke_svid_tx(
        &self,
        serial: &str,
        how: &Sweep,
    ) -> Result<Option<Revocation>, StoreError> {
        self.serializable("revoke_svid", async |tx| {
            let svid = load(tx, serial)
                .await?
                .ok_or_else(|| StoreError::NotFound {
                    kind: "svid",
                    key: serial.to_owned(),
                })?;
            if svid.not_after <= how.revoked_at {
                return Ok(None);
            }
            let sql = format!(
                "INSERT INTO revocations (serial, revoked_at, not_after, reason) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (serial) DO NOTHING \
                 RETURNING {REVOCATION_COLUMNS}"
            );
            opt_row(
                tx,
                &sql,
                &[&serial, &how.revoked_at, &svid.not_after, &how.reason],
            )
            .await?
            .as_ref()
            .map(rows::revocation)
            .transpose()
        })
    }

    pub(crate) fn get_svid_now(&self, serial: &str) -> Result<Option<SvidRecord>, StoreError> {
        self.read(async |c| load(c, serial).await)
    }

    pub(crate) fn list_svids_now(&self) -> Result<Vec<SvidRecord>, StoreError> {
        let sql = format!("SELECT {SVID_COLUMNS} FROM svids ORDER BY serial");
        self.read(async |c| rows(c, &sql, &[]).await?.iter().map(rows::svid).collect())
    }

    /// Deletes the rows of `table` whose `not_after` is before
    /// `expired_before`: one statement, atomic on its own.
    pub(crate) fn prune(
        &self,
        table: &'static str,
        expired_before: i64,
    ) -> Result<usize, StoreError> {
        let sql = format!("DELETE FROM {table} WHERE not_after < $1");
        let removed = self.read(async |c| exec(c, &sql, &[&expired_before]).await)?;
        if removed > 0 {
            info!(table, removed, expired_before, "pruned expired records");
        }
        Ok(usize::try_from(removed).unwrap_or(usize::MAX))
    }

    pub(crate) fn put_revocation_now(&self, r: &Revocation) -> Result<(), StoreError> {
        self.read(async |c| insert_revocation(c, r).await)?;
        info!(serial = %r.serial, reason = %r.reason, "revocation stored");
        Ok(())
    }

    pub(crate) fn list_revocations_now(&self) -> Result<Vec<Revocation>, StoreError> {
        let sql = format!("SELECT {REVOCATION_COLUMNS} FROM revocations ORDER BY serial");
        self.read(async |c| {
            rows(c, &sql, &[])
                .await?
                .iter()
                .map(rows::revocation)
                .collect()
        })
    }
}
