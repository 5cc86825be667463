//! Server configuration: a TOML file overlaid by command-line flags (flags
//! win), validated as a whole. Unknown keys are an error.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use lanyard_identity::TrustDomain;
use serde::Deserialize;

use crate::{
    ServerError,
    datastore::{DatastoreConfig, DatastoreFile},
    limits::{LimitsFile, ListenerLimits},
    policy::{Policy, PrincipalRule},
};

/// The file form of the configuration: every key optional so that flags can
/// fill or override it.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The trust domain, e.g. `example.org`.
    pub trust_domain: Option<String>,
    /// Where the store, CA keys and the admin socket live.
    pub data_dir: Option<PathBuf>,
    /// Node API (TLS) listen address.
    pub bind_address: Option<SocketAddr>,
    /// Admin API Unix socket.
    pub admin_socket: Option<PathBuf>,
    /// HTTP address for health (and later CRL and metrics).
    pub http_address: Option<SocketAddr>,
    /// Lifetime of each CA certificate.
    #[serde(default, with = "humantime_serde")]
    pub ca_ttl: Option<Duration>,
    /// Default X.509-SVID lifetime for entries that set none.
    #[serde(default, with = "humantime_serde")]
    pub default_x509_svid_ttl: Option<Duration>,
    /// Default JWT-SVID lifetime for entries that set none.
    #[serde(default, with = "humantime_serde")]
    pub default_jwt_svid_ttl: Option<Duration>,
    /// The `iss` of JWT-SVIDs and the OIDC discovery issuer
    /// (`https://...`); unset: no `iss`, no discovery document.
    pub jwt_issuer: Option<String>,
    /// `ES256` (default) or `RS256`: the JWT key of each new CA generation.
    pub jwt_algorithm: Option<String>,
    /// Agent SVID lifetime.
    #[serde(default, with = "humantime_serde")]
    pub agent_svid_ttl: Option<Duration>,
    /// Default join token lifetime.
    #[serde(default, with = "humantime_serde")]
    pub join_token_ttl: Option<Duration>,
    /// Refused attestations from one peer IP within this window share one
    /// audit record after the first.
    #[serde(default, with = "humantime_serde")]
    pub attestation_refusal_window: Option<Duration>,
    /// Log filter (`info`, `debug`, `lanyard_server=debug` ...).
    pub log_level: Option<String>,
    /// `text` or `json`.
    pub log_format: Option<String>,
    /// Run as an intermediate of an existing CA.
    pub upstream: Option<UpstreamFile>,
    /// x509pop node attestation.
    pub x509pop: Option<X509PopFile>,
    /// Principals who may run every operator command (`uid:N`, `user:NAME`,
    /// `gid:N`, `group:NAME`, `*`).
    pub admins: Option<Vec<String>>,
    /// Mode of the admin socket, octal (e.g. `"0660"`).
    pub admin_socket_mode: Option<String>,
    /// Group owning the admin socket (name or gid).
    pub admin_socket_group: Option<String>,
    /// Task grant policy.
    pub tasks: Option<TasksFile>,
    /// What clients may hold of the TCP listeners.
    pub limits: Option<LimitsFile>,
    /// Where the records live: sled (default) or PostgreSQL.
    pub datastore: Option<DatastoreFile>,
}

