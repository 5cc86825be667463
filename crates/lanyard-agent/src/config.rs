//! Agent configuration: a TOML file (unknown keys are an error) overlaid by
//! command-line flags (flags win), validated as a whole into [`AgentConfig`].

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use lanyard_identity::TrustDomain;
use serde::Deserialize;

use crate::AgentError;

/// Defaults shared by the config and the CLI.
pub mod defaults {
    /// Node API address of the server.
    pub const SERVER_ADDRESS: &str = "127.0.0.1:8081";
    /// Where the agent keeps its SVID, key and bundle.
    pub const DATA_DIR: &str = "/var/lib/lanyard/agent";
    /// The Workload API socket.
    pub const SOCKET_PATH: &str = "/run/lanyard/agent/api.sock";
    /// Health and metrics endpoint address.
    pub const HTTP_ADDRESS: &str = "127.0.0.1:8083";
    /// Default tracing filter.
    pub const LOG_LEVEL: &str = "info";
    /// `attestation_timeout`.
    pub const ATTESTATION_TIMEOUT: std::time::Duration =
        crate::attestor::DEFAULT_ATTESTATION_TIMEOUT;
}

/// The agent's config file, and the flags that overlay it: every key optional.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// `trust_domain`: the trust domain this agent joins, e.g. `example.org`.
    /// Required when the trust bundle names none (an upstream root without
    /// a SPIFFE URI SAN); otherwise checked against it.
    pub trust_domain: Option<String>,
    /// `server_address`: the servers' Node API, `host:port`: one string
    /// (several separated by commas) or a list. A DNS name stands for every
    /// address it resolves to.
    pub server_address: Option<ServerAddressValue>,
    /// `trust_bundle_path`: PEM CA certificates to trust for the first contact.
    pub trust_bundle_path: Option<PathBuf>,
    /// `insecure_bootstrap`: attest without verifying the server (testing only).
    pub insecure_bootstrap: Option<bool>,
    /// `join_token`: a one-time join token.
    pub join_token: Option<String>,
    /// `x509pop_cert_path`: the node certificate (PEM chain, leaf first).
    pub x509pop_cert_path: Option<PathBuf>,
    /// `x509pop_key_path`: the node certificate's private key (PEM).
    pub x509pop_key_path: Option<PathBuf>,
    /// `data_dir`: where the agent SVID, its key and the bundle are kept.
    pub data_dir: Option<PathBuf>,
    /// `socket_path`: the Workload API Unix socket.
    pub socket_path: Option<PathBuf>,
    /// `http_address`: health endpoints (`/health/live`, `/health/ready`) and
    /// Prometheus metrics (`/metrics`).
    pub http_address: Option<String>,
    /// `attestation_timeout`: how long pinning a Workload API caller, and
    /// attesting it for one request, may take.
    #[serde(default, with = "humantime_serde")]
    pub attestation_timeout: Option<Duration>,
    /// `log_level`: a tracing filter such as `info` or `info,lanyard_agent=debug`.
    pub log_level: Option<String>,
    /// `log_format`: `text` or `json`.
    pub log_format: Option<LogFormat>,
}

pub use lanyard_logging::LogFormat;

/// `server_address` as written: one string or a list of strings.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum ServerAddressValue {
    /// `"host:port"`, or several separated by commas.
    One(String),
    /// `["host:port", ...]`.
    Many(Vec<String>),
}

/// One server's Node API address: an IP address or DNS name, and a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerAddress {
    host: String,
    port: u16,
}

impl ServerAddress {
    /// Parses `IP:PORT`, `[IPv6]:PORT` or `NAME:PORT`.
    pub fn parse(text: &str) -> Option<Self> {
        let (host, port) = text.trim().rsplit_once(':')?;
        let port: u16 = port.parse().ok()?;
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let valid_name = !bare.is_empty()
            && (bare.parse::<std::net::IpAddr>().is_ok()
                || bare
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
        (valid_name && port != 0).then(|| Self {
            host: host.to_owned(),
            port,
        })
    }

    /// Every socket address it stands for now (a DNS name is resolved).
    pub async fn resolve(&self) -> std::io::Result<Vec<SocketAddr>> {
        Ok(tokio::net::lookup_host((
            self.host.trim_start_matches('[').trim_end_matches(']'),
            self.port,
        ))
        .await?
        .collect())
    }
}

impl std::fmt::Display for ServerAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// The servers an agent may talk to, in order of preference; any of them
/// serves it (they share one database), so the agent fails over between
/// them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerAddresses(Vec<ServerAddress>);

impl ServerAddresses {
    /// The addresses as configured.
    pub fn as_slice(&self) -> &[ServerAddress] {
        &self.0
    }

