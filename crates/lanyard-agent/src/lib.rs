//! The Lanyard agent: one per node. It attests its node to the server (join
//! token or x509pop), keeps its own SVID renewed, follows the server's Sync
//! stream of authorized entries, and serves workloads their X.509-SVIDs,
//! trust bundle and CRL over the SPIFFE Workload API on a Unix socket,
//! attesting each caller from its pinned process.
//!
//! The pieces, each a task `run(self, shutdown)`:
//!
//! - [`AgentSvidRotator`]: renews the agent SVID at half-life (RenewAgent).
//! - [`SyncClient`]: the Sync stream, published through a `watch` channel.
//! - [`SvidManager`]: one agent-generated key and SVID per entry, signed in
//!   batches, renewed at half-life with jitter, dropped at NotAfter,
//!   published as [`Snapshot`]s that every Workload API stream follows.
//! - [`WorkloadApi`]: the SPIFFE Workload API service.
//!
//! Revocation: the Sync stream carries the trust domain's CRL; once a CA of
//! the bundle is found to have signed it, every cached SVID it lists is
//! dropped from every Workload API stream at once and issued again if its
//! entry still exists. A CRL listing the agent's own SVID stops the agent.
//!
//! [`Metrics`] are served as Prometheus text at `/metrics` on the HTTP
//! address, beside `/health/live` and `/health/ready`.
//!
//! [`run`] wires them together:
//!
//! ```no_run
//! use lanyard_agent::{ConfigFile, run};
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn example() -> Result<(), lanyard_agent::AgentError> {
//! let cfg = ConfigFile {
//!     join_token: Some("TOKEN".into()),
//!     trust_bundle_path: Some("/etc/lanyard/bundle.pem".into()),
//!     ..Default::default()
//! }
//! .validate()?;
//! run(cfg, CancellationToken::new()).await
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod agent;
mod agent_svid;
mod attestation;
// Public: workload attestation on a Unix socket is usable on its own by a
// service that serves its own API to local processes.
pub mod attestor;
mod cache;
// The `lanyard-agent` binary's commands. They call the agent's own
// internals (message limits, config defaults), so they live in the library,
// but they are not part of its API.
#[doc(hidden)]
pub mod cli;
mod config;
mod entries;
mod error;
mod health;
mod identity;
mod jwt_svids;
mod metrics;
mod node_client;
mod revocation;
#[cfg(test)]
mod revocation_tests;
mod schedule;
mod storage;
mod svid_key;
mod svid_manager;
mod svid_order;
mod sync;
mod sync_message;
#[cfg(test)]
mod tasks_tests;
mod trust_domain;
mod workload_api;
mod workload_clock;
mod workload_jwt;
mod workload_response;
mod workload_views;

pub use self::{
    agent::run,
    agent_svid::AgentSvidRotator,
    cache::{
        CachedSvid, Entries, EntryInfo, IssuanceHealth, Readiness, Renewing, Snapshot, SyncState,
        select_for,
    },
    config::{AgentConfig, ConfigFile, LogFormat},
    error::AgentError,
    identity::AgentIdentity,
    metrics::{Metrics, RenewalOutcome},
    node_client::NodeConnector,
    revocation::VerifiedCrl,
    storage::DataDir,
    svid_manager::SvidManager,
    sync::SyncClient,
    trust_domain::bundle_trust_domain,
    workload_api::{SECURITY_HEADER, WorkloadApi},
    workload_response::NO_IDENTITY,
};