/// `[tasks]`: the policy task grants obey.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TasksFile {
    /// Longest task window.
    #[serde(default, with = "humantime_serde")]
    pub max_ttl: Option<Duration>,
    /// Longest break-glass window.
    #[serde(default, with = "humantime_serde")]
    pub break_glass_max_ttl: Option<Duration>,
    /// Who may request tasks (default: the admins).
    pub requesters: Option<Vec<String>>,
    /// Who may approve, deny and review (default: the admins).
    pub approvers: Option<Vec<String>>,
    /// Requester and approver must differ (default: true).
    pub require_distinct_approver: Option<bool>,
    /// A Rego policy (package `lanyard.tasks`) that decides requests and
    /// approvals; unset: the TOML rules above decide.
    pub policy_file: Option<PathBuf>,
    /// The UTC offset (`+02:00`) of the wall clock the policy sees
    /// (default `+00:00`).
    pub time_zone: Option<String>,
    /// Where the groups of requesters and approvers given to the policy
    /// come from, in /etc/group format (default `/etc/group`).
    pub groups_file: Option<PathBuf>,
    /// An `https://` endpoint (or `http://` on a loopback host) asked
    /// about the ticket at request and at activation (unset: no check).
    pub ticket_check_url: Option<String>,
    /// How long the ticket check may take (default 5s).
    #[serde(default, with = "humantime_serde")]
    pub ticket_check_timeout: Option<Duration>,
    /// Allow when the ticket check cannot answer (default false: refuse).
    pub ticket_check_fail_open: Option<bool>,
    /// A webhook (`https://`, or `http://` on a loopback host) that task
    /// events are posted to (unset: none).
    pub notify_url: Option<String>,
    /// The file holding the webhook's HMAC-SHA256 secret (required with
    /// `notify_url`).
    pub notify_secret_file: Option<PathBuf>,
    /// Retries of a failed notification, with exponential backoff from
    /// 200ms (default 5).
    pub notify_retries: Option<u32>,
    /// The CAs (PEM) an https ticket check or webhook must chain to
    /// (default: the system bundle, /etc/ssl/certs/ca-certificates.crt).
    pub https_ca_file: Option<PathBuf>,
}

/// `[upstream]`: an existing CA whose certificate and key sign Lanyard's CA.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamFile {
    /// PEM certificate of the upstream CA.
    pub cert_path: PathBuf,
    /// PEM PKCS#8 key of the upstream CA.
    pub key_path: PathBuf,
}

/// `[x509pop]`: which CAs may vouch for nodes.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct X509PopFile {
    /// PEM bundle of CA certificates that issue node certificates.
    pub ca_bundle_path: PathBuf,
}

/// The validated configuration the server runs with.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Trust domain.
    pub trust_domain: TrustDomain,
    /// Data directory (created 0700 if missing).
    pub data_dir: PathBuf,
    /// Node API address.
    pub bind_address: SocketAddr,
    /// Admin socket path.
    pub admin_socket: PathBuf,
    /// HTTP address.
    pub http_address: SocketAddr,
    /// CA certificate lifetime.
    pub ca_ttl: Duration,
    /// Default X.509-SVID lifetime.
    pub default_x509_svid_ttl: Duration,
    /// Default JWT-SVID lifetime.
    pub default_jwt_svid_ttl: Duration,
    /// JWT `iss` and OIDC discovery issuer, without a trailing `/`.
    pub jwt_issuer: Option<String>,
    /// The algorithm of new JWT keys.
    pub jwt_algorithm: lanyard_jwt::Alg,
    /// Agent SVID lifetime.
    pub agent_svid_ttl: Duration,
    /// Default join token lifetime.
    pub join_token_ttl: Duration,
    /// Window over which refused attestations from one peer IP are
    /// aggregated into one audit record after the first.
    pub attestation_refusal_window: Duration,
    /// Log filter.
    pub log_level: String,
    /// Log as JSON lines.
    pub log_json: bool,
    /// Upstream CA, if any.
    pub upstream: Option<UpstreamFile>,
    /// x509pop CA bundle, if x509pop attestation is enabled.
    pub x509pop_ca_bundle: Option<PathBuf>,
    /// Admin socket mode.
    pub admin_socket_mode: u32,
    /// Admin socket group (name or gid).
    pub admin_socket_group: Option<String>,
    /// Who may do what, and the task rules.
    pub policy: Policy,
    /// `[tasks] policy_file`: the Rego task policy, if any.
    pub task_policy_file: Option<PathBuf>,
    /// `[tasks] time_zone`: the offset of the policy's wall clock.
    pub task_time_zone: crate::task_policy::UtcOffset,
    /// `[tasks] groups_file`: groups of operators, for the policy.
    pub groups_file: PathBuf,
    /// `[tasks] ticket_check_*`: the ticket check, if configured.
    pub ticket_check: Option<crate::ticket_check::TicketCheck>,
    /// `[tasks] notify_url` and `notify_secret_file`, if set.
    pub notify: Option<(String, PathBuf)>,
    /// `[tasks] notify_retries`.
    pub notify_retries: u32,
    /// `[tasks] https_ca_file`.
    pub https_ca_file: PathBuf,
    /// Connection cap and timeouts of the TCP listeners.
    pub limits: ListenerLimits,
    /// The store backend.
    pub datastore: DatastoreConfig,
}

