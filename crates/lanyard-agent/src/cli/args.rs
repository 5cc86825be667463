//! Command-line arguments (clap).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{ConfigFile, LogFormat, defaults};

/// Lanyard agent: attests this node to a Lanyard server and serves the
/// workloads that call its Unix socket their SPIFFE identities (X.509-SVIDs,
/// trust bundle, CRL) over the Workload API, renewing them before they expire.
//
// `about` comes from the doc comment above, not from the crate description
// (which describes the library, not the command).
#[derive(Debug, Parser)]
#[command(name = "lanyard-agent", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent.
    Run(Box<RunArgs>),
    /// Call the Workload API as a workload.
    Api {
        /// Which call.
        #[command(subcommand)]
        command: ApiCommand,
    },
    /// Exit 0 when the agent is ready (GET /health/ready).
    Healthcheck(HealthcheckArgs),
}

/// `run` flags; each overrides the same key of the config file.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// TOML config file (unknown keys are an error).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// The trust domain to join, e.g. example.org. Required when the trust
    /// bundle names none (an upstream root without a SPIFFE URI SAN);
    /// otherwise it must match the bundle and the server.
    #[arg(long, value_name = "NAME")]
    pub trust_domain: Option<String>,
    /// The servers' Node API addresses, comma-separated or repeated; a DNS
    /// name stands for every address it resolves to; the agent fails over
    /// between them [default: 127.0.0.1:8081].
    #[arg(long, value_name = "IP:PORT", value_delimiter = ',')]
    pub server_address: Vec<String>,
    /// PEM CA certificates to trust the server with on first contact.
    #[arg(long, value_name = "PATH", conflicts_with = "insecure_bootstrap")]
    pub trust_bundle: Option<PathBuf>,
    /// Attest without verifying the server, then trust the bundle it returns (testing only).
    #[arg(long)]
    pub insecure_bootstrap: bool,
    /// One-time join token for the first attestation.
    #[arg(long, value_name = "TOKEN", conflicts_with_all = ["x509pop_cert", "x509pop_key"])]
    pub join_token: Option<String>,
    /// x509pop: node certificate chain (PEM, leaf first).
    #[arg(long, value_name = "PATH", requires = "x509pop_key")]
    pub x509pop_cert: Option<PathBuf>,
    /// x509pop: the node certificate's private key (PEM).
    #[arg(long, value_name = "PATH", requires = "x509pop_cert")]
    pub x509pop_key: Option<PathBuf>,
    /// Where the agent SVID, key and bundle are kept [default: /var/lib/lanyard/agent].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Workload API socket [default: /run/lanyard/agent/api.sock].
    #[arg(long, value_name = "PATH")]
    pub socket_path: Option<PathBuf>,
    /// Health (/health/live, /health/ready) and metrics (/metrics) address [default: 127.0.0.1:8083].
    #[arg(long, value_name = "IP:PORT")]
    pub http_address: Option<String>,
    /// Deadline for pinning a Workload API caller, and for attesting it per
    /// request [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub attestation_timeout: Option<std::time::Duration>,
    /// Log filter, e.g. `info` or `info,lanyard_agent=debug` [default: info].
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Log format [default: text].
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
}

impl RunArgs {
    /// The flags as a config overlay.
    pub fn overlay(&self) -> ConfigFile {
        ConfigFile {
            trust_domain: self.trust_domain.clone(),
            server_address: (!self.server_address.is_empty())
                .then(|| crate::config::ServerAddressValue::Many(self.server_address.clone())),
            trust_bundle_path: self.trust_bundle.clone(),
            insecure_bootstrap: self.insecure_bootstrap.then_some(true),
            join_token: self.join_token.clone(),
            x509pop_cert_path: self.x509pop_cert.clone(),
            x509pop_key_path: self.x509pop_key.clone(),
            data_dir: self.data_dir.clone(),
            socket_path: self.socket_path.clone(),
            http_address: self.http_address.clone(),
            attestation_timeout: self.attestation_timeout,
            log_level: self.log_level.clone(),
            log_format: self.log_format,
        }
    }
}

/// `api` subcommands.
#[derive(Debug, Subcommand)]
pub enum ApiCommand {
    /// Fetch once and print (or write) the result.
    Fetch {
        /// What to fetch.
        #[command(subcommand)]
        what: FetchWhat,
    },
    /// Print each X.509-SVID update as it arrives, until interrupted.
    Watch(SocketArgs),
    /// Validate a token through the Workload API.
    Validate {
        /// What to validate.
        #[command(subcommand)]
        what: ValidateWhat,
    },
}

/// `api validate` subcommands.
#[derive(Debug, Subcommand)]
pub enum ValidateWhat {
    /// A JWT-SVID: signature, expiry, audience and revocation; prints its
    /// SPIFFE ID and claims (JSON). Exits 1 when the token is refused.
    Jwt(ValidateJwtArgs),
}

/// `api validate jwt` flags.
#[derive(Debug, Args)]
pub struct ValidateJwtArgs {
    /// The socket.
    #[command(flatten)]
    pub socket: SocketArgs,
    /// The audience the token must be for (yours, as its recipient).
    #[arg(long, value_name = "AUDIENCE")]
    pub audience: String,
    /// The JWT-SVID (JWS compact form).
    #[arg(value_name = "TOKEN")]
    pub token: String,
}

