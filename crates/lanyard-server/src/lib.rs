//! The Lanyard server: holds the trust domain's CA, attests agents, signs
//! X.509-SVIDs, and serves the Node API (TLS), the Admin API (Unix socket)
//! and HTTP health endpoints.
//!
//! The `lanyard-server` binary is a thin shell over [`run`]; its operator
//! CLI lives in the binary and talks only to the Admin API.
//!
//! ```no_run
//! # async fn example() -> Result<(), lanyard_server::ServerError> {
//! use lanyard_server::{ConfigFile, run};
//! let cfg = ConfigFile::parse("trust_domain = \"example.org\"\ndata_dir = \"/var/lib/lanyard\"")
//!     .map_err(lanyard_server::ServerError::Config)?
//!     .validate()?;
//! run(cfg, tokio_util::sync::CancellationToken::new()).await
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod accounts;
mod admin;
mod admin_socket;
mod backup;
mod clock;
mod cluster;
mod config;
mod convert;
mod datastore;
mod error;
mod http;
mod issuance;
mod join_token;
mod jwt_issuance;
mod limits;
mod listener;
#[cfg(test)]
mod loops_tests;
mod metrics;
mod node;
mod notify;
mod oidc;
mod outbound;
mod policy;
mod registry;
mod revocation;
mod rotation;
mod run;
mod state;
mod status;
mod task_policy;
mod tasks;
#[cfg(test)]
mod test_support;
mod ticket_check;

pub use self::{
    backup::{BACKUP_FORMAT, Backup},
    config::{ConfigFile, ServerConfig, TasksFile, UpstreamFile, X509PopFile, defaults},
    datastore::{DatastoreConfig, DatastoreFile, PostgresUrl},
    error::{BackupError, ServerError},
    limits::{LimitsFile, ListenerLimits},
    node::authorized_entries,
    notify::{NotifyConfig, signature as notification_signature},
    policy::{Policy, PrincipalRule},
    revocation::CRL_VALIDITY,
    run::run,
    task_policy::{Decision, PolicyError, TaskPolicy, UtcOffset, Verdict},
    ticket_check::TicketCheck,
};