/// Defaults, as documented in DESIGN.md and `deploy/server.toml`.
pub mod defaults {
    use std::time::Duration;
    /// `bind_address`.
    pub const BIND_ADDRESS: &str = "127.0.0.1:8081";
    /// `http_address`.
    pub const HTTP_ADDRESS: &str = "127.0.0.1:8082";
    /// `ca_ttl`.
    pub const CA_TTL: Duration = Duration::from_secs(24 * 3600);
    /// `default_x509_svid_ttl`.
    pub const X509_SVID_TTL: Duration = Duration::from_secs(3600);
    /// `default_jwt_svid_ttl`.
    pub const JWT_SVID_TTL: Duration = Duration::from_secs(300);
    /// `agent_svid_ttl`.
    pub const AGENT_SVID_TTL: Duration = Duration::from_secs(3600);
    /// `join_token_ttl`.
    pub const JOIN_TOKEN_TTL: Duration = Duration::from_secs(600);
    /// `attestation_refusal_window`.
    pub const ATTESTATION_REFUSAL_WINDOW: Duration = Duration::from_secs(60);
    /// `[tasks] max_ttl`.
    pub const TASK_MAX_TTL: Duration = Duration::from_secs(4 * 3600);
    /// `[tasks] break_glass_max_ttl`.
    pub const BREAK_GLASS_MAX_TTL: Duration = Duration::from_secs(1800);
    /// `admin_socket_mode`.
    pub const ADMIN_SOCKET_MODE: u32 = 0o600;
    /// `[tasks] groups_file`.
    pub const GROUPS_FILE: &str = "/etc/group";
    /// `[tasks] ticket_check_timeout`.
    pub const TICKET_CHECK_TIMEOUT: Duration = Duration::from_secs(5);
    /// `[tasks] notify_retries`.
    pub const NOTIFY_RETRIES: u32 = 5;
    /// `[tasks] https_ca_file`: the system CA bundle (Debian, Ubuntu).
    pub const HTTPS_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";
}

