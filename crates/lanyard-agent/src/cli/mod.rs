//! The `lanyard-agent` command line: `run`, `api fetch x509`, `api watch`,
//! `healthcheck`.

pub mod api;
pub mod args;
pub mod healthcheck;
