//! `lanyard-bench`: Lanyard's measured figures, each printed side by side
//! with its baseline from the same run on the same machine.
//!
//! Each subcommand lives in its own module and returns [`report::Table`]s.
//! Those that need a running system (`workload-api`, `revocation`) start
//! real `lanyard-server` and `lanyard-agent` processes built beside this
//! binary ([`processes`]) and stop them, with their temporary directories,
//! however the run ends (including Ctrl-C).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod admin;
mod burst;
mod crl;
mod issue;
mod limits;
mod measure;
mod processes;
mod procfs;
mod report;
mod revocation;
mod sign;
mod stats;
mod task_policy;
mod workload_api;
mod workload_client;

use std::future::Future;

use anyhow::Context as _;
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
    /// End-to-end issuance through the Node API from several agents, against
    /// the CA's single-thread signing rate.
    Issue(issue::IssueArgs),
    /// Workload API FetchX509SVID latency under concurrent callers, against
    /// a bare gRPC round trip; agent memory per cached SVID.
    WorkloadApi(workload_api::WorkloadApiArgs),
    /// Revocation propagation (revoke -> refused mTLS handshake); CRL build
    /// time and size against a one-entry CRL.
    Revocation(revocation::RevocationArgs),
    /// Task policy evaluation cost (Rego and the TOML rules) next to the
    /// total time of a `task request` through the Admin API.
    TaskPolicy(task_policy::TaskPolicyArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let tables = match cli.command {
        Command::Sign(args) => vec![sign::run(&args)?],
        Command::Issue(args) => block_on(issue::run(args))?,
        Command::WorkloadApi(args) => block_on(workload_api::run(args))?,
        Command::Revocation(args) => block_on(revocation::run(args))?,
        Command::TaskPolicy(args) => block_on(task_policy::run(args))?,
    };
    for (i, table) in tables.iter().enumerate() {
        if i > 0 {
            println!();
        }
        print!("{table}");
    }
    Ok(())
}

/// Runs `run` on a multi-threaded runtime. Ctrl-C drops it, and with it
/// every process and directory it started.
fn block_on<T>(run: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        tokio::select! {
            result = run => result,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!(
                "interrupted: the processes and temporary directories it started are removed"
            )),
        }
    })
}