    /// Every socket address the list stands for now, in order, without
    /// duplicates; names that do not resolve are skipped (and logged).
    pub async fn resolve(&self) -> Vec<SocketAddr> {
        let mut out: Vec<SocketAddr> = Vec::new();
        for server in &self.0 {
            match server.resolve().await {
                Ok(addrs) => {
                    for addr in addrs {
                        if !out.contains(&addr) {
                            out.push(addr);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(server = %server, error = %e, "cannot resolve server address")
                }
            }
        }
        out
    }
}

impl From<SocketAddr> for ServerAddresses {
    fn from(addr: SocketAddr) -> Self {
        Self(vec![ServerAddress {
            host: match addr.ip() {
                std::net::IpAddr::V4(ip) => ip.to_string(),
                std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            },
            port: addr.port(),
        }])
    }
}

impl std::fmt::Display for ServerAddresses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, server) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{server}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for ConfigFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigFile")
            .field("trust_domain", &self.trust_domain)
            .field("server_address", &self.server_address)
            .field("trust_bundle_path", &self.trust_bundle_path)
            .field("insecure_bootstrap", &self.insecure_bootstrap)
            // The token is a secret until used.
            .field(
                "join_token",
                &self.join_token.as_ref().map(|_| "<redacted>"),
            )
            .field("x509pop_cert_path", &self.x509pop_cert_path)
            .field("x509pop_key_path", &self.x509pop_key_path)
            .field("data_dir", &self.data_dir)
            .field("socket_path", &self.socket_path)
            .field("http_address", &self.http_address)
            .field("attestation_timeout", &self.attestation_timeout)
            .field("log_level", &self.log_level)
            .field("log_format", &self.log_format)
            .finish()
    }
}

/// How the agent first trusts the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bootstrap {
    /// PEM CA certificates from this file.
    TrustBundle(PathBuf),
    /// No verification of the first contact: the bundle from the attestation
    /// answer is trusted afterwards.
    Insecure,
}

/// How the agent proves its node's identity.
#[derive(Clone, PartialEq, Eq)]
pub enum NodeAttestation {
    /// A one-time join token.
    JoinToken(String),
    /// A certificate and its key (PEM files).
    X509Pop {
        /// PEM certificate chain, leaf first.
        cert: PathBuf,
        /// PEM private key.
        key: PathBuf,
    },
}

impl std::fmt::Debug for NodeAttestation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // The token is a secret until used.
            Self::JoinToken(_) => f.write_str("JoinToken(<redacted>)"),
            Self::X509Pop { cert, key } => f
                .debug_struct("X509Pop")
                .field("cert", cert)
                .field("key", key)
                .finish(),
        }
    }
}

/// The validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentConfig {
    /// The configured trust domain, if any. When `None` it comes from the
    /// bootstrap bundle's URI SAN (or, with an insecure bootstrap, from the
    /// server's answer).
    pub trust_domain: Option<TrustDomain>,
    /// The servers' Node API addresses (at least one).
    pub server_address: ServerAddresses,
    /// First-contact trust; `None` when a stored bundle in the data dir
    /// must be used (no bootstrap option given).
    pub bootstrap: Option<Bootstrap>,
    /// How to attest when no usable agent SVID is stored.
    pub attestation: Option<NodeAttestation>,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Workload API socket.
    pub socket_path: PathBuf,
    /// Health and metrics endpoint address.
    pub http_address: SocketAddr,
    /// Deadline for pinning a Workload API caller and attesting it per request.
    pub attestation_timeout: Duration,
    /// Tracing filter.
    pub log_level: String,
    /// Log format.
    pub log_format: LogFormat,
}

impl ConfigFile {
    /// Reads and parses a TOML config file.
    pub fn load(path: &Path) -> Result<Self, AgentError> {
        let text = std::fs::read_to_string(path).map_err(|e| AgentError::io(path, e))?;
        Self::parse(&text).map_err(|e| AgentError::Config(format!("{}: {e}", path.display())))
    }

