//! `[datastore]`: which backend holds the server's records, and opening it.
//!
//! sled, in `<data_dir>/store`, is the default and needs no section. With
//! `kind = "postgres"` the records live in a PostgreSQL database that
//! several servers may share. Its URL comes from `url` (without a password)
//! or from the file `url_file` names (which may hold one): the main config
//! never holds a password, and no log line or error shows one.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use lanyard_store::{Datastore, SledStore};
use lanyard_store_postgres::{PostgresConfig, PostgresStore};
use serde::Deserialize;
use tracing::info;

use crate::ServerError;

/// `[datastore]` as written in the file.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DatastoreFile {
    /// `sled` (the default) or `postgres`.
    pub kind: Option<String>,
    /// PostgreSQL connection URL, without a password.
    pub url: Option<String>,
    /// A file holding the PostgreSQL connection URL (it may hold the
    /// password; keep it 0600).
    pub url_file: Option<PathBuf>,
    /// Connections the server keeps open at most.
    pub pool_size: Option<usize>,
    /// Longest a statement may run.
    #[serde(default, with = "humantime_serde")]
    pub statement_timeout: Option<Duration>,
    /// A file holding the key-encryption key (64 hex digits, 0600) that
    /// seals the CA keys in the database, so that every server sharing it
    /// signs with the same CA.
    pub kek_file: Option<PathBuf>,
}

/// The validated `[datastore]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatastoreConfig {
    /// sled in `<data_dir>/store`.
    Sled,
    /// A PostgreSQL database.
    Postgres {
        /// Where the connection URL comes from.
        url: PostgresUrl,
        /// Connections kept open at most.
        pool_size: usize,
        /// Longest a statement may run.
        statement_timeout: Duration,
        /// The key-encryption key file that seals the CA keys in the
        /// database (needed by every server of a cluster); without it the
        /// CA keys stay on this server's disk only.
        kek_file: Option<PathBuf>,
    },
}

/// Where a PostgreSQL connection URL comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PostgresUrl {
    /// `url`: given in the configuration, without a password.
    Inline(String),
    /// `url_file`: read when the store is opened (so only that process
    /// reads the secret, and a new password is picked up on restart).
    File(PathBuf),
}

impl DatastoreFile {
    /// Checks the section as a whole; errors name the key. `url_file` is
    /// read only when the store is opened.
    pub fn validate(self) -> Result<DatastoreConfig, ServerError> {
        let bad = |msg: String| ServerError::Config(msg);
        match self.kind.as_deref().unwrap_or("sled") {
            "sled" => {
                let set = [
                    ("url", self.url.is_some()),
                    ("url_file", self.url_file.is_some()),
                    ("pool_size", self.pool_size.is_some()),
                    ("statement_timeout", self.statement_timeout.is_some()),
                    ("kek_file", self.kek_file.is_some()),
                ];
                match set.iter().find(|(_, is_set)| *is_set) {
                    Some((key, _)) => Err(bad(format!(
                        "datastore.{key} applies only to kind = \"postgres\""
                    ))),
                    None => Ok(DatastoreConfig::Sled),
                }
            }
            "postgres" => {
                let url = match (self.url, self.url_file) {
                    (Some(url), None) => {
                        let config = PostgresConfig::new(url);
                        if config.has_password() {
                            return Err(bad(format!(
                                "datastore.url ({}) holds a password; put the whole URL in a \
                                 file readable only by the server and name it with \
                                 datastore.url_file",
                                config.target()
                            )));
                        }
                        PostgresUrl::Inline(config.url)
                    }
                    (None, Some(path)) => PostgresUrl::File(path),
                    _ => {
                        return Err(bad(
                            "datastore: kind = \"postgres\" needs exactly one of url or url_file"
                                .into(),
                        ));
                    }
                };
                let pool_size = self
                    .pool_size
                    .unwrap_or(lanyard_store_postgres::DEFAULT_POOL_SIZE);
                if pool_size == 0 {
                    return Err(bad("datastore.pool_size must be at least 1".into()));
                }
                let statement_timeout = self
                    .statement_timeout
                    .unwrap_or(lanyard_store_postgres::DEFAULT_STATEMENT_TIMEOUT);
                if statement_timeout < Duration::from_millis(1) {
                    return Err(bad(
                        "datastore.statement_timeout must be at least 1ms".into()
                    ));
                }
                Ok(DatastoreConfig::Postgres {
                    url,
                    pool_size,
                    statement_timeout,
                    kek_file: self.kek_file,
                })
            }
            other => Err(bad(format!(
                "datastore.kind must be \"sled\" or \"postgres\", got {other:?}"
            ))),
        }
    }
}

