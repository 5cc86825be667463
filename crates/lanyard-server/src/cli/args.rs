//! Command-line arguments.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use lanyard_server::ConfigFile;

/// Default admin socket for operator commands (the server's default under
/// its default data dir).
pub const DEFAULT_ADMIN_SOCKET: &str = "/var/lib/lanyard/server/admin.sock";

/// Lanyard server: the trust domain's CA, agent attestation, SVID signing, and
/// the operator commands that manage them.
#[derive(Debug, Parser)]
#[command(name = "lanyard-server", version, propagate_version = true)]
pub struct Cli {
    /// Admin socket of the server to talk to (operator commands).
    #[arg(long, global = true, env = "LANYARD_ADMIN_SOCKET", default_value = DEFAULT_ADMIN_SOCKET)]
    pub socket: PathBuf,
    /// Output format of operator commands.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Human-readable table.
    Table,
    /// One JSON document (an object, or an array for lists), snake_case keys.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (config file, overridden by flags).
    Run(Box<RunArgs>),
    /// Registration entries: which workloads get which SPIFFE ID.
    #[command(subcommand)]
    Entry(EntryCmd),
    /// One-time join tokens for agent attestation.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Attested agents.
    #[command(subcommand)]
    Agent(AgentCmd),
    /// The trust bundle.
    #[command(subcommand)]
    Bundle(BundleCmd),
    /// Issued SVIDs: list and revoke.
    #[command(subcommand)]
    Svid(SvidCmd),
    /// The trust domain's certificate revocation list.
    #[command(subcommand)]
    Crl(CrlCmd),
    /// Task-scoped just-in-time identities: request, approve, complete.
    #[command(subcommand)]
    Task(TaskCmd),
    /// The tamper-evident audit log.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// The task policy: show the one in force, dry-run a request.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Back up and restore the datastore, CA keys and audit log.
    #[command(subcommand)]
    Datastore(DatastoreCmd),
    /// Exit 0 if the server answers on its admin socket and is ready.
    Healthcheck,
}

/// `run` flags; each overrides the same key of the config file.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// TOML config file (unknown keys are an error).
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Trust domain, e.g. `example.org`.
    #[arg(long)]
    pub trust_domain: Option<String>,
    /// Data directory [default: /var/lib/lanyard/server].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Node API address [default: 127.0.0.1:8081].
    #[arg(long)]
    pub bind_address: Option<SocketAddr>,
    /// Admin socket [default: <data-dir>/admin.sock].
    #[arg(long)]
    pub admin_socket: Option<PathBuf>,
    /// HTTP address for health endpoints [default: 127.0.0.1:8082].
    #[arg(long)]
    pub http_address: Option<SocketAddr>,
    /// CA certificate lifetime, e.g. `24h` [default: 24h].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub ca_ttl: Option<Duration>,
    /// Default X.509-SVID lifetime [default: 1h].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub default_x509_svid_ttl: Option<Duration>,
    /// Default JWT-SVID lifetime [default: 5m].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub default_jwt_svid_ttl: Option<Duration>,
    /// The `iss` of JWT-SVIDs, and the issuer whose
    /// `/.well-known/openid-configuration` the HTTP address serves, e.g.
    /// `https://oidc.example.org` [default: none: no `iss`, no discovery].
    #[arg(long)]
    pub jwt_issuer: Option<String>,
    /// `ES256` or `RS256` (for consumers that need RSA): the algorithm of
    /// the JWT key each new CA generation gets; a change takes effect at
    /// the next rotation [default: ES256].
    #[arg(long)]
    pub jwt_algorithm: Option<String>,
    /// Agent SVID lifetime [default: 1h].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub agent_svid_ttl: Option<Duration>,
    /// Default join token lifetime [default: 10m].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub join_token_ttl: Option<Duration>,
    /// Refused attestations from one peer IP within this window share one
    /// audit record after the first [default: 60s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub attestation_refusal_window: Option<Duration>,
    /// Log filter, e.g. `info` or `lanyard_server=debug` [default: info].
    #[arg(long)]
    pub log_level: Option<String>,
    /// `text` or `json` [default: text].
    #[arg(long)]
    pub log_format: Option<String>,
}

impl RunArgs {
    /// The flags as a config overlay.
    pub fn overlay(&self) -> ConfigFile {
        ConfigFile {
            trust_domain: self.trust_domain.clone(),
            data_dir: self.data_dir.clone(),
            bind_address: self.bind_address,
            admin_socket: self.admin_socket.clone(),
            http_address: self.http_address,
            ca_ttl: self.ca_ttl,
            default_x509_svid_ttl: self.default_x509_svid_ttl,
            default_jwt_svid_ttl: self.default_jwt_svid_ttl,
            jwt_issuer: self.jwt_issuer.clone(),
            jwt_algorithm: self.jwt_algorithm.clone(),
            agent_svid_ttl: self.agent_svid_ttl,
            join_token_ttl: self.join_token_ttl,
            attestation_refusal_window: self.attestation_refusal_window,
            log_level: self.log_level.clone(),
            log_format: self.log_format.clone(),
            upstream: None,
            x509pop: None,
            admins: None,
            admin_socket_mode: None,
            admin_socket_group: None,
            tasks: None,
            limits: None,
            datastore: None,
        }
    }
}