    /// Parses TOML text; unknown keys are an error naming the key.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.message().to_owned().replace('\n', " "))
    }

    /// `self` overlaid by `flags`: every key set in `flags` wins.
    pub fn overlay(self, flags: ConfigFile) -> ConfigFile {
        ConfigFile {
            trust_domain: flags.trust_domain.or(self.trust_domain),
            server_address: flags.server_address.or(self.server_address),
            trust_bundle_path: flags.trust_bundle_path.or(self.trust_bundle_path),
            insecure_bootstrap: flags.insecure_bootstrap.or(self.insecure_bootstrap),
            join_token: flags.join_token.or(self.join_token),
            x509pop_cert_path: flags.x509pop_cert_path.or(self.x509pop_cert_path),
            x509pop_key_path: flags.x509pop_key_path.or(self.x509pop_key_path),
            data_dir: flags.data_dir.or(self.data_dir),
            socket_path: flags.socket_path.or(self.socket_path),
            http_address: flags.http_address.or(self.http_address),
            attestation_timeout: flags.attestation_timeout.or(self.attestation_timeout),
            log_level: flags.log_level.or(self.log_level),
            log_format: flags.log_format.or(self.log_format),
        }
    }

    /// Validates the whole configuration.
    pub fn validate(self) -> Result<AgentConfig, AgentError> {
        let err = |m: String| AgentError::Config(m);
        let addr =
            |key: &str, v: Option<String>, default: &str| -> Result<SocketAddr, AgentError> {
                let v = v.unwrap_or_else(|| default.to_owned());
                v.parse().map_err(|_| {
                    err(format!(
                        "{key}: {v:?} is not a socket address; expected IP:PORT such as {default}"
                    ))
                })
            };
        let server_address = server_addresses(self.server_address)?;
        let http_address = addr("http_address", self.http_address, defaults::HTTP_ADDRESS)?;
        let trust_domain = self
            .trust_domain
            .map(|td| {
                TrustDomain::new(&td).map_err(|e| {
                    err(format!(
                        "trust_domain {td:?}: {e}; expected a lower-case name such as example.org"
                    ))
                })
            })
            .transpose()?;
        let bootstrap = match (
            self.trust_bundle_path,
            self.insecure_bootstrap.unwrap_or(false),
        ) {
            (Some(_), true) => {
                return Err(err(
                    "trust_bundle_path and insecure_bootstrap exclude each other: give one".into(),
                ));
            }
            (Some(p), false) => Some(Bootstrap::TrustBundle(p)),
            (None, true) => Some(Bootstrap::Insecure),
            (None, false) => None,
        };
        let attestation = match (
            self.join_token,
            self.x509pop_cert_path,
            self.x509pop_key_path,
        ) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                return Err(err(
                    "join_token and x509pop_cert_path/x509pop_key_path exclude each other: give one method"
                        .into(),
                ));
            }
            (Some(t), None, None) => {
                if t.trim().is_empty() {
                    return Err(err("join_token is empty".into()));
                }
                Some(NodeAttestation::JoinToken(t))
            }
            (None, Some(cert), Some(key)) => Some(NodeAttestation::X509Pop { cert, key }),
            (None, Some(_), None) => {
                return Err(err(
                    "x509pop_cert_path needs x509pop_key_path as well".into()
                ));
            }
            (None, None, Some(_)) => {
                return Err(err(
                    "x509pop_key_path needs x509pop_cert_path as well".into()
                ));
            }
            (None, None, None) => None,
        };
        let data_dir = self.data_dir.unwrap_or_else(|| defaults::DATA_DIR.into());
        let socket_path = self
            .socket_path
            .unwrap_or_else(|| defaults::SOCKET_PATH.into());
        for (key, p) in [("data_dir", &data_dir), ("socket_path", &socket_path)] {
            if p.as_os_str().is_empty() {
                return Err(err(format!("{key} is empty")));
            }
        }
        if socket_path.starts_with(&data_dir) && socket_path.parent() == Some(data_dir.as_path()) {
            // The data dir holds the agent key: keep the world-connectable
            // socket out of it.
            return Err(err(format!(
                "socket_path {} must not be directly inside data_dir {}: give the socket a directory of its own",
                socket_path.display(),
                data_dir.display()
            )));
        }
        let attestation_timeout = self
            .attestation_timeout
            .unwrap_or(defaults::ATTESTATION_TIMEOUT);
        if attestation_timeout.is_zero() {
            return Err(err(
                "attestation_timeout must be longer than zero, e.g. 10s".into(),
            ));
        }
        let log_level = self
            .log_level
            .unwrap_or_else(|| defaults::LOG_LEVEL.to_owned());
        lanyard_logging::check_filter(&log_level).map_err(|e| err(e.to_string()))?;
        Ok(AgentConfig {
            trust_domain,
            server_address,
            bootstrap,
            attestation,
            data_dir,
            socket_path,
            http_address,
            attestation_timeout,
            log_level,
            log_format: self.log_format.unwrap_or_default(),
        })
    }
}

