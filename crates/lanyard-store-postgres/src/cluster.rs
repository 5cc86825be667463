//! What several servers on one database need beyond the
//! [`Datastore`](lanyard_store::Datastore) trait: change notifications
//! (LISTEN/NOTIFY), cluster-wide locks (advisory locks), and the CRL the
//! trust domain publishes, whichever server signed it.

use std::time::Duration;

use futures::StreamExt;
use lanyard_identity::EntryId;
use lanyard_store::{Revocation, StoreError};
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};
use tracing::{debug, info, warn};

use crate::PostgresStore;
use crate::rows;
use crate::sql::{exec, opt_row, rows as query_rows};
use crate::store::db_error;

/// The channel the schema's triggers notify on.
const CHANNEL: &str = "lanyard_changes";
/// Advisory lock keys: this prefix plus the job.
const LOCK_BASE: i64 = 0x6c61_6e79_6172_6410;
/// How long the change listener waits before connecting again.
const RECONNECT: Duration = Duration::from_millis(500);

/// A change another server (or this one) committed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// The listener is (again) listening. Notifications sent while it was
    /// not were lost: everything may have changed.
    Listening {
        /// `false` the first time, `true` after a lost connection.
        reconnected: bool,
    },
    /// An entry was created, changed or deleted.
    Entry(EntryId),
    /// An agent was attested, renewed, evicted or banned.
    Agent(String),
    /// A task changed.
    Task(String),
    /// The CA journal (and its sealed keys) changed.
    Ca,
    /// A CRL with this number was published.
    Crl(u64),
}

impl Change {
    /// Parses a notification payload; `None` for one this build does not know.
    pub fn parse(payload: &str) -> Option<Self> {
        let (kind, value) = payload.split_once(':').unwrap_or((payload, ""));
        match kind {
            "entry" => value.parse::<EntryId>().ok().map(Self::Entry),
            "agent" => Some(Self::Agent(value.to_owned())),
            "task" => Some(Self::Task(value.to_owned())),
            "ca" => Some(Self::Ca),
            "crl" => value.parse().ok().map(Self::Crl),
            _ => None,
        }
    }
}

/// A job that must run on one server at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClusterJob {
    /// Loading, creating or rotating the CA.
    Ca,
    /// Refreshing the CRL before it lapses.
    CrlRefresh,
    /// Task scheduling: windows opening and closing.
    Tasks,
}

impl ClusterJob {
    fn key(self) -> i64 {
        LOCK_BASE
            + match self {
                Self::Ca => 0,
                Self::CrlRefresh => 1,
                Self::Tasks => 2,
            }
    }
}

/// A held cluster-wide lock (a session advisory lock on a connection of its
/// own); released when dropped, or by PostgreSQL when the server dies.
pub struct ClusterLock {
    client: Option<deadpool_postgres::Object>,
    job: ClusterJob,
    handle: tokio::runtime::Handle,
}

impl std::fmt::Debug for ClusterLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterLock")
            .field("job", &self.job)
            .finish_non_exhaustive()
    }
}

impl Drop for ClusterLock {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let key = self.job.key();
            let job = self.job;
            self.handle.spawn(async move {
                match client
                    .execute("SELECT pg_advisory_unlock($1)", &[&key])
                    .await
                {
                    Ok(_) => debug!(?job, "cluster lock released"),
                    // The connection is broken: its session, and the lock,
                    // end with it.
                    Err(e) => warn!(?job, error = %e, "cannot release a cluster lock"),
                }
            });
        }
    }
}

// === impl PostgresStore ===

impl PostgresStore {
    /// Waits for the cluster-wide lock of `job`.
    pub fn lock(&self, job: ClusterJob) -> Result<ClusterLock, StoreError> {
        self.block_on(async {
            let client = self.client().await?;
            client
                .execute("SELECT pg_advisory_lock($1)", &[&job.key()])
                .await
                .map_err(db_error)?;
            Ok(ClusterLock {
                client: Some(client),
                job,
                handle: self.runtime_handle(),
            })
        })
    }

    /// Takes the cluster-wide lock of `job` if no other server holds it.
    pub fn try_lock(&self, job: ClusterJob) -> Result<Option<ClusterLock>, StoreError> {
        self.block_on(async {
            let client = self.client().await?;
            let got: bool = client
                .query_one("SELECT pg_try_advisory_lock($1)", &[&job.key()])
                .await
                .map_err(db_error)?
                .get(0);
            Ok(got.then(|| ClusterLock {
                client: Some(client),
                job,
                handle: self.runtime_handle(),
            }))
        })
    }

