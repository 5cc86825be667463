//! The `lanyard-agent` command line: `run`, `api fetch x509|jwt|jwt-bundles`,
//! `api validate jwt`, `api watch`, `healthcheck`.

pub mod api;
pub mod api_jwt;
pub mod args;
pub mod healthcheck;