/// The store's PostgreSQL configuration, the URL read from `url_file` if
/// that is where it is.
fn postgres_config(
    url: &PostgresUrl,
    pool_size: usize,
    statement_timeout: Duration,
) -> Result<PostgresConfig, ServerError> {
    let url = match url {
        PostgresUrl::Inline(url) => url.clone(),
        PostgresUrl::File(path) => std::fs::read_to_string(path)
            .map_err(|e| {
                ServerError::Config(format!("datastore.url_file {}: {e}", path.display()))
            })?
            .trim()
            .to_owned(),
    };
    Ok(PostgresConfig {
        url,
        pool_size,
        statement_timeout: Some(statement_timeout),
    })
}

/// An opened store, and the PostgreSQL store itself when it is one.
pub(crate) type Opened = (Arc<dyn Datastore>, Option<Arc<PostgresStore>>);

/// Opens the configured store: sled in `<data_dir>/store`, or PostgreSQL
/// (migrated to this build's schema), and for PostgreSQL the store itself
/// as well (for what several servers on one database need beyond the
/// `Datastore` trait). Blocks while it connects and migrates.
pub(crate) fn open_shared(
    config: &DatastoreConfig,
    data_dir: &Path,
) -> Result<Opened, ServerError> {
    Ok(match config {
        DatastoreConfig::Sled => (Arc::new(SledStore::open(&data_dir.join("store"))?), None),
        DatastoreConfig::Postgres {
            url,
            pool_size,
            statement_timeout,
            ..
        } => {
            let store = Arc::new(PostgresStore::open(&postgres_config(
                url,
                *pool_size,
                *statement_timeout,
            )?)?);
            info!(database = store.target(), "datastore: PostgreSQL");
            (store.clone(), Some(store))
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<DatastoreConfig, String> {
        toml::from_str::<DatastoreFile>(text)
            .map_err(|e| e.to_string())?
            .validate()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn sled_is_the_default_and_takes_no_postgres_keys() {
        assert_eq!(parse("").unwrap(), DatastoreConfig::Sled);
        let e = parse("url = \"postgres://h/db\"").unwrap_err();
        assert!(e.contains("datastore.url") && e.contains("postgres"), "{e}");
    }

    #[test]
    fn postgres_takes_a_url_without_password_or_a_url_file() {
        let config = parse(
            "kind = \"postgres\"\nurl = \"postgres://lanyard@db/ca\"\npool_size = 4\nstatement_timeout = \"5s\"",
        )
        .unwrap();
        assert_eq!(
            config,
            DatastoreConfig::Postgres {
                url: PostgresUrl::Inline("postgres://lanyard@db/ca".into()),
                pool_size: 4,
                statement_timeout: Duration::from_secs(5),
                kek_file: None,
            }
        );

        let e =
            parse("kind = \"postgres\"\nurl = \"postgres://lanyard:hunter2@db/ca\"").unwrap_err();
        assert!(e.contains("url_file") && !e.contains("hunter2"), "{e}");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("url");
        let config = parse(&format!("kind = \"postgres\"\nurl_file = {:?}", file)).unwrap();
        let DatastoreConfig::Postgres { url, .. } = &config else {
            panic!("expected postgres: {config:?}");
        };
        let e = postgres_config(url, 1, Duration::from_secs(1)).unwrap_err();
        assert!(e.to_string().contains("datastore.url_file"), "{e}");
        std::fs::write(&file, "postgres://lanyard:hunter2@db/ca\n").unwrap();
        let pg = postgres_config(url, 1, Duration::from_secs(1)).unwrap();
        assert_eq!(pg.url, "postgres://lanyard:hunter2@db/ca");
        assert!(!format!("{pg:?}").contains("hunter2"));

        for bad in [
            "kind = \"postgres\"",
            "kind = \"postgres\"\nurl = \"postgres://h/d\"\nurl_file = \"/f\"",
            "kind = \"postgres\"\nurl = \"postgres://h/d\"\npool_size = 0",
            "kind = \"mysql\"",
        ] {
            assert!(parse(bad).unwrap_err().contains("datastore"), "{bad}");
        }
    }
}
