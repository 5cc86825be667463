//! The `lanyard-agent` binary: see `lanyard-agent --help`.

use std::process::ExitCode;

use clap::Parser;
use lanyard_agent::{
    ConfigFile,
    cli::{
        api, api_jwt,
        args::{ApiCommand, Cli, Command, FetchWhat, RunArgs, ValidateWhat},
        healthcheck,
    },
};
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
            return ExitCode::from(1);
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
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::from(1)
        }
    }
}

fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").replace('\n', " ")
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => run(*args).await,
        Command::Api {
            command: ApiCommand::Fetch {
                what: FetchWhat::X509(args),
            },
        } => {
            let socket = args.socket.resolve().map_err(anyhow::Error::msg)?;
            print!("{}", api::fetch_x509(&socket, args.write.as_deref()).await?);
            Ok(())
        }
        Command::Api {
            command: ApiCommand::Fetch {
                what: FetchWhat::Jwt(args),
            },
        } => {
            let socket = args.socket.resolve().map_err(anyhow::Error::msg)?;
            let spiffe_id = args.spiffe_id.as_deref();
            print!(
                "{}",
                api_jwt::fetch_jwt(&socket, &args.audiences, spiffe_id).await?
            );
            Ok(())
        }
        Command::Api {
            command:
                ApiCommand::Fetch {
                    what: FetchWhat::JwtBundles(args),
                },
        } => {
            let socket = args.resolve().map_err(anyhow::Error::msg)?;
            println!("{}", api_jwt::fetch_jwt_bundles(&socket).await?);
            Ok(())
        }
        Command::Api {
            command:
                ApiCommand::Validate {
                    what: ValidateWhat::Jwt(args),
                },
        } => {
            let socket = args.socket.resolve().map_err(anyhow::Error::msg)?;
            println!(
                "{}",
                api_jwt::validate_jwt(&socket, &args.audience, &args.token).await?
            );
            Ok(())
        }
        Command::Api {
            command: ApiCommand::Watch(args),
        } => {
            let socket = args.resolve().map_err(anyhow::Error::msg)?;
            tokio::select! {
                r = api::watch(&socket) => r?,
                () = lanyard_hardening::shutdown_signal() => {}
            }
            Ok(())
        }
        Command::Healthcheck(args) => Ok(healthcheck::check(&args.http_address).await?),
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => ConfigFile::load(path)?,
        None => ConfigFile::default(),
    };
    let cfg = file.overlay(args.overlay()).validate()?;
    lanyard_logging::init(&cfg.log_level, cfg.log_format)?;
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        lanyard_hardening::shutdown_signal().await;
        tracing::info!("signal received: shutting down");
        on_signal.cancel();
    });
    lanyard_agent::run(cfg, shutdown).await?;
    tracing::info!("agent stopped");
    Ok(())
}
