//! Statements through the connection's statement cache: each SQL text is
//! prepared once per connection, then only bound and executed.

use std::future::Future;

use deadpool_postgres::GenericClient;
use lanyard_store::StoreError;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::store::db_error;

/// Parameters of a statement.
pub(crate) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// Every row `sql` returns.
pub(crate) async fn rows(
    c: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
) -> Result<Vec<Row>, StoreError> {
    let statement = c.prepare_cached(sql).await.map_err(db_error)?;
    c.query(&statement, params).await.map_err(db_error)
}

/// The row `sql` returns, if any (at most one).
pub(crate) async fn opt_row(
    c: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
) -> Result<Option<Row>, StoreError> {
    let statement = c.prepare_cached(sql).await.map_err(db_error)?;
    c.query_opt(&statement, params).await.map_err(db_error)
}

/// How many rows `sql` changed.
pub(crate) async fn exec(
    c: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
) -> Result<u64, StoreError> {
    let statement = c.prepare_cached(sql).await.map_err(db_error)?;
    c.execute(&statement, params).await.map_err(db_error)
}

/// How many statements are in flight at once on the connection.
const CHUNK: usize = 1000;

/// Runs `insert` for every record, `CHUNK` at a time concurrently: the
/// driver pipelines concurrent statements of one connection.
pub(crate) async fn pipelined<'a, T, F>(
    records: &'a [T],
    insert: impl Fn(&'a T) -> F,
) -> Result<(), StoreError>
where
    F: Future<Output = Result<(), StoreError>>,
{
    for chunk in records.chunks(CHUNK) {
        futures::future::try_join_all(chunk.iter().map(&insert)).await?;
    }
    Ok(())
}
