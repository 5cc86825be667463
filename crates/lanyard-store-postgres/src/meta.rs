//! The one `meta` row: the CRL counter, the CA's journal and the audit head.
//! Each method is one statement, atomic on its own: the counter's UPDATE
//! holds the row's lock until it commits, so concurrent callers, on any
//! server, get distinct, increasing numbers.

use lanyard_store::StoreError;
use tracing::{debug, info};

use crate::PostgresStore;
use crate::rows::signed;
use crate::sql::{exec, opt_row};

/// The `meta` row is created by the first migration; without it the schema
/// is damaged.
fn missing_meta() -> StoreError {
    StoreError::Corrupt {
        what: "table `meta` has no row".to_owned(),
    }
}

impl PostgresStore {
    pub(crate) fn next_crl_number_now(&self) -> Result<u64, StoreError> {
        let next: i64 = self.read(async |c| {
            opt_row(
                c,
                "UPDATE meta SET crl_number = crl_number + 1 RETURNING crl_number",
                &[],
            )
            .await?
            .map(|row| row.get(0))
            .ok_or_else(missing_meta)
        })?;
        let next = u64::try_from(next).map_err(|_| StoreError::Corrupt {
            what: format!("table `meta` holds a negative CRL number {next}"),
        })?;
        debug!(crl_number = next, "CRL number allocated");
        Ok(next)
    }

    pub(crate) fn raise_crl_number_now(&self, issued: u64) -> Result<(), StoreError> {
        let issued = signed("CRL number", issued)?;
        self.read(async |c| {
            exec(
                c,
                "UPDATE meta SET crl_number = GREATEST(crl_number, $1)",
                &[&issued],
            )
            .await
        })?;
        info!(crl_number = issued, "CRL counter raised");
        Ok(())
    }

    pub(crate) fn get_ca_journal_now(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(async |c| {
            opt_row(c, "SELECT ca_journal FROM meta", &[])
                .await?
                .map(|row| row.get(0))
                .ok_or_else(missing_meta)
        })
    }

    pub(crate) fn put_ca_journal_now(&self, journal: &[u8]) -> Result<(), StoreError> {
        self.read(async |c| exec(c, "UPDATE meta SET ca_journal = $1", &[&journal]).await)?;
        info!(bytes = journal.len(), "CA journal stored");
        Ok(())
    }

    pub(crate) fn get_audit_head_now(&self) -> Result<Option<(u64, String)>, StoreError> {
        let row = self.read(async |c| {
            opt_row(c, "SELECT audit_seq, audit_hash FROM meta", &[])
                .await?
                .ok_or_else(missing_meta)
        })?;
        match (
            row.get::<_, Option<i64>>(0),
            row.get::<_, Option<String>>(1),
        ) {
            (Some(seq), Some(hash)) => {
                let seq = u64::try_from(seq).map_err(|_| StoreError::Corrupt {
                    what: format!("table `meta` holds a negative audit sequence {seq}"),
                })?;
                Ok(Some((seq, hash)))
            }
            _ => Ok(None),
        }
    }

    pub(crate) fn put_audit_head_now(&self, seq: u64, hash: &str) -> Result<(), StoreError> {
        let seq = signed("audit sequence", seq)?;
        self.read(async |c| {
            exec(
                c,
                "UPDATE meta SET audit_seq = $1, audit_hash = $2",
                &[&seq, &hash],
            )
            .await
        })?;
        Ok(())
    }
}