/// `entry` subcommands.
#[derive(Debug, Subcommand)]
pub enum EntryCmd {
    /// Register a workload; prints the new entry's ID.
    Create {
        /// SPIFFE ID issued to matching workloads.
        #[arg(long)]
        spiffe_id: String,
        /// Agent (or node alias) that may fetch it.
        #[arg(long)]
        parent_id: String,
        /// `type:key:value`, repeatable; all must match (e.g. `unix:uid:1000`).
        #[arg(long = "selector", required = true)]
        selectors: Vec<String>,
        /// SVID lifetime, e.g. `15m` [default: the server's default].
        #[arg(long, value_parser = humantime::parse_duration)]
        x509_svid_ttl: Option<Duration>,
        /// JWT-SVID lifetime, e.g. `5m` [default: the server's
        /// `default_jwt_svid_ttl`, 5 minutes].
        #[arg(long, value_parser = humantime::parse_duration)]
        jwt_svid_ttl: Option<Duration>,
        /// DNS SAN, repeatable.
        #[arg(long = "dns-name")]
        dns_names: Vec<String>,
        /// RFC 3339 time after which the entry is ignored.
        #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
        expires_at: Option<std::time::SystemTime>,
        /// Hint passed to workloads.
        #[arg(long, default_value = "")]
        hint: String,
    },
    /// List entries, optionally filtered.
    List {
        /// Only this SPIFFE ID.
        #[arg(long)]
        spiffe_id: Option<String>,
        /// Only this parent.
        #[arg(long)]
        parent_id: Option<String>,
        /// Only entries with this selector.
        #[arg(long)]
        selector: Option<String>,
    },
    /// Show one entry.
    Show {
        /// Entry ID.
        id: String,
    },
    /// Change an entry; unset flags keep their value.
    Update {
        /// Entry ID.
        id: String,
        /// New SPIFFE ID.
        #[arg(long)]
        spiffe_id: Option<String>,
        /// New parent ID.
        #[arg(long)]
        parent_id: Option<String>,
        /// Replaces all selectors.
        #[arg(long = "selector")]
        selectors: Vec<String>,
        /// New SVID lifetime.
        #[arg(long, value_parser = humantime::parse_duration)]
        x509_svid_ttl: Option<Duration>,
        /// New JWT-SVID lifetime.
        #[arg(long, value_parser = humantime::parse_duration)]
        jwt_svid_ttl: Option<Duration>,
        /// Replaces all DNS names.
        #[arg(long = "dns-name")]
        dns_names: Vec<String>,
        /// New expiry (RFC 3339).
        #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
        expires_at: Option<std::time::SystemTime>,
        /// New hint.
        #[arg(long)]
        hint: Option<String>,
    },
    /// Delete an entry.
    Delete {
        /// Entry ID.
        id: String,
    },
}

/// `token` subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Create a one-time join token (printed once; only its hash is stored).
    Generate {
        /// Lifetime, e.g. `10m` [default: the server's join_token_ttl].
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
        /// SPIFFE ID for the agent instead of .../lanyard/agent/join_token/<id>:
        /// a .../lanyard/agent/... ID no live or banned agent holds.
        #[arg(long)]
        spiffe_id: Option<String>,
    },
}

/// `agent` subcommands.
#[derive(Debug, Subcommand)]
pub enum AgentCmd {
    /// List attested agents.
    List,
    /// Show one agent.
    Show {
        /// Agent SPIFFE ID.
        id: String,
    },
    /// Forget the agent's attestation: it must attest again with a new token.
    Evict {
        /// Agent SPIFFE ID.
        id: String,
    },
    /// Refuse the agent from now on, including re-attestation.
    Ban {
        /// Agent SPIFFE ID.
        id: String,
    },
}

/// `bundle` subcommands.
#[derive(Debug, Subcommand)]
pub enum BundleCmd {
    /// Print the trust bundle.
    Show {
        /// `pem` or `spiffe` (JWKS per the SPIFFE bundle format).
        #[arg(long, value_enum, default_value_t = BundleFormat::Pem)]
        format: BundleFormat,
    },
}

/// Bundle formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BundleFormat {
    /// PEM certificates.
    Pem,
    /// SPIFFE bundle (JWKS).
    Spiffe,
}

/// `svid` subcommands.
#[derive(Debug, Subcommand)]
pub enum SvidCmd {
    /// List issued SVIDs (serial, SPIFFE ID, entry, agent, expiry, revoked).
    List {
        /// Only this SPIFFE ID.
        #[arg(long)]
        spiffe_id: Option<String>,
    },
    /// Put an SVID on the CRL now; agents stop serving it and peers refuse it.
    Revoke {
        /// Serial as `svid list` prints it (any case, colons allowed).
        #[arg(long)]
        serial: String,
        /// unspecified, key-compromise, ca-compromise, affiliation-changed,
        /// superseded, cessation-of-operation, certificate-hold,
        /// privilege-withdrawn, aa-compromise; or the RFC 5280 names
        /// (keyCompromise, cACompromise, ...), in any case.
        #[arg(long, default_value = "unspecified")]
        reason: String,
    },
}

