//! Task grants and the link between a task and the entry that carries it.

use deadpool_postgres::GenericClient;
use lanyard_identity::Entry;
use lanyard_store::{Revocation, StoreError, Sweep, TaskRecord};
use tracing::{debug, info};

use crate::rows::{self, to_json};
use crate::sql::{exec, opt_row, rows};
use crate::svids::{Subject, sweep};
use crate::{PostgresStore, entries};

/// A task row (`id, record`); a record that names another task is damage.
pub(crate) fn decode(row: &tokio_postgres::Row) -> Result<TaskRecord, StoreError> {
    let id: String = row.get(0);
    let task: TaskRecord = rows::json(row, 1, "tasks", &id)?;
    if task.id != id {
        return Err(StoreError::Corrupt {
            what: format!("row {id:?} of table `tasks` holds task {:?}", task.id),
        });
    }
    Ok(task)
}

pub(crate) async fn load(
    c: &impl GenericClient,
    id: &str,
) -> Result<Option<TaskRecord>, StoreError> {
    opt_row(c, "SELECT id, record FROM tasks WHERE id = $1", &[&id])
        .await?
        .as_ref()
        .map(decode)
        .transpose()
}

/// Stores the task, and keeps its entry linked to it while the task is not
/// final (a restored active task stays a task, never a plain entry).
pub(crate) async fn store(c: &impl GenericClient, task: &TaskRecord) -> Result<(), StoreError> {
    exec(
        c,
        "INSERT INTO tasks (id, record) VALUES ($1, $2) \
         ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record",
        &[&task.id, &to_json("task", task)?],
    )
    .await?;
    if let Some(entry) = &task.entry_id {
        if task.state.is_final() {
            exec(
                c,
                "DELETE FROM task_entries WHERE entry_id = $1",
                &[&entry.0],
            )
            .await?;
        } else {
            exec(
                c,
                "INSERT INTO task_entries (entry_id, task_id) VALUES ($1, $2) \
                 ON CONFLICT (entry_id) DO UPDATE SET task_id = EXCLUDED.task_id",
                &[&entry.0, &task.id],
            )
            .await?;
        }
    }
    Ok(())
}

// === impl PostgresStore ===

impl PostgresStore {
    pub(crate) fn put_task_tx(&self, task: &TaskRecord) -> Result<(), StoreError> {
        self.serializable("put_task", async |tx| store(tx, task).await)?;
        debug!(task = %task.id, state = task.state.as_str(), "task stored");
        Ok(())
    }

    pub(crate) fn activate_task_tx(
        &self,
        task: &TaskRecord,
        entry: &Entry,
    ) -> Result<(), StoreError> {
        if task.entry_id != Some(entry.id) {
            return Err(StoreError::Corrupt {
                what: format!(
                    "task {} does not name entry {} it is activated with",
                    task.id, entry.id
                ),
            });
        }
        self.serializable("activate_task", async |tx| {
            entries::check_new(tx, entry).await?;
            entries::insert(tx, entry).await?;
            store(tx, task).await
        })
    }

    pub(crate) fn end_task_tx(
        &self,
        task: &TaskRecord,
        how: &Sweep,
    ) -> Result<Vec<Revocation>, StoreError> {
        let revoked = self.serializable("end_task", async |tx| {
            store(tx, task).await?;
            match &task.entry_id {
                Some(entry) => {
                    entries::remove(tx, entry).await?;
                    sweep(tx, Subject::Entry(entry), how).await
                }
                None => Ok(Vec::new()),
            }
        })?;
        info!(task = %task.id, state = task.state.as_str(), revoked = revoked.len(), "task ended");
        Ok(revoked)
    }

    pub(crate) fn get_task_now(&self, id: &str) -> Result<Option<TaskRecord>, StoreError> {
        self.read(async |c| load(c, id).await)
    }

    pub(crate) fn list_tasks_now(&self) -> Result<Vec<TaskRecord>, StoreError> {
        self.read(async |c| {
            rows(c, "SELECT id, record FROM tasks ORDER BY id", &[])
                .await?
                .iter()
                .map(decode)
                .collect()
        })
    }
}
