//! The store, its connection pool, and the bridge from the synchronous
//! [`Datastore`](lanyard_store::Datastore) methods to the asynchronous
//! driver.
//!
//! # Why tokio-postgres and deadpool, on a runtime of the store's own
//!
//! The trait is synchronous, and the server calls some methods straight
//! from async code (at start-up, when it anchors the audit log), not only
//! from `spawn_blocking`. The synchronous `postgres` crate drives each
//! connection with a runtime of its own through `block_on`, which panics on
//! a thread that already runs async code. So the connections (tokio-postgres,
//! pooled by deadpool-postgres) live on a small runtime the store owns, and a
//! method waits for its queries with `futures::executor::block_on`: the
//! query futures only talk to the connection tasks over channels, so they
//! can be polled from any thread, async or not, and blocking the caller is
//! what every backend's synchronous method does anyway (sled's fsync too).

use std::fmt;
use std::future::Future;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Transaction};
use futures::future::BoxFuture;
use lanyard_store::StoreError;
use lanyard_time::Backoff;
use tokio::runtime::{Handle, Runtime};
use tokio_postgres::error::SqlState;
use tokio_postgres::{IsolationLevel, NoTls};
use tracing::{debug, info, warn};

use crate::PostgresConfig;

/// How often a transaction is tried again after a serialization failure
/// before the error is returned.
const MAX_ATTEMPTS: u32 = 64;

/// A [`Datastore`](lanyard_store::Datastore) in a PostgreSQL database that
/// several servers may share.
pub struct PostgresStore {
    pub(crate) target: String,
    pool: Pool,
    /// How to connect (the change listener opens a connection of its own).
    pub(crate) driver_config: tokio_postgres::Config,
    /// Drives the connections; shut down in the background on drop, so the
    /// store may be dropped anywhere (a runtime dropped on an async thread
    /// panics).
    runtime: Option<Runtime>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.pool.close();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Opens every connection on the store's runtime, whatever thread asks.
struct OnRuntime {
    handle: Handle,
}

impl deadpool_postgres::Connect for OnRuntime {
    fn connect(
        &self,
        config: &tokio_postgres::Config,
    ) -> BoxFuture<
        '_,
        Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), tokio_postgres::Error>,
    > {
        let config = config.clone();
        let handle = self.handle.clone();
        Box::pin(async move {
            let spawner = handle.clone();
            let connected = handle
                .spawn(async move {
                    let (client, connection) = config.connect(NoTls).await?;
                    let driver = spawner.spawn(async move {
                        if let Err(e) = connection.await {
                            warn!(error = %e, "PostgreSQL connection closed");
                        }
                    });
                    Ok::<_, tokio_postgres::Error>((client, driver))
                })
                .await;
            match connected {
                Ok(result) => result,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                // The runtime shuts down only when the store is dropped, and
                // then no caller is left to wait for a connection.
                Err(_) => std::panic::resume_unwind(Box::new(
                    "the PostgreSQL store's runtime shut down while connecting",
                )),
            }
        })
    }
}

// === impl PostgresStore ===

impl PostgresStore {
    /// Connects, applies the embedded migrations under an advisory lock, and
    /// returns the store.
    ///
    /// [`StoreError::Unreachable`] if the URL does not parse or the database
    /// cannot be reached; [`StoreError::NotADatabase`] if it holds tables but
    /// no Lanyard schema version; [`StoreError::UnsupportedSchema`] if its
    /// schema is newer than this build's. No message carries the password.
    pub fn open(config: &PostgresConfig) -> Result<Self, StoreError> {
        let target = config.target();
        let driver = config.driver_config()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("lanyard-postgres")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Backend(Box::new(e)))?;
        let manager = Manager::from_connect(
            driver.clone(),
            OnRuntime {
                handle: runtime.handle().clone(),
            },
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size.max(1))
            .build()
            .map_err(|e| StoreError::Backend(Box::new(e)))?;
        let store = Self {
            target,
            pool,
            driver_config: driver,
            runtime: Some(runtime),
        };
        let from = store.block_on(async {
            let mut client = store.client().await?;
            crate::schema::migrate(&mut client, &store.target).await
        })?;
        info!(
            database = %store.target,
            schema_version = crate::SCHEMA_VERSION,
            migrated_from = from,
            pool_size = config.pool_size,
            "opened PostgreSQL store"
        );
        Ok(store)
    }

    /// The database this store uses, without its password.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The store's own runtime, which drives its connections.
    pub(crate) fn runtime_handle(&self) -> Handle {
        match &self.runtime {
            Some(runtime) => runtime.handle().clone(),
            // Only `drop` takes the runtime.
            None => Handle::current(),
        }
    }

    pub(crate) fn block_on<F: Future>(&self, future: F) -> F::Output {
        futures::executor::block_on(future)
    }

    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) if e.as_db_error().is_none() => {
                StoreError::Unreachable {
                    target: self.target.clone(),
                    reason: e.to_string(),
                }
            }
            deadpool_postgres::PoolError::Backend(e) => db_error(e),
            other => StoreError::Backend(Box::new(other)),
        })
    }

    /// Runs `body` on a pooled connection outside any explicit transaction
    /// (a read, or one statement that is atomic on its own).
    pub(crate) fn read<T>(
        &self,
        body: impl AsyncFnOnce(&deadpool_postgres::Client) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.block_on(async {
            let client = self.client().await?;
            body(&client).await
        })
    }

    /// Runs `body` in one SERIALIZABLE transaction and commits it. A
    /// serialization failure or deadlock (another transaction read or wrote
    /// what this one did) rolls it back and runs `body` again, from scratch,
    /// after a short random pause: the outcome is as if the transactions ran
    /// one after the other.
    pub(crate) fn serializable<T>(
        &self,
        what: &'static str,
        mut body: impl AsyncFnMut(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.block_on(async {
            let mut attempt = 1;
            loop {
                let mut client = self.client().await?;
                let result = async {
                    let tx = client
                        .build_transaction()
                        .isolation_level(IsolationLevel::Serializable)
                        .start()
                        .await
                        .map_err(db_error)?;
                    let value = body(&tx).await?;
                    tx.commit().await.map_err(db_error)?;
                    Ok(value)
                }
                .await;
                match result {
                    Err(e) if attempt < MAX_ATTEMPTS && is_retryable(&e) => {
                        debug!(operation = what, attempt, "serialization failure; retrying");
                        drop(client);
                        std::thread::sleep(RETRY.random_delay(attempt));
                        attempt += 1;
                    }
                    other => return other,
                }
            }
        })
    }
}

/// Retries of transactions that collided: up to 64 ms apart, jittered so
/// that they do not collide again in step.
const RETRY: Backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(64));

fn is_retryable(e: &StoreError) -> bool {
    let StoreError::Backend(source) = e else {
        return false;
    };
    source
        .downcast_ref::<tokio_postgres::Error>()
        .and_then(tokio_postgres::Error::code)
        .is_some_and(|code| {
            // A unique violation from a concurrent insert of a key this
            // transaction read as absent is reported by PostgreSQL as a
            // serialization failure too; every insert here reads its key first.
            [
                SqlState::T_R_SERIALIZATION_FAILURE,
                SqlState::T_R_DEADLOCK_DETECTED,
            ]
            .contains(code)
        })
}

/// A driver error as the store reports it.
pub(crate) fn db_error(e: tokio_postgres::Error) -> StoreError {
    StoreError::Backend(Box::new(e))
}
