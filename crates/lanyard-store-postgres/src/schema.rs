//! The embedded migrations, applied at start-up under an advisory lock, and
//! the schema version row that says which of them a database has.
//!
//! A database with no version row must be empty (no table in the current
//! schema): the store then creates its schema. One with tables but no
//! version row is someone else's, or damaged, and is refused; one whose
//! version is newer than this build's is refused too. Each migration, and
//! the version row it sets, commit in one transaction, so a crash leaves a
//! database at one version or the next.

use lanyard_store::StoreError;
use tracing::info;

use crate::store::db_error;

/// The migrations, in order; migration `n` (from 1) brings a database to
/// version `n`. Append only: a released migration never changes.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_initial.sql"),
    include_str!("../migrations/0002_cluster.sql"),
];

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Every server that opens the database takes this transaction-level
/// advisory lock before it reads the version, so migrations run once.
const MIGRATION_LOCK: i64 = 0x6c61_6e79_6172_6401;

const VERSION_TABLE: &str = "CREATE TABLE lanyard_schema (
    only_row    boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    version     bigint NOT NULL,
    migrated_at timestamptz NOT NULL DEFAULT now()
)";

/// Brings the database to [`SCHEMA_VERSION`], or refuses it; returns the
/// version it was at.
pub(crate) async fn migrate(
    client: &mut tokio_postgres::Client,
    target: &str,
) -> Result<i64, StoreError> {
    let tx = client.transaction().await.map_err(db_error)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(db_error)?;
    let refuse = |reason: String| StoreError::NotADatabase {
        target: target.to_owned(),
        reason,
    };
    let versioned: bool = tx
        .query_one("SELECT to_regclass('lanyard_schema') IS NOT NULL", &[])
        .await
        .map_err(db_error)?
        .get(0);
    let found = if versioned {
        let rows = tx
            .query("SELECT version FROM lanyard_schema", &[])
            .await
            .map_err(db_error)?;
        match rows.as_slice() {
            [row] => row.get::<_, i64>(0),
            _ => {
                return Err(refuse(format!(
                    "table lanyard_schema holds {} rows where one version row is expected; \
                     the schema is damaged",
                    rows.len()
                )));
            }
        }
    } else {
        let tables: Vec<String> = tx
            .query(
                "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema() \
                 ORDER BY tablename LIMIT 5",
                &[],
            )
            .await
            .map_err(db_error)?
            .iter()
            .map(|row| row.get(0))
            .collect();
        if !tables.is_empty() {
            return Err(refuse(format!(
                "it holds tables ({}{}) but no Lanyard schema version row; Lanyard creates \
                 its schema only in an empty database (or schema)",
                tables.join(", "),
                if tables.len() == 5 { ", ..." } else { "" }
            )));
        }
        tx.batch_execute(VERSION_TABLE).await.map_err(db_error)?;
        0
    };
    if !(0..=SCHEMA_VERSION).contains(&found) {
        return Err(StoreError::UnsupportedSchema {
            target: target.to_owned(),
            found,
            expected: SCHEMA_VERSION,
        });
    }
    for (done, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.batch_execute(sql).await.map_err(db_error)?;
        info!(
            target_db = target,
            version = done + 1,
            "applied schema migration"
        );
    }
    if found < SCHEMA_VERSION {
        tx.execute("DELETE FROM lanyard_schema", &[])
            .await
            .map_err(db_error)?;
        tx.execute(
            "INSERT INTO lanyard_schema (version) VALUES ($1)",
            &[&SCHEMA_VERSION],
        )
        .await
        .map_err(db_error)?;
    }
    tx.commit().await.map_err(db_error)?;
    Ok(found)
}