/// `crl` subcommands.
#[derive(Debug, Subcommand)]
pub enum CrlCmd {
    /// Print the current CRL.
    Show {
        /// `pem`, `der` (raw bytes to stdout) or `text`.
        #[arg(long, value_enum, default_value_t = CrlFormat::Text)]
        format: CrlFormat,
    },
}

/// CRL output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CrlFormat {
    /// PEM (`-----BEGIN X509 CRL-----`).
    Pem,
    /// DER bytes.
    Der,
    /// A readable summary: number, updates, revoked serials with reasons.
    Text,
}

/// `task` subcommands.
#[derive(Debug, Subcommand)]
pub enum TaskCmd {
    /// Ask for an identity for one piece of work; prints the task ID.
    Request(Box<TaskRequestArgs>),
    /// Approve a requested task (a different operator than the requester).
    Approve {
        /// Task ID.
        id: String,
        /// Why it is approved.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Refuse a task; an approved or active one is revoked at once.
    Deny {
        /// Task ID.
        id: String,
        /// Why (required).
        #[arg(long)]
        reason: String,
    },
    /// The work is done: revoke every SVID of the task now.
    Complete {
        /// Task ID.
        id: String,
        /// A closing note.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Review a break-glass task after the fact.
    Review {
        /// Task ID.
        id: String,
        /// The review's finding.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// List tasks.
    List {
        /// requested, approved, active, completed, expired, denied or revoked.
        #[arg(long)]
        state: Option<String>,
        /// Only this ticket.
        #[arg(long)]
        ticket: Option<String>,
    },
    /// Show one task with its history.
    Show {
        /// Task ID.
        id: String,
    },
}

/// `task request` flags.
#[derive(Debug, Args)]
pub struct TaskRequestArgs {
    /// The change ticket, e.g. CHG-1234.
    #[arg(long)]
    pub ticket: String,
    /// What the work is.
    #[arg(long, default_value = "")]
    pub purpose: String,
    /// SPIFFE ID to grant.
    #[arg(long)]
    pub spiffe_id: String,
    /// Agent (or node alias) that may fetch it.
    #[arg(long)]
    pub parent_id: String,
    /// Workload selector, repeatable.
    #[arg(long = "selector", required = true)]
    pub selectors: Vec<String>,
    /// DNS SAN, repeatable.
    #[arg(long = "dns-name")]
    pub dns_names: Vec<String>,
    /// Window length, e.g. 15m (capped by tasks.max_ttl).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// SPIFFE ID of a server the SVID may be presented to, repeatable.
    #[arg(long = "audience")]
    pub audiences: Vec<String>,
    /// RFC 3339 window start [default: now].
    #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
    pub starts_at: Option<std::time::SystemTime>,
    /// Emergency: active at once without approval, capped by
    /// tasks.break_glass_max_ttl, flagged for review.
    #[arg(long, requires = "reason")]
    pub break_glass: bool,
    /// Why break-glass is needed.
    #[arg(long)]
    pub reason: Option<String>,
}

/// `audit` subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Print records as JSON lines.
    Export {
        /// Only records at or after this RFC 3339 time.
        #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
        since: Option<std::time::SystemTime>,
        /// Only records of this ticket.
        #[arg(long)]
        ticket: Option<String>,
    },
    /// Check the hash chain; names the first bad record.
    Verify {
        /// Verify this file (e.g. a copy) instead of asking the server.
        #[arg(long)]
        file: Option<PathBuf>,
        /// With --file: the head the log must end at, as SEQ:HASH.
        #[arg(long)]
        expect_head: Option<String>,
    },
}

/// `policy` subcommands.
#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Print the task policy in force and its SHA-256.
    Show,
    /// Dry-run an input document against the policy in force (or, with
    /// --policy, against a Rego file, without a server); prints the decision.
    Test {
        /// The input document (JSON), as the server builds it for a request
        /// or an approval (see docs/operations.md).
        #[arg(long)]
        input: PathBuf,
        /// A Rego policy file to test instead of the server's.
        #[arg(long)]
        policy: Option<PathBuf>,
    },
}

/// `datastore` subcommands.
#[derive(Debug, Subcommand)]
pub enum DatastoreCmd {
    /// Write a backup of the running server to FILE (0600: it holds the CA keys).
    Export {
        /// Where to write the backup.
        #[arg(long)]
        file: PathBuf,
    },
    /// Restore a backup into a fresh data dir, offline; then start the server on it.
    Import {
        /// The backup written by `datastore export`.
        #[arg(long)]
        file: PathBuf,
        /// The new server's data dir (must not hold a store yet).
        #[arg(long)]
        data_dir: PathBuf,
        /// The new server's config: its `[datastore]` says where the records
        /// go (default: sled in the data dir). A PostgreSQL database must be
        /// empty.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}
