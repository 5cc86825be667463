//! The `lanyard-server` command line: `run` starts the daemon, every other
//! subcommand is an operator command spoken over the admin socket.

mod args;
mod client;
mod commands;
mod crl;
mod output;
mod task;

pub use self::{
    args::{
        AgentCmd, AuditCmd, BundleCmd, BundleFormat, Cli, Command, CrlCmd, CrlFormat, DatastoreCmd,
        EntryCmd, OutputFormat, RunArgs, SvidCmd, TaskCmd, TaskRequestArgs, TokenCmd,
    },
    commands::execute,
};

/// RFC 3339 for unix seconds (empty for 0), as the CLI prints times.
pub fn output_time(secs: i64) -> String {
    output::time(secs)
}
