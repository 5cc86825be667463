//! How to reach the database, and how to name it without its password.

use std::fmt;
use std::time::Duration;

use lanyard_store::StoreError;
use tokio_postgres::config::Host;

/// Connections the pool keeps open at most, unless configured.
pub const DEFAULT_POOL_SIZE: usize = 10;
/// How long one statement may run, unless configured.
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting may take before the database counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the database is and how the pool uses it.
///
/// `Debug` never shows the URL's password.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    /// A libpq connection string: a `postgres://` / `postgresql://` URL or
    /// `key=value` pairs. May hold a password: never log it, use
    /// [`redact`] or [`PostgresConfig::target`].
    pub url: String,
    /// Connections kept open at most.
    pub pool_size: usize,
    /// Longest a statement may run (`statement_timeout`); `None` for none.
    pub statement_timeout: Option<Duration>,
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &redact(&self.url))
            .field("pool_size", &self.pool_size)
            .field("statement_timeout", &self.statement_timeout)
            .finish()
    }
}

impl PostgresConfig {
    /// A configuration with the default pool size and statement timeout.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            pool_size: DEFAULT_POOL_SIZE,
            statement_timeout: Some(DEFAULT_STATEMENT_TIMEOUT),
        }
    }

    /// Whether the URL carries a password (which belongs in a file, not in a
    /// main configuration).
    pub fn has_password(&self) -> bool {
        match self.url.parse::<tokio_postgres::Config>() {
            Ok(config) => config.get_password().is_some(),
            Err(_) => redact(&self.url) != self.url,
        }
    }

    /// The database as operators name it in messages: user, hosts, ports and
    /// database name, never the password.
    pub fn target(&self) -> String {
        match self.url.parse::<tokio_postgres::Config>() {
            Ok(config) => describe(&config),
            Err(_) => redact(&self.url),
        }
    }

    /// The driver's configuration: the URL plus the statement timeout, the
    /// application name and a connect timeout.
    pub(crate) fn driver_config(&self) -> Result<tokio_postgres::Config, StoreError> {
        let mut config: tokio_postgres::Config =
            self.url.parse().map_err(|e| StoreError::Unreachable {
                target: redact(&self.url),
                reason: format!("not a valid PostgreSQL connection URL: {e}"),
            })?;
        if let Some(timeout) = self.statement_timeout {
            let options = format!(
                "{} -c statement_timeout={}",
                config.get_options().unwrap_or_default(),
                timeout.as_millis()
            );
            config.options(options.trim_start());
        }
        if config.get_application_name().is_none() {
            config.application_name("lanyard-server");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        Ok(config)
    }
}

/// `user@host:port/dbname` (several hosts comma-separated), without the
/// password.
pub(crate) fn describe(config: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = config
                .get_ports()
                .get(i)
                .or(config.get_ports().first())
                .copied()
                .unwrap_or(5432);
            match host {
                Host::Tcp(name) => format!("{name}:{port}"),
                Host::Unix(dir) => format!("{}/.s.PGSQL.{port}", dir.display()),
            }
        })
        .collect();
    format!(
        "postgresql://{}@{}/{}",
        config.get_user().unwrap_or(""),
        hosts.join(","),
        config.get_dbname().unwrap_or("")
    )
}

/// The connection string with any password replaced by `***`: the
/// `user:password@` of a URL, `password=` in a URL's query or in
/// `key=value` form.
pub fn redact(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let rest = scheme_end + 3;
        let authority_end = out[rest..].find(['/', '?']).map_or(out.len(), |i| rest + i);
        if let Some(at) = out[rest..authority_end].rfind('@')
            && let Some(colon) = out[rest..rest + at].find(':')
        {
            out.replace_range(rest + colon + 1..rest + at, "***");
        }
    }
    // `password=...` as a query parameter or a key=value pair.
    let mut redacted = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(i) = rest.find("password=") {
        let value = i + "password=".len();
        redacted.push_str(&rest[..value]);
        redacted.push_str("***");
        let tail = &rest[value..];
        let end = if let Some(quoted) = tail.strip_prefix('\'') {
            quoted.find('\'').map_or(tail.len(), |j| j + 2)
        } else {
            tail.find(['&', ' ']).unwrap_or(tail.len())
        };
        rest = &tail[end..];
    }
    redacted.push_str(rest);
    redacted
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_survive_redaction() {
        for (url, want) in [
            (
                "postgres://lanyard:s3cr3t@db.example.org:5432/lanyard",
                "postgres://lanyard:***@db.example.org:5432/lanyard",
            ),
            (
                "postgresql://u:p%40ss@h/db?sslmode=require&password=other",
                "postgresql://u:***@h/db?sslmode=require&password=***",
            ),
            (
                "host=db user=lanyard password='a b c' dbname=x",
                "host=db user=lanyard password=*** dbname=x",
            ),
            ("postgres://lanyard@h/db", "postgres://lanyard@h/db"),
        ] {
            assert_eq!(redact(url), want);
        }
    }

    #[test]
    fn target_names_the_database_without_the_password() {
        let config = PostgresConfig::new("postgres://lanyard:s3cr3t@db.example.org:6432/ca");
        assert_eq!(
            config.target(),
            "postgresql://lanyard@db.example.org:6432/ca"
        );
        assert!(!format!("{config:?}").contains("s3cr3t"));
        let unix = PostgresConfig::new("postgresql:///ca?host=/run/pg&user=l");
        assert_eq!(unix.target(), "postgresql://l@/run/pg/.s.PGSQL.5432/ca");
    }

    #[test]
    fn the_statement_timeout_joins_the_url_options() {
        let mut config = PostgresConfig::new("postgres://u@h/db?options=-c%20search_path%3Dx");
        config.statement_timeout = Some(Duration::from_millis(1500));
        let driver = config.driver_config().unwrap();
        assert_eq!(
            driver.get_options(),
            Some("-c search_path=x -c statement_timeout=1500")
        );
        assert_eq!(driver.get_application_name(), Some("lanyard-server"));
    }
}
