//! The agent's error type.

use std::path::PathBuf;

/// Everything that can stop the agent or one of its tasks.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The configuration (file or flags) is invalid; names the key and what is accepted.
    #[error("config: {0}")]
    Config(String),
    /// Reading or writing a file (data dir, trust bundle, x509pop material) failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file's contents are not what was expected (bad PEM, wrong key type ...).
    #[error("{}: {problem}", path.display())]
    BadFile {
        /// The file involved.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The trust domain cannot be told: the bootstrap bundle names none (no
    /// CA certificate carries a SPIFFE URI SAN, as with an upstream root made
    /// by an existing PKI) and `trust_domain` is not set.
    #[error(
        "cannot tell the trust domain: no CA certificate in the trust bundle {} carries a \
         spiffe://<trust domain> URI SAN (an upstream root usually does not); set trust_domain \
         (--trust-domain), e.g. example.org",
        bundle.display()
    )]
    TrustDomainUnknown {
        /// The bundle that names none.
        bundle: PathBuf,
    },
    /// Two sources name different trust domains: the setting, the
    /// bootstrap bundle, the server (its SVID or Attest answer) or the
    /// stored agent SVID.
    #[error(
        "trust domain mismatch: {expected_from} is {expected}, but {found_in} is in {found}; \
         the agent joins one trust domain: make them agree"
    )]
    TrustDomainMismatch {
        /// The trust domain the agent expects.
        expected: lanyard_identity::TrustDomain,
        /// What named it: the setting or the trust bundle.
        expected_from: String,
        /// The other trust domain.
        found: lanyard_identity::TrustDomain,
        /// What named the other one.
        found_in: String,
    },
    /// The server refused node attestation; carries the server's reason.
    #[error("attestation refused by the server: {0}")]
    AttestationRefused(String),
    /// The server says this agent is banned: it stops serving and exits.
    #[error("agent is banned: {0}")]
    Banned(String),
    /// The server says this agent was evicted: it stops serving and exits;
    /// it may attest again only with a new join token or x509pop.
    #[error("agent was evicted: {0}")]
    Evicted(String),
    /// The agent's own SVID is on the trust domain's CRL (or the server
    /// refuses it as revoked): it can neither renew it nor fetch SVIDs, so it
    /// stops serving and exits; it may attest again only with a new join
    /// token or x509pop.
    #[error(
        "the agent SVID was revoked ({0}): stopped serving; attest again with a new \
         --join-token or with x509pop"
    )]
    AgentSvidRevoked(String),
    /// The stored agent SVID expired and no join token or x509pop is
    /// configured to attest again.
    #[error(
        "the stored agent SVID expired at {expired_at} (unix seconds) and no --join-token or \
         --x509pop-cert/--x509pop-key is configured to attest again"
    )]
    AgentSvidExpired {
        /// NotAfter of the stored SVID, seconds since the Unix epoch.
        expired_at: i64,
    },
    /// No stored agent SVID and no attestation method configured.
    #[error(
        "no agent SVID in the data dir and no attestation method: pass --join-token or \
         --x509pop-cert and --x509pop-key"
    )]
    NoAttestationMethod,
    /// A call to the server failed (network, TLS or a gRPC status); retried by the loops.
    #[error("server call {call} failed: {reason}")]
    Server {
        /// The Node API call.
        call: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// The server answered with something the agent cannot use.
    #[error("bad answer from the server to {call}: {problem}")]
    BadResponse {
        /// The Node API call.
        call: &'static str,
        /// What was wrong with the answer.
        problem: String,
    },
    /// Generating, loading or writing a key (or its CSR) failed.
    #[error("key: {0}")]
    Key(#[from] lanyard_keys::KeyError),
    /// Building the TLS configuration failed.
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// Workload attestation setup (binding the Workload API socket) failed.
    #[error("Workload API socket: {0}")]
    Socket(#[from] crate::attestor::AttestError),
    /// Serving the Workload API or the health endpoint failed.
    #[error("{what}: {reason}")]
    Serve {
        /// Which listener.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// A Workload API client command (`api fetch`, `api watch`, `healthcheck`) failed.
    #[error("{0}")]
    Client(String),
    /// A background task panicked or was cancelled unexpectedly.
    #[error("task {task} ended unexpectedly: {reason}")]
    Task {
        /// The task's name.
        task: &'static str,
        /// What happened.
        reason: String,
    },
}

impl AgentError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn bad_file(path: impl Into<PathBuf>, problem: impl Into<String>) -> Self {
        Self::BadFile {
            path: path.into(),
            problem: problem.into(),
        }
    }

    pub(crate) fn server(call: &'static str, status: &tonic::Status) -> Self {
        Self::Server {
            call,
            reason: format!("{:?}: {}", status.code(), status.message()),
        }
    }

    /// Whether this error means the server no longer accepts this agent
    /// (banned, evicted, or its SVID revoked): serving must stop at once.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Self::Banned(_) | Self::Evicted(_) | Self::AgentSvidRevoked(_)
        )
    }
}

/// Classifies a Node API status: a PermissionDenied that says the agent is
/// banned or evicted, or that its SVID is revoked, becomes
/// [`AgentError::Banned`] / [`AgentError::Evicted`] /
/// [`AgentError::AgentSvidRevoked`]; anything else is a (retryable)
/// [`AgentError::Server`].
pub(crate) fn classify(call: &'static str, status: &tonic::Status) -> AgentError {
    if status.code() == tonic::Code::PermissionDenied {
        let msg = status.message();
        if msg.contains("banned") {
            return AgentError::Banned(msg.to_owned());
        }
        if msg.contains("evicted") {
            return AgentError::Evicted(msg.to_owned());
        }
        if msg.contains("is revoked") {
            return AgentError::AgentSvidRevoked(msg.to_owned());
        }
    }
    AgentError::server(call, status)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn classifies_ban_and_eviction_only_on_permission_denied() {
        let banned = tonic::Status::permission_denied("agent spiffe://td/x is banned");
        assert!(matches!(classify("Sync", &banned), AgentError::Banned(_)));
        let evicted =
            tonic::Status::permission_denied("agent spiffe://td/x was evicted; attest again");
        assert!(matches!(classify("Sync", &evicted), AgentError::Evicted(_)));
        let superseded =
            tonic::Status::permission_denied("agent SVID 01 has been superseded by 02");
        assert!(matches!(
            classify("Sync", &superseded),
            AgentError::Server { .. }
        ));
        let revoked = tonic::Status::permission_denied("agent SVID 0a of spiffe://td/x is revoked");
        let e = classify("BatchNewX509SVID", &revoked);
        assert!(matches!(e, AgentError::AgentSvidRevoked(_)) && e.is_refusal());
        let other = tonic::Status::unavailable("banned words in an unrelated status");
        assert!(!classify("Sync", &other).is_refusal());
    }
}