    /// The revocations a new CRL must list and its number, in one
    /// transaction: the counter's row lock is taken first, so a CRL with a
    /// higher number lists every revocation committed before a lower one's.
    /// Revocations whose `not_after` is before `expired_before` are pruned.
    pub fn next_crl(&self, expired_before: i64) -> Result<(Vec<Revocation>, u64), StoreError> {
        self.block_on(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(db_error)?;
            let number: i64 = opt_row(
                &tx,
                "UPDATE meta SET crl_number = crl_number + 1 RETURNING crl_number",
                &[],
            )
            .await?
            .map(|row| row.get(0))
            .ok_or_else(|| StoreError::Corrupt {
                what: "table `meta` has no row".into(),
            })?;
            exec(
                &tx,
                "DELETE FROM revocations WHERE not_after < $1",
                &[&expired_before],
            )
            .await?;
            let revocations = query_rows(
                &tx,
                "SELECT serial, revoked_at, not_after, reason FROM revocations ORDER BY serial",
                &[],
            )
            .await?
            .iter()
            .map(rows::revocation)
            .collect::<Result<Vec<_>, _>>()?;
            tx.commit().await.map_err(db_error)?;
            let number = u64::try_from(number).map_err(|_| StoreError::Corrupt {
                what: format!("table `meta` holds a negative CRL number {number}"),
            })?;
            Ok((revocations, number))
        })
    }

    /// Publishes a signed CRL unless one with a higher number already is;
    /// returns the CRL published now (this one, or the newer one).
    pub fn publish_crl(&self, number: u64, der: &[u8]) -> Result<(u64, Vec<u8>), StoreError> {
        let n = rows::signed("CRL number", number)?;
        let current = self.read(async |c| {
            exec(
                c,
                "UPDATE meta SET crl_published_number = $1, crl_der = $2 \
                 WHERE crl_published_number IS NULL OR crl_published_number < $1",
                &[&n, &der],
            )
            .await?;
            published(c).await
        })?;
        current.ok_or_else(|| StoreError::Corrupt {
            what: "table `meta` holds no published CRL right after one was published".into(),
        })
    }

    /// The CRL published now, if any: its number and DER.
    pub fn published_crl(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        self.read(async |c| published(c).await)
    }

    /// Starts listening for changes on a connection of its own; reconnects
    /// (announcing [`Change::Listening`] with `reconnected: true`) when the
    /// connection is lost. Stops when the receiver is dropped.
    pub fn listen(&self) -> Result<mpsc::Receiver<Change>, StoreError> {
        let config = self.driver_config.clone();
        let target = self.target.clone();
        let (tx, rx) = mpsc::channel(4096);
        self.runtime_handle().spawn(listen_loop(config, target, tx));
        Ok(rx)
    }
}

async fn published(c: &deadpool_postgres::Client) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
    let row = opt_row(c, "SELECT crl_published_number, crl_der FROM meta", &[]).await?;
    Ok(row.and_then(|row| {
        let number: Option<i64> = row.get(0);
        let der: Option<Vec<u8>> = row.get(1);
        Some((u64::try_from(number?).ok()?, der?))
    }))
}

async fn listen_loop(config: tokio_postgres::Config, target: String, tx: mpsc::Sender<Change>) {
    let mut reconnected = false;
    loop {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let (payloads_tx, mut payloads) = mpsc::unbounded_channel::<String>();
                // The connection delivers notifications only while polled.
                let driver = tokio::spawn(async move {
                    let mut messages =
                        futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(message) = messages.next().await {
                        match message {
                            Ok(AsyncMessage::Notification(n)) => {
                                if payloads_tx.send(n.payload().to_owned()).is_err() {
                                    return;
                                }
                            }
                            Ok(_) => {}
                            Err(e) => {
                                warn!(error = %e, "change listener connection lost");
                                return;
                            }
                        }
                    }
                });
                match client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
                    Ok(()) => {
                        info!(database = %target, reconnected, "listening for changes of other servers");
                        if tx.send(Change::Listening { reconnected }).await.is_err() {
                            driver.abort();
                            return;
                        }
                        loop {
                            tokio::select! {
                                () = tx.closed() => {
                                    driver.abort();
                                    return;
                                }
                                payload = payloads.recv() => match payload {
                                    Some(payload) => match Change::parse(&payload) {
                                        Some(change) => {
                                            if tx.send(change).await.is_err() {
                                                driver.abort();
                                                return;
                                            }
                                        }
                                        None => debug!(payload, "unknown change notification"),
                                    },
                                    None => break,
                                },
                            }
                        }
                    }
                    Err(e) => warn!(database = %target, error = %e, "cannot LISTEN for changes"),
                }
                driver.abort();
                drop(client);
            }
            Err(e) => {
                warn!(database = %target, error = %e, "change listener cannot connect; retrying");
            }
        }
        reconnected = true;
        tokio::select! {
            () = tx.closed() => return,
            () = tokio::time::sleep(RECONNECT) => {}
        }
    }
}

