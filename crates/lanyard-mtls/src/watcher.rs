//! The background task behind a `WorkloadSource`: one `FetchX509SVID`
//! stream to the agent, reconnected with backoff and jitter, each message
//! applied to the shared identity and trust material.

use std::{
    fmt,
    path::PathBuf,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use arc_swap::ArcSwapOption;
use hyper_util::rt::TokioIo;
use lanyard_proto::workload::{
    X509svidRequest, X509svidResponse, spiffe_workload_api_client::SpiffeWorkloadApiClient,
};
use lanyard_time::Backoff;
use rustls_pki_types::UnixTime;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::{
    Code, Status,
    metadata::MetadataValue,
    transport::{Channel, Endpoint},
};

use crate::{MtlsError, TrustMaterial, WorkloadSvid, svid::parse_response, trust::CrlUpdate};

/// Reconnect delays: from 50 ms up to 5 s, jittered so that many workloads
/// do not reconnect in step.
const RECONNECT: Backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
/// A CRL with 100,000 serials is ~4 MiB: above tonic's default limit.
const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// State shared by the task, the source and the rustls resolvers.
pub(crate) struct Shared {
    pub(crate) svid: ArcSwapOption<WorkloadSvid>,
    pub(crate) trust: Arc<TrustMaterial>,
    pub(crate) updates: watch::Sender<u64>,
    pub(crate) last_error: Mutex<Option<String>>,
}

impl Shared {
    pub(crate) fn new() -> Self {
        Self {
            svid: ArcSwapOption::empty(),
            trust: Arc::new(TrustMaterial::new(Vec::new())),
            updates: watch::Sender::new(0),
            last_error: Mutex::new(None),
        }
    }

    pub(crate) fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_last_error(&self, e: &MtlsError) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(e.to_string());
    }

    fn announce(&self) {
        self.updates.send_modify(|n| *n = n.wrapping_add(1));
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("svid", &self.svid.load())
            .field("trust", &self.trust)
            .field("updates", &*self.updates.borrow())
            .finish_non_exhaustive()
    }
}

/// Follows the Workload API until cancelled.
pub(crate) struct Watcher {
    pub(crate) shared: Arc<Shared>,
    pub(crate) socket: PathBuf,
}

impl Watcher {
    /// Runs until `shutdown` is cancelled. Never fails: every error is
    /// logged, remembered for `NotReady`, and retried after a backoff.
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        let mut failures: u32 = 0;
        loop {
            let err = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                err = self.follow(&mut failures) => err,
            };
            self.shared.set_last_error(&err);
            let delay = RECONNECT.random_delay(failures);
            failures = failures.saturating_add(1);
            tracing::warn!(
                error = %err,
                socket = %self.socket.display(),
                retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                "Workload API stream lost; reconnecting"
            );
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(delay) => {}
            }
        }
        tracing::debug!(socket = %self.socket.display(), "Workload API watcher stopped");
    }

    /// One stream, from connect to its end; returns why it ended.
    async fn follow(&self, failures: &mut u32) -> MtlsError {
        let channel = match connect(self.socket.clone()).await {
            Ok(channel) => channel,
            Err(e) => return e,
        };
        let mut client =
            SpiffeWorkloadApiClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
        let mut request = tonic::Request::new(X509svidRequest {});
        request
            .metadata_mut()
            .insert("workload.spiffe.io", MetadataValue::from_static("true"));
        let mut stream = match client.fetch_x509svid(request).await {
            Ok(response) => response.into_inner(),
            Err(status) => return self.on_status(status),
        };
        loop {
            match stream.message().await {
                Ok(Some(msg)) => {
                    *failures = 0;
                    self.apply(msg);
                }
                Ok(None) => {
                    return MtlsError::WorkloadApi {
                        code: Code::Unavailable,
                        message: "the agent closed the stream".into(),
                    };
                }
                Err(status) => return self.on_status(status),
            }
        }
    }

    fn apply(&self, msg: X509svidResponse) {
        let update = match parse_response(msg, UnixTime::now()) {
            Ok(Some(update)) => update,
            Ok(None) => {
                tracing::warn!("Workload API message carries no SVID; dropping the identity");
                self.clear_svid();
                return;
            }
            Err(e) => {
                // Keep serving the identity we have: it is still valid.
                tracing::warn!(error = %e, "unusable Workload API message ignored");
                self.shared.set_last_error(&e);
                return;
            }
        };
        let crl = match update.crl {
            Some(der) => CrlUpdate::Replace(der),
            // A message without a CRL never lifts revocations.
            None => CrlUpdate::Keep,
        };
        // Upstream mode: the CRL is signed by one of Lanyard's intermediates,
        // which our chain carries: the one that issued our SVID, or, right
        // after a rotation, the new one the agent appends after it.
        self.shared.trust.set_crl_signers(update.crl_signers);
        // A refused CRL is logged by install; bundle and SVID still apply.
        let _ = self.shared.trust.install(update.bundle, crl);
        let svid = update.svid;
        let previous = self.shared.svid.load_full();
        if previous.as_ref().map(|p| p.serial()) != Some(svid.serial()) {
            tracing::info!(
                spiffe_id = %svid.spiffe_id(),
                serial = svid.serial(),
                not_after = svid.not_after(),
                "X.509-SVID installed"
            );
        }
        self.shared.svid.store(Some(Arc::new(svid)));
        self.shared.announce();
    }

    fn on_status(&self, status: Status) -> MtlsError {
        if status.code() == Code::PermissionDenied {
            // "no identity issued": stop presenting the old SVID at once,
            // keep the bundle so this workload can still verify peers.
            tracing::warn!(
                message = status.message(),
                "Workload API denied an identity"
            );
            self.clear_svid();
        }
        MtlsError::WorkloadApi {
            code: status.code(),
            message: status.message().to_owned(),
        }
    }

    fn clear_svid(&self) {
        if self.shared.svid.swap(None).is_some() {
            self.shared.announce();
        }
    }
}

async fn connect(socket: PathBuf) -> Result<Channel, MtlsError> {
    // The URI is a placeholder: the connector below dials the socket.
    Endpoint::from_static("http://localhost")
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector(tower::service_fn(move |_uri| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(&socket).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .map_err(|e| {
            MtlsError::Channel(format!(
                "Workload API: {e}: {}",
                crate::error::source_chain(&e)
            ))
        })
}
