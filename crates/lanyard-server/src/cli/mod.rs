//! The `lanyard-server` command line: `run` starts the daemon, every other
//! subcommand is an operator command spoken over the admin socket.

mod args;
mod client;
mod commands;
mod output;

pub use self::{
    args::{
        AgentCmd, BundleCmd, BundleFormat, Cli, Command, EntryCmd, OutputFormat, RunArgs, SvidCmd,
        TokenCmd,
    },
    commands::execute,
};
