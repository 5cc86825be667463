//! A live identity source fed by the agent's Workload API.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use lanyard_identity::SpiffeId;
use rustls::{
    client::ResolvesClientCert,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use tokio::{sync::watch, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{
    Authorizer, MtlsError, TrustMaterial, WorkloadSvid,
    watcher::{Shared, Watcher},
};

/// The environment variable naming the Workload API socket (SPIFFE standard).
pub const ENDPOINT_SOCKET_ENV: &str = "SPIFFE_ENDPOINT_SOCKET";

/// How long [`WorkloadSource::connect`] waits for the first SVID.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The workload's identity, trust bundle and CRL, kept current by a
/// `FetchX509SVID` stream to the agent.
///
/// Configurations from [`server_config`](Self::server_config) and
/// [`client_config`](Self::client_config) read the live SVID and trust
/// material on every handshake: rotations, bundle changes and CRL updates
/// apply to the next connection without rebuilding anything. When the agent
/// answers PermissionDenied ("no identity issued"), the SVID is dropped (new
/// handshakes fail for lack of a certificate) while the bundle and CRL stay.
///
/// The background task stops on [`shutdown`](Self::shutdown) or when the
/// source is dropped.
#[derive(Debug)]
pub struct WorkloadSource {
    shared: Arc<Shared>,
    socket: PathBuf,
    cancel: CancellationToken,
    // Held across the join so concurrent shutdowns all wait for the end.
    task: tokio::sync::Mutex<Option<JoinHandle<()>>>,
}

impl WorkloadSource {
    /// Connects to the Workload API at `endpoint` (a socket path or a
    /// `unix:` URI) and waits up to [`DEFAULT_READY_TIMEOUT`] for the first
    /// SVID, so that callers start serving with an identity.
    ///
    /// # Errors
    ///
    /// [`MtlsError::Endpoint`] for an unusable endpoint;
    /// [`MtlsError::NotReady`] if no SVID arrived in time (with the last
    /// error seen, e.g. "no identity issued").
    pub async fn connect(endpoint: &str) -> Result<Self, MtlsError> {
        Self::connect_with_timeout(endpoint, DEFAULT_READY_TIMEOUT).await
    }

    /// [`connect`](Self::connect) to the endpoint named by
    /// `SPIFFE_ENDPOINT_SOCKET`.
    ///
    /// # Errors
    ///
    /// [`MtlsError::NoEndpoint`] if the variable is unset, else as
    /// [`connect`](Self::connect).
    pub async fn from_env() -> Result<Self, MtlsError> {
        let endpoint = std::env::var(ENDPOINT_SOCKET_ENV).map_err(|_| MtlsError::NoEndpoint)?;
        Self::connect(&endpoint).await
    }

    /// [`connect`](Self::connect) with an explicit wait for the first SVID.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect).
    pub async fn connect_with_timeout(
        endpoint: &str,
        ready_timeout: Duration,
    ) -> Result<Self, MtlsError> {
        let source = Self::start(endpoint).await?;
        let mut updates = source.updates();
        let ready = tokio::time::timeout(ready_timeout, async {
            while source.shared.svid.load().is_none() {
                if updates.changed().await.is_err() {
                    break;
                }
            }
        })
        .await;
        if ready.is_err() || source.shared.svid.load().is_none() {
            let last_error = source.shared.last_error();
            source.shutdown().await;
            return Err(MtlsError::NotReady {
                waited: ready_timeout,
                last_error,
            });
        }
        Ok(source)
    }

    /// Starts following `endpoint` without waiting for an identity (watch
    /// [`updates`](Self::updates) for it to arrive).
    ///
    /// # Errors
    ///
    /// [`MtlsError::Endpoint`] for an unusable endpoint.
    pub async fn start(endpoint: &str) -> Result<Self, MtlsError> {
        let socket = socket_path(endpoint)?;
        let shared = Arc::new(Shared::new());
        let cancel = CancellationToken::new();
        let watcher = Watcher {
            shared: shared.clone(),
            socket: socket.clone(),
        };
        let task = tokio::spawn(watcher.run(cancel.clone()));
        Ok(Self {
            shared,
            socket,
            cancel,
            task: tokio::sync::Mutex::new(Some(task)),
        })
    }

    /// The current SVID; `None` while the agent issues none.
    pub fn svid(&self) -> Option<Arc<WorkloadSvid>> {
        self.shared.svid.load_full()
    }

    /// The current SVID's SPIFFE ID.
    pub fn spiffe_id(&self) -> Option<SpiffeId> {
        self.shared
            .svid
            .load()
            .as_ref()
            .map(|s| s.spiffe_id().clone())
    }

    /// The live trust bundle and CRL.
    pub fn trust(&self) -> Arc<TrustMaterial> {
        self.shared.trust.clone()
    }

    /// A counter bumped on every applied update (new SVID, bundle or CRL, or
    /// the SVID going away).
    pub fn updates(&self) -> watch::Receiver<u64> {
        self.shared.updates.subscribe()
    }

    /// The Workload API socket followed.
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// A server configuration presenting the live SVID and requiring a
    /// client SVID that `authorizer` accepts; no session resumption.
    ///
    /// # Errors
    ///
    /// [`MtlsError::Config`] if rustls refuses the configuration.
    pub fn server_config(&self, authorizer: Authorizer) -> Result<rustls::ServerConfig, MtlsError> {
        crate::server_config_for(
            self.trust(),
            authorizer,
            Arc::new(self.resolver()),
            Some(self.own_identity()),
        )
    }

    /// A client configuration presenting the live SVID and accepting a
    /// server SVID that `authorizer` accepts; no session resumption.
    ///
    /// # Errors
    ///
    /// [`MtlsError::Config`] if rustls refuses the configuration.
    pub fn client_config(&self, authorizer: Authorizer) -> Result<rustls::ClientConfig, MtlsError> {
        crate::client_config_for(
            self.trust(),
            authorizer,
            Arc::new(self.resolver()),
            Some(self.own_identity()),
        )
    }

    /// This workload's own SPIFFE ID as the live SVID names it, for task
    /// audience checks.
    pub fn own_identity(&self) -> crate::OwnIdentity {
        let shared = self.shared.clone();
        crate::OwnIdentity::live(move || shared.svid.load().as_ref().map(|s| s.spiffe_id().clone()))
    }

    /// A certificate resolver (server and client side) returning the live
    /// SVID, for callers building their own rustls configurations.
    pub fn resolver(&self) -> SvidResolver {
        SvidResolver {
            shared: self.shared.clone(),
        }
    }

    /// Stops the background stream and waits for it to end. Idempotent.
    /// Configurations built earlier keep the last identity and material.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        let mut task = self.task.lock().await;
        if let Some(task) = task.take()
            && let Err(e) = task.await
        {
            tracing::error!(error = %e, "Workload API watcher task failed");
        }
    }
}

impl Drop for WorkloadSource {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Resolves to the [`WorkloadSource`]'s current SVID on every handshake.
#[derive(Debug, Clone)]
pub struct SvidResolver {
    shared: Arc<Shared>,
}

impl SvidResolver {
    fn current(&self) -> Option<Arc<CertifiedKey>> {
        let svid = self.shared.svid.load_full();
        if svid.is_none() {
            tracing::debug!("no X.509-SVID to present: handshake will fail");
        }
        svid.map(|s| s.certified_key().clone())
    }
}

impl ResolvesServerCert for SvidResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

impl ResolvesClientCert for SvidResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.current()
    }

    fn has_certs(&self) -> bool {
        // Always ask: the SVID may arrive between configuration and handshake.
        true
    }
}

