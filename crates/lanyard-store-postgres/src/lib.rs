//! Lanyard's [`Datastore`](lanyard_store::Datastore) on PostgreSQL, for
//! several `lanyard-server` processes sharing one database (sled stays the
//! embedded default).
//!
//! [`PostgresStore::open`] connects, applies the embedded migrations under a
//! PostgreSQL advisory lock and records the schema version in the
//! `lanyard_schema` table; a database that holds tables but no version row,
//! or a newer version, is refused. Every key and counter is a 64-bit
//! `bigint`; serials are the lower-case hex text the server prints.
//!
//! # One transaction per operation, and its isolation level
//!
//! - Every operation that reads and then writes (`issue_svids`,
//!   `attest_agent`, `renew_agent`, `set_agent_standing`, `update_entry`,
//!   `delete_entry`, `revoke_svid`, `record_svid`, `put_agent`,
//!   `create_entry`, `create_entries`, `put_task`, `activate_task`,
//!   `end_task`, `import`) runs as one `SERIALIZABLE` transaction, retried
//!   from scratch on a serialization failure or deadlock. It is written as
//!   the sled backend's serialized operations are, reads then writes, and
//!   PostgreSQL guarantees the same outcome as one-at-a-time execution; so
//!   an issuance and a revocation sweep always see each other, never
//!   neither.
//! - Operations that are one statement, atomic on its own, run at the
//!   default `READ COMMITTED`: `consume_join_token` (an `UPDATE ... WHERE
//!   used_at IS NULL AND expires_at > now`, so of concurrent consumers on any
//!   number of servers exactly one matches), `create_join_token`,
//!   `next_crl_number` and `raise_crl_number` (one `UPDATE` of the counter
//!   row, which holds its lock until commit), `put_ca_journal`,
//!   `put_audit_head`, `put_revocation` and the prunes.
//! - Reads are single statements.
//!
//! # Several servers
//!
//! Triggers send a `NOTIFY lanyard_changes` for every committed change to
//! entries, agents, tasks, the CA journal and the published CRL;
//! [`PostgresStore::listen`] turns them into [`Change`]s. Jobs that must run
//! once in a cluster take [`PostgresStore::lock`] or
//! [`PostgresStore::try_lock`] (session advisory locks, released if the
//! server dies). [`PostgresStore::next_crl`] takes the CRL counter's row
//! lock before it reads the revocations (`READ COMMITTED`, so it sees every
//! one committed before), and [`PostgresStore::publish_crl`] never replaces
//! a published CRL by one with a lower number: CRL numbers never go
//! backwards, whichever server signs.
//!
//! Every committed transaction is durable as PostgreSQL's `synchronous_commit`
//! makes it (on by default: flushed to the WAL before the commit returns).
//!
//! ```no_run
//! use lanyard_store::Datastore;
//! use lanyard_store_postgres::{PostgresConfig, PostgresStore};
//!
//! # fn main() -> Result<(), lanyard_store::StoreError> {
//! let store = PostgresStore::open(&PostgresConfig::new("postgresql://lanyard@db.internal/lanyard"))?;
//! let crl_number = store.next_crl_number()?;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod agents;
mod cluster;
mod config;
mod datastore;
mod entries;
mod import;
mod issue;
mod meta;
mod rows;
mod schema;
mod sql;
mod store;
mod svids;
mod tasks;

pub use self::{
    cluster::{AuditAppend, AuditChain, Change, ClusterJob, ClusterLock},
    config::{DEFAULT_POOL_SIZE, DEFAULT_STATEMENT_TIMEOUT, PostgresConfig, redact},
    schema::SCHEMA_VERSION,
    store::PostgresStore,
};
