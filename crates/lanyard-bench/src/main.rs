//! `lanyard-bench`: Lanyard's measured figures, each printed side by side
//! with its baseline from the same run on the same machine.
//!
//! Each subcommand lives in its own module and returns a [`report::Table`];
//! later ones (Workload API latency, revocation propagation) slot in the same
//! way.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod measure;
mod report;
mod sign;

use clap::{Parser, Subcommand};

/// Lanyard's benchmarks.
#[derive(Debug, Parser)]
#[command(name = "lanyard-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// X.509-SVID signing rate from CSRs, against raw ECDSA P-256 signatures.
    Sign(sign::SignArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let table = match cli.command {
        Command::Sign(args) => sign::run(&args)?,
    };
    print!("{table}");
    Ok(())
}