/// The records one append adds to the shared audit chain: each record's
/// sequence number and line, and the new head.
pub type AuditAppend = (Vec<(u64, String)>, (u64, String));

/// The whole shared audit chain: its lines in order, and its recorded head
/// (`None` while it is empty).
pub type AuditChain = (Vec<String>, Option<(u64, String)>);

// === impl PostgresStore: the shared audit chain ===

impl PostgresStore {
    /// Appends to the audit chain every server shares, in one transaction:
    /// the head is locked, `build` turns it (`(0, None)` for an empty chain)
    /// into the records that follow, and they are stored with the new head.
    /// Appends of all servers are so serialized in the database's order.
    pub fn append_audit(
        &self,
        build: impl FnOnce(u64, Option<&str>) -> Result<AuditAppend, StoreError>,
    ) -> Result<(u64, String), StoreError> {
        self.block_on(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(db_error)?;
            let row = opt_row(
                &tx,
                "SELECT audit_chain_seq, audit_chain_hash FROM meta FOR UPDATE",
                &[],
            )
            .await?
            .ok_or_else(|| StoreError::Corrupt {
                what: "table `meta` has no row".into(),
            })?;
            let seq: i64 = row.get(0);
            let hash: Option<String> = row.get(1);
            let seq = u64::try_from(seq).map_err(|_| StoreError::Corrupt {
                what: format!("table `meta` holds a negative audit sequence {seq}"),
            })?;
            let (records, head) = build(seq, hash.as_deref())?;
            for (seq, line) in &records {
                let seq = rows::signed("audit sequence", *seq)?;
                exec(
                    &tx,
                    "INSERT INTO audit_records (seq, record) VALUES ($1, $2)",
                    &[&seq, line],
                )
                .await?;
            }
            let head_seq = rows::signed("audit sequence", head.0)?;
            exec(
                &tx,
                "UPDATE meta SET audit_chain_seq = $1, audit_chain_hash = $2",
                &[&head_seq, &head.1],
            )
            .await?;
            tx.commit().await.map_err(db_error)?;
            Ok(head)
        })
    }

    /// The whole shared audit chain (its lines, in order) and its recorded
    /// head, read in one snapshot.
    pub fn audit_chain(&self) -> Result<AuditChain, StoreError> {
        self.block_on(async {
            let mut client = self.client().await?;
            let tx = client
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(db_error)?;
            let lines = query_rows(&tx, "SELECT record FROM audit_records ORDER BY seq", &[])
                .await?
                .iter()
                .map(|row| row.get::<_, String>(0))
                .collect();
            let row = opt_row(
                &tx,
                "SELECT audit_chain_seq, audit_chain_hash FROM meta",
                &[],
            )
            .await?
            .ok_or_else(|| StoreError::Corrupt {
                what: "table `meta` has no row".into(),
            })?;
            tx.commit().await.map_err(db_error)?;
            let seq: i64 = row.get(0);
            let hash: Option<String> = row.get(1);
            let head = match (u64::try_from(seq).ok(), hash) {
                (Some(seq), Some(hash)) if seq > 0 => Some((seq, hash)),
                _ => None,
            };
            Ok((lines, head))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_parse() {
        let id = EntryId::new_random();
        assert_eq!(
            Change::parse(&format!("entry:{id}")),
            Some(Change::Entry(id))
        );
        assert_eq!(Change::parse("crl:42"), Some(Change::Crl(42)));
        assert_eq!(Change::parse("ca"), Some(Change::Ca));
        assert_eq!(
            Change::parse("agent:spiffe://td/a"),
            Some(Change::Agent("spiffe://td/a".into()))
        );
        assert_eq!(Change::parse("entry:nope"), None);
        assert_eq!(Change::parse("what"), None);
    }
}
