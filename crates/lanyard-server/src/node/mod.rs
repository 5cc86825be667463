//! The Node API (`lanyard.node.v1`): attestation, agent SVID renewal, batch
//! SVID signing and the Sync stream, served over TLS.

mod attest;
mod authz;
mod builder;
mod changelog;
mod crl_issuers;
mod group;
mod peer;
mod refusals;
pub(crate) mod registry;
#[cfg(test)]
mod registry_tests;
mod service;
mod sync;
mod tls;
mod x509pop_bundle;

pub use self::authz::authorized_entries;
pub(crate) use self::{
    service::NodeService,
    tls::ServerSvid,
    tls::node_tls_config,
    x509pop_bundle::{X509PopBundle, reload_on_sighup},
};
