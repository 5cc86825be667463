//! Restoring a backup (or moving from sled) into an empty database.

use lanyard_store::{Records, StoreError};

use crate::sql::{opt_row, pipelined};
use crate::{PostgresStore, agents, entries, svids, tasks};

impl PostgresStore {
    /// One SERIALIZABLE transaction: all the records, or none.
    pub(crate) fn import_tx(&self, records: &Records) -> Result<(), StoreError> {
        records.check_distinct()?;
        self.serializable("import", async |tx| {
            let holds = opt_row(
                tx,
                "SELECT 1 WHERE EXISTS (SELECT 1 FROM entries) OR EXISTS (SELECT 1 FROM agents) \
                 OR EXISTS (SELECT 1 FROM svids) OR EXISTS (SELECT 1 FROM revocations) \
                 OR EXISTS (SELECT 1 FROM tasks)",
                &[],
            )
            .await?;
            if holds.is_some() {
                return Err(StoreError::AlreadyExists {
                    kind: "store",
                    key: format!(
                        "{} (it already holds records; import only into a fresh one)",
                        self.target
                    ),
                });
            }
            // Each kind's inserts are sent in pipelined chunks: one round
            // trip per chunk, not per record (a backup may hold millions).
            pipelined(&records.entries, |e| entries::insert(tx, e)).await?;
            pipelined(&records.agents, |a| agents::upsert(tx, a)).await?;
            pipelined(&records.svids, |s| svids::insert(tx, s)).await?;
            pipelined(&records.revocations, |r| svids::insert_revocation(tx, r)).await?;
            // A task and its entry link are two statements in order.
            for task in &records.tasks {
                tasks::store(tx, task).await?;
            }
            Ok(())
        })?;
        records.log_imported();
        Ok(())
    }
}
