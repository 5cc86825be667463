//! Restoring a backup (or moving from sled) into an empty database.

use lanyard_store::{Records, StoreError};

use crate::sql::opt_row;
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
            for entry in &records.entries {
                entries::insert(tx, entry).await?;
            }
            for agent in &records.agents {
                agents::upsert(tx, agent).await?;
            }
            for svid in &records.svids {
                svids::insert(tx, svid).await?;
            }
            for revocation in &records.revocations {
                svids::insert_revocation(tx, revocation).await?;
            }
            for task in &records.tasks {
                tasks::store(tx, task).await?;
            }
            Ok(())
        })?;
        records.log_imported();
        Ok(())
    }
}