impl ConfigFile {
    /// Reads and parses a TOML file; unknown keys are an error naming the key.
    pub fn load(path: &std::path::Path) -> Result<Self, ServerError> {
        let text = std::fs::read_to_string(path).map_err(|e| ServerError::ConfigFile {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Self::parse(&text).map_err(|reason| ServerError::ConfigFile {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim().to_owned())
    }

    /// Overlays `other` (flags) on `self` (file): every key `other` sets wins.
    pub fn overlay(self, other: ConfigFile) -> ConfigFile {
        ConfigFile {
            trust_domain: other.trust_domain.or(self.trust_domain),
            data_dir: other.data_dir.or(self.data_dir),
            bind_address: other.bind_address.or(self.bind_address),
            admin_socket: other.admin_socket.or(self.admin_socket),
            http_address: other.http_address.or(self.http_address),
            ca_ttl: other.ca_ttl.or(self.ca_ttl),
            default_x509_svid_ttl: other.default_x509_svid_ttl.or(self.default_x509_svid_ttl),
            default_jwt_svid_ttl: other.default_jwt_svid_ttl.or(self.default_jwt_svid_ttl),
            jwt_issuer: other.jwt_issuer.or(self.jwt_issuer),
            jwt_algorithm: other.jwt_algorithm.or(self.jwt_algorithm),
            agent_svid_ttl: other.agent_svid_ttl.or(self.agent_svid_ttl),
            join_token_ttl: other.join_token_ttl.or(self.join_token_ttl),
            attestation_refusal_window: other
                .attestation_refusal_window
                .or(self.attestation_refusal_window),
            log_level: other.log_level.or(self.log_level),
            log_format: other.log_format.or(self.log_format),
            upstream: other.upstream.or(self.upstream),
            x509pop: other.x509pop.or(self.x509pop),
            admins: other.admins.or(self.admins),
            admin_socket_mode: other.admin_socket_mode.or(self.admin_socket_mode),
            admin_socket_group: other.admin_socket_group.or(self.admin_socket_group),
            tasks: other.tasks.or(self.tasks),
            limits: other.limits.or(self.limits),
            datastore: other.datastore.or(self.datastore),
        }
    }

    /// Applies defaults and validates the whole configuration.
    pub fn validate(self) -> Result<ServerConfig, ServerError> {
        let bad = |msg: String| ServerError::Config(msg);
        let td = self
            .trust_domain
            .ok_or_else(|| bad("trust_domain is required (e.g. `example.org`)".into()))?;
        let trust_domain = TrustDomain::new(&td).map_err(|e| bad(format!("trust_domain: {e}")))?;
        let data_dir = self
            .data_dir
            .ok_or_else(|| bad("data_dir is required (e.g. `/var/lib/lanyard/server`)".into()))?;
        let parse_addr = |s: &str| -> SocketAddr {
            // The defaults are literals known to parse.
            s.parse().unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)))
        };
        let ca_ttl = self.ca_ttl.unwrap_or(defaults::CA_TTL);
        let default_x509_svid_ttl = self
            .default_x509_svid_ttl
            .unwrap_or(defaults::X509_SVID_TTL);
        let default_jwt_svid_ttl = self.default_jwt_svid_ttl.unwrap_or(defaults::JWT_SVID_TTL);
        let jwt_issuer = self
            .jwt_issuer
            .as_deref()
            .map(check_issuer)
            .transpose()
            .map_err(|e| bad(format!("jwt_issuer: {e}")))?;
        let jwt_algorithm = self
            .jwt_algorithm
            .as_deref()
            .map(str::parse::<lanyard_jwt::Alg>)
            .transpose()
            .map_err(|e| bad(format!("jwt_algorithm: {e}")))?
            .unwrap_or_default();
        let agent_svid_ttl = self.agent_svid_ttl.unwrap_or(defaults::AGENT_SVID_TTL);
        let join_token_ttl = self.join_token_ttl.unwrap_or(defaults::JOIN_TOKEN_TTL);
        let attestation_refusal_window = self
            .attestation_refusal_window
            .unwrap_or(defaults::ATTESTATION_REFUSAL_WINDOW);
        for (key, value) in [
            ("ca_ttl", ca_ttl),
            ("default_x509_svid_ttl", default_x509_svid_ttl),
            ("default_jwt_svid_ttl", default_jwt_svid_ttl),
            ("agent_svid_ttl", agent_svid_ttl),
            ("join_token_ttl", join_token_ttl),
            ("attestation_refusal_window", attestation_refusal_window),
        ] {
            if value < Duration::from_secs(1) {
                return Err(bad(format!("{key} must be at least 1s")));
            }
        }
        if ca_ttl < Duration::from_secs(60) {
            return Err(bad(format!(
                "ca_ttl must be at least 1m, got {}",
                humantime::format_duration(ca_ttl)
            )));
        }
        // The JWT default is checked only when set: with a short ca_ttl
        // (tests, demos) tokens are cut to the active CA's NotAfter.
        let explicit_jwt_ttl = self
            .default_jwt_svid_ttl
            .map(|v| ("default_jwt_svid_ttl", v));
        for (key, value) in [
            ("default_x509_svid_ttl", default_x509_svid_ttl),
            ("agent_svid_ttl", agent_svid_ttl),
        ]
        .into_iter()
        .chain(explicit_jwt_ttl)
        {
            if value >= ca_ttl {
                return Err(bad(format!(
                    "{key} ({}) must be shorter than ca_ttl ({}): an SVID cannot outlive the CA that signs it",
                    humantime::format_duration(value),
                    humantime::format_duration(ca_ttl)
                )));
            }
        }
        let log_json = match self.log_format.as_deref().unwrap_or("text") {
            "text" => false,
            "json" => true,
            other => {
                return Err(bad(format!(
                    "log_format must be `text` or `json`, got `{other}`"
                )));
            }
        };
        let admin_socket = self
            .admin_socket
            .unwrap_or_else(|| data_dir.join("admin.sock"));
        let admin_socket_mode = match &self.admin_socket_mode {
            None => defaults::ADMIN_SOCKET_MODE,
            Some(m) => u32::from_str_radix(m.trim_start_matches("0o"), 8)
                .ok()
                .filter(|m| *m <= 0o777)
                .ok_or_else(|| {
                    bad(format!(
                        "admin_socket_mode must be an octal mode like \"0660\", got {m:?}"
                    ))
                })?,
        };
        let rules = |key: &str,
                     list: Option<Vec<String>>|
         -> Result<Option<Vec<PrincipalRule>>, ServerError> {
            list.map(|l| {
                l.iter()
                    .map(|r| r.parse().map_err(|e: String| bad(format!("{key}: {e}"))))
                    .collect()
            })
            .transpose()
        };
        // By default root and the server's own user administer it.
        let own_uid = std::fs::metadata("/proc/self")
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
            .unwrap_or(0);
        let admins = rules("admins", self.admins)?.unwrap_or_else(|| {
            let mut admins = vec![PrincipalRule::Uid(0), PrincipalRule::Uid(own_uid)];
            admins.dedup();
            admins
        });
        let tasks = self.tasks.unwrap_or_default();
        let task_time_zone = tasks
            .time_zone
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|e: String| bad(format!("tasks.time_zone: {e}")))?
            .unwrap_or_default();
        let task_policy_file = tasks.policy_file.clone();
        let ticket_check_timeout = tasks
            .ticket_check_timeout
            .unwrap_or(defaults::TICKET_CHECK_TIMEOUT);
        if ticket_check_timeout < Duration::from_millis(100) {
            return Err(bad(format!(
                "tasks.ticket_check_timeout must be at least 100ms, got {}",
                humantime::format_duration(ticket_check_timeout)
            )));
        }
        let https_ca_file = tasks
            .https_ca_file
            .clone()
            .unwrap_or_else(|| PathBuf::from(defaults::HTTPS_CA_FILE));
        let ticket_check = tasks
            .ticket_check_url
            .as_deref()
            .map(|url| {
                crate::outbound::endpoint(url)
                    .map(|_| crate::ticket_check::TicketCheck {
                        url: url.to_owned(),
                        ca_file: https_ca_file.clone(),
                        timeout: ticket_check_timeout,
                        fail_open: tasks.ticket_check_fail_open.unwrap_or(false),
                    })
                    .map_err(|e| bad(format!("tasks.ticket_check_url: {e}")))
            })
            .transpose()?;
        let notify = match (tasks.notify_url.clone(), tasks.notify_secret_file.clone()) {
            (None, None) => None,
            (Some(url), Some(secret)) => {
                crate::outbound::endpoint(&url)
                    .map_err(|e| bad(format!("tasks.notify_url: {e}")))?;
                Some((url, secret))
            }
            (Some(_), None) => {
                return Err(bad(
                    "tasks.notify_url needs tasks.notify_secret_file: notifications are HMAC-signed".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(bad(
                    "tasks.notify_secret_file is set without tasks.notify_url".into(),
                ));
            }
        };
        let notify_retries = tasks.notify_retries.unwrap_or(defaults::NOTIFY_RETRIES);
        let groups_file = tasks
            .groups_file
            .clone()
            .unwrap_or_else(|| PathBuf::from(defaults::GROUPS_FILE));
        let policy = Policy {
            requesters: rules("tasks.requesters", tasks.requesters)?.unwrap_or_default(),
            approvers: rules("tasks.approvers", tasks.approvers)?.unwrap_or_default(),
            admins,
            max_task_ttl: tasks.max_ttl.unwrap_or(defaults::TASK_MAX_TTL),
            break_glass_max_ttl: tasks
                .break_glass_max_ttl
                .unwrap_or(defaults::BREAK_GLASS_MAX_TTL),
            require_distinct_approver: tasks.require_distinct_approver.unwrap_or(true),
        };
        if policy.break_glass_max_ttl > policy.max_task_ttl {
            return Err(bad(format!(
                "tasks.break_glass_max_ttl ({}) must not exceed tasks.max_ttl ({})",
                humantime::format_duration(policy.break_glass_max_ttl),
                humantime::format_duration(policy.max_task_ttl)
            )));
        }
        let limits = self.limits.unwrap_or_default().validate().map_err(bad)?;
        Ok(ServerConfig {
            trust_domain,
            bind_address: self
                .bind_address
                .unwrap_or_else(|| parse_addr(defaults::BIND_ADDRESS)),
            http_address: self
                .http_address
                .unwrap_or_else(|| parse_addr(defaults::HTTP_ADDRESS)),
            admin_socket,
            data_dir,
            ca_ttl,
            default_x509_svid_ttl,
            default_jwt_svid_ttl,
            jwt_issuer,
            jwt_algorithm,
            agent_svid_ttl,
            join_token_ttl,
            attestation_refusal_window,
            log_level: self.log_level.unwrap_or_else(|| "info".into()),
            log_json,
            upstream: self.upstream,
            x509pop_ca_bundle: self.x509pop.map(|x| x.ca_bundle_path),
            admin_socket_mode,
            admin_socket_group: self.admin_socket_group,
            policy,
            task_policy_file,
            task_time_zone,
            groups_file,
            ticket_check,
            notify,
            notify_retries,
            https_ca_file,
            limits,
            datastore: self.datastore.unwrap_or_default().validate()?,
        })
    }
}

/// An OIDC issuer: an `https://` URL without query or fragment (`http://`
/// only on a loopback host, for tests and a TLS proxy on the same machine).
/// Returned without a trailing `/`, as `iss` and the discovery document
/// carry it.
fn check_issuer(url: &str) -> Result<String, String> {
    let rest = if let Some(rest) = url.strip_prefix("https://") {
        rest
    } else if let Some(rest) = url.strip_prefix("http://") {
        let host = rest.split(['/', ':']).next().unwrap_or_default();
        if !matches!(host, "127.0.0.1" | "localhost") && !rest.starts_with("[::1]") {
            return Err(format!(
                "{url:?} is plain http on a non-loopback host; OIDC issuers are https:// URLs"
            ));
        }
        rest
    } else {
        return Err(format!("{url:?} is not an https:// URL"));
    };
    if rest.is_empty() || rest.starts_with('/') || rest.contains(['?', '#', ' ']) {
        return Err(format!(
            "{url:?} must be an https:// URL with a host and no query or fragment"
        ));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn jwt_issuers_are_https_urls() {
        assert_eq!(
            check_issuer("https://oidc.example.org/lanyard/").unwrap(),
            "https://oidc.example.org/lanyard"
        );
        assert!(check_issuer("http://127.0.0.1:8082").is_ok());
        let parse = |alg: &str| {
            ConfigFile::parse(&format!(
                "trust_domain = \"a.org\"\ndata_dir = \"/d\"\njwt_algorithm = \"{alg}\""
            ))
            .unwrap()
            .validate()
        };
        assert_eq!(
            parse("rs256").unwrap().jwt_algorithm,
            lanyard_jwt::Alg::Rs256
        );
        let err = parse("HS256").unwrap_err().to_string();
        assert!(
            err.contains("jwt_algorithm") && err.contains("ES256 or RS256"),
            "{err}"
        );
        for bad in [
            "http://oidc.example.org",
            "oidc.example.org",
            "https://",
            "https://x.org/?a=b",
        ] {
            assert!(check_issuer(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn task_policy_and_socket_mode_are_validated() {
        let cfg = ConfigFile::parse(
            "trust_domain = \"a.org\"\ndata_dir = \"/d\"\nadmin_socket_mode = \"0660\"\n[tasks]\nmax_ttl = \"1h\"\nbreak_glass_max_ttl = \"10m\"\nrequesters = [\"group:ops\"]\napprovers = [\"user:bob\", \"uid:1002\"]",
        )
        .unwrap()
        .validate()
        .unwrap();
        assert_eq!(cfg.admin_socket_mode, 0o660);
        assert_eq!(cfg.policy.max_task_ttl, Duration::from_secs(3600));
        assert_eq!(cfg.policy.approvers.len(), 2);
        assert!(cfg.policy.require_distinct_approver);
        assert_eq!(cfg.task_time_zone.to_string(), "+00:00");
        assert_eq!(cfg.groups_file, PathBuf::from("/etc/group"));
        let err = ConfigFile::parse(
            "trust_domain = \"a.org\"\ndata_dir = \"/d\"\n[tasks]\ntime_zone = \"CET\"",
        )
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("tasks.time_zone") && err.contains("+HH:MM"),
            "{err}"
        );
        let err = ConfigFile::parse(
            "trust_domain = \"a.org\"\ndata_dir = \"/d\"\n[tasks]\nticket_check_url = \"http://tickets.example.org/\"",
        )
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("tasks.ticket_check_url") && err.contains("loopback"),
            "{err}"
        );
        let err = ConfigFile::parse(
            "trust_domain = \"a.org\"\ndata_dir = \"/d\"\n[tasks]\nnotify_url = \"http://127.0.0.1:9/hook\"",
        )
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
        assert!(err.contains("tasks.notify_secret_file"), "{err}");
        let err = ConfigFile::parse(
            "trust_domain = \"a.org\"\ndata_dir = \"/d\"\n[tasks]\napprovers = [\"bob\"]",
        )
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("tasks.approvers") && err.contains("user:NAME"),
            "{err}"
        );
        let err = ConfigFile::parse(
            "trust_domain = \"a.org\"\ndata_dir = \"/d\"\nadmin_socket_mode = \"rw\"",
        )
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
        assert!(err.contains("admin_socket_mode"), "{err}");
        let err = ConfigFile::parse("[tasks]\nmax_tll = \"1h\"").unwrap_err();
        assert!(err.contains("max_tll"), "{err}");
    }

    #[test]
    fn unknown_key_is_named() {
        let err = ConfigFile::parse("trust_domain = \"a.org\"\nbind_adress = \"x\"").unwrap_err();
        assert!(err.contains("bind_adress"), "{err}");
    }

    #[test]
    fn flags_win_and_defaults_fill() {
        let file = ConfigFile::parse(
            "trust_domain = \"file.org\"\ndata_dir = \"/d\"\nca_ttl = \"48h\"\ndefault_x509_svid_ttl = \"15m\"",
        )
        .unwrap();
        let flags = ConfigFile {
            trust_domain: Some("flag.org".into()),
            ..Default::default()
        };
        let cfg = file.overlay(flags).validate().unwrap();
        assert_eq!(cfg.trust_domain.as_str(), "flag.org");
        assert_eq!(cfg.ca_ttl, Duration::from_secs(48 * 3600));
        assert_eq!(cfg.default_x509_svid_ttl, Duration::from_secs(900));
        assert_eq!(cfg.bind_address.to_string(), defaults::BIND_ADDRESS);
        assert_eq!(cfg.http_address.to_string(), defaults::HTTP_ADDRESS);
        assert_eq!(cfg.admin_socket, PathBuf::from("/d/admin.sock"));
    }

    #[test]
    fn svid_ttl_must_fit_in_ca_ttl() {
        let file = ConfigFile::parse(
            "trust_domain = \"a.org\"\ndata_dir = \"/d\"\nca_ttl = \"1h\"\ndefault_x509_svid_ttl = \"2h\"",
        )
        .unwrap();
        let err = file.validate().unwrap_err().to_string();
        assert!(
            err.contains("default_x509_svid_ttl") && err.contains("ca_ttl"),
            "{err}"
        );
    }

    #[test]
    fn bad_duration_and_trust_domain_are_explained() {
        let err = ConfigFile::parse("ca_ttl = \"soon\"").unwrap_err();
        assert!(err.contains("ca_ttl") || err.contains("soon"), "{err}");
        let err = ConfigFile::parse("trust_domain = \"Bad.ORG\"\ndata_dir = \"/d\"")
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("trust_domain"), "{err}");
    }
}