/// `api fetch jwt` flags.
#[derive(Debug, Args)]
pub struct FetchJwtArgs {
    /// The socket.
    #[command(flatten)]
    pub socket: SocketArgs,
    /// Who the token is for; repeatable, at least one.
    #[arg(long = "audience", value_name = "AUDIENCE", required = true)]
    pub audiences: Vec<String>,
    /// Only this identity's token [default: one per identity, default first].
    #[arg(long, value_name = "SPIFFE_ID")]
    pub spiffe_id: Option<String>,
}

/// `api fetch` subcommands.
#[derive(Debug, Subcommand)]
pub enum FetchWhat {
    /// X.509-SVIDs, bundle and CRL.
    X509(FetchX509Args),
    /// JWT-SVIDs for an audience: prints SPIFFE ID, expiry and the token.
    Jwt(FetchJwtArgs),
    /// The JWT bundles (JWK Sets) by trust domain, as JSON.
    JwtBundles(SocketArgs),
}

/// Where the Workload API is.
#[derive(Debug, Args)]
pub struct SocketArgs {
    /// Workload API socket [default: $SPIFFE_ENDPOINT_SOCKET, else /run/lanyard/agent/api.sock].
    #[arg(long, value_name = "PATH")]
    pub socket_path: Option<PathBuf>,
}

/// `api fetch x509` flags.
#[derive(Debug, Args)]
pub struct FetchX509Args {
    /// The socket.
    #[command(flatten)]
    pub socket: SocketArgs,
    /// Write svid.pem, svid.key (0600), bundle.pem (and crl.pem) into this directory.
    #[arg(long, value_name = "DIR")]
    pub write: Option<PathBuf>,
}

/// `healthcheck` flags.
#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// The agent's health endpoint address.
    #[arg(long, value_name = "IP:PORT", default_value = defaults::HTTP_ADDRESS)]
    pub http_address: String,
}

impl SocketArgs {
    /// The socket path: the flag, else `SPIFFE_ENDPOINT_SOCKET`
    /// (`unix:///path` or `unix:/path`), else the default.
    pub fn resolve(&self) -> Result<PathBuf, String> {
        if let Some(p) = &self.socket_path {
            return Ok(p.clone());
        }
        match std::env::var("SPIFFE_ENDPOINT_SOCKET") {
            Ok(v) if !v.is_empty() => endpoint_path(&v),
            _ => Ok(defaults::SOCKET_PATH.into()),
        }
    }
}

/// The path of a `unix:` Workload API endpoint address.
pub fn endpoint_path(addr: &str) -> Result<PathBuf, String> {
    let path = addr
        .strip_prefix("unix://")
        .or_else(|| addr.strip_prefix("unix:"))
        .ok_or_else(|| {
            format!("SPIFFE_ENDPOINT_SOCKET {addr:?}: expected unix:///path/to/socket")
        })?;
    if !path.starts_with('/') {
        return Err(format!(
            "SPIFFE_ENDPOINT_SOCKET {addr:?}: the socket path must be absolute"
        ));
    }
    Ok(path.into())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn endpoint_forms() {
        assert_eq!(
            endpoint_path("unix:///run/a.sock").unwrap(),
            PathBuf::from("/run/a.sock")
        );
        assert_eq!(
            endpoint_path("unix:/run/a.sock").unwrap(),
            PathBuf::from("/run/a.sock")
        );
        assert!(endpoint_path("tcp://1.2.3.4:5").is_err());
        assert!(endpoint_path("unix:relative.sock").is_err());
    }

    #[test]
    fn run_flags_overlay() {
        let cli = Cli::try_parse_from([
            "lanyard-agent",
            "run",
            "--join-token",
            "t",
            "--insecure-bootstrap",
            "--log-format",
            "json",
            "--trust-domain",
            "corp.example",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        let o = args.overlay();
        assert_eq!(o.join_token.as_deref(), Some("t"));
        assert_eq!(o.trust_domain.as_deref(), Some("corp.example"));
        assert_eq!(o.insecure_bootstrap, Some(true));
        assert_eq!(o.log_format, Some(LogFormat::Json));
        assert_eq!(o.data_dir, None);
        assert!(
            Cli::try_parse_from([
                "lanyard-agent",
                "run",
                "--trust-bundle",
                "b",
                "--insecure-bootstrap"
            ])
            .is_err()
        );
        assert!(Cli::try_parse_from(["lanyard-agent", "run", "--x509pop-cert", "c"]).is_err());
    }

    #[test]
    fn api_commands_parse() {
        let cli = Cli::try_parse_from([
            "lanyard-agent",
            "api",
            "fetch",
            "x509",
            "--socket-path",
            "/s",
            "--write",
            "/d",
        ])
        .unwrap();
        let Command::Api {
            command: ApiCommand::Fetch {
                what: FetchWhat::X509(args),
            },
        } = cli.command
        else {
            panic!("not fetch")
        };
        assert_eq!(args.socket.resolve().unwrap(), PathBuf::from("/s"));
        assert_eq!(args.write, Some(PathBuf::from("/d")));
    }
}