/// Validates `server_address`: every item `HOST:PORT`, at least one.
fn server_addresses(value: Option<ServerAddressValue>) -> Result<ServerAddresses, AgentError> {
    let items: Vec<String> = match value {
        None => vec![defaults::SERVER_ADDRESS.to_owned()],
        Some(ServerAddressValue::One(text)) => vec![text],
        Some(ServerAddressValue::Many(list)) => list,
    };
    let parts: Vec<&str> = items
        .iter()
        .flat_map(|i| i.split(','))
        .map(str::trim)
        .collect();
    let mut out = Vec::new();
    for part in parts {
        let server = ServerAddress::parse(part).ok_or_else(|| {
            AgentError::Config(format!(
                "server_address: {part:?} is not a server address; expected IP:PORT or \
                 NAME:PORT such as {}, several separated by commas or as a list",
                defaults::SERVER_ADDRESS
            ))
        })?;
        if !out.contains(&server) {
            out.push(server);
        }
    }
    if out.is_empty() {
        return Err(AgentError::Config(
            "server_address is empty; expected IP:PORT or NAME:PORT".into(),
        ));
    }
    Ok(ServerAddresses(out))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply() {
        let cfg = ConfigFile::default().validate().unwrap();
        assert_eq!(cfg.server_address.to_string(), "127.0.0.1:8081");
        assert_eq!(cfg.http_address.to_string(), "127.0.0.1:8083");
        assert_eq!(cfg.data_dir, PathBuf::from("/var/lib/lanyard/agent"));
        assert_eq!(
            cfg.socket_path,
            PathBuf::from("/run/lanyard/agent/api.sock")
        );
        assert_eq!(cfg.bootstrap, None);
        assert_eq!(cfg.trust_domain, None);
        assert_eq!(cfg.attestation, None);
        assert_eq!(cfg.log_format, LogFormat::Text);
    }

    #[test]
    fn parses_every_key() {
        let file = ConfigFile::parse(
            r#"
            trust_domain = "corp.example"
            server_address = "10.0.0.1:9000"
            trust_bundle_path = "/etc/lanyard/bundle.pem"
            join_token = "abc"
            data_dir = "/srv/agent"
            socket_path = "/run/x/api.sock"
            http_address = "127.0.0.1:9999"
            log_level = "debug"
            log_format = "json"
            "#,
        )
        .unwrap();
        let cfg = file.validate().unwrap();
        assert_eq!(
            cfg.trust_domain.as_ref().map(TrustDomain::as_str),
            Some("corp.example")
        );
        assert_eq!(cfg.server_address.to_string(), "10.0.0.1:9000");
        assert_eq!(
            cfg.bootstrap,
            Some(Bootstrap::TrustBundle("/etc/lanyard/bundle.pem".into()))
        );
        assert_eq!(
            cfg.attestation,
            Some(NodeAttestation::JoinToken("abc".into()))
        );
        assert_eq!(cfg.log_format, LogFormat::Json);
        assert_eq!(
            format!("{:?}", cfg.attestation),
            "Some(JoinToken(<redacted>))"
        );
    }

    #[test]
    fn unknown_key_is_named() {
        let e = ConfigFile::parse("server_adress = \"1.2.3.4:5\"").unwrap_err();
        assert!(e.contains("server_adress"), "{e}");
        let e = ConfigFile::parse("log_format = \"xml\"").unwrap_err();
        assert!(e.contains("xml") || e.contains("variant"), "{e}");
    }

    #[test]
    fn flags_win() {
        let file = ConfigFile {
            server_address: Some(ServerAddressValue::One("10.0.0.1:1".into())),
            data_dir: Some("/a".into()),
            ..Default::default()
        };
        let flags = ConfigFile {
            server_address: Some(ServerAddressValue::One("10.0.0.2:2".into())),
            ..Default::default()
        };
        let merged = file.overlay(flags);
        assert_eq!(
            merged.server_address,
            Some(ServerAddressValue::One("10.0.0.2:2".into()))
        );
        assert_eq!(merged.data_dir, Some("/a".into()));
    }

    #[test]
    fn conflicts_and_incomplete_options_are_errors() {
        let cases = [
            (
                ConfigFile {
                    trust_bundle_path: Some("/b".into()),
                    insecure_bootstrap: Some(true),
                    ..Default::default()
                },
                "exclude",
            ),
            (
                ConfigFile {
                    join_token: Some("t".into()),
                    x509pop_cert_path: Some("/c".into()),
                    x509pop_key_path: Some("/k".into()),
                    ..Default::default()
                },
                "exclude",
            ),
            (
                ConfigFile {
                    x509pop_cert_path: Some("/c".into()),
                    ..Default::default()
                },
                "x509pop_key_path",
            ),
            (
                ConfigFile {
                    x509pop_key_path: Some("/k".into()),
                    ..Default::default()
                },
                "x509pop_cert_path",
            ),
            (
                ConfigFile {
                    server_address: Some(ServerAddressValue::One("nowhere".into())),
                    ..Default::default()
                },
                "server_address",
            ),
            (
                ConfigFile {
                    http_address: Some("x:y".into()),
                    ..Default::default()
                },
                "http_address",
            ),
            (
                ConfigFile {
                    join_token: Some(" ".into()),
                    ..Default::default()
                },
                "join_token",
            ),
            (
                ConfigFile {
                    data_dir: Some("/d".into()),
                    socket_path: Some("/d/api.sock".into()),
                    ..Default::default()
                },
                "socket_path",
            ),
            (
                ConfigFile {
                    trust_domain: Some("Example.ORG".into()),
                    ..Default::default()
                },
                "trust_domain \"Example.ORG\"",
            ),
            (
                ConfigFile {
                    trust_domain: Some("spiffe://example.org".into()),
                    ..Default::default()
                },
                "trust_domain",
            ),
            (
                ConfigFile {
                    log_level: Some("info,=[".into()),
                    ..Default::default()
                },
                "log_level",
            ),
        ];
        for (file, needle) in cases {
            let e = file.clone().validate().unwrap_err().to_string();
            assert!(e.contains(needle), "{file:?}: {e}");
        }
    }

    #[test]
    fn x509pop_and_insecure() {
        let cfg = ConfigFile {
            insecure_bootstrap: Some(true),
            x509pop_cert_path: Some("/c".into()),
            x509pop_key_path: Some("/k".into()),
            ..Default::default()
        }
        .validate()
        .unwrap();
        assert_eq!(cfg.bootstrap, Some(Bootstrap::Insecure));
        assert_eq!(
            cfg.attestation,
            Some(NodeAttestation::X509Pop {
                cert: "/c".into(),
                key: "/k".into()
            })
        );
    }

    #[test]
    fn server_address_takes_a_list_a_comma_list_and_names() {
        let cfg =
            ConfigFile::parse("server_address = [\"10.0.0.1:8081\", \"lanyard.internal:8081\"]")
                .unwrap()
                .validate()
                .unwrap();
        assert_eq!(
            cfg.server_address.to_string(),
            "10.0.0.1:8081,lanyard.internal:8081"
        );
        let cfg = ConfigFile::parse("server_address = \"10.0.0.1:1, [::1]:2,10.0.0.1:1\"")
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(cfg.server_address.to_string(), "10.0.0.1:1,[::1]:2");
        for bad in ["\"\"", "\"a\"", "\"a:b\"", "[]", "\"x y:1\"", "\"h:0\""] {
            let err = ConfigFile::parse(&format!("server_address = {bad}"))
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string();
            assert!(err.contains("server_address"), "{bad}: {err}");
        }
    }

    #[tokio::test]
    async fn a_name_stands_for_every_address_it_resolves_to() {
        let servers = server_addresses(Some(ServerAddressValue::One(
            "localhost:8081,127.0.0.1:8081".into(),
        )))
        .unwrap();
        let addrs = servers.resolve().await;
        assert!(
            addrs.contains(&"127.0.0.1:8081".parse().unwrap()),
            "{addrs:?}"
        );
        assert_eq!(
            addrs
                .iter()
                .filter(|a| a.to_string() == "127.0.0.1:8081")
                .count(),
            1,
            "duplicates are dropped: {addrs:?}"
        );
    }
}