/// The socket path of a Workload API endpoint: a path, `unix:///path` or
/// `unix:/path`.
pub(crate) fn socket_path(endpoint: &str) -> Result<PathBuf, MtlsError> {
    let bad = |reason| MtlsError::Endpoint {
        endpoint: endpoint.to_owned(),
        reason,
    };
    if endpoint.is_empty() {
        return Err(bad("empty"));
    }
    let Some(rest) = endpoint.strip_prefix("unix:") else {
        if endpoint.contains("://") || endpoint.starts_with("tcp:") {
            return Err(bad("only Unix domain sockets are supported"));
        }
        return Ok(PathBuf::from(endpoint));
    };
    let path = rest.strip_prefix("//").unwrap_or(rest);
    if !path.starts_with('/') {
        return Err(bad("a unix: URI must name an absolute path with no host"));
    }
    if path.contains(['?', '#']) {
        return Err(bad("a unix: URI may not carry a query or fragment"));
    }
    Ok(PathBuf::from(path))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_accept_paths_and_unix_uris() {
        let want = PathBuf::from("/run/lanyard/agent/api.sock");
        assert_eq!(socket_path("/run/lanyard/agent/api.sock").unwrap(), want);
        assert_eq!(
            socket_path("unix:///run/lanyard/agent/api.sock").unwrap(),
            want
        );
        assert_eq!(
            socket_path("unix:/run/lanyard/agent/api.sock").unwrap(),
            want
        );
        assert_eq!(socket_path("api.sock").unwrap(), PathBuf::from("api.sock"));
    }

    #[test]
    fn endpoints_refuse_tcp_hosts_and_queries() {
        for bad in [
            "",
            "tcp://127.0.0.1:8081",
            "tcp:127.0.0.1:8081",
            "unix://host/api.sock",
            "unix:relative.sock",
            "unix:///api.sock?x=1",
            "http://localhost",
        ] {
            let err = socket_path(bad).unwrap_err();
            assert!(matches!(err, MtlsError::Endpoint { .. }), "{bad}: {err:?}");
        }
    }
}
