//! The `lanyard-server` command line: `run` starts the daemon, every other
//! subcommand is an operator command spoken over the admin socket. It lives
//! in the binary, not the library: it is a client of the Admin API like any
//! other.

mod args;
mod client;
mod commands;
mod crl;
mod output;
mod task;
mod views;

pub(crate) use self::{
    args::{Cli, Command, RunArgs},
    commands::execute,
};
