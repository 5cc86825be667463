//! `lanyard-server`: the daemon (`run`) and the operator commands.

use std::process::ExitCode;

use clap::Parser;
mod cli;

use cli::{Cli, Command, RunArgs};
use lanyard_server::ConfigFile;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemon, before any key is loaded: no core dumps, no ptrace (see
    // lanyard-hardening). Only `run`: the other commands hold no long-lived
    // key, and a workload's CLI (`api fetch`) must stay readable in /proc
    // by an agent that attests it without CAP_SYS_PTRACE.
    if matches!(cli.command, Command::Run(_)) {
        if let Err(e) = lanyard_hardening::make_non_dumpable() {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
        // Still single-threaded: nothing the daemon or sled creates is ever
        // group- or world-accessible by the umask it was started with.
        lanyard_hardening::restrict_umask();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Run(args) => runtime.block_on(run(*args)),
        _ => runtime.block_on(cli::execute(cli)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => ConfigFile::load(path)?,
        None => ConfigFile::default(),
    };
    let mut merged = file.overlay(args.overlay());
    if merged.data_dir.is_none() {
        merged.data_dir = Some("/var/lib/lanyard/server".into());
    }
    let cfg = merged.validate()?;
    let format = if cfg.log_json {
        lanyard_logging::LogFormat::Json
    } else {
        lanyard_logging::LogFormat::Text
    };
    lanyard_logging::init(&cfg.log_level, format)?;

    let shutdown = CancellationToken::new();
    let signals = shutdown.clone();
    tokio::spawn(async move {
        lanyard_hardening::shutdown_signal().await;
        tracing::info!("shutdown signal received; draining");
        signals.cancel();
    });
    lanyard_server::run(cfg, shutdown).await?;
    Ok(())
}
